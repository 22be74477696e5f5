"""The ingest stage on Ray Data: one block per video, decoding tasks, a detector actor pool, per-video
tracking and selection (``groupby(video_id)``), parallel crop writes; videos go through in waves so
finished ones are committed while the rest of a long batch still runs."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from survsr import telemetry
from survsr.config import from_dict, to_dict
from survsr.provenance import stage_record
from survsr.video.crops import CropConfig
from survsr.video.decode import Frame, VideoError, iter_frames
from survsr.video.detect import DetectorConfig, make_detector
from survsr.video.motion import MotionConfig, MotionMap
from survsr.video.track import FilterConfig, SelectConfig, TrackerConfig

from survsr.pipelines.ingest_config import DecodeConfig, IngestConfig, output_hash
from survsr.pipelines.ingest_video import (Counted, chunk_detections, decode_kwargs, iter_chunks, select_video,
                                           summarize, write_crop)

log = logging.getLogger("survsr.ingest")

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
        frames = Counted(iter_frames(v["source"], warnings=warnings, **decode_kwargs(cfg)))
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


def ray_wave(videos: list[dict], out_dir: Path, cfg: IngestConfig) -> dict[str, tuple[dict, list[dict]]]:
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
