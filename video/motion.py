"""Where in a fixed camera's view anything ever moves: OpenCV MOG2 background subtraction over a whole video.

Fixed CCTV cameras look at the same shelves, floors and walls all day; a face detector that fires on a
pattern there fires on it in every frame, so its false positives sit still. A person's face moves (at least a
little: breathing, talking, turning). ``MotionMap`` accumulates, per pixel of a small grey copy of every frame,
how many frames MOG2 marked it as foreground; ``box_motion`` then says what share of a box ever moved.
The map is tiny (the frame downscaled to ``side`` px) so it costs ~1 ms a frame and travels with the video's
end-of-stream row in the Ray pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class MotionConfig:
    enabled: bool = True  # false = no motion gating (e.g. a moving or PTZ camera)
    side: int = 160  # the longer side of the frame copy MOG2 runs on
    history: int = 200  # MOG2 history (frames)
    var_threshold: float = 16.0  # MOG2 varThreshold (lower = more pixels count as moving)
    warmup_frames: int = 2  # the first frames are all "foreground" to a fresh model: not counted
    min_moving_frames: int = 2  # a pixel "moves" when foreground in at least this many frames
    min_box_fraction: float = 0.1  # a detection moves when at least this share of its box's pixels moves
    keep_score: float = 0.999  # detections at or above this score are kept even on a still region

    def validate(self) -> None:
        if self.side < 16 or self.history < 1 or self.min_moving_frames < 1 or self.warmup_frames < 0:
            raise ValueError("motion: side >= 16, history >= 1, min_moving_frames >= 1, warmup_frames >= 0")
        if not 0.0 <= self.min_box_fraction <= 1.0 or not 0.0 <= self.keep_score <= 1.0:
            raise ValueError("motion: min_box_fraction and keep_score must be in [0, 1]")


class MotionMap:
    """Feed the frames of one video in order (``update``); ``counts`` then holds per-pixel foreground counts."""

    def __init__(self, cfg: MotionConfig | None = None):
        self.cfg = cfg or MotionConfig()
        self._sub = None
        self.counts: np.ndarray | None = None
        self.frames = 0
        self.scale = 1.0
        self.frame_shape: tuple[int, int] | None = None

    def update(self, image_rgb: np.ndarray) -> None:
        import cv2

        h, w = image_rgb.shape[:2]
        if self.frame_shape is None:
            self.frame_shape = (h, w)
            self.scale = min(1.0, self.cfg.side / max(h, w))
            self._size = (max(1, int(round(w * self.scale))), max(1, int(round(h * self.scale))))
            self._sub = cv2.createBackgroundSubtractorMOG2(history=self.cfg.history,
                                                           varThreshold=self.cfg.var_threshold, detectShadows=False)
            self.counts = np.zeros((self._size[1], self._size[0]), np.uint16)
        elif (h, w) != self.frame_shape:  # a stream changed size: keep the map of the first size
            return
        small = cv2.resize(cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY), self._size, interpolation=cv2.INTER_AREA)
        mask = self._sub.apply(small)
        if self.frames >= self.cfg.warmup_frames:
            self.counts += (mask > 0).astype(np.uint16)
        self.frames += 1

    # The map travels between Ray workers as plain JSON-able data.
    def to_dict(self) -> dict:
        if self.counts is None:
            return {}
        return {"frames": self.frames, "scale": self.scale, "shape": list(self.counts.shape),
                "frame_shape": list(self.frame_shape), "counts": self.counts.tobytes().hex()}

    @classmethod
    def from_dict(cls, d: dict, cfg: MotionConfig | None = None) -> "MotionMap":
        m = cls(cfg)
        if d:
            m.frames, m.scale = int(d["frames"]), float(d["scale"])
            m.frame_shape = tuple(d["frame_shape"])
            m.counts = np.frombuffer(bytes.fromhex(d["counts"]), np.uint16).reshape(d["shape"]).copy()
        return m

    def merge(self, other: "MotionMap") -> None:
        """Add another part's counts (a video decoded in several parts); maps of another size are ignored."""
        if other.counts is None:
            return
        if self.counts is None:
            self.counts, self.scale, self.frame_shape = other.counts.copy(), other.scale, other.frame_shape
            self.frames = other.frames
        elif other.counts.shape == self.counts.shape:
            self.counts = self.counts + other.counts
            self.frames += other.frames

    def box_motion(self, box: tuple[int, int, int, int]) -> float | None:
        """Share of ``box``'s pixels (source px) that moved in at least ``min_moving_frames`` frames; None
        when there is no map (too few frames to say)."""
        if self.counts is None or self.frames <= self.cfg.warmup_frames:
            return None
        x, y, w, h = box
        s = self.scale
        mh, mw = self.counts.shape
        x0, y0 = min(mw - 1, max(0, int(x * s))), min(mh - 1, max(0, int(y * s)))
        x1, y1 = max(x0 + 1, min(mw, int(np.ceil((x + w) * s)))), max(y0 + 1, min(mh, int(np.ceil((y + h) * s))))
        region = self.counts[y0:y1, x0:x1]
        return float((region >= self.cfg.min_moving_frames).mean())
