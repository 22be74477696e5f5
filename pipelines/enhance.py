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

``run_enhance`` is the plain entry point (Ray Data when ``ray.enabled``, a plain loop otherwise);
``enhance_video`` is the per-video worker, also used by the Serve video jobs with a remote model.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from survsr.serve.engine import EngineConfig
from survsr.serve.media import frame_marking, mark_crop, mark_frame, side_by_side
from survsr.marking import MarkingConfig, mark_document, model_output_text
from survsr.config import config_hash, from_dict, load, to_dict
from survsr.ray_utils import use_address
from survsr.stage import Stage, batch_exit_code
from survsr.audit import audited
from survsr.provenance import (PROVENANCE_KEY, atomic_path, atomic_write_json, provenance, sha256_file,
                               stage_record, write_png)

log = logging.getLogger(__name__)

MODES = ("frame", "faces", "side-by-side")
VIDEO_EXTS = {".mp4", ".mkv", ".avi", ".mov", ".ts", ".m4v", ".webm", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp"}

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


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> EnhanceConfig:
    return load(EnhanceConfig, path, list(overrides), default_name="enhance.yaml")


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


def output_stem(src: Path, src_sha: str, mode: str) -> str:
    # the content hash keeps two "cam1.mp4" from different folders apart, and renames harmless
    return f"{src.stem}-{src_sha[:12]}.{mode}"


def _sidecar_path(out_dir: Path, stem: str) -> Path:
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
    sidecar = _sidecar_path(out_dir, stem)
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
    import av

    from survsr.serve.videoio import VideoWriter

    vs = container.streams.video[0]
    vs.thread_type = "AUTO"
    aus = container.streams.audio[0] if (cfg.output.audio and container.streams.audio) else None
    rate = vs.average_rate or vs.guessed_rate or Fraction(25)
    tb = vs.time_base or Fraction(1, 90000)
    out_path = out_dir / f"{stem}.mp4"
    pending: list[tuple[int, np.ndarray]] = []
    early_audio: list = []
    marking: list[MarkingConfig | None] = [None]
    writer: VideoWriter | None = None
    n_in = 0
    error = None

    def flush() -> None:
        nonlocal writer
        if not pending:
            return
        outs = enhance_fn([img for _, img in pending])
        for (pts, img), enh in zip(pending, outs):
            if marking[0] is None:  # what the band looks like on this video, for the provenance record
                w = enh.shape[1] * (2 if cfg.mode == "side-by-side" else 1)
                marking[0] = frame_marking(cfg.label, w, enh.shape[0])
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
            try:
                for packet in container.demux(streams):
                    if packet.stream.type == "audio":
                        if writer is None:
                            early_audio.append(packet)
                        else:
                            writer.mux_audio(packet)
                        continue
                    for frame in packet.decode():
                        if cfg.max_frames is not None and n_in >= cfg.max_frames:
                            break
                        _check_frame(frame, n_in, src, cfg.max_frame_pixels)
                        pending.append((_frame_pts(frame, n_in, rate, tb), frame.to_ndarray(format="rgb24")))
                        n_in += 1
                        if len(pending) >= cfg.batch_size:
                            flush()
                    if cfg.max_frames is not None and n_in >= cfg.max_frames and aus is None:
                        break
            except av.error.FFmpegError as exc:
                error = f"{src}: decode error after {n_in} frames: {exc}"
                log.warning(error)
            except FrameTooLarge as exc:
                error = str(exc)
                log.warning(error)
            flush()
            if writer is None:
                raise _NoFrames(error or f"{src}: video has no decodable frames")
            writer.close()
    except _NoFrames as exc:
        return {"status": "failed", "reason": str(exc), "frames": 0}
    finally:
        if writer is not None:
            writer.abort()  # interrupted mid-file: release the (already removed) temp file
    out_sha = sha256_file(out_path)
    status = "partial" if error else "done"
    prov = mark_document(provenance(
        "enhanced_video",
        source={"path": str(src), "sha256": src_sha, "frame_index": None, "time_s": None, "box": None},
        parents=[{"path": str(src), "sha256": src_sha}],
        stages=[_stage(cfg, model_sha, device, frames=writer.frames, status=status)],
        model_output=True), marking[0])
    side = {"kind": "enhanced_video", "path": out_path.name, "sha256": out_sha, "status": status,
            "frames": writer.frames, "fps": str(rate), "time_base": str(tb), "audio": aus is not None,
            "mode": cfg.mode, "source_path": str(src), "source_sha256": src_sha, "config_hash": output_hash(cfg),
            "model_sha256": model_sha, "model_output": True, PROVENANCE_KEY: prov}
    if error:
        side["reason"] = error
    atomic_write_json(_sidecar_path(out_dir, stem), side)
    res = {"status": status, "output": out_path.name, "sha256": out_sha, "frames": writer.frames,
           "audio": aus is not None}
    if error:
        res["reason"] = error
    return res


def _crop_marking(cfg: MarkingConfig) -> MarkingConfig:
    return replace(cfg, mode="extend")


def _expand_box(box, margin: float, w: int, h: int) -> tuple[int, int, int, int]:
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
    import av

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
    n_in = 0
    error = None

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
            progress(str(src), n_in)

    try:
        for frame in container.decode(vs):
            if cfg.max_frames is not None and n_in >= cfg.max_frames:
                break
            _check_frame(frame, n_in, src, cfg.max_frame_pixels)
            idx = n_in
            n_in += 1
            if idx % cfg.faces.stride:
                continue
            img = frame.to_ndarray(format="rgb24")
            h, w = img.shape[:2]
            time_s = float(_frame_pts(frame, idx, rate, tb) * tb)
            for k, det in enumerate(detector.detect(img)):
                if min(det.box[2], det.box[3]) < cfg.faces.min_size:
                    continue
                x, y, bw, bh = _expand_box(det.box, cfg.faces.margin, w, h)
                meta = {"frame_index": idx, "time_s": round(time_s, 6), "box": [x, y, bw, bh],
                        "score": float(det.score), "detector": str(det.detector), "file": f"f{idx:06d}-{k}.png"}
                pending.append((meta, np.ascontiguousarray(img[y:y + bh, x:x + bw])))
            if len(pending) >= cfg.batch_size:
                flush()
    except av.error.FFmpegError as exc:
        error = f"{src}: decode error after {n_in} frames: {exc}"
        log.warning(error)
    except FrameTooLarge as exc:
        error = str(exc)
        log.warning(error)
    flush()
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
    atomic_write_json(_sidecar_path(out_dir, stem), side)
    res = {"status": status, "output": stem, "frames": n_in, "faces": len(crops)}
    if error:
        res["reason"] = error
    return res


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
        from survsr.serve.engine import Enhancer

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
            from survsr.serve.engine import Enhancer

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
                side = _sidecar_path(out_dir, out.stem if out.suffix == ".mp4" else out.name)
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
