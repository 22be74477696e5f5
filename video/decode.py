"""Decode video files and live streams with PyAV into numbered, time-stamped RGB frames.

Anything FFmpeg can demux/decode works (mp4, mkv, avi, mov, ts, ... and rtsp:// / http(s):// URLs).
Errors always name the input: a batch job logs the message, skips the input and goes on. Frames yielded
before a mid-file error have already reached the caller, so they are kept; the error is raised after them.
"""

from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

log = logging.getLogger(__name__)

# Extensions picked up when a directory is given (a file given by name is always tried, whatever its name).
VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mkv .webm .avi .mov .ts .mts .m2ts .mpg .mpeg .flv .wmv .3gp .ogv .y4m .h264 .h265 .hevc .gif".split()
)
URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
_GLOB_CHARS = set("*?[")


class VideoError(Exception):
    """A video input could not be (fully) decoded. ``str(exc)`` starts with the input's name.

    ``frames_decoded`` says how many frames were decoded (and yielded, when they passed the sampling)
    before the failure, so callers can keep them and still report the error.
    """

    def __init__(self, source: str, reason: str, frames_decoded: int = 0):
        self.source = str(source)
        self.reason = reason
        self.frames_decoded = frames_decoded
        super().__init__(f"{self.source}: {reason}")


@dataclass(frozen=True)
class Frame:
    index: int  # position in the decoded stream, 0-based, counted before stride/fps sampling
    time_s: float  # presentation time in seconds from the start of the stream
    image: np.ndarray  # uint8 RGB, HxWx3


def is_url(source: str | os.PathLike) -> bool:
    return isinstance(source, str) and source.lower().startswith(URL_SCHEMES)


def expand_inputs(inputs: Iterable[str | os.PathLike]) -> list[str]:
    """Turn files, directories, globs and URLs into a sorted, de-duplicated list of sources.

    Paths that do not exist (and globs that match nothing) are kept as given so that decoding them reports
    the problem by name instead of the input silently vanishing from a batch.
    """
    out: list[str] = []
    for item in inputs:
        s = os.fspath(item)
        if is_url(s):
            out.append(s)
            continue
        p = Path(s).expanduser()
        if p.is_dir():
            found = [str(f.resolve()) for f in sorted(p.rglob("*"))
                     if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS and not f.name.startswith(".")]
            out.extend(found or [str(p.resolve())])  # an empty directory is reported, not silently dropped
        elif not p.exists() and _GLOB_CHARS & set(s):
            matches = sorted(m for m in glob.glob(str(p), recursive=True) if Path(m).is_file())
            out.extend(str(Path(m).resolve()) for m in matches) if matches else out.append(s)
        else:
            out.append(str(p.resolve()) if p.exists() else s)
    seen: set[str] = set()
    return [s for s in out if not (s in seen or seen.add(s))]


def _open(source: str, timeout_s: float):
    import av

    if not is_url(source):
        p = Path(source)
        if not p.exists():
            raise VideoError(source, "no such file or directory")
        if p.is_dir():
            raise VideoError(source, "is a directory, not a video file")
        if p.stat().st_size == 0:
            raise VideoError(source, "empty file (0 bytes)")
    options = {"rtsp_transport": "tcp"} if source.lower().startswith(("rtsp://", "rtsps://")) else {}
    try:
        container = av.open(source, mode="r", options=options, timeout=(timeout_s, timeout_s))
    except av.error.FFmpegError as exc:
        raise VideoError(source, f"not a readable video ({_ffmpeg_reason(exc)})") from None
    except OSError as exc:
        raise VideoError(source, f"cannot open ({exc})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(source, "no video stream in file")
    return container


def _ffmpeg_reason(exc: Exception) -> str:
    # FFmpegError str() includes the file name again; keep only the reason.
    reason = getattr(exc, "strerror", None) or str(exc)
    return str(reason).strip()


def probe(source: str | os.PathLike, timeout_s: float = 10.0) -> dict:
    """Container/stream facts without decoding: codec, size, nominal fps, frame count (0 = unknown)."""
    source = os.fspath(source)
    container = _open(source, timeout_s)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        return {
            "container": container.format.name,
            "codec": stream.codec_context.name,
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "fps": float(rate) if rate else None,
            "frames": int(stream.frames or 0),
            "duration_s": float(container.duration / 1_000_000) if container.duration else None,
        }
    finally:
        container.close()


def _decode_error(source: str, timeout_s: float) -> str | None:
    """Decode ``source`` without frame threading; the decoder's error text, or None when it decodes cleanly."""
    import av

    container = _open(source, timeout_s)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"
        for _ in _decode(container, stream):
            pass
    except av.error.FFmpegError as exc:
        return f"decode error ({_ffmpeg_reason(exc)})"
    finally:
        container.close()
    return None


def _decode(container, stream):
    """``container.decode(stream)`` packet by packet: a partial last packet (file cut mid-stream) reaches the
    decoder and raises, instead of being dropped silently."""
    for packet in container.demux(stream):
        yield from packet.decode()


def iter_frames(
    source: str | os.PathLike,
    *,
    stride: int = 1,
    fps: float | None = None,
    max_frames: int | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
    timeout_s: float = 10.0,
    check_complete: bool = True,
    warnings: list[str] | None = None,
) -> Iterator[Frame]:
    """Yield sampled frames of one video file or stream.

    Sampling: a frame is kept when ``index % stride == 0``, it lies in ``[start_s, end_s)`` and, with ``fps``,
    at least ``1/fps`` s after the previously kept frame. ``max_frames`` bounds the number of frames yielded.
    Truncation is judged by decoding, not by what the header claims: a decode error ends the video with a
    ``VideoError`` (after yielding what was decoded). Containers often declare a wrong frame count (AVI
    headers, edit lists, variable frame rate), so with ``check_complete`` a decoded count or duration well
    short of the declared one is only a warning, appended to ``warnings`` (and logged).
    Raises ``VideoError`` (message starts with the source) for missing/empty/non-video/corrupt inputs.
    """
    import av

    source = os.fspath(source)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if fps is not None and fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    container = _open(source, timeout_s)
    decoded = yielded = 0
    stopped_early = False
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame+slice threads: decoding keeps up with detection on 2 cores
        tb = stream.time_base or Fraction(1, 90000)
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        origin = stream.start_time  # pts of the stream's first frame (None for many live streams)
        min_step = 1.0 / fps if fps else 0.0
        next_t = None
        expected = int(stream.frames or 0)
        declared_s = float(stream.duration * tb) if stream.duration else (
            container.duration / 1_000_000 if container.duration else 0.0)
        last_t = 0.0
        try:
            for frame in _decode(container, stream):
                index = decoded
                decoded += 1
                if frame.pts is not None and origin is not None:
                    last_t = max(last_t, float((frame.pts - origin) * tb))
                if frame.pts is not None:
                    if origin is None:
                        origin = frame.pts
                    time_s = float((frame.pts - origin) * tb)
                else:  # no timestamps (raw streams): nominal rate
                    time_s = float(index / rate)
                if end_s is not None and time_s >= end_s:
                    stopped_early = True
                    break
                if start_s is not None and time_s < start_s:
                    continue
                if index % stride:
                    continue
                if min_step:
                    # Anchored schedule (next_t += step) so 29.97 -> 10 fps keeps every 3rd frame without
                    # drift; 1 ms slack absorbs pts rounding; after a gap the schedule restarts.
                    if next_t is not None and time_s < next_t - 1e-3:
                        continue
                    next_t = time_s + min_step if next_t is None or time_s >= next_t + min_step else next_t + min_step
                yield Frame(index=index, time_s=time_s, image=frame.to_ndarray(format="rgb24"))
                yielded += 1
                if max_frames is not None and yielded >= max_frames:
                    stopped_early = True
                    break
        except av.error.FFmpegError as exc:
            raise VideoError(source, f"truncated or corrupt: decode error after {decoded} frames "
                                     f"({_ffmpeg_reason(exc)})",
                             frames_decoded=decoded) from None
        if decoded == 0:
            raise VideoError(source, "no decodable frames (corrupt or truncated file)")
        # Truncation is judged by decoding: a file cut mid-stream ends in a partial packet, which the decoder
        # rejects. Frame threading hides that error, so when fewer frames came out than the header declares
        # the stream is decoded once more without frame threads (rare: costs one extra decode). A count short
        # of the header's alone (AVI headers, broken muxers, edit lists) is a warning only.
        if check_complete and not stopped_early and expected and decoded < expected - 2 and not is_url(source):
            span = f" ({last_t:.1f} s of a declared {declared_s:.1f} s)" if declared_s else ""
            problem = _decode_error(source, timeout_s)
            if problem:
                raise VideoError(source, f"truncated or corrupt: {decoded} of {expected} declared frames decoded"
                                         f"{span}, then {problem}", frames_decoded=decoded)
            msg = (f"{source}: decoded {decoded} frames without a decode error but the container declares "
                   f"{expected}{span}; the header count is ignored")
            log.warning(msg)
            if warnings is not None:
                warnings.append(msg)
    finally:
        container.close()
