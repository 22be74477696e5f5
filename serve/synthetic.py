"""Synthetic clips for tests and benchmarks (moving gradient, optional AAC tone), written with PyAV."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def make_clip(path: str | Path, n: int = 24, size: tuple[int, int] = (64, 48), fps: int = 25,
              audio: bool = False, format: str | None = None, codec: str = "libx264") -> Path:
    """``n`` frames of ``size`` (w, h) at ``fps``; ``format="mpegts"`` gives a streamable file."""
    import av

    path = Path(path)
    w, h = size
    with av.open(str(path), "w", format=format) as c:
        v = c.add_stream(codec, rate=fps)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        a = None
        if audio:
            a = c.add_stream("aac", rate=16000)
            a.layout = "mono"
        yy, xx = np.mgrid[0:h, 0:w]
        for i in range(n):
            img = np.stack([(xx * 4 + i * 8) % 256, (yy * 5) % 256, np.full_like(xx, (i * 10) % 256)], -1)
            f = av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24")
            f.pts, f.time_base = i, Fraction(1, fps)
            for p in v.encode(f):
                c.mux(p)
        if a is not None:
            sr = 16000
            for k in range(0, int(sr * n / fps), 1024):
                s = (np.sin(2 * np.pi * 440 * np.arange(k, k + 1024) / sr) * 0.3).astype(np.float32)[None]
                af = av.AudioFrame.from_ndarray(s, format="fltp", layout="mono")
                af.sample_rate, af.pts, af.time_base = sr, k, Fraction(1, sr)
                for p in a.encode(af):
                    c.mux(p)
            for p in a.encode(None):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
    return path
