"""One video, in-process: decode, detect (in chunks of frames), track, filter, pick the best crops per track
and write them with their provenance. The Ray Data layer runs the same functions."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Iterable, Iterator

from survsr import telemetry
from survsr.provenance import PROVENANCE_KEY, provenance, sha256_file, stage_record, write_png
from survsr.video.crops import CropConfig, crop, keep_crop, make_lr, sharpness
from survsr.video.decode import Frame, VideoError, is_url, iter_frames
from survsr.video.detect import Detector, detect_sequence, make_detector
from survsr.video.motion import MotionConfig, MotionMap
from survsr.video.track import (FilterConfig, SelectConfig, TrackerConfig, filter_track, frontalness, link_tracks,
                                quality, select_best)

from survsr.pipelines.ingest_config import DecodeConfig, IngestConfig, output_hash
from survsr.pipelines.ingest_store import commit_video, staging_dir

log = logging.getLogger("survsr.ingest")

def video_identity(source: str) -> tuple[str, str]:
    """(sha256, video_id) of a file; URLs are identified by their text (the stream has no fixed content)."""
    sha = hashlib.sha256(f"url:{source}".encode()).hexdigest() if is_url(source) else sha256_file(source)
    return sha, sha[:12]


def iter_chunks(frames: Iterable[Frame], size: int) -> Iterator[list[Frame]]:
    """Consecutive frames in lists of ``size`` (a change of frame size, as live streams may do, cuts too)."""
    chunk: list[Frame] = []
    try:
        for f in frames:
            if chunk and (len(chunk) >= size or chunk[-1].image.shape != f.image.shape):
                yield chunk
                chunk = []
            chunk.append(f)
    except VideoError:
        if chunk:  # frames decoded before a mid-file error are kept: hand them out, then re-raise
            yield chunk
        raise
    if chunk:
        yield chunk


def chunk_detections(chunk: list[Frame], detector: Detector, crop_cfg: CropConfig) -> list[dict[str, Any]]:
    """Detections of consecutive frames as rows with the native crop attached (frames are dropped after)."""
    rows = []
    for f, dets in zip(chunk, detect_sequence(detector, [f.image for f in chunk])):
        for k, det in enumerate(dets):
            x, y, w, h = det.box
            if not keep_crop(w, h, crop_cfg):
                continue
            native = crop(f.image, det.box)
            rows.append({
                "frame_index": int(f.index), "time_s": float(f.time_s), "k": k,
                "box": (int(x), int(y), int(w), int(h)), "raw": tuple(int(v) for v in (det.raw_box or det.box)),
                "score": float(det.score), "detector": det.detector, "crop": native, "sharpness": sharpness(native),
                "landmarks": list(det.landmarks) if det.landmarks else None,
            })
    return rows


def select_video(dets: list[dict[str, Any]], tracker_cfg: TrackerConfig, select_cfg: SelectConfig,
                 filters: FilterConfig | None = None, motion: MotionMap | None = None,
                 motion_cfg: MotionConfig | None = None) -> tuple[list[dict], dict[str, Any]]:
    """Track one video's detections, filter the tracks, keep the best crops of each kept track.

    Returns (chosen detections with ``track_no`` and ``quality``, filter statistics for the report).
    Motion gating drops single detections (on a region that never moved, below ``keep_score``); a track
    left without detections counts as dropped by ``motion``. Then the track filters (``filter_track``).
    """
    from dataclasses import replace

    filters = filters or FilterConfig()
    motion_cfg = motion_cfg or MotionConfig()
    gate = motion is not None and motion_cfg.enabled
    for d in dets:
        m = motion.box_motion(d["raw"]) if gate else None
        d["motion"] = -1.0 if m is None else m
    numbers = link_tracks([(d["frame_index"], d["time_s"], d["raw"]) for d in dets],
                          replace(tracker_cfg, min_detections=1))
    by_track: dict[int, list[int]] = {}
    for i, n in enumerate(numbers):
        if n >= 0:
            by_track.setdefault(n, []).append(i)
    stats: dict[str, Any] = {"tracks_found": len(by_track), "detections_still": 0,
                             "dropped": {k: [] for k in ("motion", "min_length", "min_mean_score", "steady_size")}}
    kept: list[tuple[int, list[int]]] = []
    for n, idx in sorted(by_track.items()):
        idx = sorted(idx, key=lambda i: dets[i]["frame_index"])
        first = dets[idx[0]]
        where = f"track from frame {first['frame_index']} at {list(first['raw'])}"
        if gate:
            moving = [i for i in idx if not (0 <= dets[i]["motion"] < motion_cfg.min_box_fraction
                                             and dets[i]["score"] < motion_cfg.keep_score)]
            stats["detections_still"] += len(idx) - len(moving)
            if not moving:
                stats["dropped"]["motion"].append(
                    f"{where}: all {len(idx)} detections on a still region (moving share < "
                    f"{motion_cfg.min_box_fraction}, score < {motion_cfg.keep_score})")
                continue
            idx = moving
        failed = filter_track([dets[i]["frame_index"] for i in idx], [dets[i]["score"] for i in idx],
                              [max(dets[i]["raw"][2:]) for i in idx], tracker_cfg.min_detections, filters)
        if failed:
            stats["dropped"][failed[0]].append(f"{where}: {failed[1]}")
            continue
        kept.append((n, idx))
    chosen = []
    for t, (n, idx) in enumerate(kept):
        items = [(dets[i]["frame_index"], dets[i]["sharpness"], min(dets[i]["box"][2:]),
                  frontalness(dets[i].get("landmarks"))) for i in idx]
        for j in select_best(items, select_cfg):
            q = quality(items[j][1], items[j][2], select_cfg, items[j][3])
            chosen.append({**dets[idx[j]], "track_no": t, "quality": q})
    chosen.sort(key=lambda d: (d["frame_index"], d["k"]))
    stats["tracks_dropped"] = {k: len(v) for k, v in stats["dropped"].items()}
    stats["frames_in_tracks"] = len({dets[i]["frame_index"] for _, idx in kept for i in idx})
    return chosen, stats


def crop_id(video_id: str, frame_index: int, k: int) -> str:
    return f"{video_id}-f{frame_index:06d}-{k}"


def write_crop(row: dict[str, Any], out_dir: Path, source: str, source_sha: str, cfg_hash: str,
               lr_size: int, stage: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the native and LR PNGs of one selected detection; return its manifest row (no ``split``).

    ``stage``: the run's ``stage_record`` (made once by the driver so every crop of a run carries the
    same code version, wherever it was written)."""
    stage = stage or stage_record("ingest", cfg_hash)
    vid = source_sha[:12]
    cid = crop_id(vid, row["frame_index"], row["k"])
    native = row["crop"]
    lr, method = make_lr(native, lr_size)
    x, y, w, h = row["box"]
    src = {"path": source, "sha256": source_sha, "frame_index": row["frame_index"], "time_s": row["time_s"],
           "box": [x, y, w, h]}
    parents = [{"path": source, "sha256": source_sha}]
    common = {"detector": row["detector"], "score": row["score"], "track_id": f"{vid}-t{row['track_no']:03d}",
              "landmarks": row.get("landmarks") or None}
    native_rel = f"crops/{vid}/native/{cid}.png"
    lr_rel = f"crops/{vid}/lr/{cid}.png"
    # Written into the video's hidden staging directory; commit_video renames it to crops/<vid> together
    # with the part and marker, so an interrupted job never leaves visible crops that no manifest lists.
    staging = staging_dir(out_dir, vid)
    native_sha = write_png(staging / "native" / f"{cid}.png", native, text={PROVENANCE_KEY: provenance(
        "crop_native", source=src, parents=parents,
        stages=[{**stage, **common}], model_output=False)})
    lr_sha = write_png(staging / "lr" / f"{cid}.png", lr, text={PROVENANCE_KEY: provenance(
        "crop_lr", source=src, parents=parents,
        stages=[{**stage, "resize_method": method, "native_size": [w, h], **common}],
        model_output=False)})
    return {
        "crop_id": cid, "source_path": source, "source_sha256": source_sha, "frame_index": int(row["frame_index"]),
        "time_s": float(row["time_s"]), "box_x": int(x), "box_y": int(y), "box_w": int(w), "box_h": int(h),
        "detector": row["detector"], "score": float(row["score"]), "track_id": common["track_id"],
        "native_path": native_rel, "native_w": int(native.shape[1]), "native_h": int(native.shape[0]),
        "lr_path": lr_rel, "lr_size": int(lr_size), "resize_method": method, "sharpness": float(row["sharpness"]),
        "sha256": lr_sha, "native_sha256": native_sha, "config_hash": cfg_hash,
        "landmarks": json.dumps(row["landmarks"]) if row.get("landmarks") else "",
        "quality": float(row.get("quality", 0.0)), "motion": float(row.get("motion", -1.0)),
    }


def summarize(dets: list[dict], chosen: list[dict], n_frames: int, error: str, stats: dict | None = None,
              warnings: list[str] | None = None) -> dict[str, Any]:
    """Per-video numbers for the report: what was detected, what the filters dropped and why."""
    stats = stats or {}
    return {
        "frames": int(n_frames),
        "frames_with_faces": len({d["frame_index"] for d in dets}),  # any detection
        "frames_in_tracks": int(stats.get("frames_in_tracks", 0)),  # a detection of a kept track
        "faces": len(dets),  # detections, before any filter
        "detections_still": int(stats.get("detections_still", 0)),  # dropped by motion gating
        "tracks_found": int(stats.get("tracks_found", 0)),
        "tracks": len({c["track_no"] for c in chosen}),  # kept
        "tracks_dropped": stats.get("tracks_dropped", {}),  # per filter
        "dropped_why": stats.get("dropped", {}),  # per filter: one line per dropped track
        "crops": len(chosen),
        "error": error,
        "warnings": list(warnings or []),
    }


def decode_kwargs(cfg: DecodeConfig) -> dict[str, Any]:
    return {"stride": cfg.stride, "fps": cfg.fps, "max_frames": cfg.max_frames, "start_s": cfg.start_s,
            "end_s": cfg.end_s, "timeout_s": cfg.timeout_s}


class Counted:
    """Wrap a frame iterator, counting what came through (so a mid-file error can report it)."""

    def __init__(self, it: Iterable[Frame]):
        self.it, self.n = iter(it), 0

    def __iter__(self):
        for f in self.it:
            self.n += 1
            yield f


def process_video(source: str, out_dir: str | Path, cfg: IngestConfig, *, detector: Detector | None = None,
                  source_sha: str | None = None) -> dict[str, Any]:
    """Plain, in-process ingest of one video: writes its crops, part and done marker; returns its summary.

    A video that fails mid-way keeps the frames decoded before the error (summary ``error`` says why).
    Raises ``VideoError`` when not a single frame could be decoded.
    """
    out_dir = Path(out_dir)
    detector = detector or make_detector(cfg.detector)
    sha = source_sha or video_identity(source)[0]
    dets: list[dict] = []
    warnings: list[str] = []
    frames = Counted(iter_frames(source, warnings=warnings, **decode_kwargs(cfg.decode)))
    motion = MotionMap(cfg.motion) if cfg.motion.enabled else None
    error = ""
    chunks = iter_chunks(frames, cfg.decode.chunk_frames)
    while True:
        try:
            chunk = next(chunks)
        except StopIteration:
            break
        except VideoError as exc:
            if frames.n == 0:
                raise
            error = str(exc)
            break
        found = chunk_detections(chunk, detector, cfg.crops)
        if motion is not None:
            for f in chunk:
                motion.update(f.image)
        dets.extend(found)
        telemetry.frames_decoded(len(chunk))
        telemetry.faces_detected(len(found), detector=cfg.detector.kind)
        if frames.n // 1000 != (frames.n - len(chunk)) // 1000:  # long videos: a sign of life every 1000 frames
            log.info("%s: %d frames, %d faces so far", source, frames.n, len(dets))
    n = frames.n
    chosen, stats = select_video(dets, cfg.tracker, cfg.select, cfg.filters, motion, cfg.motion)
    h = output_hash(cfg)
    stage = stage_record("ingest", h)
    rows = [write_crop(c, out_dir, source, sha, h, cfg.crops.lr_size, stage) for c in chosen]
    summary = {"video_id": sha[:12], "source": source, "sha256": sha,
               **summarize(dets, chosen, n, error, stats, warnings)}
    commit_video(out_dir, summary, rows, h)
    return summary
