"""``survsr demo``: the end-to-end job on the bundled carphone clips, on an embedded local Ray.

Stage 1 (this module's part): ingest the pristine and the distorted carphone clip into ``OUT/ingest``.
Later stages are chained by calling their ``run_*`` functions on the previous stage's output directory.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from pipelines.ingest import IngestConfig, load_config, run_ingest


def demo_inputs() -> list[str]:
    from survsr.data import carphone_paths

    paths = carphone_paths()
    return [str(paths["pristine"]), str(paths["distorted"])]


def run_demo_ingest(out_dir: str | Path, cfg: IngestConfig | None = None) -> dict[str, Any]:
    """Ingest both carphone clips into ``out_dir`` (skips what is already done there)."""
    cfg = cfg or load_config("ingest_demo.yaml")
    return run_ingest(demo_inputs(), out_dir, cfg)


def summary_lines(report: dict[str, Any], out_dir: Path) -> list[str]:
    s = report["splits"]
    lines = [
        f"ingest: {report['videos_done']} videos, {report['frames']} frames, {report['faces']} face detections, "
        f"{report['tracks']} tracks, {report['crops']} crops "
        f"(train {s['train']['crops']} crops / {s['train']['tracks']} tracks, "
        f"test {s['test']['crops']} crops / {s['test']['tracks']} tracks)",
        f"  manifest: {out_dir / 'faces.parquet'}  report: {out_dir / 'ingest_report.json'}",
    ]
    for v in report["videos"]:
        lines.append(f"  {Path(v['source']).name}: face in {v['frames_with_faces']}/{v['frames']} frames, "
                     f"{v['tracks']} track(s), {v['crops']} crops")
    lines += [f"  failed: {f['reason']}" for f in report["failed"]]
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from survsr.cli import add_config_args

    parser.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    add_config_args(parser, "ingest_demo.yaml")


def main(args: argparse.Namespace) -> int:
    out = Path(args.out)
    cfg = load_config(args.config or "ingest_demo.yaml", args.overrides)
    t0 = time.time()
    report = run_demo_ingest(out / "ingest", cfg)
    print("\n".join(summary_lines(report, out / "ingest")))
    print(f"demo finished in {time.time() - t0:.1f} s -> {out}")
    return 0 if report["ok"] and report["crops"] else 1
