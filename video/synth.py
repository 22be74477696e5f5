"""Synthetic test/benchmark clips written with PyAV: a real face (skimage's astronaut) moving over a
background at a known position and size, so detection and tracking can be checked against ground truth."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterable

import numpy as np

# Tight face box of skimage.data.astronaut() as found by the default Haar frontal cascade (x, y, w, h).
ASTRONAUT_FACE = (177, 67, 93, 93)
_CONTEXT = 0.35  # the pasted patch carries this much context around the face (x side), like a real head


def write_clip(path: str | Path, frames: Iterable[np.ndarray], fps: float = 25.0, codec: str = "libx264",
               options: dict | None = None, container_options: dict | None = None) -> Path:
    """Encode uint8 RGB frames into ``path`` (container from the extension)."""
    import av

    path = Path(path)
    frames = iter(frames)
    first = next(frames)
    h, w = first.shape[:2]
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w", options=container_options or {}) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height = w, h
        stream.pix_fmt = {"ffv1": "yuv444p", "mjpeg": "yuvj420p"}.get(codec, "yuv420p")
        if options:
            stream.options = options
        for img in (first, *frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def background(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth, faceless, textured backdrop (low-frequency colour noise + gradient)."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(40, 200, size=(max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    bg = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    bg += np.linspace(-20, 20, width, dtype=np.float32)[None, :, None]
    return np.clip(bg, 0, 255).astype(np.uint8)


def face_patch(side: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The astronaut's face with context, scaled so the face is ``side`` px; returns (patch, face box in it)."""
    import cv2
    from skimage.data import astronaut

    img = astronaut()
    fx, fy, fw, fh = ASTRONAUT_FACE
    m = int(round(_CONTEXT * fw))
    x0, y0 = max(0, fx - m), max(0, fy - m)
    x1, y1 = min(img.shape[1], fx + fw + m), min(img.shape[0], fy + fh + m)
    s = side / fw
    patch = cv2.resize(img[y0:y1, x0:x1], (int(round((x1 - x0) * s)), int(round((y1 - y0) * s))),
                       interpolation=cv2.INTER_AREA)
    return patch, (int(round((fx - x0) * s)), int(round((fy - y0) * s)), side, side)


def moving_face_frames(n: int = 30, width: int = 320, height: int = 240, sizes: tuple[int, int] = (40, 20),
                       seed: int = 0) -> tuple[list[np.ndarray], list[tuple[int, int, int, int]]]:
    """Frames with the face moving left to right while its size goes from sizes[0] to sizes[1] px;
    returns (frames, true face boxes)."""
    bg = background(width, height, seed)
    frames, boxes = [], []
    for i in range(n):
        t = i / max(1, n - 1)
        side = int(round(sizes[0] + (sizes[1] - sizes[0]) * t))
        patch, (ox, oy, _, _) = face_patch(side)
        ph, pw = patch.shape[:2]
        px = int(round(10 + t * (width - pw - 20)))
        py = int(round((height - ph) / 2 + 20 * np.sin(2 * np.pi * t)))
        f = bg.copy()
        f[py:py + ph, px:px + pw] = patch
        frames.append(f)
        boxes.append((px + ox, py + oy, side, side))
    return frames, boxes


def write_noise_clip(path: str | Path, n: int = 20, width: int = 160, height: int = 120, fps: float = 25.0) -> Path:
    """A clip with no face in it (moving smooth texture)."""
    bg = background(width * 2, height, seed=3)
    return write_clip(path, (bg[:, i * 4:i * 4 + width].copy() for i in range(n)), fps=fps)
