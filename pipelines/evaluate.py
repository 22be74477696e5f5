"""``survsr evaluate``: PSNR/SSIM under three protocols, and the HTML report.

1. paper (Table I of Moreira et al.): SRGAN output vs the ZSSR synthetic HR of the same test-split face.
   That measures how well the generator agrees with ZSSR, not how close either is to the real face.
2. ground truth: real HR faces (carphone pristine crops, the astronaut, user folders) degraded to LR
   (bicubic, and blur + noise + JPEG like a surveillance camera), super-resolved by nearest, bicubic, ZSSR and
   SRGAN, and scored against the real HR. The only protocol here that measures fidelity.
3. real footage (Table II): native LR faces with no HR (carphone distorted, user footage): image grids and a
   no-reference sharpness figure.

``run_evaluate`` is the plain function (the demo calls it); the per-face work runs on a Ray Data actor pool
(``survsr.pipelines.eval_enhance``), or in-process with ``pool.enabled: false``. A stage whose inputs are missing is
reported on the page, never a crash; bad inputs are skipped and listed, or (an empty folder, a missing
manifest) are errors naming the input.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

from survsr.pipelines.eval_enhance import load_zssr_config, method_order, run_local, run_ray
from survsr.pipelines.eval_faces import EvaluateError
from survsr.config import config_hash, to_dict
from survsr.ray_utils import use_address
from survsr.stage import Stage
from survsr.provenance import append_audit, atomic_write_json, sha256_file, stage_record
from survsr.pipelines.eval_config import EvaluateConfig, identity, load_config
from survsr.pipelines.eval_plan import Plan, plan_ground_truth, plan_paper, plan_real, zssr_manifest
from survsr.pipelines.eval_tables import ROW_FIELDS, build_grids, json_safe, mark_best, summarize, write_csv

log = logging.getLogger(__name__)


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
    zssr_df = zssr_manifest(zssr_dir, plan) if zssr_dir is not None else None

    plan_paper(cfg, plan, faces_dir, zssr_df, zssr_dir, srgan, named)
    plan_ground_truth(cfg, plan, faces_dir, faces_hr, available)
    plan_real(cfg, plan, faces_dir, faces_lr, zssr_df, zssr_dir, available)

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
    result = json_safe(result)
    write_csv(out / "metrics.csv", rows)
    atomic_write_json(out / "metrics.json", result)
    grids = build_grids(plan, rows_by_key, cfg)
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
