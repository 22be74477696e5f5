"""Archive enhancement: every video of a CCTV archive through the generator, on Ray Data.

``survsr enhance INPUT... --out DIR --mode frame|faces|side-by-side``

* ``frame``: the whole frame x2; ``side-by-side``: original (bicubic) | enhanced, for review;
  ``faces``: detected faces cropped, enhanced x2 and saved as PNGs with provenance.
* Output videos keep the source's timestamps (frame for frame) and frame rate; audio packets are copied
  through without re-encoding.
* Each output is written atomically and a sidecar JSON is written last; it is the "done" marker, so a
  re-run skips finished videos and redoes an interrupted one from the start (never a half file).
* A corrupt or unreadable input is reported (``DIR/enhance_report.json``) and the batch goes on.
* Everything the model produced says so: ``model_output: true`` in the provenance and, by default, a
  visible AI-ENHANCED label burnt into the pixels (``label.enabled``).

``run_enhance`` is the plain entry point (Ray Data when ``pool.enabled``, a plain loop otherwise); the
per-video work is ``survsr.enhance.worker.enhance_video``, shared with the Serve video jobs.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Sequence

from survsr.audit import audited
from survsr.config import from_dict, load, to_dict
from survsr.enhance.worker import (MODES, EnhanceConfig, ProgressFn, enhance_video, make_detector, output_hash,
                                   sidecar_path)
from survsr.provenance import atomic_write_json
from survsr.ray_utils import use_address
from survsr.stage import Stage, batch_exit_code

log = logging.getLogger(__name__)

VIDEO_EXTS = {".mp4", ".mkv", ".avi", ".mov", ".ts", ".m4v", ".webm", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp"}


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> EnhanceConfig:
    return load(EnhanceConfig, path, list(overrides), default_name="enhance.yaml")


# ---------------------------------------------------------------- archive driver

def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given; directories expanded to the video files inside them (recursively, sorted)."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in VIDEO_EXTS))
        else:
            out.append(p)  # missing files are reported by the worker, not dropped silently
    seen: set[str] = set()
    uniq = []
    for p in out:
        key = str(p.resolve())
        if key not in seen:
            seen.add(key)
            uniq.append(p)
    return uniq


def _clean_stale_temps(out_dir: Path) -> int:
    """Temp files left by a killed run (atomic_path names them .<name>.<random>.tmp)."""
    n = 0
    for p in out_dir.rglob(".*.tmp"):
        p.unlink(missing_ok=True)
        n += 1
    return n


class _VideoActor:
    """Ray Data actor: one generator per actor, whole videos per row."""

    def __init__(self, generator_path: str, out_dir: str, cfg_dict: dict):
        from survsr.enhance.runner import Enhancer

        self.cfg = from_dict(EnhanceConfig, cfg_dict)
        self.out_dir = Path(out_dir)
        self.enhancer = Enhancer(generator_path, self.cfg.engine)
        self.detector = make_detector(self.cfg.faces) if self.cfg.mode == "faces" else None

    def __call__(self, row: dict) -> dict:
        last = [time.time()]

        def progress(path: str, frames: int) -> None:
            if time.time() - last[0] > 5:
                last[0] = time.time()
                log.info("%s: %d frames", path, frames)

        rep = enhance_video(row["path"], self.out_dir, self.cfg, self.enhancer, model_sha256=self.enhancer.model_sha256,
                            device=self.enhancer.device_name, detector=self.detector, progress=progress)
        return {"path": row["path"], "report": json.dumps(rep, default=str)}


def run_enhance(inputs: Sequence[str | Path], generator_path: str | Path, out_dir: str | Path,
                cfg: EnhanceConfig | None = None, *, progress: ProgressFn | None = None) -> dict:
    """Enhance every video in ``inputs`` into ``out_dir``; returns (and writes) the report.

    Finished videos (sidecar present, same config and model) are skipped, so re-running after an
    interruption resumes. ``progress(path, frames_done)`` is called after each batch (plain loop only).
    """
    from survsr.provenance import check_output_dir, sha256_file as _sha

    cfg = cfg or EnhanceConfig()
    out_dir = check_output_dir(out_dir, [*inputs, *expand_inputs(inputs), generator_path], "enhance")
    out_dir.mkdir(parents=True, exist_ok=True)
    generator_path = Path(generator_path).resolve()
    if not generator_path.is_file():
        raise FileNotFoundError(f"{generator_path}: generator export not found")
    stale = _clean_stale_temps(out_dir)
    if stale:
        log.info("removed %d temp files left by an interrupted run", stale)
    paths = expand_inputs(inputs)
    t0 = time.time()
    entries: list[dict] = []
    model_sha = _sha(generator_path)
    arguments = {"inputs": [str(p) for p in inputs], "generator": str(generator_path), "out": str(out_dir),
                 "config": to_dict(cfg)}
    # the audit line is written however the job ends (done, error, interrupted), with input/output hashes
    with audited(out_dir, "enhance", arguments, output_hash(cfg), inputs=[*paths, generator_path]) as job:
        if cfg.pool.enabled:
            entries = _run_ray(paths, generator_path, out_dir, cfg)
        else:
            from survsr.enhance.runner import Enhancer

            enhancer = Enhancer(generator_path, cfg.engine)
            detector = make_detector(cfg.faces) if cfg.mode == "faces" else None
            for i, p in enumerate(paths):
                rep = enhance_video(p, out_dir, cfg, enhancer, model_sha256=enhancer.model_sha256,
                                    device=enhancer.device_name, detector=detector, progress=progress)
                entries.append(rep)
                log.info("[%d/%d] %s: %s %s", i + 1, len(paths), p, rep["status"], rep.get("reason", ""))
        entries.sort(key=lambda e: e["input"])
        counts = {s: sum(e["status"] == s for e in entries) for s in ("done", "partial", "skipped", "failed")}
        report = {"inputs": len(paths), **counts, "mode": cfg.mode, "generator": str(generator_path),
                  "model_sha256": model_sha, "config_hash": output_hash(cfg), "config": to_dict(cfg),
                  "seconds": round(time.time() - t0, 3), "videos": entries}
        atomic_write_json(out_dir / "enhance_report.json", report)
        for e in entries:
            if e.get("output"):
                out = out_dir / e["output"]  # a video file, or the directory of face crops
                side = sidecar_path(out_dir, out.stem if out.suffix == ".mp4" else out.name)
                job.add_output(out, side)
        job.add_output(out_dir / "enhance_report.json")
        job.extra.update(counts)
        if counts["failed"] or counts["partial"]:
            job.outcome = f"ok with {counts['failed']} failed, {counts['partial']} partial"
    return report


def _run_ray(paths: list[Path], generator_path: Path, out_dir: Path, cfg: EnhanceConfig) -> list[dict]:
    from survsr.ray_utils import init_ray

    ray = init_ray()
    if not paths:
        return []
    ds = ray.data.from_items([{"path": str(p)} for p in paths])
    ds = ds.map(_VideoActor, fn_constructor_args=(str(generator_path), str(out_dir.resolve()), to_dict(cfg)),
                compute=ray.data.ActorPoolStrategy(size=max(1, min(cfg.pool.actors, len(paths)))),
                num_cpus=cfg.pool.num_cpus, num_gpus=cfg.pool.num_gpus or None)
    entries = []
    for i, row in enumerate(ds.iter_rows()):
        rep = json.loads(row["report"])
        entries.append(rep)
        log.info("[%d/%d] %s: %s %s", i + 1, len(paths), row["path"], rep["status"], rep.get("reason", ""))
    return entries


# ---------------------------------------------------------------- CLI

def add_arguments(parser: argparse.ArgumentParser) -> None:
    from survsr.config import add_config_args

    parser.add_argument("inputs", nargs="+", help="video files or directories (plus optional key=value overrides)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--generator", required=True, help="generator export (.safetensors)")
    parser.add_argument("--mode", choices=MODES, default=None, help="overrides the config's mode")
    parser.add_argument("--no-label", action="store_true", help="do not burn the AI-ENHANCED label in")
    parser.add_argument("--no-ray", action="store_true", help="plain loop in this process")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS or local)")
    add_config_args(parser, "enhance.yaml")


def main(args: argparse.Namespace) -> int:
    from survsr.config import split_overrides

    split_overrides(args, "inputs")
    overrides = list(args.overrides)
    if args.mode:
        overrides.append(f"mode={args.mode}")
    if args.no_label:
        overrides.append("label.enabled=false")
    if args.no_ray:
        overrides.append("pool.enabled=false")
    cfg = load_config(args.config, overrides)
    use_address(args.address)
    if not args.inputs:
        print("survsr enhance: no inputs given")
        return 2
    report = run_enhance(args.inputs, args.generator, args.out, cfg)
    print(json.dumps({k: report[k] for k in ("inputs", "done", "partial", "skipped", "failed", "seconds")}))
    for e in report["videos"]:
        if e["status"] in ("failed", "partial"):
            print(f"  {e['status']}: {e.get('reason')}")
    # a video stopped by a corrupt tail is "partial": its output exists but is short, so it counts as a failure
    return batch_exit_code(report["done"] + report["skipped"] + report["partial"],
                           report["failed"] + report["partial"])


STAGE = Stage(name="enhance", add_arguments=add_arguments, main=main, load_config=load_config,
              identity=output_hash, run=run_enhance)
