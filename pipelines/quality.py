"""Full-reference (PSNR, SSIM) and no-reference (sharpness) image metrics.

PSNR and SSIM come from scikit-image; this module only fixes the conventions the SR literature uses so
that numbers are comparable with published tables: Y is BT.601 luma in [16, 235] (``skimage.color.rgb2ycbcr``,
as MATLAB's ``rgb2ycbcr``), ``data_range`` is 255, a border of ``scale`` pixels is cropped before scoring, and
SSIM uses Wang et al.'s Gaussian window (sigma 1.5, population covariance). With these conventions bicubic x2
scores 33.67 dB on Set5 and 30.32 dB on Set14, the figures every SR paper quotes (a test checks this).

``convention: paper_table1`` is instead what Moreira et al.'s Table I used: scikit-image's PSNR and SSIM on
the full images (no border crop; SSIM with scikit-image's defaults: 7x7 uniform window, sample covariance);
the paper's figures are then to be compared with the RGB columns.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class MetricError(ValueError):
    """Two images cannot be compared (shape mismatch, too small, wrong type); the message names both."""


CONVENTIONS = ("sr_benchmark", "paper_table1")


@dataclass
class MetricsConfig:
    # sr_benchmark: the keys below (Y + border crop + Gaussian SSIM by default). paper_table1: the paper's
    # Table I (scikit-image PSNR/SSIM on the full image: border 0, 7x7 uniform SSIM window, sample
    # covariance), overriding border and the ssim_* keys.
    convention: str = "sr_benchmark"
    border: int | None = None  # pixels cropped on each side before scoring; None = the SR scale
    data_range: float = 255.0
    ssim_gaussian: bool = True  # Wang et al. 2004: 11x11 Gaussian window, sigma 1.5
    ssim_sigma: float = 1.5
    ssim_win_size: int = 7  # used only when ssim_gaussian is false
    ssim_sample_covariance: bool = False

    def validate(self) -> None:
        if self.convention not in CONVENTIONS:
            raise ValueError(f"metrics.convention must be one of {CONVENTIONS}, got {self.convention!r}")
        if self.border is not None and self.border < 0:
            raise ValueError(f"metrics.border must be >= 0 or null, got {self.border}")
        if self.data_range <= 0:
            raise ValueError(f"metrics.data_range must be > 0, got {self.data_range}")
        if self.ssim_win_size < 3 or self.ssim_win_size % 2 == 0:
            raise ValueError(f"metrics.ssim_win_size must be odd and >= 3, got {self.ssim_win_size}")


def _check_pair(ref: np.ndarray, test: np.ndarray, ref_name: str, test_name: str) -> None:
    for arr, name in ((ref, ref_name), (test, test_name)):
        if not isinstance(arr, np.ndarray):
            raise MetricError(f"{name}: expected a numpy array, got {type(arr).__name__}")
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3)):
            raise MetricError(f"{name}: expected an HxW or HxWx3 image, got shape {arr.shape}")
    if ref.shape != test.shape:
        raise MetricError(
            f"size mismatch: {ref_name} is {_shape_text(ref)} but {test_name} is {_shape_text(test)}; "
            "images must have the same size to be compared"
        )


def _shape_text(arr: np.ndarray) -> str:
    h, w = arr.shape[:2]
    c = arr.shape[2] if arr.ndim == 3 else 1
    return f"{w}x{h}x{c}"


def crop_border(img: np.ndarray, border: int) -> np.ndarray:
    if border <= 0:
        return img
    h, w = img.shape[:2]
    if h <= 2 * border or w <= 2 * border:
        raise MetricError(f"a {w}x{h} image is too small for a {border}-pixel border crop")
    return img[border:h - border, border:w - border]


def to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma in [16, 235] as float64 (the Y channel SR papers score on)."""
    from skimage.color import rgb2ycbcr

    if img.ndim == 2:
        return img.astype(np.float64)
    if img.dtype != np.uint8:
        raise MetricError(f"to_y expects uint8 RGB, got {img.dtype}")
    return rgb2ycbcr(img)[..., 0]


def psnr(ref: np.ndarray, test: np.ndarray, data_range: float = 255.0) -> float:
    """scikit-image PSNR; ``inf`` for identical images (without the divide-by-zero warning)."""
    from skimage.metrics import peak_signal_noise_ratio

    if np.array_equal(ref, test):
        return math.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(peak_signal_noise_ratio(ref.astype(np.float64), test.astype(np.float64),
                                             data_range=data_range))


def ssim(ref: np.ndarray, test: np.ndarray, cfg: MetricsConfig | None = None) -> float:
    from skimage.metrics import structural_similarity

    cfg = cfg or MetricsConfig()
    kwargs = dict(data_range=cfg.data_range, use_sample_covariance=cfg.ssim_sample_covariance)
    if ref.ndim == 3:
        kwargs["channel_axis"] = 2
    min_side = min(ref.shape[:2])
    if cfg.ssim_gaussian:
        # skimage's Gaussian window spans 2*ceil(3.5*sigma)+1 px (11 at sigma 1.5)
        needed = 2 * int(3.5 * cfg.ssim_sigma + 0.5) + 1
        kwargs.update(gaussian_weights=True, sigma=cfg.ssim_sigma)
    else:
        needed = cfg.ssim_win_size
        kwargs["win_size"] = cfg.ssim_win_size
    if min_side < needed:
        raise MetricError(f"a {ref.shape[1]}x{ref.shape[0]} image (after border crop) is smaller than the "
                          f"{needed}x{needed} SSIM window")
    return float(structural_similarity(ref.astype(np.float64), test.astype(np.float64), **kwargs))


def score_pair(ref: np.ndarray, test: np.ndarray, *, scale: int = 2, cfg: MetricsConfig | None = None,
               ref_name: str = "reference", test_name: str = "test") -> dict[str, float | bool]:
    """PSNR and SSIM on RGB and on Y after the border crop. ``identical`` says the PSNRs are infinite."""
    cfg = effective(cfg or MetricsConfig())
    _check_pair(ref, test, ref_name, test_name)
    if ref.dtype != np.uint8 or test.dtype != np.uint8:
        raise MetricError(f"{ref_name} / {test_name}: expected uint8 images, got {ref.dtype} / {test.dtype}")
    border = scale if cfg.border is None else cfg.border
    r, t = crop_border(ref, border), crop_border(test, border)
    ry, ty = to_y(r), to_y(t)
    return {
        "psnr_rgb": psnr(r, t, cfg.data_range),
        "ssim_rgb": ssim(r, t, cfg),
        "psnr_y": psnr(ry, ty, cfg.data_range),
        "ssim_y": ssim(ry, ty, cfg),
        "identical": bool(np.array_equal(r, t)),
    }


def effective(cfg: MetricsConfig) -> MetricsConfig:
    """The settings actually used: ``paper_table1`` pins border and SSIM to scikit-image's full-image defaults."""
    if cfg.convention != "paper_table1":
        return cfg
    from dataclasses import replace

    return replace(cfg, border=0, ssim_gaussian=False, ssim_win_size=7, ssim_sample_covariance=True)


def describe(cfg: MetricsConfig, scale: int) -> str:
    """One sentence for reports: how the numbers were computed."""
    e = effective(cfg)
    border = scale if e.border is None else e.border
    window = (f"a Gaussian window (sigma {e.ssim_sigma:g})" if e.ssim_gaussian else
              f"a {e.ssim_win_size}x{e.ssim_win_size} uniform window")
    head = ("the paper's Table I convention: " if cfg.convention == "paper_table1" else "")
    return (f"{head}PSNR/SSIM by scikit-image on Y (BT.601) and on RGB, after a {border}-pixel border crop, "
            f"SSIM with {window} ({'sample' if e.ssim_sample_covariance else 'population'} covariance)")


def sharpness(img: np.ndarray) -> float:
    """No-reference sharpness: variance of the Laplacian of the grey image (OpenCV, float64, 0-255 scale).

    It grows with edge contrast and with noise and ringing, so it says which output is crisper, not which
    is right; it also depends on the image size, so only compare images of the same size.
    """
    import cv2

    if img.ndim == 3:
        grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    else:
        grey = img
    return float(cv2.Laplacian(grey.astype(np.float64), cv2.CV_64F, ksize=1).var())


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def read_rgb(path: str | Path) -> np.ndarray:
    """Any image file as uint8 RGB; 16-bit and palette/grey images are converted. Errors name the file."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise MetricError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64)
                peak = 65535.0 if arr.max() > 255 else 255.0
                grey = np.clip(np.round(arr / peak * 255.0), 0, 255).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2)
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise MetricError(f"{path}: unreadable image ({exc.__class__.__name__}: {exc})") from None


def decode_png(data: bytes) -> np.ndarray:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
