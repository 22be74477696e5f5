"""The per-video worker: one video through the generator into an output video (frame / side-by-side) or a
folder of enhanced face crops, with provenance and marking, written atomically with a sidecar JSON last.

Used by ``survsr enhance`` (pipelines/enhance.py, one actor per video on Ray Data) and by the Serve video
jobs (a remote model behind ``enhance_fn``): both give the same pixels and the same records.

* Output videos keep the source's timestamps (frame for frame) and frame rate; audio packets are copied
  through without re-encoding.
* The sidecar is the "done" marker: a re-run skips finished videos and redoes an interrupted one from the
  start (never a half file).
* Everything the model produced says so: ``model_output: true`` in the provenance and, by default, a
  visible AI-ENHANCED label (``label.enabled``).
"""

from __future__ import annotations

import contextlib

import json
import logging
import time
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from survsr.config import config_hash, from_dict, to_dict
from survsr.enhance.frames import mark_crop, side_by_side
from survsr.enhance.runner import EngineConfig
from survsr.marking import MarkingConfig, mark_document, mark_frame, model_output_text
from survsr.provenance import (PROVENANCE_KEY, atomic_path, atomic_write_json, provenance, sha256_file,
                               stage_record, write_png)

log = logging.getLogger(__name__)

MODES = ("frame", "faces", "side-by-side")

EnhanceFn = Callable[[Sequence[np.ndarray]], list[np.ndarray]]
ProgressFn = Callable[[str, int], None]


@dataclass
class OutputConfig:
    codec: str = "libx264"  # falls back to h264 / mpeg4 when the FFmpeg build lacks it
    crf: int = 18
    preset: str = "veryfast"
    audio: bool = True  # copy the source's first audio stream through


@dataclass
class FacesConfig:
    stride: int = 1  # detect on every n-th frame
    margin: float = 0.0  # extra growth (fraction of box size per side) on top of the detector's own margin
    min_size: int = 8  # skip detections smaller than this (px)
    detector: dict = field(default_factory=dict)  # fields of survsr.video.detect.DetectorConfig

    def validate(self) -> None:
        if self.stride < 1:
            raise ValueError("faces.stride must be >= 1")
        if self.margin < 0:
            raise ValueError("faces.margin must be >= 0")


@dataclass
class PoolConfig:
    enabled: bool = True  # False: a plain loop in this process (no Ray)
    actors: int = 1  # videos enhanced in parallel, each actor holds one generator
    num_cpus: float = 1.0
    num_gpus: float = 0.0


@dataclass
class EnhanceConfig:
    mode: str = "frame"
    batch_size: int = 8  # frames per forward pass
    max_frames: int | None = None  # stop after this many frames per video (demo / smoke runs)
    # Checked on every decoded frame, not just the first: a stream may change size mid-way (an MJPEG of
    # small frames then 2500x2500 ones grew a model process to 14 GB). The video stops there (``partial``,
    # the reason names the frame). Default 8K UHD; the service sets its limits.max_video_pixels.
    max_frame_pixels: int = 7680 * 4320
    engine: EngineConfig = field(default_factory=EngineConfig)
    label: MarkingConfig = field(default_factory=MarkingConfig)  # visible AI-ENHANCED band (survsr.marking)
    output: OutputConfig = field(default_factory=OutputConfig)
    faces: FacesConfig = field(default_factory=FacesConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {self.mode!r}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")


def output_hash(cfg: EnhanceConfig) -> str:
    """The stage's identity: the settings that shape the output; the actor pool does not, so a resume under
    different parallelism still recognises finished videos."""
    d = {k: v for k, v in to_dict(cfg).items() if k != "pool"}
    d.pop("max_frame_pixels", None)  # a guard: it decides whether a frame is refused, never what it becomes
    return config_hash(d)


class FrameTooLarge(Exception):
    """A decoded frame over ``max_frame_pixels``: the video stops there."""


def _check_frame(frame, index: int, src: Path, limit: int) -> None:
    if frame.width * frame.height > limit:
        raise FrameTooLarge(f"{src}: frame {index} is {frame.width}x{frame.height} = {frame.width * frame.height} "
                            f"pixels, limit is {limit} (max_frame_pixels); stopped there")


class _NoFrames(Exception):
    """Raised inside the atomic write so that the temp file is removed."""


class _Read:
    """Frames read so far from one video, and why reading stopped early (None: it did not). A decode error or
    an oversize frame ends the reading, not the job: what was read is kept and the output marked partial."""

    def __init__(self, src: Path):
        self.src, self.frames, self.error = src, 0, None

    @contextlib.contextmanager
    def stops_on_bad_input(self):
        import av

        try:
            yield
        except av.error.FFmpegError as exc:
            self.error = f"{self.src}: decode error after {self.frames} frames: {exc}"
            log.warning(self.error)
        except FrameTooLarge as exc:
            self.error = str(exc)
            log.warning(self.error)


def output_stem(src: Path, src_sha: str, mode: str) -> str:
    # the content hash keeps two "cam1.mp4" from different folders apart, and renames harmless
    return f"{src.stem}-{src_sha[:12]}.{mode}"


def sidecar_path(out_dir: Path, stem: str) -> Path:
    return out_dir / f"{stem}.json"


def _is_done(sidecar: Path, cfg_hash: str, model_sha: str) -> bool:
    """A finished output: sidecar present, same config and model, and the output file still matches."""
    try:
        rec = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return False
    if rec.get("config_hash") != cfg_hash or rec.get("model_sha256") != model_sha:
        return False
    out = sidecar.parent / rec.get("path", "")
    if rec.get("kind") == "enhanced_faces":
        return out.is_dir()
    return out.is_file() and sha256_file(out) == rec.get("sha256")


def _stage(cfg: EnhanceConfig, model_sha: str, device: str, **extra: Any) -> dict:
    return stage_record("enhance", output_hash(cfg), model_sha256=model_sha, device=device, mode=cfg.mode,
                        label=cfg.label.text if cfg.label.enabled else None, **extra)


def _frame_pts(frame, index: int, rate: Fraction, tb: Fraction) -> int:
    if frame.pts is not None:
        return int(frame.pts)
    return int(round(index / rate / tb))  # streams without pts (raw h264): derive from the frame rate


def enhance_video(src: str | Path, out_dir: str | Path, cfg: EnhanceConfig, enhance_fn: EnhanceFn, *,
                  model_sha256: str, device: str, detector=None, progress: ProgressFn | None = None,
                  src_sha256: str | None = None) -> dict:
    """Enhance one video into ``out_dir``; returns its report entry (failures included: status
    ``failed`` + reason naming the file). Only an interruption (KeyboardInterrupt) propagates.

    ``enhance_fn`` maps a list of uint8 RGB frames to their x2 versions (a local Enhancer or a Serve
    handle). Decode errors after some frames keep what was done (status ``partial``).
    """
    import av

    src = Path(src).resolve()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    entry: dict[str, Any] = {"input": str(src), "mode": cfg.mode}
    try:
        src_sha = src_sha256 or sha256_file(src)
    except OSError as exc:
        return {**entry, "status": "failed", "reason": f"{src}: cannot read: {exc.strerror or exc}"}
    stem = output_stem(src, src_sha, cfg.mode)
    cfg_hash = output_hash(cfg)
    sidecar = sidecar_path(out_dir, stem)
    if _is_done(sidecar, cfg_hash, model_sha256):
        done = json.loads(sidecar.read_text())
        return {**entry, "status": "skipped", "reason": "already done", "output": done["path"],
                "frames": done.get("frames")}
    try:
        container = av.open(str(src))
        if not container.streams.video:
            container.close()
            raise ValueError("no video stream")
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        return {**entry, "status": "failed", "reason": f"{src}: not a readable video: {exc}"}
    try:
        if cfg.mode == "faces":
            result = _enhance_faces(container, src, src_sha, out_dir, stem, cfg, enhance_fn, detector,
                                    model_sha256, device, progress)
        else:
            result = _enhance_frames(container, src, src_sha, out_dir, stem, cfg, enhance_fn,
                                     model_sha256, device, progress)
    except Exception as exc:  # noqa: BLE001 - one bad video must not end the archive job
        log.exception("%s: enhancement failed", src)
        result = {"status": "failed", "reason": f"{src}: {type(exc).__name__}: {exc}"}
    finally:
        container.close()
    result["seconds"] = round(time.time() - t0, 3)
    return {**entry, **result}


def _enhance_frames(container, src: Path, src_sha: str, out_dir: Path, stem: str, cfg: EnhanceConfig,
                    enhance_fn: EnhanceFn, model_sha: str, device: str, progress: ProgressFn | None) -> dict:
    from survsr.enhance.videoio import VideoWriter

    vs = container.streams.video[0]
    vs.thread_type = "AUTO"
    aus = container.streams.audio[0] if (cfg.output.audio and container.streams.audio) else None
    rate = vs.average_rate or vs.guessed_rate or Fraction(25)
    tb = vs.time_base or Fraction(1, 90000)
    out_path = out_dir / f"{stem}.mp4"
    pending: list[tuple[int, np.ndarray]] = []
    early_audio: list = []
    writer: VideoWriter | None = None
    read = _Read(src)

    def flush() -> None:
        nonlocal writer
        if not pending:
            return
        outs = enhance_fn([img for _, img in pending])
        for (pts, img), enh in zip(pending, outs):
            if cfg.mode == "side-by-side":
                frame = side_by_side(img, enh, label=cfg.label)
            else:
                frame = mark_frame(enh, cfg.label)
            if writer is None:
                writer = VideoWriter(tmp, width=frame.shape[1], height=frame.shape[0], rate=rate, time_base=tb,
                                     codec=cfg.output.codec, crf=cfg.output.crf, preset=cfg.output.preset,
                                     audio_template=aus)
                for pkt in early_audio:
                    writer.mux_audio(pkt)
                early_audio.clear()
            writer.write(frame, pts)
        pending.clear()
        if progress:
            progress(str(src), writer.frames if writer else 0)

    try:
        with atomic_path(out_path) as tmp:
            streams = [vs] + ([aus] if aus is not None else [])
            with read.stops_on_bad_input():
                for packet in container.demux(streams):
                    if packet.stream.type == "audio":
                        if writer is None:
                            early_audio.append(packet)
                        else:
                            writer.mux_audio(packet)
                        continue
                    for frame in packet.decode():
                        if cfg.max_frames is not None and read.frames >= cfg.max_frames:
                            break
                        _check_frame(frame, read.frames, src, cfg.max_frame_pixels)
                        pending.append((_frame_pts(frame, read.frames, rate, tb), frame.to_ndarray(format="rgb24")))
                        read.frames += 1
                        if len(pending) >= cfg.batch_size:
                            flush()
                    if cfg.max_frames is not None and read.frames >= cfg.max_frames and aus is None:
                        break
            flush()
            if writer is None:
                raise _NoFrames(read.error or f"{src}: video has no decodable frames")
            writer.close()
    except _NoFrames as exc:
        return {"status": "failed", "reason": str(exc), "frames": 0}
    finally:
        if writer is not None:
            writer.abort()  # interrupted mid-file: release the (already removed) temp file
    out_sha = sha256_file(out_path)
    error = read.error
    status = "partial" if error else "done"
    prov = mark_document(provenance(
        "enhanced_video",
        source={"path": str(src), "sha256": src_sha, "frame_index": None, "time_s": None, "box": None},
        parents=[{"path": str(src), "sha256": src_sha}],
        stages=[_stage(cfg, model_sha, device, frames=writer.frames, status=status)],
        model_output=True), cfg.label)
    side = {"kind": "enhanced_video", "path": out_path.name, "sha256": out_sha, "status": status,
            "frames": writer.frames, "fps": str(rate), "time_base": str(tb), "audio": aus is not None,
            "mode": cfg.mode, "source_path": str(src), "source_sha256": src_sha, "config_hash": output_hash(cfg),
            "model_sha256": model_sha, "model_output": True, PROVENANCE_KEY: prov}
    if error:
        side["reason"] = error
    atomic_write_json(sidecar_path(out_dir, stem), side)
    res = {"status": status, "output": out_path.name, "sha256": out_sha, "frames": writer.frames,
           "audio": aus is not None}
    if error:
        res["reason"] = error
    return res


def _crop_marking(cfg: MarkingConfig) -> MarkingConfig:
    return replace(cfg, mode="extend")


def expand_box(box, margin: float, w: int, h: int) -> tuple[int, int, int, int]:
    x, y, bw, bh = box
    mx, my = int(round(bw * margin)), int(round(bh * margin))
    x0, y0 = max(0, x - mx), max(0, y - my)
    x1, y1 = min(w, x + bw + mx), min(h, y + bh + my)
    return x0, y0, x1 - x0, y1 - y0


def make_detector(faces: FacesConfig):
    """The ingest stage's detector (survsr.video.detect), configured from ``faces.detector``."""
    from survsr.video.detect import DetectorConfig
    from survsr.video.detect import make_detector as _make

    return _make(from_dict(DetectorConfig, faces.detector, "faces.detector:"))


def _enhance_faces(container, src: Path, src_sha: str, out_dir: Path, stem: str, cfg: EnhanceConfig,
                   enhance_fn: EnhanceFn, detector, model_sha: str, device: str,
                   progress: ProgressFn | None) -> dict:
    detector = detector or make_detector(cfg.faces)
    vs = container.streams.video[0]
    vs.thread_type = "AUTO"
    rate = vs.average_rate or Fraction(25)
    tb = vs.time_base or Fraction(1, 90000)
    faces_dir = out_dir / stem
    faces_dir.mkdir(parents=True, exist_ok=True)
    stage = _stage(cfg, model_sha, device)
    crops: list[dict] = []
    pending: list[tuple[dict, np.ndarray]] = []
    read = _Read(src)

    def flush() -> None:
        if not pending:
            return
        outs = enhance_fn([c for _, c in pending])
        for rec, enh in zip(pending, outs):
            meta = rec[0]
            img = mark_crop(enh, cfg.label)
            prov = provenance(
                "enhanced_face",
                source={"path": str(src), "sha256": src_sha, "frame_index": meta["frame_index"],
                        "time_s": meta["time_s"], "box": meta["box"]},
                parents=[{"path": str(src), "sha256": src_sha}], stages=[stage], model_output=True)
            text = {PROVENANCE_KEY: mark_document(prov, _crop_marking(cfg.label)), **model_output_text()}
            meta["sha256"] = write_png(faces_dir / meta["file"], img, text=text)
            meta["path"] = f"{stem}/{meta.pop('file')}"
            crops.append(meta)
        pending.clear()
        if progress:
            progress(str(src), read.frames)

    with read.stops_on_bad_input():
        for frame in container.decode(vs):
            if cfg.max_frames is not None and read.frames >= cfg.max_frames:
                break
            _check_frame(frame, read.frames, src, cfg.max_frame_pixels)
            idx = read.frames
            read.frames += 1
            if idx % cfg.faces.stride:
                continue
            img = frame.to_ndarray(format="rgb24")
            h, w = img.shape[:2]
            time_s = float(_frame_pts(frame, idx, rate, tb) * tb)
            for k, det in enumerate(detector.detect(img)):
                if min(det.box[2], det.box[3]) < cfg.faces.min_size:
                    continue
                x, y, bw, bh = expand_box(det.box, cfg.faces.margin, w, h)
                meta = {"frame_index": idx, "time_s": round(time_s, 6), "box": [x, y, bw, bh],
                        "score": float(det.score), "detector": str(det.detector), "file": f"f{idx:06d}-{k}.png"}
                pending.append((meta, np.ascontiguousarray(img[y:y + bh, x:x + bw])))
            if len(pending) >= cfg.batch_size:
                flush()
    flush()
    n_in, error = read.frames, read.error
    if n_in == 0:
        return {"status": "failed", "reason": error or f"{src}: video has no decodable frames", "frames": 0}
    status = "partial" if error else "done"
    crops.sort(key=lambda c: c["path"])
    side = {"kind": "enhanced_faces", "path": stem, "status": status, "frames": n_in, "faces": len(crops),
            "crops": crops, "mode": cfg.mode, "source_path": str(src), "source_sha256": src_sha,
            "config_hash": output_hash(cfg), "model_sha256": model_sha, "model_output": True,
            PROVENANCE_KEY: mark_document(provenance("enhanced_faces", source={"path": str(src), "sha256": src_sha,
                                                                  "frame_index": None, "time_s": None,
                                                                  "box": None},
                                       parents=[{"path": str(src), "sha256": src_sha}], stages=[stage],
                                       model_output=True), _crop_marking(cfg.label))}
    if error:
        side["reason"] = error
    atomic_write_json(sidecar_path(out_dir, stem), side)
    res = {"status": status, "output": stem, "frames": n_in, "faces": len(crops)}
    if error:
        res["reason"] = error
    return res
