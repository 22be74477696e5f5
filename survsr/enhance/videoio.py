"""Writing enhanced video with PyAV: source timestamps kept frame for frame, audio packets passed through
untouched (no re-encode), H.264 when the FFmpeg build has it."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def pick_codec(preferred: str = "libx264") -> str:
    import av

    for name in (preferred, "libx264", "h264", "mpeg4"):
        if name in av.codecs_available:
            try:
                av.codec.Codec(name, "w")
                return name
            except Exception:  # noqa: BLE001 - listed but no encoder in this build
                continue
    raise RuntimeError("no usable video encoder in this FFmpeg build (tried libx264, h264, mpeg4)")


class VideoWriter:
    """One output file. ``write(img, pts)`` takes pts in ``time_base`` units (the source's), so the output
    carries the source's timestamps exactly, gaps from dropped frames included."""

    def __init__(self, path: str | Path, *, width: int, height: int, rate: Fraction | float | None,
                 time_base: Fraction, codec: str = "libx264", crf: int = 18, preset: str = "veryfast",
                 audio_template=None, format: str = "mp4", low_latency: bool = False):
        import av

        self.path = Path(path)
        self.time_base = Fraction(time_base)
        self.container = av.open(str(path), "w", format=format)
        codec = pick_codec(codec)
        rate = Fraction(rate).limit_denominator(100000) if rate else Fraction(25)
        self.stream = self.container.add_stream(codec, rate=rate)
        self.stream.width = width + (width & 1)  # yuv420p needs even sizes
        self.stream.height = height + (height & 1)
        self.stream.pix_fmt = "yuv420p"
        self.stream.time_base = self.time_base
        self.stream.codec_context.time_base = self.time_base
        if codec in ("libx264",):
            self.stream.options = {"crf": str(crf), "preset": preset}
            if low_latency:  # live: no B-frames / lookahead, so no reordering delay and no dts < pts shift
                self.stream.options["tune"] = "zerolatency"
        elif low_latency:
            self.stream.codec_context.max_b_frames = 0
        elif codec == "mpeg4":
            self.stream.codec_context.qscale = 2
        self.audio = None
        if audio_template is not None:
            self.audio = self.container.add_stream_from_template(audio_template)
        self.frames = 0
        self._closed = False
        self._last_pts: int | None = None

    def write(self, img: np.ndarray, pts: int) -> None:
        import av

        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1  # never hand the muxer a non-increasing pts (duplicated source pts)
        self._last_pts = pts
        h, w = img.shape[:2]
        if (w, h) != (self.stream.width, self.stream.height):
            pad = np.zeros((self.stream.height, self.stream.width, 3), np.uint8)
            pad[:h, :w] = img[: self.stream.height, : self.stream.width]
            img = pad
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
        frame.pts = pts
        frame.time_base = self.time_base
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def mux_audio(self, packet) -> None:
        if self.audio is None or packet.dts is None:  # flush packets carry no data
            return
        packet.stream = self.audio
        self.container.mux(packet)

    def close(self) -> None:
        if self._closed:
            return
        try:
            for packet in self.stream.encode(None):
                self.container.mux(packet)
        finally:
            self._closed = True
            self.container.close()

    def abort(self) -> None:
        """Close without flushing the encoder (error paths); a no-op after close()."""
        if not self._closed:
            self._closed = True
            try:
                self.container.close()
            except Exception:  # noqa: BLE001 - the file is being thrown away anyway
                pass

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_frame_times(path: str | Path) -> list[float]:
    """Presentation times (s) of every video frame of a file, in display order (for checks and tests)."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return [float(f.pts * s.time_base) for f in c.decode(s) if f.pts is not None]
