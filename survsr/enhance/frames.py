"""Pixel operations on model output shared by the archive job, the service and the stream: bicubic
reference frames, side-by-side review frames, and the visible AI-ENHANCED label (drawn by
``survsr.marking`` so that ``survsr verify`` / ``label_present`` can check it exactly)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from survsr.marking import MarkingConfig, mark_frame, mark_image


def upscale_bicubic(img: np.ndarray, scale: int) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    return cv2.resize(img, (w * scale, h * scale), interpolation=cv2.INTER_CUBIC)


def mark_crop(img: np.ndarray, cfg: MarkingConfig) -> np.ndarray:
    """Face crops: band added below the crop, so the label never hides the face it describes."""
    return mark_image(img, replace(cfg, mode="extend")) if cfg.enabled else img


def side_by_side(original: np.ndarray, enhanced: np.ndarray, *, label: MarkingConfig | None = None) -> np.ndarray:
    """Original (bicubic-upscaled to the same size) | enhanced, for reviewing footage; the label band runs
    under both halves since the whole frame is a model product."""
    h, w = enhanced.shape[:2]
    scale = max(1, h // original.shape[0])
    left = upscale_bicubic(original, scale)[:h, :w]
    if left.shape != enhanced.shape:  # odd sizes: pad rather than distort
        pad = np.zeros_like(enhanced)
        pad[: left.shape[0], : left.shape[1]] = left
        left = pad
    frame = np.concatenate([left, enhanced], axis=1)
    return mark_frame(frame, label) if label is not None else frame
