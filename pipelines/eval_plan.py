"""What an evaluation scores: each protocol's faces (LR input, reference, methods) planned into items
for the per-face workers, with every input recorded by hash and every skipped face listed."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from survsr.pipelines.eval_faces import (EvaluateError, Face, astronaut_face, carphone, degrade, detect_video_faces,
                                         folder_faces, manifest_faces, read_manifest, resize, resolve, select_split,
                                         square_hr, stable_seed)
from survsr.pipelines.quality import MetricError, read_rgb
from survsr.config import to_dict
from survsr.provenance import encode_png, sha256_file

from survsr.pipelines.eval_config import EvaluateConfig


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


def zssr_manifest(zssr_dir: Path, plan: Plan):
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


def plan_paper(cfg: EvaluateConfig, plan: Plan, faces_dir: Path | None, zssr_df, zssr_dir: Path | None,
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


def plan_ground_truth(cfg: EvaluateConfig, plan: Plan, faces_dir: Path | None, faces_hr: list[Path],
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


def plan_real(cfg: EvaluateConfig, plan: Plan, faces_dir: Path | None, faces_lr: list[Path], zssr_df,
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
