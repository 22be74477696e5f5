"""Ingest: videos -> face detections -> tracks -> best crops per track -> ``faces.parquet`` + PNGs.

Two layers over the same functions:
* plain (no Ray): ``process_video`` decodes, detects, tracks, selects and writes one video in-process;
* Ray Data (``run_ingest`` default): one block per video so videos decode in parallel (a generator
  ``map_batches`` streams each video out as rows of ``decode.chunk_frames`` consecutive frames), detection
  runs in ``map_batches`` on an actor pool (each actor loads its cascades once and detects a chunk at a
  time: full scans every ``detector.full_scan_every`` frames, region scans in between), a
  ``groupby(video_id).map_groups`` step tracks and selects per video (only crops travel, frames are
  dropped after detection), and crops are written by a parallel ``map_batches``. Videos go through in waves (``ray.wave_videos``) so that finished videos are
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
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from survsr import telemetry
from survsr.config import config_hash, from_dict, load, to_dict
from survsr.ray_utils import use_address
from survsr.stage import EXIT_FAILED, EXIT_PARTIAL, Stage
from survsr.provenance import (
    PROVENANCE_KEY, append_audit, atomic_write_json, check_output_dir, provenance, sha256_file, stage_record, write_parquet_atomic,
    write_png,
)
from survsr.video.crops import CropConfig, crop, keep_crop, make_lr, sharpness
from survsr.video.decode import Frame, VideoError, expand_inputs, is_url, iter_frames
from survsr.video.detect import Detector, DetectorConfig, detect_sequence, make_detector
from survsr.video.motion import MotionConfig, MotionMap
from survsr.video.track import (
    FilterConfig, SelectConfig, TrackerConfig, filter_track, frontalness, link_tracks, quality, select_best,
)

log = logging.getLogger("survsr.ingest")

MANIFEST_COLUMNS = [
    "crop_id", "source_path", "source_sha256", "frame_index", "time_s", "box_x", "box_y", "box_w", "box_h",
    "detector", "score", "track_id", "split", "native_path", "native_w", "native_h", "lr_path", "lr_size",
    "resize_method", "sharpness", "sha256", "native_sha256", "config_hash", "role",
    "landmarks",  # JSON list x0, y0, ..., x4, y4 (eyes, nose, mouth corners) in source px; "" when none
    "quality",  # face-quality score that ranked the crop within its track (track.quality)
    "motion",  # share of the box that ever moved in the video (motion gating); -1 = not measured
]
_ASSIGNED = ("split", "role")  # set in assemble() over all videos, not per video
REPORT_NAME = "ingest_report.json"
MANIFEST_NAME = "faces.parquet"


# ----------------------------------------------------------------------------------------------- config
@dataclass
class DecodeConfig:
    stride: int = 1  # keep every n-th decoded frame
    fps: float | None = None  # or: at most this many frames per second of video time
    max_frames: int | None = None  # per video (needed for live streams, which never end)
    start_s: float | None = None  # time window [start_s, end_s) in seconds of video time
    end_s: float | None = None
    timeout_s: float = 10.0  # open/read timeout for network streams
    chunk_frames: int = 16  # frames detected together (one Ray block); the detector's full-scan cycle restarts

    def validate(self) -> None:
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {self.max_frames}")
        if self.chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {self.chunk_frames}")
        if self.start_s is not None and self.end_s is not None and self.end_s <= self.start_s:
            raise ValueError(f"end_s ({self.end_s}) must be after start_s ({self.start_s})")


@dataclass
class SplitConfig:
    train_fraction: float = 0.7  # share of TRACKS (not crops) in the train split
    seed: int = 0
    # Paper: 70:30 of the train faces go to the discriminator (ZSSR'd) : the generator, split by track
    # (survsr.pipelines.roles); written as the manifest's `role` column (D | G | test).
    d_fraction: float = 0.7

    def validate(self) -> None:
        if not 0.0 <= self.train_fraction <= 1.0:
            raise ValueError(f"train_fraction must be in [0, 1], got {self.train_fraction}")


@dataclass
class PoolConfig:
    """Parallelism only: changing it never changes a crop (left out of the stage's identity)."""

    enabled: bool = True  # false = plain in-process pipeline (same outputs, no Ray)
    detect_actors: int = 0  # detector actor pool size; 0 = cluster CPUs - 1 (at least 1)
    detect_cpus: float = 1.0  # CPUs reserved per detector actor
    detect_gpus: float = 0.0  # GPUs per detector actor (> 0: the MTCNN detector runs on the actor's GPU)
    decode_cpus: float = 0.5  # CPUs reserved per decoding task (decoding is lighter than detection)
    wave_videos: int = 8  # videos per Ray Data run; each finished wave is committed to DIR


@dataclass
class IngestConfig:
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    crops: CropConfig = field(default_factory=CropConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)


def output_hash(cfg: IngestConfig) -> str:
    """The stage's identity: every setting but parallelism. It keys each video's done-marker and the
    pipeline's ingest marker alike (the split is in it: it changes the manifest)."""
    return config_hash({k: v for k, v in to_dict(cfg).items() if k != "pool"})


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> IngestConfig:
    return load(IngestConfig, path, list(overrides), default_name="ingest.yaml")


# ------------------------------------------------------------------------------------ plain functions
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
    staging = _staging(out_dir, vid)
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


def _decode_kwargs(cfg: DecodeConfig) -> dict[str, Any]:
    return {"stride": cfg.stride, "fps": cfg.fps, "max_frames": cfg.max_frames, "start_s": cfg.start_s,
            "end_s": cfg.end_s, "timeout_s": cfg.timeout_s}


class _Counted:
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
    frames = _Counted(iter_frames(source, warnings=warnings, **_decode_kwargs(cfg.decode)))
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


# ------------------------------------------------------------------------------ per-video commit/resume
def _marker(out_dir: Path, video_id: str) -> Path:
    return out_dir / "parts" / f"{video_id}.done.json"


def _staging(out_dir: Path, video_id: str) -> Path:
    """Where a video's crops are written before its commit (hidden: verify and listings skip it)."""
    return Path(out_dir) / "crops" / f".{video_id}.tmp"


def clean_uncommitted(out_dir: Path) -> int:
    """Remove what an interrupted job left: staging directories, and crop directories of videos whose
    done marker was never written (killed between the rename and the marker). Returns how many."""
    crops = Path(out_dir) / "crops"
    n = 0
    if crops.is_dir():
        for d in crops.iterdir():
            if d.is_dir() and (d.name.startswith(".") or not _marker(Path(out_dir), d.name).exists()):
                shutil.rmtree(d, ignore_errors=True)
                n += 1
    return n


def commit_video(out_dir: Path, summary: dict, rows: list[dict], cfg_hash: str) -> None:
    """Crops (staging dir renamed into place), then part, then marker (all atomic): a marker always points
    at a complete part whose crops are all there."""
    import pandas as pd

    vid = summary["video_id"]
    staging, final = _staging(out_dir, vid), Path(out_dir) / "crops" / vid
    if final.exists():
        shutil.rmtree(final)
    if staging.is_dir():
        os.replace(staging, final)
    part = out_dir / "parts" / f"{vid}.parquet"
    cols = [c for c in MANIFEST_COLUMNS if c not in _ASSIGNED]
    df = pd.DataFrame(sorted(rows, key=lambda r: r["crop_id"]), columns=cols)
    write_parquet_atomic(_typed(df), part)
    atomic_write_json(_marker(out_dir, vid), {**summary, "config_hash": cfg_hash, "part": f"parts/{vid}.parquet"})


def done_marker(out_dir: Path, video_id: str, cfg_hash: str) -> dict | None:
    p = _marker(out_dir, video_id)
    if not p.exists():
        return None
    try:
        m = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return m if m.get("config_hash") == cfg_hash and (out_dir / m.get("part", "")).exists() else None


_INT_COLS = ("frame_index", "box_x", "box_y", "box_w", "box_h", "native_w", "native_h", "lr_size")
_FLOAT_COLS = ("time_s", "score", "sharpness", "quality", "motion")


def _typed(df):
    for c in _INT_COLS:
        if c in df:
            df[c] = df[c].astype("int64")
    for c in _FLOAT_COLS:
        if c in df:
            df[c] = df[c].astype("float64")
    for c in df.columns:
        if c not in _INT_COLS and c not in _FLOAT_COLS:
            df[c] = df[c].astype(str) if len(df) else df[c].astype(object)
    return df


def assign_splits(track_ids: Iterable[str], cfg: SplitConfig) -> dict[str, str]:
    """Deterministic 70/30 split of tracks: order tracks by a seeded hash, the first round(f*n) are train.

    Depends only on the set of track ids and the seed (not on input order or timing); with two or more
    tracks each split gets at least one, so a test set always exists.
    """
    ids = sorted(set(track_ids), key=lambda t: hashlib.sha256(f"{cfg.seed}:{t}".encode()).hexdigest())
    n = len(ids)
    n_train = int(round(cfg.train_fraction * n))
    if n >= 2 and 0.0 < cfg.train_fraction < 1.0:
        n_train = min(max(n_train, 1), n - 1)
    return {t: ("train" if i < n_train else "test") for i, t in enumerate(ids)}


def assemble(out_dir: str | Path, cfg: IngestConfig):
    """Re-build ``faces.parquet`` from every per-video part done with the current settings."""
    import pandas as pd

    out_dir = Path(out_dir)
    h = output_hash(cfg)
    markers, frames = [], []
    for p in sorted((out_dir / "parts").glob("*.done.json")):
        m = done_marker(out_dir, p.name.split(".")[0], h)
        if m is None:
            log.warning("%s: done with other settings or incomplete; not in this manifest", p)
            continue
        markers.append(m)
        frames.append(pd.read_parquet(out_dir / m["part"]))
    cols = [c for c in MANIFEST_COLUMNS if c not in _ASSIGNED]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
    splits = assign_splits(df["track_id"].tolist(), cfg.split)
    df["split"] = df["track_id"].map(splits).astype(str) if len(df) else pd.Series(dtype=str)
    from survsr.pipelines.roles import assign_roles

    df["role"] = assign_roles(df, cfg.split.d_fraction, cfg.split.seed).astype(str) if len(df) else \
        pd.Series(dtype=str)
    df = _typed(df[MANIFEST_COLUMNS].sort_values("crop_id", kind="stable").reset_index(drop=True))
    write_parquet_atomic(df, out_dir / MANIFEST_NAME)
    return df, markers, splits


# -------------------------------------------------------------------------------------- Ray Data layer
def _row_schema():
    import pyarrow as pa

    i32, f64, s = pa.int32(), pa.float64(), pa.string()
    return pa.schema([
        ("video_id", s), ("source", s), ("source_sha256", s), ("kind", s), ("frame_index", pa.int64()),
        ("time_s", f64), ("k", i32), ("box_x", i32), ("box_y", i32), ("box_w", i32), ("box_h", i32),
        ("raw_x", i32), ("raw_y", i32), ("raw_w", i32), ("raw_h", i32), ("score", f64), ("detector", s),
        ("height", i32), ("width", i32), ("pixels", pa.large_binary()), ("sharpness", f64), ("track_no", i32),
        ("info", s), ("landmarks", s), ("quality", f64), ("motion", f64),
    ])


_ROW_DEFAULTS = {"frame_index": -1, "time_s": 0.0, "k": -1, "score": 0.0, "detector": "", "height": 0,
                 "width": 0, "pixels": b"", "sharpness": 0.0, "track_no": -1, "info": "", "landmarks": "",
                 "quality": 0.0, "motion": -1.0,
                 **{f"{p}_{c}": 0 for p in ("box", "raw") for c in "xywh"}}


def _table(rows: list[dict]):
    """Fixed-schema Arrow table (every block has the same schema, even empty ones)."""
    import pyarrow as pa

    schema = _row_schema()
    cols = {name: [r.get(name, _ROW_DEFAULTS.get(name)) for r in rows] for name in schema.names}
    return pa.Table.from_pydict(cols, schema=schema)


def _det_to_row(base: dict, d: dict) -> dict:
    native = d["crop"]
    return {**base, "kind": "det", "frame_index": d["frame_index"], "time_s": d["time_s"], "k": d["k"],
            **dict(zip(("box_x", "box_y", "box_w", "box_h"), d["box"])),
            **dict(zip(("raw_x", "raw_y", "raw_w", "raw_h"), d["raw"])),
            "score": d["score"], "detector": d["detector"], "height": native.shape[0], "width": native.shape[1],
            "pixels": native.tobytes(), "sharpness": d["sharpness"], "track_no": d.get("track_no", -1),
            "landmarks": json.dumps(d["landmarks"]) if d.get("landmarks") else "",
            "quality": float(d.get("quality", 0.0)), "motion": float(d.get("motion", -1.0))}


def _row_to_det(r: dict) -> dict:
    return {"frame_index": r["frame_index"], "time_s": r["time_s"], "k": r["k"],
            "box": (r["box_x"], r["box_y"], r["box_w"], r["box_h"]),
            "raw": (r["raw_x"], r["raw_y"], r["raw_w"], r["raw_h"]), "score": r["score"],
            "detector": r["detector"], "sharpness": r["sharpness"], "track_no": r["track_no"],
            "landmarks": json.loads(r["landmarks"]) if r.get("landmarks") else None,
            "quality": r.get("quality", 0.0), "motion": r.get("motion", -1.0),
            "crop": np.frombuffer(r["pixels"], np.uint8).reshape(r["height"], r["width"], 3)}


def _decode_udf(batch, decode: dict, motion: dict) -> Iterator[Any]:
    """One video in, its frames out as a stream of blocks, then one ``end`` row (frame count, error, motion map).

    The motion map is built here because decoding is the one place that sees a video's frames in order."""
    cfg = from_dict(DecodeConfig, decode)
    mcfg = from_dict(MotionConfig, motion)
    for v in batch.to_pylist():
        base = {"video_id": v["video_id"], "source": v["source"], "source_sha256": v["source_sha256"]}
        warnings: list[str] = []
        frames = _Counted(iter_frames(v["source"], warnings=warnings, **_decode_kwargs(cfg)))
        mmap = MotionMap(mcfg) if mcfg.enabled else None
        error = ""
        try:
            for chunk in iter_chunks(frames, cfg.chunk_frames):
                if mmap is not None:
                    for f in chunk:
                        mmap.update(f.image)
                # One row per chunk: the detector sees whole chunks however Ray Data batches rows.
                h, w = chunk[0].image.shape[:2]
                yield _table([{**base, "kind": "chunk", "height": h, "width": w,
                               "pixels": b"".join(f.image.tobytes() for f in chunk),
                               "info": json.dumps({"index": [f.index for f in chunk],
                                                   "time_s": [f.time_s for f in chunk]})}])
        except VideoError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - one bad video must not end the batch
            error = f"{v['source']}: unexpected decode failure ({exc!r})"
        yield _table([{**base, "kind": "end", "info": json.dumps({
            "frames": frames.n, "error": error, "warnings": warnings,
            "motion": mmap.to_dict() if mmap is not None else {}})}])


class _DetectActor:
    """Holds one detector (cascades loaded once per actor) and turns frame rows into detection rows."""

    def __init__(self, detector: dict, crops: dict, threads: int):
        import cv2
        import torch

        if threads > 0:
            cv2.setNumThreads(threads)
            torch.set_num_threads(threads)
        self.detector = make_detector(from_dict(DetectorConfig, detector))
        self.kind = from_dict(DetectorConfig, detector).kind
        self.crops = from_dict(CropConfig, crops)

    def __call__(self, batch):
        out = []
        for r in batch.to_pylist():
            base = {"video_id": r["video_id"], "source": r["source"], "source_sha256": r["source_sha256"]}
            if r["kind"] != "chunk":
                out.append(r)
                continue
            meta = json.loads(r["info"])
            images = np.frombuffer(r["pixels"], np.uint8).reshape(-1, r["height"], r["width"], 3)
            chunk = [Frame(index=i, time_s=t, image=img) for i, t, img in zip(meta["index"], meta["time_s"], images)]
            found = chunk_detections(chunk, self.detector, self.crops)
            telemetry.frames_decoded(len(chunk))
            telemetry.faces_detected(len(found), detector=self.kind)
            for d in found:
                out.append(_det_to_row(base, d))
        return _table(out)


def _select_udf(group, tracker: dict, select: dict, filters: dict, motion: dict):
    """All rows of one video: track, filter, keep the best crops, add one ``summary`` row."""
    rows = group.to_pylist()
    base = {k: rows[0][k] for k in ("video_id", "source", "source_sha256")}
    dets = [_row_to_det(r) for r in rows if r["kind"] == "det"]
    end = [json.loads(r["info"]) for r in rows if r["kind"] == "end"]
    n_frames = sum(e["frames"] for e in end)
    error = "; ".join(e["error"] for e in end if e["error"])
    warnings = [w for e in end for w in e.get("warnings", [])]
    mcfg = from_dict(MotionConfig, motion)
    mmap = None
    if mcfg.enabled:
        mmap = MotionMap(mcfg)
        for e in end:
            mmap.merge(MotionMap.from_dict(e.get("motion") or {}, mcfg))
    chosen, stats = select_video(dets, from_dict(TrackerConfig, tracker), from_dict(SelectConfig, select),
                                 from_dict(FilterConfig, filters), mmap, mcfg)
    summary = summarize(dets, chosen, n_frames, error, stats, warnings)
    out = [_det_to_row(base, c) for c in chosen]
    out.append({**base, "kind": "summary", "info": json.dumps(summary)})
    return _table(out)


def _write_udf(batch, out_dir: str, cfg_hash: str, lr_size: int, stage: dict):
    """Write the PNGs of selected crops; pass summaries through. Output: (video_id, kind, payload JSON)."""
    import pyarrow as pa

    vids, kinds, payloads = [], [], []
    for r in batch.to_pylist():
        if r["kind"] == "det":
            row = write_crop(_row_to_det(r), Path(out_dir), r["source"], r["source_sha256"], cfg_hash, lr_size,
                             stage)
            payload = json.dumps(row)
        else:
            payload = r["info"]
        vids.append(r["video_id"])
        kinds.append("crop" if r["kind"] == "det" else r["kind"])
        payloads.append(payload)
    return pa.table({"video_id": vids, "kind": kinds, "payload": payloads})


def _ray_wave(videos: list[dict], out_dir: Path, cfg: IngestConfig) -> dict[str, tuple[dict, list[dict]]]:
    """Run one wave of videos through Ray Data; returns {video_id: (summary, manifest rows)}."""
    import ray

    n_cpus = int(ray.cluster_resources().get("CPU", 1))
    actors = cfg.pool.detect_actors or max(1, n_cpus - 1)
    threads = max(1, int(round(cfg.pool.detect_cpus)))
    h = output_hash(cfg)
    ds = ray.data.from_items(videos, override_num_blocks=len(videos))
    ds = ds.map_batches(_decode_udf, batch_size=1, batch_format="pyarrow", num_cpus=cfg.pool.decode_cpus,
                        fn_kwargs={"decode": to_dict(cfg.decode), "motion": to_dict(cfg.motion)})
    ds = ds.map_batches(_DetectActor, batch_size=1, batch_format="pyarrow",
                        compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cfg.pool.detect_cpus,
                        num_gpus=cfg.pool.detect_gpus or None,
                        fn_constructor_kwargs={"detector": to_dict(cfg.detector), "crops": to_dict(cfg.crops),
                                               "threads": threads})
    ds = ds.groupby("video_id", num_partitions=max(1, len(videos))).map_groups(_select_udf, batch_format="pyarrow",
                                           fn_kwargs={"tracker": to_dict(cfg.tracker),
                                                      "select": to_dict(cfg.select),
                                                      "filters": to_dict(cfg.filters),
                                                      "motion": to_dict(cfg.motion)})
    ds = ds.map_batches(_write_udf, batch_size=32, batch_format="pyarrow", num_cpus=0.5,
                        fn_kwargs={"out_dir": str(out_dir), "cfg_hash": h, "lr_size": cfg.crops.lr_size,
                                   "stage": stage_record("ingest", h)})
    results: dict[str, tuple[dict, list[dict]]] = {v["video_id"]: ({}, []) for v in videos}
    for r in ds.iter_rows():  # small rows only: pixels stayed in the workers
        summary, rows = results[r["video_id"]]
        if r["kind"] == "crop":
            rows.append(json.loads(r["payload"]))
        else:
            summary.update(json.loads(r["payload"]))
    return results


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
        if _marker(out_dir, vid).exists():  # done before with other settings: its old crops would linger
            log.info("%s: done before with other settings, redoing it", src)
            _marker(out_dir, vid).unlink()
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
            results = _ray_wave(wave, out_dir, cfg)
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
