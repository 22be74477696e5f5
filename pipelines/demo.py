"""``survsr demo``: the whole method on the bundled carphone clips, on an embedded local Ray, in minutes on CPU.

It is the pipeline job (``configs/demo.yaml``: ingest -> ZSSR -> SRGAN training -> evaluation, each stage with
its ``*_demo.yaml`` settings) followed by archive enhancement of the distorted clip with the trained
generator (``configs/enhance_demo.yaml``). Everything lands in one run directory; re-running resumes and
skips finished stages.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from survsr.console import quiet_console
from survsr.stage import Command

log = logging.getLogger("survsr.demo")


def demo_inputs() -> list[str]:
    from survsr.data import carphone_paths

    paths = carphone_paths()
    return [str(paths["pristine"]), str(paths["distorted"])]


def ingest_lines(report: dict[str, Any], out_dir: Path) -> list[str]:
    s = report["splits"]
    lines = [
        f"ingest: {report['videos_done']} videos, {report['frames']} frames, {report['faces']} face detections, "
        f"{report['tracks']} tracks, {report['crops']} crops "
        f"(train {s['train']['crops']} crops / {s['train']['tracks']} tracks, "
        f"test {s['test']['crops']} crops / {s['test']['tracks']} tracks)",
        f"  manifest: {out_dir / 'faces.parquet'}",
    ]
    for v in report.get("videos", []):
        lines.append(f"  {Path(v['source']).name}: face in {v['frames_with_faces']}/{v['frames']} frames, "
                     f"{v['tracks']} track(s), {v['crops']} crops")
    lines += [f"  failed: {f['reason']}" for f in report.get("failed", [])]
    return lines


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def summary_lines(run: Path, pipeline: dict[str, Any], enhance: dict[str, Any] | None) -> list[str]:
    lines: list[str] = []
    for name, st in pipeline.get("stages", {}).items():
        lines.append(f"[{name}] {st.get('outcome')} in {st.get('seconds', 0):.1f} s")
    ingest = _read_json(run / "ingest" / "ingest_report.json")
    if ingest:
        lines += ingest_lines(ingest, run / "ingest")
    zssr = pipeline.get("stages", {}).get("zssr", {}).get("result") or {}
    if zssr:
        lines.append(f"zssr: {zssr.get('done', '?')} synthetic HR faces, {zssr.get('failed', 0)} failed "
                     f"-> {run / 'zssr' / 'zssr.parquet'}")
    meta = _read_json(run / "train" / "train_meta.json")
    if meta:
        lines.append(f"train: generator {run / 'train' / 'generator.safetensors'}; VGG-19 mediator: "
                     f"{meta.get('mediator_status') or meta.get('mediator', {}).get('status', '?')}")
    metrics = _read_json(run / "evaluate" / "metrics.json")
    gt = (metrics.get("protocols") or {}).get("ground_truth") or {}
    if gt.get("summary"):
        lines.append("ground truth (real HR faces), PSNR-Y / SSIM-Y means:")
    for row in gt.get("summary") or []:
        psnr, ssim = row.get("psnr_y_mean"), row.get("ssim_y_mean")
        if psnr is not None and ssim is not None:
            lines.append(f"  {row.get('degradation', ''):<14} {row.get('method', ''):<8} {psnr:6.2f} dB  {ssim:.4f}"
                         f"  (n={row.get('n')})")
    if enhance:
        lines.append(f"enhance: {enhance.get('done', 0)} video(s) enhanced, {enhance.get('skipped', 0)} already done "
                     f"({enhance.get('mode')}), {enhance.get('failed', 0)} failed -> {run / 'enhance'}")
    lines.append(f"report: {run / 'evaluate' / 'index.html'}")
    return lines


def run_demo(out: str | Path, overrides: list[str] | tuple = (), enhance_overrides: list[str] | tuple = ()
             ) -> dict[str, Any]:
    """Run the demo into ``out``; returns {"pipeline": summary, "enhance": report}."""
    from survsr.pipelines.enhance import load_config as load_enhance_config
    from survsr.pipelines.enhance import run_enhance
    from survsr.pipelines.run import load_config, run_pipeline
    from survsr.data import carphone_paths
    from survsr.ray_utils import init_ray

    out = Path(out)
    cfg = load_config("demo.yaml", [f"run_dir={out}", *overrides])
    init_ray(cfg.ray)
    pipeline = run_pipeline(cfg)
    generator = out / "train" / "generator.safetensors"
    enhance = None
    if generator.is_file():
        ecfg = load_enhance_config("enhance_demo.yaml", enhance_overrides)
        log.info("enhance: the distorted clip through the trained generator -> %s", out / "enhance")
        enhance = run_enhance([carphone_paths()["distorted"]], generator, out / "enhance", ecfg)
    # Close the loop an analyst would: every output traces back to its source frame, untouched.
    from survsr.verify import exit_code, verify_paths

    log.info("verify: every output back to its source frame")
    results = verify_paths([out], pixels=True)
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    verify = {"outputs": len(results), "counts": counts, "exit_code": exit_code(results),
              "problems": [f"{r.path}: {p.status} {p.field}" for r in results for p in r.problems][:20]}
    return {"pipeline": pipeline, "enhance": enhance, "verify": verify}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override configs/demo.yaml (a pipeline config), e.g. "
                             "--set zssr.overrides=[zssr.max_iters=200]")
    parser.add_argument("--enhance-set", dest="enhance_overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override configs/enhance_demo.yaml")


def main(args: argparse.Namespace) -> int:
    t0 = time.time()
    out = Path(args.out)
    if not getattr(args, "verbose", False):
        print(f"demo: full logs in {quiet_console(out / 'logs')} (survsr -v demo prints them here)", flush=True)
    res = run_demo(out, args.overrides, args.enhance_overrides)
    print("\n".join(summary_lines(out, res["pipeline"], res["enhance"])))
    v = res["verify"]
    print(f"verify: {v['outputs']} outputs, " + ", ".join(f"{n} {k}" for k, n in sorted(v["counts"].items()))
          + f" (exit code {v['exit_code']}; re-check any time with: survsr verify {out})")
    for line in v["problems"]:
        print(f"  {line}")
    print(f"demo finished in {time.time() - t0:.1f} s -> {out}")
    enhanced = (res["enhance"] or {}).get("done", 0) + (res["enhance"] or {}).get("skipped", 0)
    ok = res["pipeline"].get("ok") and enhanced >= 1 and v["exit_code"] == 0
    return 0 if ok else 1


COMMAND = Command(name="demo", add_arguments=add_arguments, main=main)
