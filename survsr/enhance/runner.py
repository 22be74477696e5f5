"""The generator as a plain batch function: uint8 RGB frames in, uint8 RGB frames x2 out.

Everything that runs the model (the Serve deployment, the archive pipeline, the stream actor, the GPU
benchmark) goes through :class:`Enhancer`, so they all quantise the same way and give the same pixels.
No Ray here: Ray layers wrap this class.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class EngineConfig:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32 | bf16 | fp16 (reduced precision only on CUDA; CPU always fp32)
    channels_last: bool = True  # NHWC convolutions are the fast path on tensor cores
    compile: bool = False  # torch.compile the generator (GPU serving; slow first call per input shape)
    compile_mode: str = "max-autotune"  # torch.compile mode; max-autotune adds CUDA graphs on GPU
    fuse_bn: bool = True  # fold BatchNorm into the convs (GPU only; CPU keeps the exact graph)
    max_pixels_per_batch: int = 16_000_000  # input pixels per forward pass; bounds activation memory
    # A frame larger than tile x tile input pixels goes through in tiles, one forward each, so that one big image
    # never holds the model (and its lock) for the whole frame; 0 = whole frames. Each tile is read with
    # tile_overlap pixels of context on every side (>= the generator's receptive-field radius, ~40 LR pixels
    # for 16 residual blocks), and only its centre is kept: the stitched image equals the whole-frame one.
    tile: int = 0
    tile_overlap: int = 48
    threads: int = 0  # torch CPU threads; 0 leaves torch's default

    def validate(self) -> None:
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be fp32, bf16 or fp16, got {self.precision!r}")
        if self.max_pixels_per_batch < 1:
            raise ValueError("max_pixels_per_batch must be >= 1")
        if self.tile < 0 or self.tile_overlap < 0:
            raise ValueError("tile and tile_overlap must be >= 0")


def fuse_batchnorm(model):
    """Fold every eval-mode BatchNorm2d into the Conv2d just before it (inside any nn.Sequential).

    Inference only: one conv instead of conv + normalisation pass. Numerically equal up to float
    rounding, so it is used on GPU; CPU serving keeps the exact graph (bit-identical to the trainer's).
    """
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for module in list(model.modules()):
        if not isinstance(module, nn.Sequential):
            continue
        layers = list(module)
        out, i, changed = [], 0, False
        while i < len(layers):
            if (i + 1 < len(layers) and isinstance(layers[i], nn.Conv2d)
                    and isinstance(layers[i + 1], nn.BatchNorm2d)):
                out.append(fuse_conv_bn_eval(layers[i], layers[i + 1]))
                i += 2
                changed = True
            else:
                out.append(layers[i])
                i += 1
        if changed:
            for name in list(module._modules):
                del module._modules[name]
            for j, layer in enumerate(out):
                module.add_module(str(j), layer)
    return model


def pick_device(name: str = "auto") -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def to_uint8(y) -> np.ndarray:
    """[0,1] float NCHW tensor -> uint8 NHWC array; the one quantisation every output uses."""
    import torch

    y = (y.float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return y.permute(0, 2, 3, 1).contiguous().cpu().numpy()


class Enhancer:
    """Loads the exported generator (safetensors, never a pickle) and enhances lists of frames.

    Frames of different sizes in one call are grouped by shape, because a batch must be one tensor.
    """

    def __init__(self, generator_path: str | Path, cfg: EngineConfig | None = None):
        import torch

        from survsr.models.export import load_generator
        from survsr.provenance import sha256_file

        self.cfg = cfg = cfg or EngineConfig()
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        self.generator_path = Path(generator_path)
        self.model_sha256 = sha256_file(self.generator_path)
        self.device = pick_device(cfg.device)
        model = load_generator(self.generator_path, self.device)
        self.scale = int(model.cfg.scale)
        self.dtype = torch.float32
        if self.device.startswith("cuda"):
            torch.backends.cudnn.benchmark = True  # fixed frame sizes: pick the fastest conv kernels once
            if cfg.fuse_bn:
                model = fuse_batchnorm(model)
        if self.device.startswith("cuda") and cfg.precision != "fp32":
            self.dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float16
            model = model.to(self.dtype)
        if cfg.channels_last and self.device.startswith("cuda"):
            model = model.to(memory_format=torch.channels_last)
        # dynamic=False: one graph per frame size, which is what a camera or an archive produces
        self.model = torch.compile(model, mode=cfg.compile_mode, dynamic=False) if cfg.compile else model
        # One forward at a time per process: a second thread would only fight for the same cores/GPU.
        self._lock = threading.Lock()
        self.busy_since: float | None = None
        self.forwards_ok = 0
        log.info("generator %s (sha256 %s..) on %s, %s", self.generator_path, self.model_sha256[:12],
                 self.device, cfg.precision if self.dtype != torch.float32 else "fp32")

    @property
    def device_name(self) -> str:
        if self.device.startswith("cuda"):
            import torch

            return f"{self.device} ({torch.cuda.get_device_name(self.device)})"
        return "cpu"

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(batch).to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).to(self.dtype).div_(255.0)
        if self.cfg.channels_last and self.device.startswith("cuda"):
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return to_uint8(self.model(x))

    def enhance(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """uint8 RGB HxWx3 arrays -> uint8 RGB (sH)x(sW)x3 arrays, same order."""
        out: list[np.ndarray | None] = [None] * len(images)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, img in enumerate(images):
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"frame {i}: expected uint8 HxWx3, got {img.dtype} {img.shape}")
            groups.setdefault(img.shape, []).append(i)
        tile = self.cfg.tile
        for shape, idx in groups.items():
            if tile and (shape[0] > tile or shape[1] > tile):
                for i in idx:
                    out[i] = self._enhance_tiled(images[i])
                continue
            per = max(1, self.cfg.max_pixels_per_batch // (shape[0] * shape[1]))
            for start in range(0, len(idx), per):
                chunk = idx[start:start + per]
                # The lock is taken per forward, not per call: a long call (8 frames at 1080p) is a series of
                # bounded forwards, and other callers' forwards interleave between them.
                res = self._locked_forward(np.stack([images[i] for i in chunk]))
                for j, i in enumerate(chunk):
                    out[i] = res[j]
        self.forwards_ok += 1
        return out  # type: ignore[return-value]

    def _locked_forward(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            self.busy_since = time.monotonic()
            try:
                return self._forward(batch)
            finally:
                self.busy_since = None

    def _enhance_tiled(self, img: np.ndarray) -> np.ndarray:
        """One large frame as a series of bounded forwards: each tile with its context, only its centre kept."""
        h, w = img.shape[:2]
        t, m, s = self.cfg.tile, self.cfg.tile_overlap, self.scale
        out = np.empty((h * s, w * s, 3), dtype=np.uint8)
        for y0 in range(0, h, t):
            for x0 in range(0, w, t):
                y1, x1 = min(y0 + t, h), min(x0 + t, w)
                wy0, wx0 = max(0, y0 - m), max(0, x0 - m)
                wy1, wx1 = min(h, y1 + m), min(w, x1 + m)
                res = self._locked_forward(np.ascontiguousarray(img[None, wy0:wy1, wx0:wx1]))[0]
                out[y0 * s:y1 * s, x0 * s:x1 * s] = res[(y0 - wy0) * s:(y1 - wy0) * s, (x0 - wx0) * s:(x1 - wx0) * s]
        return out

    def health(self) -> str:
        """Liveness without waiting on inference: a tiny forward when the model is idle, else "busy" (a
        forward is running, which is itself proof of life). Raises when the model gives a wrong shape."""
        if not self._lock.acquire(blocking=False):
            return "busy"
        try:
            y = self._forward(np.zeros((1, 4, 4, 3), np.uint8))
        finally:
            self._lock.release()
        if y.shape[1:] != (4 * self.scale, 4 * self.scale, 3):
            raise RuntimeError(f"generator returned shape {y.shape[1:]} for a 4x4 input")
        return "ok"

    def __call__(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self.enhance(images)
