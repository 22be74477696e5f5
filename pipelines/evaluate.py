"""``survsr evaluate``: PSNR/SSIM under three protocols, and the HTML report.

1. paper (Table I of Moreira et al.): SRGAN output vs the ZSSR synthetic HR of the same test-split face.
   That measures how well the generator agrees with ZSSR, not how close either is to the real face.
2. ground truth: real HR faces (carphone pristine crops, the astronaut, user folders) degraded to LR
   (bicubic, and blur + noise + JPEG like a surveillance camera), super-resolved by nearest, bicubic, ZSSR and
   SRGAN, and scored against the real HR. The only protocol here that measures fidelity.
3. real footage (Table II): native LR faces with no HR (carphone distorted, user footage): image grids and a
   no-reference sharpness figure.

``run_evaluate`` is the plain function (the demo calls it); the per-face work runs on a Ray Data actor pool
(``survsr.pipelines.eval_enhance``), or in-process with ``ray.enabled: false``. A stage whose inputs are missing is
reported on the page, never a crash; bad inputs are skipped and listed, or (an empty folder, a missing
manifest) are errors naming the input.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from survsr.pipelines.eval_enhance import METHODS, is_srgan, load_zssr_config, method_order, run_local, run_ray
from survsr.pipelines.eval_faces import (
    DegradationConfig,
    EvaluateError,
    Face,
    astronaut_face,
    carphone,
    degrade,
    detect_video_faces,
    folder_faces,
    manifest_faces,
    read_manifest,
    resize,
    resolve,
    select_split,
    square_hr,
    stable_seed,
)
from survsr.pipelines.quality import MetricError, MetricsConfig, decode_png, read_rgb, sharpness
from survsr.config import config_hash, load, to_dict
from survsr.ray_utils import use_address
from survsr.stage import Stage
from survsr.provenance import (
    append_audit,
    atomic_write,
    atomic_write_json,
    encode_png,
    sha256_file,
    stage_record,
)

log = logging.getLogger(__name__)

METRIC_COLUMNS = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")
SPLITS = ("test", "train", "all")


# ---------------------------------------------------------------- config


@dataclass
class ZSSREvalConfig:
    enabled: bool = True
    config: str | None = None  # ZSSR yaml (path or name in configs/); null = configs/zssr.yaml
    set: list[str] = field(default_factory=list)  # overrides of that config, e.g. a small iteration budget
    seed: int = 0


@dataclass
class PoolConfig:
    enabled: bool = True  # false: the same work in this process (no Ray)
    actors: int = 2
    batch_size: int = 2  # faces per batch; small because one ZSSR face costs seconds on CPU


@dataclass
class PaperConfig:
    enabled: bool = True
    split: str = "test"
    fallback_to_all: bool = True  # an empty test split -> all faces, said on the page
    max_faces: int = 1000
    bicubic_baseline: bool = True  # also score bicubic vs ZSSR: how much agreement comes for free

    def validate(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")


def _check_split_and_methods(split: str, methods: list[str]) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown methods {bad} (known: {list(METHODS)})")


def _default_degradations() -> list[DegradationConfig]:
    return [DegradationConfig(name="bicubic"),
            DegradationConfig(name="surveillance", blur_sigma=0.8, noise_sigma=4.0, jpeg_quality=40)]


@dataclass
class GroundTruthConfig:
    enabled: bool = True
    hr_size: int = 64  # HR faces are centre-squared and resized to this; LR = hr_size / scale
    min_native: int = 40  # native crops smaller than this are not used as ground truth
    split: str = "test"
    fallback_to_all: bool = True
    max_faces: int = 12  # per source (video or folder), evenly spread over it
    sources: list[str] = field(default_factory=lambda: ["*"])  # fnmatch on the manifest's source_path
    exclude_sources: list[str] = field(default_factory=lambda: ["*distorted*"])  # not ground-truth quality
    carphone: bool = True  # without --faces: detect faces in carphone pristine
    carphone_stride: int = 10
    astronaut: bool = True
    degradations: list[DegradationConfig] = field(default_factory=_default_degradations)
    methods: list[str] = field(default_factory=lambda: list(METHODS))

    def validate(self) -> None:
        _check_split_and_methods(self.split, self.methods)
        names = [d.name for d in self.degradations]
        if len(set(names)) != len(names):
            raise ValueError(f"degradation names must be unique, got {names}")
        if self.hr_size < 16:
            raise ValueError(f"hr_size must be >= 16, got {self.hr_size}")


@dataclass
class RealFootageConfig:
    enabled: bool = True
    split: str = "test"
    fallback_to_all: bool = True
    max_faces: int = 4  # per source video / folder
    sources: list[str] = field(default_factory=lambda: ["*"])
    exclude_sources: list[str] = field(default_factory=list)
    carphone: bool = True  # without --faces: detect faces in carphone distorted
    carphone_stride: int = 10
    lr_size: int = 32  # detected native crops are resized to this, as ingest does
    methods: list[str] = field(default_factory=lambda: list(METHODS))

    def validate(self) -> None:
        _check_split_and_methods(self.split, self.methods)


@dataclass
class ReportConfig:
    title: str = "survsr evaluation report"
    grid_faces: int = 4  # faces shown per grid
    display_px: int = 128  # on-page size of each 64x64 tile (pixelated, no smoothing)
    label: bool = True  # AI-ENHANCED band (survsr.marking) on the ZSSR/SRGAN tiles: they are model output


@dataclass
class EvaluateConfig:
    scale: int = 2
    seed: int = 0
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    zssr: ZSSREvalConfig = field(default_factory=ZSSREvalConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    paper: PaperConfig = field(default_factory=PaperConfig)
    ground_truth: GroundTruthConfig = field(default_factory=GroundTruthConfig)
    real_footage: RealFootageConfig = field(default_factory=RealFootageConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def validate(self) -> None:
        if self.scale < 2:
            raise ValueError(f"scale must be >= 2, got {self.scale}")
        if self.ground_truth.hr_size % self.scale:
            raise ValueError(f"ground_truth.hr_size {self.ground_truth.hr_size} is not a multiple of "
                             f"scale {self.scale}")


def load_config(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> EvaluateConfig:
    return load(EvaluateConfig, path, list(overrides), default_name="evaluate.yaml")


def identity(cfg: EvaluateConfig) -> str:
    """The stage's identity: every setting but the actor pool (it keys the report and the pipeline marker)."""
    return config_hash({k: v for k, v in to_dict(cfg).items() if k != "pool"})


# ---------------------------------------------------------------- methods available


def _srgan_status(generator: str | Path | None) -> dict[str, Any]:
    if generator is None:
        return {"available": False, "reason": "no generator given (--generator RUN/generator.safetensors)"}
    path = Path(generator)
    if not path.is_file():
        return {"available": False, "reason": f"{path}: generator export not found", "path": str(path)}
    try:
        from survsr.models.export import read_metadata

        meta = read_metadata(path)
    except Exception as exc:  # noqa: BLE001 - a bad export is reported, the other methods go on
        return {"available": False, "reason": f"{path}: not a loadable generator ({exc})", "path": str(path)}
    run = path.parent
    status = {"available": True, "path": str(path), "sha256": sha256_file(path), "metadata": meta}
    meta_path = run / "train_meta.json"
    if meta_path.is_file():
        try:
            status["train_meta"] = json.loads(meta_path.read_text())
            status["train_meta_sha256"] = sha256_file(meta_path)
        except (OSError, ValueError) as exc:
            status["train_meta_error"] = f"{meta_path}: {exc}"
    log_path = run / "train_log.jsonl"
    if log_path.is_file():
        status["train_log"] = str(log_path)
        status["train_log_sha256"] = sha256_file(log_path)
    return status


def _zssr_status(cfg: EvaluateConfig) -> dict[str, Any]:
    if not cfg.zssr.enabled:
        return {"available": False, "reason": "disabled in the config (zssr.enabled: false)"}
    # a ConfigError (typo in zssr.set) propagates: the user asked for something that cannot run
    zcfg = load_zssr_config(cfg.zssr.config, list(cfg.zssr.set), cfg.scale)
    return {"available": True, "config": to_dict(zcfg), "config_hash": config_hash(zcfg),
            "overrides": list(cfg.zssr.set), "seed": cfg.zssr.seed}


# ---------------------------------------------------------------- items


def _item(protocol: str, face_id: str, degradation: str, lr: np.ndarray, ref: np.ndarray | None,
          methods: list[str], seed: int, pre_zssr: bytes | None = None) -> dict[str, Any]:
    key = "/".join(p for p in (protocol, degradation, face_id) if p)
    return {"key": key, "protocol": protocol, "face_id": face_id, "degradation": degradation,
            "lr_png": encode_png(lr), "ref_png": encode_png(ref) if ref is not None else None,
            "methods": ",".join(methods), "pre_zssr_png": pre_zssr, "seed": seed}


@dataclass
class Plan:
    items: list[dict] = field(default_factory=list)
    faces: dict[str, dict] = field(default_factory=dict)  # key -> face info for rows and grids
    protocols: dict[str, dict] = field(default_factory=dict)
    inputs: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)

    def add_input(self, role: str, path: str, sha: str) -> None:
        if not any(i["path"] == path and i["sha256"] == sha for i in self.inputs):
            self.inputs.append({"role": role, "path": path, "sha256": sha})


def _zssr_manifest(zssr_dir: Path, plan: Plan):
    manifest = zssr_dir / "zssr.parquet"
    df = read_manifest(manifest, "ZSSR")
    missing = {"crop_id", "hr_path"} - set(df.columns)
    if missing:
        raise EvaluateError(f"{manifest}: missing columns {sorted(missing)}")
    plan.add_input("zssr manifest", str(manifest), sha256_file(manifest))
    return df


def _expand(methods: list[str], available: dict) -> list[str]:
    """"srgan" in a methods list stands for every generator given: the --generator one and the named ones
    (srgan-paper, srgan-distill, ...)."""
    out: list[str] = []
    for m in methods:
        named = available.get("srgan_named") or []
        if m == "srgan" and named:
            out += (["srgan"] if available.get("srgan") else []) + list(named)
        else:
            out.append(m)
    return out


def _plan_paper(cfg: EvaluateConfig, plan: Plan, faces_dir: Path | None, zssr_df, zssr_dir: Path | None,
                srgan: dict, named: dict[str, dict] | None = None) -> None:
    p = {"title": "Protocol 1 - paper (Table I): SRGAN vs ZSSR synthetic HR", "notes": []}
    plan.protocols["paper"] = p
    if not cfg.paper.enabled:
        p.update(status="disabled", reason="paper.enabled: false")
        return
    if zssr_df is None:
        p.update(status="missing", reason="no ZSSR output given (--zssr DIR): there is no synthetic HR to "
                                          "compare the generator with")
        return
    named = {m: st for m, st in (named or {}).items() if st["available"]}
    methods = (["srgan"] if srgan["available"] else []) + list(named) + \
        (["bicubic"] if cfg.paper.bicubic_baseline else [])
    if not srgan["available"] and not named:
        p["notes"].append(f"SRGAN not available: {srgan['reason']}")
    if not methods:
        p.update(status="missing", reason="no method to score (SRGAN not available, bicubic baseline off)")
        return
    df = select_split(zssr_df, cfg.paper.split, cfg.paper.fallback_to_all, "paper protocol", p["notes"])
    df = df.sort_values("crop_id")
    n = 0
    for row in df.to_dict("records"):
        if n >= cfg.paper.max_faces:
            break
        hr_path = resolve(zssr_dir, str(row["hr_path"]))
        lr_raw = row.get("lr_path")
        if lr_raw is None or (isinstance(lr_raw, float) and math.isnan(lr_raw)):
            plan.skipped.append({"input": str(hr_path), "reason": "zssr.parquet row has no lr_path"})
            continue
        # lr_path is copied through from the ingest manifest: absolute, or relative to the ingest dir.
        bases = [b for b in (faces_dir, zssr_dir) if b is not None]
        cands = [resolve(b, str(lr_raw)) for b in bases] if not Path(str(lr_raw)).is_absolute() else [Path(lr_raw)]
        lr_path = next((c for c in cands if c.is_file()), cands[0])
        try:
            lr, hr = read_rgb(lr_path), read_rgb(hr_path)
        except MetricError as exc:
            plan.skipped.append({"input": str(exc).split(":")[0], "reason": str(exc)})
            continue
        if hr.shape[:2] != (lr.shape[0] * cfg.scale, lr.shape[1] * cfg.scale):
            plan.skipped.append({"input": str(hr_path), "reason": f"ZSSR output {hr.shape[1]}x{hr.shape[0]} "
                                 f"is not x{cfg.scale} of its LR {lr.shape[1]}x{lr.shape[0]} ({lr_path})"})
            continue
        fid = str(row["crop_id"])
        item = _item("paper", fid, "", lr, hr, methods, stable_seed(cfg.seed, fid))
        plan.items.append(item)
        plan.faces[item["key"]] = {"source": "ZSSR output", "sha256": str(row.get("sha256", "")),
                                   "split": str(row.get("split", "")), "path": str(hr_path),
                                   "lr_path": str(lr_path)}
        n += 1
    p.update(status="ok" if n else "empty", n_faces=n,
             reason="" if n else "no usable face in the ZSSR output (see skipped inputs)")


def _plan_ground_truth(cfg: EvaluateConfig, plan: Plan, faces_dir: Path | None, faces_hr: list[Path],
                       available: dict[str, bool]) -> None:
    g = cfg.ground_truth
    p = {"title": "Protocol 2 - ground truth: real HR faces, degraded, super-resolved, scored against the HR",
         "notes": []}
    plan.protocols["ground_truth"] = p
    if not g.enabled:
        p.update(status="disabled", reason="ground_truth.enabled: false")
        return
    faces: list[Face] = []
    if faces_dir is not None:
        faces += manifest_faces(faces_dir, column="native_path", split=g.split, fallback_to_all=g.fallback_to_all,
                                include=g.sources, exclude=g.exclude_sources, max_faces=g.max_faces,
                                min_side=g.min_native, label="ingest", notes=p["notes"], skipped=plan.skipped)
    elif g.carphone:
        video = carphone("pristine")
        if video is None:
            p["notes"].append("carphone clip not installed; no carphone faces")
        else:
            plan.add_input("video", str(video), sha256_file(video))
            faces += detect_video_faces(video, label="carphone pristine", stride=g.carphone_stride,
                                        max_faces=g.max_faces, notes=p["notes"])
    if g.astronaut:
        faces.append(astronaut_face())
    for folder in faces_hr:
        for f in folder_faces(folder, label="HR folder", max_faces=g.max_faces, skipped=plan.skipped):
            if min(f.image.shape[:2]) < g.min_native:
                plan.skipped.append({"input": f.path, "reason": f"{f.image.shape[1]}x{f.image.shape[0]} is smaller "
                                     f"than ground_truth.min_native={g.min_native} px (too small for an HR face)"})
            else:
                faces.append(f)
    methods = [m for m in _expand(g.methods, available) if available.get(m, True)]
    for m in g.methods:
        if not available.get(m, True):
            p["notes"].append(f"{m}: not available ({available.get(m + '_reason', '')})")
    for face in faces:
        plan.add_input(face.source, face.path, face.sha256)
        hr = square_hr(face.image, g.hr_size)
        for deg in g.degradations:
            seed = stable_seed(cfg.seed, f"{deg.name}/{face.face_id}")
            lr = degrade(hr, cfg.scale, deg, seed)
            item = _item("ground_truth", face.face_id, deg.name, lr, hr, methods, seed)
            plan.items.append(item)
            plan.faces[item["key"]] = {"source": face.source, "sha256": face.sha256, "split": face.split,
                                       "path": face.path, "native": f"{face.image.shape[1]}x{face.image.shape[0]}"}
    p.update(status="ok" if faces else "empty", n_faces=len(faces),
             reason="" if faces else "no HR face found (give --faces DIR or --faces-hr DIR)",
             degradations=[to_dict(d) for d in g.degradations])


def _plan_real(cfg: EvaluateConfig, plan: Plan, faces_dir: Path | None, faces_lr: list[Path], zssr_df,
               zssr_dir: Path | None, available: dict[str, bool]) -> None:
    r = cfg.real_footage
    p = {"title": "Protocol 3 - real footage (Table II): native LR faces, no HR", "notes": []}
    plan.protocols["real_footage"] = p
    if not r.enabled:
        p.update(status="disabled", reason="real_footage.enabled: false")
        return
    faces: list[Face] = []
    if faces_dir is not None:
        faces += manifest_faces(faces_dir, column="lr_path", split=r.split, fallback_to_all=r.fallback_to_all,
                                include=r.sources, exclude=r.exclude_sources, max_faces=r.max_faces,
                                min_side=4, label="ingest", notes=p["notes"], skipped=plan.skipped)
    elif r.carphone:
        video = carphone("distorted")
        if video is None:
            p["notes"].append("carphone clip not installed; no carphone faces")
        else:
            plan.add_input("video", str(video), sha256_file(video))
            for f in detect_video_faces(video, label="carphone distorted", stride=r.carphone_stride,
                                        max_faces=r.max_faces, notes=p["notes"]):
                f.image = resize(f.image, (r.lr_size, r.lr_size), "area")
                faces.append(f)
    for folder in faces_lr:
        faces += folder_faces(folder, label="LR folder", max_faces=r.max_faces, skipped=plan.skipped)
    methods = [m for m in _expand(r.methods, available) if available.get(m, True)]
    for m in r.methods:
        if not available.get(m, True):
            p["notes"].append(f"{m}: not available ({available.get(m + '_reason', '')})")
    pre: dict[str, bytes] = {}
    if zssr_df is not None and "zssr" in methods:
        for row in zssr_df.to_dict("records"):
            path = resolve(zssr_dir, str(row["hr_path"]))
            if path.is_file():
                pre[str(row["crop_id"])] = path.read_bytes()
    n_pre = 0
    for face in faces:
        plan.add_input(face.source, face.path, face.sha256)
        pz = pre.get(face.face_id)
        n_pre += pz is not None
        item = _item("real_footage", face.face_id, "", face.image, None, methods,
                     stable_seed(cfg.seed, face.face_id), pz)
        plan.items.append(item)
        plan.faces[item["key"]] = {"source": face.source, "sha256": face.sha256, "split": face.split,
                                   "path": face.path}
    if n_pre:
        p["notes"].append(f"ZSSR column: {n_pre} face(s) reuse the ZSSR stage's output (zssr.parquet)")
    p.update(status="ok" if faces else "empty", n_faces=len(faces),
             reason="" if faces else "no native LR face found (give --faces DIR or --faces-lr DIR)")


# ---------------------------------------------------------------- aggregation


def _finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))
            and math.isfinite(float(v))]


def summarize(rows: list[dict], group: tuple[str, ...]) -> list[dict]:
    """Mean and std (population) of each metric per group; infinite PSNR (identical images) is counted in
    ``n_identical`` and left out of the mean, which would otherwise be infinite."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[g] for g in group), []).append(r)
    def order(key: tuple) -> tuple:
        return tuple(method_order(v) if g == "method" else (99, str(v)) for g, v in zip(group, key))

    out = []
    for key in sorted(groups, key=order):
        rs = groups[key]
        ok = [r for r in rs if not r.get("error")]
        s: dict[str, Any] = dict(zip(group, key))
        s.update(n=len(ok), n_errors=len(rs) - len(ok), n_identical=sum(bool(r.get("identical")) for r in ok))
        for col in METRIC_COLUMNS + ("sharpness",):
            vals = _finite(r.get(col) for r in ok)
            s[f"{col}_mean"] = float(np.mean(vals)) if vals else None
            s[f"{col}_std"] = float(np.std(vals)) if vals else None
        out.append(s)
    return out


def mark_best(summary: list[dict], by: str | None) -> None:
    """Mark, within each ``by`` group (a degradation), the method with the highest mean per metric."""
    groups: dict[Any, list[dict]] = {}
    for s in summary:
        groups.setdefault(s.get(by) if by else None, []).append(s)
    for rows in groups.values():
        for r in rows:
            r.setdefault("best", [])
        for col in METRIC_COLUMNS:
            vals = [(r[f"{col}_mean"], r) for r in rows if r.get(f"{col}_mean") is not None]
            if len(vals) < 2:
                continue
            top = max(v for v, _ in vals)
            for v, r in vals:
                if math.isclose(v, top, rel_tol=0, abs_tol=1e-12):
                    r["best"].append(col)


def _json_safe(v: Any) -> Any:
    if isinstance(v, float):
        return None if (math.isnan(v) or math.isinf(v)) else v
    if isinstance(v, (np.floating,)):
        return _json_safe(float(v))
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


ROW_FIELDS = ["protocol", "degradation", "face_id", "method", "source", "split", "input_sha256", "psnr_y",
              "ssim_y", "psnr_rgb", "ssim_rgb", "identical", "sharpness", "seconds", "error"]


def _write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=ROW_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None or (isinstance(r.get(k), float) and math.isnan(r[k]))
                        else r.get(k)) for k in ROW_FIELDS})
    atomic_write(path, buf.getvalue())


# ---------------------------------------------------------------- grids


def _grids(plan: Plan, rows_by_key: dict[str, dict[str, dict]], cfg: EvaluateConfig) -> dict[str, list[dict]]:
    """Per protocol, up to ``report.grid_faces`` faces, each a list of (title, png, caption) tiles."""
    items = {it["key"]: it for it in plan.items}
    out: dict[str, list[dict]] = {}
    per_group: dict[tuple, int] = {}
    for key in sorted(items):
        it = items[key]
        proto = it["protocol"]
        gkey = (proto, it["degradation"])
        if per_group.get(gkey, 0) >= cfg.report.grid_faces:
            continue
        per_group[gkey] = per_group.get(gkey, 0) + 1
        methods = rows_by_key.get(key, {})
        tiles = []
        if proto == "ground_truth":
            tiles.append({"title": "HR (truth)", "png": it["ref_png"], "caption": plan.faces[key].get("native", "")
                          and f"native {plan.faces[key]['native']}"})
        lr = decode_png(it["lr_png"])
        tiles.append({"title": f"LR {lr.shape[1]}x{lr.shape[0]}", "png": it["lr_png"],
                      "caption": f"sharp {sharpness(lr):.0f} (LR size)" if proto == "real_footage" else
                      (it["degradation"] or "input")})
        order = ["nearest", "bicubic", "zssr", "srgan"]
        named_here = sorted({m for m in methods if m.startswith("srgan-")})
        if named_here:
            order = order[:3] + ([] if "srgan" not in methods else ["srgan"]) + named_here
        for m in order:
            r = methods.get(m)
            title = {"nearest": "nearest (zoomed LR)", "bicubic": "bicubic", "zssr": "ZSSR",
                     "srgan": "SRGAN"}.get(m) or "SRGAN-" + m[len("srgan-"):]
            if r is None:
                if proto == "paper" and m == "zssr":
                    continue
                if proto == "paper" and m == "nearest":
                    continue
                tiles.append({"title": title, "png": None, "caption": "not available"})
                continue
            if r.get("error"):
                tiles.append({"title": title, "png": None, "caption": "failed: " + str(r["error"])[:80]})
                continue
            if proto == "real_footage":
                cap = f"sharp {r['sharpness']:.0f}"
            else:
                cap = _fmt_psnr(r.get("psnr_y")) + f" dB / {r['ssim_y']:.3f}"
            png = r["sr_png"]
            if cfg.report.label and (m == "zssr" or is_srgan(m)) and png is not None:
                from survsr.marking import mark_image

                png = encode_png(mark_image(decode_png(png)))  # metrics used the unmarked pixels
            tiles.append({"title": title, "png": png, "caption": cap})
        if proto == "paper":
            ref = it["ref_png"]
            if cfg.report.label:  # the synthetic HR is ZSSR output too
                from survsr.marking import mark_image

                ref = encode_png(mark_image(decode_png(ref)))
            tiles.append({"title": "ZSSR (reference)", "png": ref, "caption": "synthetic HR"})
        out.setdefault(proto, []).append({"face_id": it["face_id"], "degradation": it["degradation"],
                                          "source": plan.faces[key].get("source", ""), "tiles": tiles})
    return out


def _fmt_psnr(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return "inf" if math.isinf(v) else f"{v:.2f}"


# ---------------------------------------------------------------- main entry


def run_evaluate(out: str | Path, *, faces: str | Path | None = None, zssr: str | Path | None = None,
                 generator: str | Path | None = None, faces_hr: list | tuple = (), faces_lr: list | tuple = (),
                 cfg: EvaluateConfig | None = None, config: str | Path | None = None,
                 overrides: list[str] | tuple = (), generators: dict[str, str | Path] | None = None
                 ) -> dict[str, Any]:
    """Run the three protocols and write ``out/index.html``, ``out/metrics.json`` and ``out/metrics.csv``.

    ``generators``: named generator exports scored side by side as methods ``srgan-<name>`` (e.g.
    {"paper": RUN1/generator.safetensors, "distill": RUN2/generator.safetensors}), next to ``generator``.

    Returns the metrics dict (as in metrics.json) with ``"report"`` (and ``"report_path"``) = the path of
    index.html.
    Raises EvaluateError for arguments that cannot work (missing manifest, empty face folder)."""
    from survsr.pipelines import report as report_mod

    cfg = cfg or load_config(config, overrides)
    out = Path(out)
    faces_dir = Path(faces) if faces else None
    zssr_dir = Path(zssr) if zssr else None
    faces_hr = [Path(p) for p in faces_hr]
    faces_lr = [Path(p) for p in faces_lr]
    for d, what in [(faces_dir, "--faces"), (zssr_dir, "--zssr")]:
        if d is not None and not d.is_dir():
            raise EvaluateError(f"{d}: {what} directory not found")
    if faces_dir is not None:
        manifest = faces_dir / "faces.parquet"
        if not manifest.is_file():
            raise EvaluateError(f"{manifest}: ingest manifest not found (is {faces_dir} an ingest output?)")
    from survsr.provenance import check_output_dir

    check_output_dir(out, [p for p in [faces_dir, zssr_dir, *faces_hr, *faces_lr, generator] if p is not None],
                     "evaluate")
    out.mkdir(parents=True, exist_ok=True)
    chash = identity(cfg)

    srgan = _srgan_status(generator)
    named = {f"srgan-{name}": _srgan_status(path) for name, path in (generators or {}).items()}
    if not srgan["available"] and named:  # the page's mediator / curves: the first named generator's run
        first = next((st for st in named.values() if st["available"]), None)
        srgan_meta = first or srgan
    else:
        srgan_meta = srgan
    zstat = _zssr_status(cfg)
    available = {"srgan": srgan["available"], "srgan_reason": srgan.get("reason", ""),
                 "zssr": zstat["available"], "zssr_reason": zstat.get("reason", ""),
                 "srgan_named": list(named)}
    for m, st in named.items():
        available[m] = st["available"]
        available[m + "_reason"] = st.get("reason", "")
    plan = Plan()
    if faces_dir is not None:
        plan.add_input("ingest manifest", str(faces_dir / "faces.parquet"), sha256_file(faces_dir / "faces.parquet"))
    if srgan["available"]:
        plan.add_input("generator", srgan["path"], srgan["sha256"])
    for m, st in named.items():
        if st["available"]:
            plan.add_input(f"generator {m}", st["path"], st["sha256"])
    zssr_df = _zssr_manifest(zssr_dir, plan) if zssr_dir is not None else None

    _plan_paper(cfg, plan, faces_dir, zssr_df, zssr_dir, srgan, named)
    _plan_ground_truth(cfg, plan, faces_dir, faces_hr, available)
    _plan_real(cfg, plan, faces_dir, faces_lr, zssr_df, zssr_dir, available)

    enh_kwargs = dict(scale=cfg.scale, generator=srgan.get("path") if srgan["available"] else None,
                      generators={m: st["path"] for m, st in named.items() if st["available"]},
                      zssr={"config": cfg.zssr.config, "set": list(cfg.zssr.set), "seed": cfg.zssr.seed},
                      metrics=to_dict(cfg.metrics), cache_dir=str(out / "cache" / "zssr"))
    n_zssr = sum("zssr" in it["methods"].split(",") and it["pre_zssr_png"] is None for it in plan.items)
    log.info("evaluating %d faces (%d ZSSR runs) %s", len(plan.items), n_zssr,
             "on a Ray Data actor pool" if cfg.pool.enabled else "in-process")
    rows: list[dict] = []
    if plan.items:
        if cfg.pool.enabled:
            rows = run_ray(plan.items, actors=cfg.pool.actors, batch_size=cfg.pool.batch_size, **enh_kwargs)
        else:
            rows = run_local(plan.items, **enh_kwargs)
    # Ray Data gives no order guarantee: everything downstream is sorted by key.
    rows.sort(key=lambda r: (r["key"], method_order(r["method"])))
    rows_by_key: dict[str, dict[str, dict]] = {}
    for r in rows:
        info = plan.faces.get(r["key"], {})
        r.update(source=info.get("source", ""), split=info.get("split", ""), input_sha256=info.get("sha256", ""))
        rows_by_key.setdefault(r["key"], {})[r["method"]] = r

    protocols = plan.protocols
    for name, p in protocols.items():
        prow = [r for r in rows if r["protocol"] == name]
        if name == "ground_truth":
            p["summary"] = summarize(prow, ("degradation", "method"))
            mark_best(p["summary"], "degradation")
            # per source too: crops of the training clip vs faces the generator never saw (astronaut, folders)
            p["summary_by_source"] = summarize(prow, ("degradation", "source", "method"))
        else:
            p["summary"] = summarize(prow, ("method",))
            if name == "paper":
                mark_best(p["summary"], None)
        p["n_errors"] = sum(1 for r in prow if r.get("error"))
        if p.get("status") == "ok" and p["n_errors"] and p["n_errors"] == len(prow):
            p["status"] = "failed"
            p["reason"] = "every method failed on every face: " + str(prow[0]["error"])
        p["rows"] = [{k: r.get(k) for k in ROW_FIELDS} for r in prow]

    record = stage_record("evaluate", chash, seed=cfg.seed, model_sha256=srgan.get("sha256"), device="cpu",
                          zssr_config_hash=zstat.get("config_hash"))
    result: dict[str, Any] = {
        "schema": "survsr-evaluate-v1",
        "scale": cfg.scale,
        "protocols": protocols,
        "methods": {
            "nearest": {"available": True}, "bicubic": {"available": True, "note": "PIL bicubic"},
            "zssr": zstat,
            "srgan": {k: v for k, v in srgan.items() if k != "train_meta"},
            **{m: {k: v for k, v in st.items() if k != "train_meta"} for m, st in named.items()},
        },
        "train_meta": srgan_meta.get("train_meta"),
        "inputs": plan.inputs,
        "skipped": plan.skipped,
        "config": to_dict(cfg),
        "config_hash": chash,
        "provenance": record,
        "report": "index.html",
    }
    result = _json_safe(result)
    _write_csv(out / "metrics.csv", rows)
    atomic_write_json(out / "metrics.json", result)
    grids = _grids(plan, rows_by_key, cfg)
    curves = report_mod.training_curves_png(Path(srgan_meta["train_log"])) if srgan_meta.get("train_log") else None
    page = report_mod.write_report(out, result, grids, curves, cfg.report)
    _write_report_sidecars(out, plan.inputs, record)
    append_audit(out, {"command": "evaluate", "config_hash": chash, "inputs": plan.inputs,
                       "outputs": ["index.html", "metrics.json", "metrics.csv"], "n_rows": len(rows),
                       "outcome": "ok"})
    result["report"] = result["report_path"] = str(page)  # metrics.json keeps the relative name
    log.info("report: %s", page)
    return result


def _is_original(inp: dict) -> bool:
    """An input that is evidence or a user's photo rather than a survsr output (no provenance of its own)."""
    if inp.get("role") == "video":
        return True
    path = Path(str(inp.get("path", "")))
    if path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff") or not path.is_file():
        return False
    try:
        from survsr.provenance import PROVENANCE_KEY, read_png_text

        return PROVENANCE_KEY not in read_png_text(path)
    except Exception:  # noqa: BLE001 - unreadable as PNG text: treat as an original input, hash-checked
        return True


def _run_relative(path: Path, out: Path) -> str:
    """A file inside the run (``out``'s parent, the usual ``RUN/evaluate`` layout) relative to ``out``, so a
    copied or moved run verifies against its own files; anything outside stays absolute (last-known path,
    checked by hash)."""
    try:
        p, o = path.resolve(), out.resolve()
    except OSError:
        return str(path)
    if o.parent in p.parents:
        return os.path.relpath(p, o)
    return str(path)


def _write_report_sidecars(out: Path, inputs: list[dict], record: dict) -> None:
    """``<file>.provenance.json`` beside the report files: their hashes and the inputs' hashes, so that
    ``survsr verify`` can check the report back to the manifests, the generator and the crops it used."""
    from survsr.provenance import provenance
    from survsr.sidecars import write_sidecar

    parents = [{"path": _run_relative(Path(str(i["path"])), out), "sha256": i["sha256"],
                **({"original": True} if _is_original(i) else {})}
               for i in inputs if i.get("path") and i.get("sha256")]
    doc = provenance("evaluation_report", source=None, parents=parents, stages=[record], model_output=True)
    for name in ("index.html", "metrics.json", "metrics.csv"):
        if (out / name).is_file():
            write_sidecar(out / name, doc)


# ---------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from survsr.config import add_config_args

    parser.add_argument("--faces", default=None, help="ingest output dir (faces.parquet)")
    parser.add_argument("--zssr", default=None, help="ZSSR output dir (zssr.parquet): the paper protocol")
    parser.add_argument("--generator", action="append", default=[], metavar="[NAME=]G.safetensors",
                        help="RUN/generator.safetensors from survsr train; NAME=PATH (repeatable) scores several "
                             "side by side as methods srgan-NAME, e.g. paper=RUN1/... distill=RUN2/...")
    parser.add_argument("--faces-hr", nargs="+", default=[], metavar="DIR",
                        help="folders of real HR face images for the ground-truth protocol")
    parser.add_argument("--faces-lr", nargs="+", default=[], metavar="DIR",
                        help="folders of native LR face images for the real-footage protocol")
    parser.add_argument("--out", required=True, help="report directory (index.html, metrics.json/.csv)")
    parser.add_argument("--no-ray", action="store_true", help="run in this process instead of on Ray")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS or local)")
    parser.add_argument("inputs", nargs="*", help="config overrides key.sub=value")
    add_config_args(parser, "evaluate.yaml")


def main(args: argparse.Namespace) -> int:
    import sys

    from survsr.config import split_overrides

    split_overrides(args, "inputs")
    if args.inputs:
        print(f"survsr evaluate: unexpected arguments {args.inputs} (inputs are given with --faces, --zssr, "
              f"--generator, --faces-hr, --faces-lr)", file=sys.stderr)
        return 2
    cfg = load_config(args.config, args.overrides + (["pool.enabled=false"] if args.no_ray else []))
    use_address(args.address)
    plain = [g for g in args.generator if "=" not in g]
    named = dict(g.split("=", 1) for g in args.generator if "=" in g)
    if len(plain) > 1:
        print("survsr evaluate: more than one unnamed --generator; name them: --generator NAME=PATH",
              file=sys.stderr)
        return 2
    try:
        result = run_evaluate(args.out, faces=args.faces, zssr=args.zssr, generator=plain[0] if plain else None,
                              faces_hr=args.faces_hr, faces_lr=args.faces_lr, cfg=cfg, generators=named)
    except EvaluateError as exc:
        print(f"survsr evaluate: {exc}", file=sys.stderr)
        return 2
    for name, p in result["protocols"].items():
        line = f"{name:13s} {p.get('status', '?'):8s}"
        if p.get("status") != "ok":
            line += f" {p.get('reason', '')}"
        print(line)
        for s in p.get("summary", []):
            if s.get("psnr_y_mean") is not None:
                print(f"    {s.get('degradation', '') or '':13s} {s['method']:14s} n={s['n']:3d} "
                      f"PSNR-Y {s['psnr_y_mean']:.2f} dB  SSIM-Y {s['ssim_y_mean']:.4f}")
    print(f"report: {result['report_path']}")
    return 0


STAGE = Stage(name="evaluate", add_arguments=add_arguments, main=main, load_config=load_config, identity=identity,
              run=run_evaluate)
