"""Face crops: the native-resolution crop (saved lossless) and the 32x32 LR image the method trains on.

The LR image is made by area averaging when the crop is at least 32 px (anti-aliased, like a camera
sampling a smaller face); a smaller crop would need an upscale, which is never done silently: the method
string says so and the native size is in the manifest (or such crops are skipped, see ``CropConfig``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

SHARPNESS_SIDE = 64  # sharpness is measured at a common size so that big and small crops compare


@dataclass
class CropConfig:
    lr_size: int = 32
    small: Literal["upscale", "skip"] = "upscale"  # crops smaller than lr_size: bicubic upscale (recorded) or drop
    min_native: int = 12  # crops with a side below this are dropped either way (too little signal)

    def validate(self) -> None:
        if self.lr_size < 4:
            raise ValueError(f"lr_size must be >= 4, got {self.lr_size}")
        if self.min_native < 1:
            raise ValueError(f"min_native must be >= 1, got {self.min_native}")


def crop(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x, y, w, h = (int(v) for v in box)
    return np.ascontiguousarray(image[y:y + h, x:x + w])


def sharpness(native: np.ndarray) -> float:
    """Variance of the Laplacian of the grey crop resampled to 64x64 (higher = sharper)."""
    import cv2

    gray = cv2.cvtColor(native, cv2.COLOR_RGB2GRAY) if native.ndim == 3 else native
    h, w = gray.shape[:2]
    interp = cv2.INTER_AREA if min(h, w) >= SHARPNESS_SIDE else cv2.INTER_LINEAR
    g = cv2.resize(gray, (SHARPNESS_SIDE, SHARPNESS_SIDE), interpolation=interp)
    return float(cv2.Laplacian(g, cv2.CV_64F).var())


def resize_method_for(native_w: int, native_h: int, size: int) -> str:
    if native_w == size and native_h == size:
        return "none"
    if native_w >= size and native_h >= size:
        return "area"
    return "bicubic-upscale"


def make_lr(native: np.ndarray, size: int = 32) -> tuple[np.ndarray, str]:
    """Return (size x size uint8 RGB, method); method is "none", "area" or "bicubic-upscale"."""
    import cv2

    h, w = native.shape[:2]
    method = resize_method_for(w, h, size)
    if method == "none":
        return native.copy(), method
    interp = cv2.INTER_AREA if method == "area" else cv2.INTER_CUBIC
    lr = cv2.resize(native, (size, size), interpolation=interp)
    return np.ascontiguousarray(lr), method


def keep_crop(native_w: int, native_h: int, cfg: CropConfig) -> bool:
    if min(native_w, native_h) < cfg.min_native:
        return False
    return not (cfg.small == "skip" and min(native_w, native_h) < cfg.lr_size)
