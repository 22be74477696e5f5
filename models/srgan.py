"""SRGAN generator and discriminator (Ledig et al. 2017), sized for 32x32 -> 64x64 faces.

Images are float tensors in [0, 1], NCHW, RGB. The generator predicts [0, 1] directly (no tanh: the
discriminator and the metrics work in the same range); with ``global_skip: bicubic`` it predicts the residual
over the bicubic upscale of its input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class GeneratorConfig:
    scale: int = 2
    channels: int = 64
    n_blocks: int = 16
    upsample: str = "pixelshuffle"  # or "nearest": the paper's conv + UpSampling2D + PReLU
    # Moreira et al.: residual blocks are skipped at random, re-drawn every epoch; the paper gives no
    # probability, read here as a fair coin per block (0.5). Every block runs at inference.
    stochastic_depth: float = 0.5
    # "none": the paper's generator (predicts the HR image). "bicubic": add the bicubic upscale of the input
    # to the output, so the network learns only the residual (as ZSSR does) and starts at bicubic quality
    # instead of noise: on the few thousand faces of a surveillance set that is what keeps it >= bicubic.
    global_skip: str = "none"

    def validate(self) -> None:
        if self.scale < 1 or self.scale & (self.scale - 1):
            raise ValueError(f"scale must be a power of two, got {self.scale}")
        if self.upsample not in ("pixelshuffle", "nearest"):
            raise ValueError(f"upsample must be pixelshuffle or nearest, got {self.upsample!r}")
        if not 0.0 <= self.stochastic_depth < 1.0:
            raise ValueError(f"stochastic_depth must be in [0, 1), got {self.stochastic_depth}")
        if self.global_skip not in ("none", "bicubic"):
            raise ValueError(f"global_skip must be none or bicubic, got {self.global_skip!r}")


class ResidualBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch, 3, padding=1), nn.BatchNorm2d(ch), nn.PReLU(ch),
            nn.Conv2d(ch, ch, 3, padding=1), nn.BatchNorm2d(ch),
        )

    def forward(self, x: torch.Tensor, residual_scale: float = 1.0) -> torch.Tensor:
        return x + residual_scale * self.body(x) if residual_scale != 1.0 else x + self.body(x)


class UpsampleBlock(nn.Module):
    def __init__(self, ch: int, mode: str):
        super().__init__()
        if mode == "pixelshuffle":
            self.body = nn.Sequential(nn.Conv2d(ch, ch * 4, 3, padding=1), nn.PixelShuffle(2), nn.PReLU(ch))
        else:
            # The paper's order (Keras): Conv2D, then UpSampling2D, then PReLU.
            self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.Upsample(scale_factor=2, mode="nearest"),
                                      nn.PReLU(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Generator(nn.Module):
    def __init__(self, cfg: GeneratorConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or GeneratorConfig()
        ch = cfg.channels
        self.head = nn.Sequential(nn.Conv2d(3, ch, 9, padding=4), nn.PReLU(ch))
        self.blocks = nn.ModuleList(ResidualBlock(ch) for _ in range(cfg.n_blocks))
        self.trunk_tail = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.BatchNorm2d(ch))
        self.upsample = nn.Sequential(*[UpsampleBlock(ch, cfg.upsample) for _ in range(int(math.log2(cfg.scale)))])
        self.tail = nn.Conv2d(ch, 3, 9, padding=4)
        if cfg.global_skip == "bicubic":
            # Start exactly at bicubic; gradients still reach the tail's weights from the first step.
            nn.init.zeros_(self.tail.weight)
            nn.init.zeros_(self.tail.bias)
        self._skip_mask: list[bool] | None = None

    def resample_depth(self, generator: torch.Generator | None = None) -> list[bool]:
        """Draw which residual blocks to skip for the coming epoch (stochastic depth, training only).

        Pass the same seeded ``generator`` on every data-parallel worker: all replicas must skip the same
        blocks, or their gradients would be averaged over different networks."""
        p = self.cfg.stochastic_depth
        draws = torch.rand(len(self.blocks), generator=generator)
        self._skip_mask = [bool(d < p) for d in draws]
        return self._skip_mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.head(x)
        h = feat
        p = self.cfg.stochastic_depth
        for i, block in enumerate(self.blocks):
            if self.training:
                if self._skip_mask is not None and self._skip_mask[i]:
                    continue
                h = block(h)
            else:
                # Inference runs every block; a block that survived training with probability 1-p
                # contributes its expected share (Huang et al. 2016), so eval output matches the
                # training-time average instead of overshooting it.
                h = block(h, 1.0 - p)
        h = self.trunk_tail(h) + feat
        out = self.tail(self.upsample(h))
        if self.cfg.global_skip == "bicubic":
            out = out + nn.functional.interpolate(x, scale_factor=self.cfg.scale, mode="bicubic",
                                                  align_corners=False)
        return out


@dataclass
class DiscriminatorConfig:
    channels: int = 64
    dense: int = 1024
    input_size: int = 64

    def validate(self) -> None:
        if self.input_size % 16:
            raise ValueError(f"input_size must be a multiple of 16, got {self.input_size}")


class Discriminator(nn.Module):
    """8 conv-BN-LeakyReLU blocks (64 -> 512 ch, stride 2 every other block), dense, LeakyReLU, dense 1.

    Returns logits (use BCE-with-logits). The first block has no BN, as in the paper.
    """

    def __init__(self, cfg: DiscriminatorConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or DiscriminatorConfig()
        layers: list[nn.Module] = []
        in_ch = 3
        for i in range(8):
            out_ch = cfg.channels * 2 ** (i // 2)
            stride = 2 if i % 2 else 1
            layers.append(nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1))
            if i:
                layers.append(nn.BatchNorm2d(out_ch))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        side = cfg.input_size // 16
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(in_ch * side * side, cfg.dense), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(cfg.dense, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x)).squeeze(1)
