"""Zero-Shot Super-Resolution (Shocher, Cohen, Irani, CVPR 2018), one image at a time.

Faithful to the defaults of the official code (``configs.py``, ``X2_ONE_JUMP_IDEAL_CONF``): an 8-layer 3x3
64-channel ReLU CNN without biases that learns the residual over the bicubic upscale, trained with L1 and Adam (lr
1e-3) on pairs made from the test image itself: "HR fathers" are the image and downscaled copies of it (scale in
[0.5, 1]), augmented and randomly cropped to 128 px where larger; "LR sons" are the fathers downscaled by the scale
factor (bicubic, or a given kernel), optionally with noise. Learning-rate policy: every 50 iterations the
reconstruction error of the input from its own son is measured; every 60 iterations (and at least ``min_iters``
after the last change) a line is fitted to the last 256/50 errors and the lr is divided by 10 when ``-1.5 * slope <
std`` (the slope's standard error, as ``np.polyfit(cov=True)`` in the official code); training stops once the lr
falls below ``min_learning_rate`` or at ``max_iters``. Inference: geometric self-ensemble (8 transforms, median)
with back-projection.

Departures from the official code that remain in the default (each measured on Set5 and on 32x32 faces in
docs/benchmarks.md, "ZSSR against the official code"; the keys that restore the official behaviour run on this
one-at-a-time engine only):
1. Augmentation (``augmentation: affine`` = official). The official ``random_augment`` warps every father onto a
   128x128 canvas with cv2 cubic interpolation: any angle, shear, x/y scale difference, black outside the image.
   Its centring uses (w/2, h/2), so even its "lossless" quarter turns land one pixel off with a black line, and
   its crop shift is drawn over the scaled size while the centring uses the unscaled one, so scaled fathers are
   partly black even for large images. Here: downscale + one of the 8 rotations/mirrors, crops inside the father,
   so a 32x32 face is never pasted on a black canvas.
2. Resampling (``resampler: matlab`` = official ``imresize``). torch's antialiased bicubic equals it away from
   the borders and differs within 2-4 pixels of them (truncated kernel vs mirrored image). ``matlab`` keeps
   imresize's quirk of taking antialiasing for every axis from the vertical factor (it matters only for the
   anisotropic factors of gradual SR). It does not keep a second one: the official imresize casts tap positions
   to unsigned before mirroring them, so taps left of or above the image wrap around (2**64 mod 2n) and read
   pixels far inside it (in a 176-pixel row, position -1 reads pixel 160). ``matlab`` mirrors them as MATLAB
   does. Only the first 1-3 rows and columns of sons and upscales differ (on foreman's 176x144 LR by up to 0.064
   of the range; bit-equal inside); the official code itself scores within 0.08 dB of this one (bird, butterfly).
3. One jump to x2 (``X2_ONE_JUMP_IDEAL_CONF``). The official README credits its gradual configuration
   (``X2_GRADUAL_IDEAL_CONF``: six intermediate, partly anisotropic factors, each output joining the fathers)
   with "~0.3dB better results, 6x Runtime": ``survsr.models.zssr_gradual`` (``survsr upscale --method
   zssr-gradual`` for stills). With the shipped setting (network carried over) Set5 scores 37.41 (the paper:
   37.37) against one jump's 37.04 at 5.4x the iterations, and bird 42.21 (the official code itself: 42.16); with
   a fresh network per stage (official ``init_net_for_each_sf = True``) Set5 is 37.14 and Set14 32.85 against
   32.77. On a 32x32 face it gained 0.44 dB at 110x the CPU time, so faces keep one jump (docs/benchmarks.md).
4. Sons of odd-sized fathers are round(size / scale) pixels, not ceil (only this code's scaled fathers can be odd).
5. Adam is torch's (epsilon added to sqrt(v) after bias correction; TensorFlow's adds it before).
   The epsilon itself is the official 1e-8 (``adam_eps``). It matters where the gradients are smaller: the
   official init starts the residual near 1e-5, and on a mostly flat image L1 can drive it to ~1e-8 with
   gradients near 1e-10, where each step shrinks to lr * g / eps and the network freezes "dead" (Set14 ppt3,
   gradual stage 1). ``adam_eps: 1.0e-16`` (opt-in) keeps Adam's steps lr-sized there, which can also push a
   network into all-off ReLUs (coastguard, gradual stage 2): pair it with the gradual's ``restart_dead``.
6. Random numbers come from a counter-based generator keyed by (seed, stream, counter), so the batched engine
   (``models/zssr_batched.py``) draws exactly the numbers this path draws for the same face and seed, whatever
   else shares the batch.
Not a departure: the official ZSSR code draws crop positions uniformly (no gradient-weighted crop centres; those
appear, commented out, only in later codebases derived from it).
Paper against code: third-party readings of the paper say a pair is sampled with probability proportional to the
HR father's size, while the official code draws the scale uniformly; ``father_sampling: size`` is that reading
(opt-in, measured in docs/benchmarks.md), ``uniform`` (the default) the code.
Reproduced, not a departure: the lr policy's slope noise. The official code ran on numpy < 1.16, whose
``polyfit(cov=True)`` scaled the covariance by residuals / (n - 4); numpy >= 1.16 scales by residuals / (n - 2)
(numpy gh-11197). With the policy's 5 points the official standard error was sqrt(3) times larger, so it lowered the
lr sooner: ``lr_fit_cov: legacy`` (the default) reproduces that, ``numpy`` is today's scaling (opt-in; same Set5
and face quality, 10-25% more iterations, docs/benchmarks.md).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

# Smallest input side: the smallest father (min_scale * side) must still have a son of >= 2 pixels.
MIN_SIDE = 8

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


@dataclasses.dataclass
class ZSSRConfig:
    scale: float = 2.0                      # output = round(input * scale)
    depth: int = 8                          # conv layers (3x3, no bias, ReLU between)
    width: int = 64                         # channels of the hidden layers
    init_variance: float = 0.1              # weights ~ N(0, init_variance / (3*3*in_channels))
    learning_rate: float = 1e-3
    adam_eps: float = ADAM_EPS              # official: TensorFlow's default 1e-8 (see adam_eps in configs/zssr.yaml)
    min_learning_rate: float = 9e-6         # official code: stop once lr has fallen to 1e-6 (< 9e-6)
    learning_rate_change_ratio: float = 1.5
    learning_rate_policy_check_every: int = 60
    learning_rate_slope_range: int = 256    # iterations of reconstruction errors in the line fit
    run_test_every: int = 50                # reconstruction error measured every N iterations
    min_iters: int = 256                    # iterations between lr changes (and before the first one)
    max_iters: int = 3000
    crop_size: int = 128
    noise_std: float = 0.0                  # 0.0125 = the official "real image" setting
    leave_as_is_probability: float = 0.05
    no_interpolate_probability: float = 0.45
    min_scale: float = 0.5                  # fathers are the input downscaled by [min_scale, 1]
    father_sampling: str = "uniform"        # uniform (official code) | size (paper's text; see father_scale)
    augmentation: str = "dihedral"          # dihedral (this code) | affine (official random_augment, see below)
    scale_diff_sigma: float = 0.25          # affine only: x/y scale difference ~ N(0, sigma) (official 0.25)
    shear_sigma: float = 0.1                # affine only: shear ~ N(0, sigma) (official 0.1)
    resampler: str = "torch"                # torch (antialiased bicubic) | matlab (official imresize.py)
    lr_fit_cov: str = "legacy"              # legacy (numpy < 1.16, official: residuals / (n-4)) | numpy (/ (n-2))
    output_flip: bool = True                # geometric self-ensemble of 8 transforms
    back_projection_iters: int = 10
    kernel: str | None = None               # .npy downscaling kernel for the sons (default: bicubic)
    device: str = "auto"                    # auto | cpu | cuda | cuda:N
    precision: str = "auto"                 # auto (bf16 on cuda, fp32 on cpu) | fp32 | fp64 | bf16

    def validate(self) -> None:
        if self.scale <= 1.0:
            raise ValueError(f"scale: must be > 1, got {self.scale}")
        if self.depth < 2 or self.width < 1:
            raise ValueError("depth must be >= 2 and width >= 1")
        if not 0 < self.min_learning_rate < self.learning_rate:
            raise ValueError("need 0 < min_learning_rate < learning_rate")
        if not 0 < self.adam_eps < 1:
            raise ValueError(f"adam_eps: must be in (0, 1), got {self.adam_eps}")
        if self.max_iters < 0 or self.min_iters < 0 or self.run_test_every < 1:
            # max_iters 0 = no fine-tuning: a warm-started face gets the init's own output
            raise ValueError("max_iters >= 0, min_iters >= 0, run_test_every >= 1 required")
        if self.learning_rate_policy_check_every < 1 or self.learning_rate_slope_range < 1:
            raise ValueError("learning_rate_policy_check_every and learning_rate_slope_range must be >= 1")
        if not 0 < self.min_scale <= 1:
            raise ValueError(f"min_scale: must be in (0, 1], got {self.min_scale}")
        if self.leave_as_is_probability + self.no_interpolate_probability > 1 or min(
                self.leave_as_is_probability, self.no_interpolate_probability) < 0:
            raise ValueError("augmentation probabilities must be >= 0 and sum to <= 1")
        if self.crop_size < 4 or self.back_projection_iters < 0 or self.noise_std < 0:
            raise ValueError("crop_size >= 4, back_projection_iters >= 0, noise_std >= 0 required")
        if self.precision not in ("auto", "fp32", "fp64", "bf16"):
            raise ValueError(f"precision: one of auto, fp32, fp64, bf16; got {self.precision!r}")
        for key, allowed in (("augmentation", ("dihedral", "affine")), ("resampler", ("torch", "matlab")),
                             ("lr_fit_cov", ("numpy", "legacy")), ("father_sampling", ("uniform", "size"))):
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key}: one of {', '.join(allowed)}; got {getattr(self, key)!r}")
        points = int(self.learning_rate_slope_range / self.run_test_every)
        if self.lr_fit_cov == "legacy" and points < 5:
            # numpy < 1.16's polyfit(cov=True) raises below order + 3 = 5 points (the official code would stop
            # with that error); here the lr would silently never drop
            raise ValueError(f"lr_fit_cov: legacy needs learning_rate_slope_range / run_test_every >= 5 points "
                             f"for its line fit, got {self.learning_rate_slope_range} / {self.run_test_every} "
                             f"= {points}; raise learning_rate_slope_range or set lr_fit_cov: numpy")
        if self.scale_diff_sigma < 0 or self.shear_sigma < 0:
            raise ValueError("scale_diff_sigma and shear_sigma must be >= 0")
        if self.kernel is not None and not Path(self.kernel).is_file():
            raise ValueError(f"kernel: {self.kernel}: file not found")


# ---------------------------------------------------------------------------------------------------------
# Counter-based random numbers: value = f(seed, stream, counter). Vectorised over faces, so the batched engine
# reproduces each face's draws exactly (a per-face np.random.Generator would need a Python loop per face).
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)
STREAM_AUG, STREAM_NOISE, STREAM_TEST_NOISE, STREAM_AFFINE_U, STREAM_AFFINE_N, STREAM_INIT = 1, 2, 3, 4, 5, 16


def _splitmix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def uniforms(seeds, stream: int, counters) -> np.ndarray:
    """Uniform [0, 1) doubles; ``seeds`` and ``counters`` broadcast against each other."""
    s = np.asarray(seeds, dtype=np.int64).astype(np.uint64)
    c = np.asarray(counters, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        key = _splitmix(_splitmix(s) ^ np.uint64(stream * 0x632BE59BD9B4E019 & 0xFFFFFFFFFFFFFFFF))
        x = _splitmix(key + c)
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def normals(seeds, stream: int, counters) -> np.ndarray:
    """Standard normals by Box-Muller from two uniforms per value (counters 2n and 2n+1)."""
    c = np.asarray(counters, dtype=np.int64)
    u1 = uniforms(seeds, stream, 2 * c)
    u2 = uniforms(seeds, stream, 2 * c + 1)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)


N_AUG_DRAWS = 5  # mode, scale, dihedral, crop y, crop x


def aug_draws(seeds, iters) -> np.ndarray:
    """[N, 5] uniforms for the augmentation of iteration ``iters[i]`` of face ``seeds[i]``."""
    seeds = np.atleast_1d(np.asarray(seeds, dtype=np.int64))
    iters = np.atleast_1d(np.asarray(iters, dtype=np.int64))
    counters = iters[:, None] * N_AUG_DRAWS + np.arange(N_AUG_DRAWS)[None, :]
    return uniforms(seeds[:, None], STREAM_AUG, counters)


def noise_tensor(seed: int, stream: int, index: int, shape, cfg: ZSSRConfig, like: torch.Tensor) -> torch.Tensor:
    n = int(np.prod(shape))
    z = normals(seed, stream, (np.int64(index) << np.int64(24)) + np.arange(n, dtype=np.int64))
    return torch.from_numpy(z.reshape(shape) * cfg.noise_std).to(device=like.device, dtype=like.dtype)


# ---------------------------------------------------------------------------------------------------------
# Geometry and resampling


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 rotations/mirrors (k < 4: rotate k*90 deg; k >= 4: then mirror left-right)."""
    y = torch.rot90(x, k % 4, dims=(-2, -1))
    return torch.flip(y, dims=(-1,)) if k >= 4 else y


def undo_dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    y = torch.flip(x, dims=(-1,)) if k >= 4 else x
    return torch.rot90(y, -(k % 4), dims=(-2, -1))


def resize(x: torch.Tensor, size: tuple[int, int], method: str = "torch",
           scale: float | tuple[float, float] | None = None) -> torch.Tensor:
    """Bicubic to an exact size; NCHW. ``torch``: antialiased (PIL-like, a=-0.5; the kernel is truncated and
    renormalised at the borders). ``matlab``: the official code's ``imresize`` (MATLAB semantics, see
    ``matlab_weights``); ``scale`` is the factor its coordinates use (the official code passes the SR factor
    with an output shape that may not be exactly ``scale`` times the input), default the size ratio."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if method == "matlab":
        h, w = x.shape[-2:]
        sy, sx = ((scale, scale) if isinstance(scale, (int, float)) else tuple(scale)) if scale else (
            size[0] / h, size[1] / w)
        # imresize decides antialiasing for every axis from the vertical factor alone
        # (``antialiasing *= (scale_factor[0] < 1)``): a 1.0 x 1/1.5 son is shrunk without it
        aa = sy < 1
        wy = torch.from_numpy(matlab_weights(h, size[0], sy, aa)).to(x.device, x.dtype)
        wx = torch.from_numpy(matlab_weights(w, size[1], sx, aa)).to(x.device, x.dtype)
        return wy @ x @ wx.T
    return F.interpolate(x, size=tuple(size), mode="bicubic", align_corners=False, antialias=True)


def _cubic(d: np.ndarray) -> np.ndarray:
    a = np.abs(d)
    return ((1.5 * a ** 3 - 2.5 * a ** 2 + 1) * (a <= 1)
            + (-0.5 * a ** 3 + 2.5 * a ** 2 - 4 * a + 2) * ((a > 1) & (a <= 2)))


@functools.lru_cache(maxsize=256)
def matlab_weights(n_in: int, n_out: int, scale: float, antialias: bool | None = None) -> np.ndarray:
    """[n_out, n_in] resampling matrix of MATLAB's ``imresize(..., 'bicubic')`` as the official ZSSR code
    re-implements it: output pixel centre i (1-based) sits at i/scale + (1 - 1/scale)/2 in the input; cubic
    kernel a=-0.5, stretched by 1/scale when antialiasing (default: when downscaling); taps normalised to sum 1
    *before* the borders are mirrored (torch instead truncates and renormalises there)."""
    aa = (scale < 1) if antialias is None else bool(antialias)
    width = 4.0 / scale if aa else 4.0
    centre = np.arange(1, n_out + 1) / scale + 0.5 * (1 - 1 / scale)
    taps = int(np.ceil(width)) + 2
    idx = np.floor(centre - width / 2)[:, None] + np.arange(taps)[None, :] - 1
    d = centre[:, None] - idx - 1
    wt = scale * _cubic(scale * d) if aa else _cubic(d)
    total = wt.sum(axis=1, keepdims=True)
    wt = wt / np.where(total == 0, 1.0, total)
    m = np.mod(idx.astype(np.int64), 2 * n_in)
    m = np.where(m >= n_in, 2 * n_in - 1 - m, m)
    out = np.zeros((n_out, n_in))
    np.add.at(out, (np.repeat(np.arange(n_out), taps), m.ravel()), wt.ravel())
    return out


def load_kernel(path: str | None) -> np.ndarray | None:
    if path is None:
        return None
    k = np.load(path)
    if k.ndim != 2 or not np.isfinite(k).all() or k.sum() <= 0:
        raise ValueError(f"{path}: a downscaling kernel must be a finite 2-D array with positive sum")
    return k / k.sum()


def downscale(x: torch.Tensor, size: tuple[int, int], kernel: np.ndarray | None, method: str = "torch",
              scale: float | tuple[float, float] | None = None) -> torch.Tensor:
    """Bicubic downscale (``resize``; ``scale`` < 1 as there), or (official ``numeric_kernel``) correlate with
    ``kernel`` under symmetric padding and sample the pixels nearest to the output grid."""
    if kernel is None:
        return resize(x, size, method, scale)
    kh, kw = kernel.shape
    h, w = x.shape[-2:]
    py, px = kh // 2, kw // 2
    iy = _symmetric_index(h, py, kh - 1 - py, x.device)
    ix = _symmetric_index(w, px, kw - 1 - px, x.device)
    xp = x[..., iy, :][..., ix]
    wt = torch.as_tensor(kernel, dtype=x.dtype, device=x.device).expand(x.shape[1], 1, kh, kw)
    filtered = F.conv2d(xp, wt, groups=x.shape[1])
    ys = np.round(np.linspace(0, h - h / size[0], size[0])).astype(np.int64)
    xs = np.round(np.linspace(0, w - w / size[1], size[1])).astype(np.int64)
    return filtered[..., torch.as_tensor(ys, device=x.device), :][..., torch.as_tensor(xs, device=x.device)]


def _symmetric_index(n: int, before: int, after: int, device) -> torch.Tensor:
    idx = np.arange(-before, n + after)
    idx = np.where(idx < 0, -idx - 1, idx)
    idx = np.where(idx >= n, 2 * n - idx - 1, idx)
    return torch.as_tensor(np.clip(idx, 0, n - 1), device=device)


def son_size(h: int, w: int, scale: float) -> tuple[int, int]:
    return max(1, int(round(h / scale))), max(1, int(round(w / scale)))


def out_size(h: int, w: int, scale: float) -> tuple[int, int]:
    return int(round(h * scale)), int(round(w * scale))


@dataclasses.dataclass(frozen=True)
class Draw:
    """One iteration's augmentation: scaled size, crop and dihedral transform."""
    fh: int
    fw: int
    y0: int
    x0: int
    ch: int
    cw: int
    k: int


def decode_draws(u: np.ndarray, h: int, w: int, cfg: ZSSRConfig) -> dict[str, np.ndarray]:
    """Turn [N, 5] uniforms into N augmentations (official ``random_augment`` modes: leave as is / only the 8
    lossless transforms / scaled; see the module docstring for the affine substitution). The father's width
    follows from its height, so a face's possible fathers form a short list (the batched engine's bank)."""
    u = np.atleast_2d(u)
    leave = u[:, 0] < cfg.leave_as_is_probability
    lossless = ~leave & (u[:, 0] < cfg.leave_as_is_probability + cfg.no_interpolate_probability)
    s = np.where(leave | lossless, 1.0, father_scale(u[:, 1], cfg.min_scale, 1.0, cfg))
    k = np.where(leave, 0, np.minimum(7, (u[:, 2] * 8).astype(np.int64)))
    lo = smallest_father(cfg)
    fh = np.minimum(h, np.maximum(lo, np.round(h * s).astype(np.int64)))
    fw = np.minimum(w, np.maximum(lo, np.round(w * fh / h).astype(np.int64)))
    ch, cw = np.minimum(fh, cfg.crop_size), np.minimum(fw, cfg.crop_size)
    y0 = np.minimum(fh - ch, (u[:, 3] * (fh - ch + 1)).astype(np.int64))
    x0 = np.minimum(fw - cw, (u[:, 4] * (fw - cw + 1)).astype(np.int64))
    return {"fh": fh, "fw": fw, "y0": y0, "x0": x0, "ch": ch, "cw": cw, "k": k}


def official_mode(u: np.ndarray, cfg: ZSSRConfig, max_scale: float = 1.0) -> tuple[str, float]:
    """Mode (leave / lossless / affine) and scale of the official ``random_augment`` from this code's 5
    augmentation uniforms; ``max_scale`` > 1 only in gradual SR (fathers from earlier outputs)."""
    p_leave, p_lossless = cfg.leave_as_is_probability, cfg.no_interpolate_probability
    mode = "leave" if u[0] < p_leave else "lossless" if u[0] < p_leave + p_lossless else "affine"
    return mode, 1.0 if mode == "leave" else float(father_scale(u[1], cfg.min_scale, max_scale, cfg))


def father_scale(u, lo: float, hi: float, cfg: ZSSRConfig):
    """A scaled father's scale in [lo, hi] from a uniform ``u``. ``uniform``: the official ``random_augment``.
    ``size``: the paper's text as third-party readings of it report it (the paper itself is not available
    here): a pair is sampled with probability proportional to the HR father's size, so fathers closer to the
    input's size come more often. Read as a density proportional to the father's area, s^2 (inverse CDF of s^2
    on [lo, hi]); in gradual SR, where hi > 1, it also favours the larger, synthesized sources."""
    if cfg.father_sampling == "size":
        return np.cbrt(lo ** 3 + np.asarray(u) * (hi ** 3 - lo ** 3))
    return np.asarray(u) * (hi - lo) + lo


def official_transform(mode: str, scale: float, base_scale: float, uu: np.ndarray, nn: np.ndarray, h: int, w: int,
                       cfg: ZSSRConfig) -> np.ndarray:
    """3x3 matrix of the official ``random_augment`` for one draw of ``official_mode``, for a source of
    ``base_scale`` times the input's size: ``uu`` = 5 uniforms (mirror, crop x, crop y, angle, quarter turns),
    ``nn`` = 3 normals (x/y scale difference, shear x, shear y). Read line by line from utils.py, including
    its quirks: the crop shift is drawn over the *scaled* size while the centring uses the unscaled one, so
    scaled fathers are partly black even for large images."""
    to_centre = np.array([[1, 0, -w / 2.0], [0, 1, -h / 2.0], [0, 0, 1]])
    back = np.array([[1, 0, w / 2.0], [0, 1, h / 2.0], [0, 0, 1]])
    if mode != "affine":
        to_centre, back = np.round(to_centre), np.round(back)
    if mode == "affine":
        scale, scale_diff = scale / base_scale, nn[0] * cfg.scale_diff_sigma
    else:
        scale, scale_diff = 1.0, 0.0
    reflect = 1.0 if mode == "leave" else (-1.0 if uu[0] < 0.5 else 1.0)
    scale_mat = np.array([[reflect * (scale + scale_diff / 2), 0, 0], [0, scale - scale_diff / 2, 0], [0, 0, 1]])
    shift_x = uu[1] * np.clip(scale * w - cfg.crop_size, 0, 9999)
    shift_y = uu[2] * np.clip(scale * h - cfg.crop_size, 0, 9999)
    shift = np.array([[1, 0, -shift_x], [0, 1, -shift_y], [0, 0, 1]])
    if mode != "affine":
        shift = np.round(shift)
    theta = (uu[3] * 2 * math.pi if mode == "affine"
             else min(3, int(uu[4] * 4)) * math.pi / 2 if mode == "lossless" else 0.0)
    rot = np.array([[math.cos(theta), math.sin(theta), 0], [-math.sin(theta), math.cos(theta), 0], [0, 0, 1]])
    sx, sy = (nn[1] * cfg.shear_sigma, nn[2] * cfg.shear_sigma) if mode == "affine" else (0.0, 0.0)
    shear = np.array([[1, sx, 0], [sy, 1, 0], [0, 0, 1]])
    return back @ shift @ shear @ rot @ scale_mat @ to_centre


def affine_draws(seed: int, it: int) -> tuple[np.ndarray, np.ndarray]:
    """The 5 uniforms and 3 normals ``official_transform`` needs beyond the mode and scale."""
    return (uniforms(seed, STREAM_AFFINE_U, it * 5 + np.arange(5)),
            normals(seed, STREAM_AFFINE_N, it * 3 + np.arange(3)))


def warp_father(src: np.ndarray, mat: np.ndarray, cfg: ZSSRConfig, like: torch.Tensor) -> torch.Tensor:
    """``src`` (HxWx3) through ``mat`` onto the crop_size canvas: cv2 cubic, black outside, clipped (official)."""
    c = cfg.crop_size
    warped = np.clip(cv2.warpPerspective(src, mat, (c, c), flags=cv2.INTER_CUBIC), 0, 1)
    return torch.from_numpy(warped.transpose(2, 0, 1)[None].copy()).to(like.device, like.dtype)


def smallest_father(cfg: ZSSRConfig) -> int:
    return max(2, int(math.ceil(2 * cfg.scale)))


def decode_draw(u: np.ndarray, h: int, w: int, cfg: ZSSRConfig) -> Draw:
    d = decode_draws(np.asarray(u)[None], h, w, cfg)
    return Draw(*(int(d[f][0]) for f in ("fh", "fw", "y0", "x0", "ch", "cw", "k")))


class FatherSource:
    """Training pairs of one image. Fathers/sons of images no larger than the crop repeat (a 32x32 face has a
    few dozen distinct ones), so they are cached; for large images they are computed each time."""

    def __init__(self, image: torch.Tensor, cfg: ZSSRConfig, kernel: np.ndarray | None):
        self.image, self.cfg, self.kernel = image, cfg, kernel
        self.h, self.w = image.shape[-2:]
        self.small = max(self.h, self.w) <= cfg.crop_size
        self._scaled: dict[tuple[int, int], torch.Tensor] = {}
        self._pairs: dict[Draw, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._test: torch.Tensor | None = None
        self._np: np.ndarray | None = None

    def scaled(self, fh: int, fw: int) -> torch.Tensor:
        key = (fh, fw)
        if key in self._scaled:
            return self._scaled[key]
        img = resize(self.image, key, self.cfg.resampler).clamp(0, 1)
        if self.small:
            self._scaled[key] = img
        return img

    def clean_pair(self, d: Draw) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(father, clean son, bicubic upscale of the clean son to the father's size)."""
        hit = self._pairs.get(d)
        if hit is not None:
            return hit
        father = self.scaled(d.fh, d.fw)[..., d.y0:d.y0 + d.ch, d.x0:d.x0 + d.cw]
        father = dihedral(father, d.k).contiguous()
        son = self._son(father)
        pair = (father, son, self._up(son, father))
        if self.small:
            self._pairs[d] = pair
        return pair

    def _son(self, father: torch.Tensor) -> torch.Tensor:
        fh, fw = father.shape[-2:]
        return downscale(father, son_size(fh, fw, self.cfg.scale), self.kernel, self.cfg.resampler,
                         1.0 / self.cfg.scale).clamp(0, 1)

    def _up(self, son: torch.Tensor, father: torch.Tensor) -> torch.Tensor:
        return resize(son, tuple(father.shape[-2:]), self.cfg.resampler, self.cfg.scale)

    def pair(self, u: np.ndarray, seed: int, it: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(father, network input = upscaled son) for iteration ``it``."""
        if self.cfg.augmentation == "affine":
            father = self.warped_father(u, seed, it)
            son, interp = self._son(father), None
        else:
            father, son, interp = self.clean_pair(decode_draw(u, self.h, self.w, self.cfg))
        if self.cfg.noise_std > 0:
            son = (son + noise_tensor(seed, STREAM_NOISE, it, tuple(son.shape), self.cfg, son)).clamp(0, 1)
            interp = None
        return father, (self._up(son, father) if interp is None else interp)

    def warped_father(self, u: np.ndarray, seed: int, it: int) -> torch.Tensor:
        """The official ``random_augment`` (one scale, the input as the only source): every mode goes through
        the same perspective warp onto a crop_size x crop_size canvas, cubic interpolation, black outside the
        image (so images smaller than the crop, or scaled/rotated, are padded), clipped to [0, 1]."""
        if self._np is None:
            self._np = np.ascontiguousarray(self.image[0].detach().cpu().numpy().transpose(1, 2, 0))
        mode, scale = official_mode(u, self.cfg)
        return warp_father(self._np, official_transform(mode, scale, 1.0, *affine_draws(seed, it), self.h, self.w,
                                                        self.cfg), self.cfg, self.image)

    def test_input(self, seed: int, index: int) -> torch.Tensor:
        """The upscaled son of the whole input (reconstruction error; noisy like the training sons)."""
        if self.cfg.noise_std == 0 and self._test is not None:
            return self._test
        son = self._son(self.image)
        if self.cfg.noise_std > 0:
            son = (son + noise_tensor(seed, STREAM_TEST_NOISE, index, tuple(son.shape), self.cfg, son)).clamp(0, 1)
            return self._up(son, self.image)
        self._test = self._up(son, self.image)
        return self._test


# ---------------------------------------------------------------------------------------------------------
# Network


def layer_shapes(cfg: ZSSRConfig, channels: int = 3) -> list[tuple[int, int, int, int]]:
    ins = [channels] + [cfg.width] * (cfg.depth - 1)
    outs = [cfg.width] * (cfg.depth - 1) + [channels]
    return [(o, i, 3, 3) for i, o in zip(ins, outs)]


def _s64(c: int) -> int:
    return c - (1 << 64) if c >= 1 << 63 else c


def _lsr(x: torch.Tensor, n: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns (torch's >> is arithmetic on signed ints)."""
    return (x >> n) & ((1 << (64 - n)) - 1)


def _splitmix_t(x: torch.Tensor) -> torch.Tensor:
    # int64 arithmetic wraps modulo 2**64, so this reproduces _splitmix's uint64 bit patterns exactly
    x = x + _s64(0x9E3779B97F4A7C15)
    x = (x ^ _lsr(x, 30)) * _s64(0xBF58476D1CE4E5B9)
    x = (x ^ _lsr(x, 27)) * _s64(0x94D049BB133111EB)
    return x ^ _lsr(x, 31)


def uniforms_t(seeds: torch.Tensor, stream: int, counters: torch.Tensor) -> torch.Tensor:
    """``uniforms`` on a torch device: [B] seeds x [n] counters -> [B, n] float64 (bit-identical draws)."""
    key = _splitmix_t(_splitmix_t(seeds.to(torch.int64)) ^ _s64(stream * 0x632BE59BD9B4E019 & 0xFFFFFFFFFFFFFFFF))
    x = _splitmix_t(key[:, None] + counters.to(torch.int64)[None, :])
    return _lsr(x, 11).to(torch.float64) * (1.0 / (1 << 53))


def init_weights_t(seeds, cfg: ZSSRConfig, device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """Initial weights of ``len(seeds)`` networks, [B, out, in, 3, 3] float64 per layer, generated on
    ``device`` (a face's weights depend only on its seed: the batched engine initialises hundreds at once).
    N(0, init_variance / fan_in) as in the official code (no biases)."""
    seeds = torch.as_tensor(np.asarray(seeds, dtype=np.int64), device=device).reshape(-1)
    out = []
    for layer, shape in enumerate(layer_shapes(cfg)):
        n = int(np.prod(shape))
        std = math.sqrt(cfg.init_variance / (shape[1] * shape[2] * shape[3]))
        if seeds.device.type == "cpu":  # numpy's uint64 ops are faster on CPU; the bits are the same
            c = np.arange(n, dtype=np.int64)[None, :]
            sd = seeds.numpy()[:, None]
            u1 = torch.from_numpy(uniforms(sd, STREAM_INIT + layer, 2 * c))
            u2 = torch.from_numpy(uniforms(sd, STREAM_INIT + layer, 2 * c + 1))
        else:
            c = torch.arange(n, device=device, dtype=torch.int64)
            u1 = uniforms_t(seeds, STREAM_INIT + layer, 2 * c)
            u2 = uniforms_t(seeds, STREAM_INIT + layer, 2 * c + 1)
        z = torch.sqrt(-2.0 * torch.log1p(-u1)) * torch.cos(2.0 * math.pi * u2)
        out.append((z * std).reshape(len(seeds), *shape))
    return out


def init_weights(seed: int, cfg: ZSSRConfig) -> list[torch.Tensor]:
    """One network's initial weights (float64, CPU)."""
    return [w[0] for w in init_weights_t([seed], cfg)]


def net_forward(weights: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Residual CNN: the input (upscaled son) plus conv/ReLU stack output."""
    h = x
    for i, w in enumerate(weights):
        h = F.conv2d(h, w.to(h.dtype) if h.dtype != w.dtype else w, padding=1)
        if i < len(weights) - 1:
            h = F.relu(h)
    return x + h.to(x.dtype)


def residual_rms(y: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """Per image, the RMS of what the network added to the bicubic upscale ``up`` (``y`` = its output, not
    clamped). 0 means a dead network: some layer's ReLUs are all off at every pixel, so (no biases) the
    residual and every gradient are zero, and no further training revives it; the "super-resolved" image is then
    bicubic plus back-projection. Below ``DEAD_RMS`` counts as dead too (``is_dead``). Recorded with every
    result so such outputs can be told apart."""
    return (y.double() - up.double()).pow(2).flatten(1).mean(1).sqrt()


# Why a threshold and not exactly 0: Set14 ppt3 (carried gradual, seed 0) collapsed in stage 1 to a residual RMS
# of 3e-11, not 0, and never recovered (4,900 more iterations over five stages); its output is bicubic plus
# back-projection to 8 bits (seed 1 collapsed the same way). One 8-bit step is 3.9e-3. Live networks measured
# here: 1.3e-2 to 4.7e-2 at the stop (Set14 stills, faces), 2.8e-3 after a first gradual stage, 4e-4 at the
# least on 48 faces after 300 iterations. 1e-6 sits far below all of them and far above 3e-11.
# Near zero is not final while training goes on: one jump on ppt3 (seed 0) sits at 4e-9 after 120 iterations
# and ends alive (32.01 dB). So ``is_dead`` judges a finished result, not a network mid-training.
DEAD_RMS = 1e-6


def is_dead(rms: float) -> bool:
    """Whether a network with this ``residual_rms`` adds nothing that can change an 8-bit pixel (NaN: unknown,
    not dead)."""
    return bool(rms < DEAD_RMS)


DEAD_NET_WARNING = ("%s: the ZSSR network is dead (its residual is zero or negligible at every pixel), so the "
                    "output is the bicubic upscale plus back-projection")


# ---------------------------------------------------------------------------------------------------------
# Learning-rate policy (shared by both engines)


@dataclasses.dataclass
class LRState:
    lr: float
    last_change: int = 0
    steps: list[int] = dataclasses.field(default_factory=list)
    errors: list[float] = dataclasses.field(default_factory=list)
    changes: list[int] = dataclasses.field(default_factory=list)


def lr_policy(it: int, st: LRState, cfg: ZSSRConfig) -> bool:
    """Official ``learning_rate_policy`` after iteration ``it``; divides ``st.lr`` by 10 and returns True
    when the reconstruction error has stopped falling faster than its own noise."""
    if (1 + it) % cfg.learning_rate_policy_check_every or it - st.last_change <= cfg.min_iters:
        return False
    n = max(1, int(cfg.learning_rate_slope_range / cfg.run_test_every))
    x, y = st.steps[-n:], st.errors[-n:]
    if len(x) < 3:  # polyfit's covariance needs more points than coefficients
        return False
    if cfg.lr_fit_cov == "legacy" and len(x) <= 4:  # numpy < 1.16 refused to estimate with n <= order + 2
        return False
    (slope, _), cov = np.polyfit(np.asarray(x, np.float64), np.asarray(y, np.float64), 1, cov=True)
    var = cov[0, 0]
    if cfg.lr_fit_cov == "legacy":
        # numpy < 1.16 (what the official Python 2.7 code ran on) scaled the covariance by residuals / (n - 4);
        # numpy >= 1.16 uses residuals / (n - 2) (numpy gh-11197): with the 5 points of a fit, 3x the variance
        var *= (len(x) - 2) / (len(x) - 4)
    std = math.sqrt(max(var, 0.0))
    if -cfg.learning_rate_change_ratio * slope < std:
        st.lr /= 10.0
        st.last_change = it
        st.changes.append(it)
        return True
    return False


# ---------------------------------------------------------------------------------------------------------
# Inference


def back_project(y_sr: torch.Tensor, y_lr: torch.Tensor, kernel: np.ndarray | None, method: str = "torch",
                 scale: float | tuple[float, float] | None = None) -> torch.Tensor:
    inv = None if not scale else 1.0 / scale if isinstance(scale, (int, float)) else tuple(1.0 / v for v in scale)
    down = downscale(y_sr, tuple(y_lr.shape[-2:]), kernel, method, inv)
    return (y_sr + resize(y_lr - down, tuple(y_sr.shape[-2:]), method, scale)).clamp(0, 1)


def median8(stack: torch.Tensor) -> torch.Tensor:
    """np.median over dim 0 (mean of the two middle values for an even count; torch.median takes the lower)."""
    s = stack.sort(dim=0).values
    n = s.shape[0]
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def finish_ensemble(outs: torch.Tensor, image: torch.Tensor, cfg: ZSSRConfig,
                    kernel: np.ndarray | None) -> torch.Tensor:
    """``outs``: [T, B, C, H, W] per-transform outputs (already un-transformed); back-project each, take the
    median, back-project again (official ``final_test``)."""
    t = outs.shape[0]
    flat = outs.reshape(t * outs.shape[1], *outs.shape[2:])
    lr = image.repeat(t, 1, 1, 1)
    for _ in range(cfg.back_projection_iters):
        flat = back_project(flat, lr, kernel, cfg.resampler, cfg.scale)
    y = median8(flat.reshape(outs.shape))
    for _ in range(cfg.back_projection_iters):
        y = back_project(y, image, kernel, cfg.resampler, cfg.scale)
    return y


def n_transforms(cfg: ZSSRConfig) -> int:
    return 8 if cfg.output_flip else 1


# ---------------------------------------------------------------------------------------------------------
# Image checks, device, precision


def check_image(img, name: str = "image") -> tuple[np.ndarray, bool]:
    """Return (float64 HxWx3 in [0,1], was_gray) or raise ValueError naming the problem."""
    if not isinstance(img, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array, got {type(img).__name__}")
    if img.dtype != np.uint8:
        hint = " (16-bit image: convert to 8-bit first)" if img.dtype == np.uint16 else ""
        raise ValueError(f"{name}: expected a uint8 image, got {img.dtype}{hint}")
    gray = img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"{name}: expected HxW (gray) or HxWx3 (RGB), got shape {tuple(img.shape)}")
    h, w = img.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise ValueError(f"{name}: {w}x{h} pixels is too small for ZSSR (needs at least {MIN_SIDE}x{MIN_SIDE})")
    return img.astype(np.float64) / 255.0, gray


def to_uint8(x: torch.Tensor, gray: bool) -> np.ndarray:
    """[1,3,H,W] (or [3,H,W]) float in [0,1] -> uint8 HxWx3 (HxW when the input was gray)."""
    a = x.detach().to(torch.float64).cpu().numpy().reshape(3, *x.shape[-2:]).transpose(1, 2, 0)
    a = np.clip(np.round(a * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a.mean(axis=2).round().astype(np.uint8) if gray else a)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return dev


def pick_precision(precision: str, device: torch.device) -> tuple[torch.dtype, torch.dtype | None]:
    """(storage/master dtype, autocast dtype or None). bf16 = fp32 master weights + bf16 convs on cuda."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp64":
        return torch.float64, None
    if precision == "bf16":
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            return torch.float32, torch.bfloat16
        return torch.float32, None  # bf16 convs on CPU are slow and gain nothing
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return torch.float32, None


def autocast(device: torch.device, amp: torch.dtype | None):
    if amp is None:
        return torch.autocast(device_type=device.type, enabled=False)
    return torch.autocast(device_type=device.type, dtype=amp)


def l1_step(weights: list[torch.Tensor], opt: torch.optim.Optimizer, interp: torch.Tensor, father: torch.Tensor,
            device: torch.device, amp: torch.dtype | None) -> float:
    """One Adam step of the L1 loss between the network's output on ``interp`` and ``father``."""
    with autocast(device, amp):
        out = net_forward(weights, interp)
    loss = (out.to(father.dtype) - father).abs().mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


# ---------------------------------------------------------------------------------------------------------
# One image at a time


class ZSSR:
    """Train one image's network and super-resolve it (the reference path; see ``zssr_batched`` for many)."""

    def __init__(self, cfg: ZSSRConfig, device: torch.device | None = None):
        cfg.validate()  # configs built in code get the same clear errors as loaded ones
        self.cfg = cfg
        self.device = device or pick_device(cfg.device)
        self.dtype, self.amp = pick_precision(cfg.precision, self.device)
        self.kernel = load_kernel(cfg.kernel)

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.transpose(2, 0, 1)[None].copy()).to(self.device, self.dtype)

    def train(self, image: torch.Tensor, seed: int,
              progress: Callable[[int, float, float], None] | None = None, init: list[torch.Tensor] | None = None,
              snapshots: Sequence[int] = ()) -> tuple[list[torch.Tensor], dict]:
        """``init``: start from these weights (warm start, ``survsr.models.zssr_init``) instead of the seed's
        random network. ``snapshots``: iteration counts at which a copy of the weights goes into
        ``info["snapshots"]`` (the weights a run capped at that many iterations would end with)."""
        cfg = self.cfg
        src = FatherSource(image, cfg, self.kernel)
        start = init if init is not None else init_weights(seed, cfg)
        weights = [w.detach().to(self.device, self.dtype).clone().requires_grad_() for w in start]
        snaps: dict[int, list[torch.Tensor]] = {}
        want = set(int(s) for s in snapshots)
        if 0 in want:
            snaps[0] = [w.detach().clone() for w in weights]
        opt = torch.optim.Adam(weights, lr=cfg.learning_rate, betas=ADAM_BETAS, eps=cfg.adam_eps,
                               foreach=False, fused=False)
        st = LRState(lr=cfg.learning_rate)
        loss_v, it = float("nan"), -1
        for it in range(cfg.max_iters):
            u = aug_draws([seed], [it])[0]
            father, interp = src.pair(u, seed, it)
            loss_v = l1_step(weights, opt, interp, father, self.device, self.amp)
            if it + 1 in want:
                snaps[it + 1] = [w.detach().clone() for w in weights]
            if it % cfg.run_test_every == 0:
                with torch.no_grad(), autocast(self.device, self.amp):
                    rec = net_forward(weights, src.test_input(seed, len(st.errors))).to(image.dtype).clamp(0, 1)
                st.errors.append(float(((image - rec) ** 2).mean()))
                st.steps.append(it)
                if progress:
                    progress(it, st.lr, st.errors[-1])
            if lr_policy(it, st, cfg):
                for g in opt.param_groups:
                    g["lr"] = st.lr
            if st.lr < cfg.min_learning_rate:
                break
        info = {"iterations": it + 1, "final_lr": st.lr, "final_loss": loss_v,
                "final_rec_mse": st.errors[-1] if st.errors else float("nan"), "lr_changes": list(st.changes)}
        if want:
            info["snapshots"] = snaps
        return [w.detach() for w in weights], info

    @torch.no_grad()
    def infer(self, weights: list[torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        self.last_residual_rms = float("nan")
        outs = []
        for k in range(n_transforms(self.cfg)):
            x = dihedral(image, k)
            up = resize(x, out_size(x.shape[-2], x.shape[-1], self.cfg.scale), self.cfg.resampler, self.cfg.scale)
            with autocast(self.device, self.amp):
                y = net_forward(weights, up).to(image.dtype)
            if k == 0:
                self.last_residual_rms = float(residual_rms(y, up)[0])
            outs.append(undo_dihedral(y.clamp(0, 1), k))
        return finish_ensemble(torch.stack(outs), image, self.cfg, self.kernel)

    def run(self, img_uint8: np.ndarray, seed: int = 0, name: str = "image",
            init: list[torch.Tensor] | None = None) -> tuple[np.ndarray, dict]:
        a, gray = check_image(img_uint8, name)
        t0 = time.perf_counter()
        image = self._tensor(a)
        weights, info = self.train(image, seed, init=init)
        out = self.infer(weights, image)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        info.update(seconds=time.perf_counter() - t0, device=str(self.device), residual_rms=self.last_residual_rms)
        if is_dead(self.last_residual_rms):
            log.warning(DEAD_NET_WARNING, name)
        return to_uint8(out, gray), info


def super_resolve(img_uint8: np.ndarray, cfg: ZSSRConfig | None = None, seed: int = 0) -> tuple[np.ndarray, dict]:
    """Super-resolve one uint8 image (HxWx3 RGB or HxW gray) by ``cfg.scale``.

    Returns (uint8 image of size round(H*scale) x round(W*scale), info) with info = {iterations, final_lr,
    final_loss, final_rec_mse, lr_changes, seconds, device, residual_rms (0 or tiny: a dead network, see
    ``residual_rms``)}. Deterministic on CPU for a fixed seed.
    """
    return ZSSR(cfg or ZSSRConfig()).run(img_uint8, seed)


def bicubic_upscale(img_uint8: np.ndarray, scale: float = 2.0) -> np.ndarray:
    """The baseline every ZSSR figure is compared against (same resampler as ZSSR's own upscale)."""
    a, gray = check_image(img_uint8)
    x = torch.from_numpy(a.transpose(2, 0, 1)[None].copy())
    return to_uint8(resize(x, out_size(*a.shape[:2], scale)).clamp(0, 1), gray)
