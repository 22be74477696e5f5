"""Ingest: videos -> face detections -> tracks -> best crops per track -> ``faces.parquet`` + PNGs.

Two layers over the same functions:
* plain (no Ray): ``process_video`` decodes, detects, tracks, selects and writes one video in-process;
* Ray Data (``run_ingest`` default): one block per video so videos decode in parallel (a generator
  ``map_batches`` streams each video out as rows of ``decode.chunk_frames`` consecutive frames), detection
  runs in ``map_batches`` on an actor pool (each actor loads its cascades once and detects a chunk at a
  time: full scans every ``detector.full_scan_every`` frames, region scans in between), a
  ``groupby(video_id).map_groups`` step tracks and selects per video (only crops travel, frames are
  dropped after detection), and crops are written by a parallel ``map_batches``. Videos go through in waves (``pool.wave_videos``) so that finished videos are
  committed (per-video part + done marker, both atomic) while the rest of a long batch is still running.

Output layout of ``DIR`` (paths in the manifest are relative to ``DIR``)::

    faces.parquet            one row per crop (columns: MANIFEST_COLUMNS)
    ingest_report.json       videos done, frames, faces, tracks, splits, failed inputs with reasons
    audit.jsonl              one line per run
    crops/<video_id>/native/<crop_id>.png   lossless crop at native resolution
    crops/<video_id>/lr/<crop_id>.png       32x32 LR image
    parts/<video_id>.parquet + parts/<video_id>.done.json   per-video results; the marker makes re-runs skip it

``video_id`` is the first 12 hex digits of the video file's SHA-256, so ids are stable across machines.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterable

from survsr.config import to_dict
from survsr.ray_utils import use_address
from survsr.stage import EXIT_FAILED, EXIT_PARTIAL, Stage
from survsr.provenance import append_audit, atomic_write_json, check_output_dir, sha256_file
from survsr.video.decode import VideoError, expand_inputs, is_url
from survsr.video.detect import make_detector

from survsr.pipelines.ingest_config import IngestConfig, MANIFEST_NAME, REPORT_NAME, load_config, output_hash
from survsr.pipelines.ingest_store import assemble, clean_uncommitted, commit_video, done_marker, marker_path
from survsr.pipelines.ingest_video import process_video, video_identity
from survsr.pipelines.ingest_ray import ray_wave

log = logging.getLogger("survsr.ingest")


# ------------------------------------------------------------------------------------------- the stage
def run_ingest(inputs: Iterable[str | os.PathLike], out_dir: str | Path, cfg: IngestConfig | None = None,
               *, use_ray: bool | None = None) -> dict[str, Any]:
    """Ingest ``inputs`` (files, directories, globs, URLs) into ``out_dir``; returns the report dict.

    Videos already done in ``out_dir`` with the same settings are skipped. Bad inputs are reported (by
    name, with the reason) and skipped. ``report["ok"]`` is False when none of the inputs could be processed.
    """
    cfg = cfg or IngestConfig()
    use_ray = cfg.pool.enabled if use_ray is None else use_ray
    inputs = list(inputs)
    sources = expand_inputs(inputs)
    out_dir = check_output_dir(out_dir, [*inputs, *sources], "ingest")
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    h = output_hash(cfg)
    stale = clean_uncommitted(out_dir)
    if stale:
        log.info("removed %d uncommitted crop directories left by an interrupted run", stale)
    try:
        return _ingest(sources, out_dir, cfg, use_ray, h, t0)
    except BaseException as exc:  # interrupted (SIGINT) or failed: leave no orphans, say so in the audit log
        clean_uncommitted(out_dir)
        outcome = ("interrupted" if isinstance(exc, KeyboardInterrupt)
                   else f"error: {type(exc).__name__}: {str(exc).strip()[:500]}")
        append_audit(out_dir, {"stage": "ingest", "command": "ingest", "config_hash": h, "inputs": sources,
                               "arguments": {"out_dir": str(out_dir), "use_ray": bool(use_ray)},
                               "outputs": {}, "outcome": outcome,
                               "seconds": round(time.time() - t0, 3)})
        raise


def _ingest(sources: list[str], out_dir: Path, cfg: IngestConfig, use_ray: bool, h: str, t0: float) -> dict:
    failed: list[dict] = []
    todo: list[dict] = []
    skipped: list[str] = []
    seen: dict[str, str] = {}
    ok_ids: set[str] = set()
    for src in sources:
        if not is_url(src):
            p = Path(src)
            reason = ("no such file or directory" if not p.exists() else
                      "is a directory with no video files" if p.is_dir() else
                      "empty file (0 bytes)" if p.stat().st_size == 0 else None)
            if reason:
                failed.append({"input": src, "reason": f"{src}: {reason}", "frames_kept": 0})
                log.warning("skipping %s: %s", src, reason)
                continue
        sha, vid = video_identity(src)
        if vid in seen:
            log.warning("skipping %s: same content as %s", src, seen[vid])
            skipped.append(src)
            continue
        seen[vid] = src
        if done_marker(out_dir, vid, h):
            log.info("%s: already done in %s, skipping", src, out_dir)
            skipped.append(src)
            ok_ids.add(vid)
            continue
        if marker_path(out_dir, vid).exists():  # done before with other settings: its old crops would linger
            log.info("%s: done before with other settings, redoing it", src)
            marker_path(out_dir, vid).unlink()
            shutil.rmtree(out_dir / "crops" / vid, ignore_errors=True)
        todo.append({"video_id": vid, "source": src, "source_sha256": sha})

    processed: list[str] = []

    def _record(v: dict, summary: dict, rows: list[dict]) -> None:
        if summary.get("frames", 0) == 0 and summary.get("error"):
            failed.append({"input": v["source"], "reason": summary.get("error") or f"{v['source']}: no frames",
                           "frames_kept": 0})
            return
        if summary.get("error"):
            failed.append({"input": v["source"], "reason": summary["error"], "frames_kept": summary["frames"]})
        commit_video(out_dir, {"video_id": v["video_id"], "source": v["source"], "sha256": v["source_sha256"],
                               **summary}, rows, h)
        processed.append(v["source"])
        ok_ids.add(v["video_id"])
        log.info("%s%s", video_line({"source": v["source"], **summary}).strip(),
                 f" (error: {summary['error']})" if summary.get("error") else "")

    if todo and use_ray:
        from survsr.ray_utils import init_ray

        init_ray()
        waves = [todo[i:i + cfg.pool.wave_videos] for i in range(0, len(todo), max(1, cfg.pool.wave_videos))]
        for w, wave in enumerate(waves, 1):
            log.info("ingest wave %d/%d: %d videos on Ray Data", w, len(waves), len(wave))
            results = ray_wave(wave, out_dir, cfg)
            for v in wave:
                summary, rows = results[v["video_id"]]
                _record(v, summary or {"frames": 0, "error": f"{v['source']}: no result from the pipeline"}, rows)
    elif todo:
        detector = make_detector(cfg.detector)
        for i, v in enumerate(todo, 1):
            log.info("ingest %d/%d: %s", i, len(todo), v["source"])
            try:
                summary = process_video(v["source"], out_dir, cfg, detector=detector, source_sha=v["source_sha256"])
            except VideoError as exc:
                failed.append({"input": v["source"], "reason": str(exc), "frames_kept": 0})
                continue
            if summary.get("error"):
                failed.append({"input": v["source"], "reason": summary["error"], "frames_kept": summary["frames"]})
            processed.append(v["source"])
            ok_ids.add(v["video_id"])

    df, markers, splits = assemble(out_dir, cfg)
    report = build_report(df, markers, splits, cfg, failed, processed, skipped, sources, time.time() - t0)
    report["ok"] = bool(ok_ids)
    atomic_write_json(out_dir / REPORT_NAME, report)
    outcome = ("ok" if not failed else f"partial: {len(failed)} input(s) failed") if report["ok"] else "failed"
    append_audit(out_dir, {"stage": "ingest", "command": "ingest", "config_hash": h, "inputs": sources,
                           "arguments": {"out_dir": str(out_dir), "use_ray": bool(use_ray)},
                           "outputs": {n: sha256_file(out_dir / n) for n in (MANIFEST_NAME, REPORT_NAME)
                                       if (out_dir / n).is_file()},
                           "outcome": outcome, "processed": processed,
                           "skipped_done": skipped, "failed": failed, "crops": int(len(df)),
                           "seconds": round(report["this_run"]["seconds"], 3), "ray": bool(use_ray and todo)})
    return report


def video_line(v: dict) -> str:
    """One console line per video: frames, detections, tracks kept and what each filter dropped."""
    dropped = ", ".join(f"{k} {n}" for k, n in (v.get("tracks_dropped") or {}).items() if n) or "none"
    line = (f"  {Path(str(v.get('source'))).name}: {v.get('frames')} frames, {v.get('faces')} detections "
            f"({v.get('detections_still') or 0} on still regions), {v.get('tracks_found') or 0} tracks found, "
            f"{v.get('tracks')} kept, dropped: {dropped}; {v.get('crops')} crops")
    for w in v.get("warnings") or []:
        line += f"\n    warning: {w}"
    return line


def build_report(df, markers, splits, cfg, failed, processed, skipped, sources, seconds) -> dict[str, Any]:
    keys = ("frames", "frames_with_faces", "frames_in_tracks", "faces", "detections_still", "tracks_found", "tracks", "tracks_dropped",
            "dropped_why", "crops")
    videos = [{k: m.get(k) for k in ("video_id", "source", "sha256", *keys, "error", "warnings")} for m in markers]
    split_counts = {}
    for s in ("train", "test"):
        sub = df[df["split"] == s] if len(df) else df
        split_counts[s] = {"tracks": int(sum(1 for v in splits.values() if v == s)), "crops": int(len(sub))}
    return {
        "config_hash": output_hash(cfg),
        "config": to_dict(cfg),
        "videos_done": len(markers),
        "frames": int(sum(m.get("frames", 0) for m in markers)),
        "faces": int(sum(m.get("faces", 0) for m in markers)),
        "tracks": int(sum(m.get("tracks", 0) for m in markers)),
        "crops": int(len(df)),
        "splits": split_counts,
        "videos": videos,
        "failed": failed,
        "this_run": {"inputs": sources, "processed": processed, "skipped_done": skipped, "seconds": seconds},
    }


# ------------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from survsr.config import add_config_args

    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="video files, directories, globs or rtsp/http URLs (and key=value overrides)")
    parser.add_argument("--out", required=True, help="output directory (re-running on it skips done videos)")
    parser.add_argument("--no-ray", action="store_true", help="plain in-process pipeline (same outputs)")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS or local)")
    add_config_args(parser, "ingest.yaml")


def main(args: argparse.Namespace) -> int:
    import sys

    from survsr.config import split_overrides

    split_overrides(args, "inputs")
    if not args.inputs:
        print("survsr ingest: no INPUT given (video files, directories, globs or URLs)", file=sys.stderr)
        return 2
    cfg = load_config(args.config, args.overrides)
    use_address(args.address)
    report = run_ingest(args.inputs, args.out, cfg, use_ray=False if args.no_ray else None)
    print(f"ingest: {report['videos_done']} videos done, {report['frames']} frames, {report['faces']} faces, "
          f"{report['tracks']} tracks, {report['crops']} crops "
          f"(train {report['splits']['train']['crops']}, test {report['splits']['test']['crops']}) -> "
          f"{Path(args.out) / MANIFEST_NAME}")
    for v in report["videos"]:
        print(video_line(v))
    for f in report["failed"]:
        print(f"  failed: {f['reason']}" + (f" (kept {f['frames_kept']} frames)" if f["frames_kept"] else ""),
              file=sys.stderr)
    if not report["ok"]:
        return EXIT_FAILED
    return EXIT_PARTIAL if report["failed"] else 0  # partial: some inputs failed or were cut short


STAGE = Stage(name="ingest", add_arguments=add_arguments, main=main, load_config=load_config, identity=output_hash,
              run=run_ingest)


if __name__ == "__main__":  # `ray job submit -- python -m survsr.pipelines.ingest INPUT... --out DIR`
    import sys

    from survsr.stage import run_command

    sys.exit(run_command(STAGE, sys.argv[1:]))
