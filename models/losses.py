"""SRGAN losses for the unpaired setting.

There is no true HR for the generator's inputs, so the generator is held by three things besides the
adversarial term: the VGG content loss and pixel L1 against the ZSSR output of the *same* face where one
exists (a pseudo-pair, masked per sample), and LR consistency: the bicubic downscale of G(x) must give
back x, which keeps the output faithful to what the camera recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LossConfig:
    adversarial: float = 1e-3  # Ledig: l_SR = l_VGG + 1e-3 * l_Gen
    content: float = 1.0  # VGG feature MSE vs the pseudo-pair (needs the mediator on)
    content_feature_scale: float = 12.75  # Ledig rescale VGG features by 1/12.75
    pixel: float = 0.0  # L1 vs the pseudo-pair
    lr_consistency: float = 1.0  # L1(bicubic_down(G(x)), x)

    def validate(self) -> None:
        for name in ("adversarial", "content", "pixel", "lr_consistency"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} weight must be >= 0")
        if self.content_feature_scale <= 0:
            raise ValueError("content_feature_scale must be > 0")


def bicubic_down(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Antialiased bicubic downscale (what a camera-side resize roughly does; matches PIL's bicubic)."""
    h, w = x.shape[-2:]
    return F.interpolate(x, size=(h // scale, w // scale), mode="bicubic", align_corners=False, antialias=True)


def bicubic_up(x: torch.Tensor, scale: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    return F.interpolate(x, size=(h * scale, w * scale), mode="bicubic", align_corners=False).clamp(0, 1)


def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator BCE: synthetic HR (ZSSR) -> 1, generator output -> 0."""
    real = F.binary_cross_entropy_with_logits(real_logits.float(), torch.ones_like(real_logits, dtype=torch.float32))
    fake = F.binary_cross_entropy_with_logits(fake_logits.float(), torch.zeros_like(fake_logits, dtype=torch.float32))
    return real + fake


def g_adversarial(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss -log D(G(x)) (Ledig eq. 6), via BCE-with-logits for stability."""
    return F.binary_cross_entropy_with_logits(fake_logits.float(), torch.ones_like(fake_logits, dtype=torch.float32))


def _masked_mean(per_sample: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(per_sample.dtype)
    return (per_sample * mask).sum() / mask.sum().clamp_min(1.0)


def g_losses(
    cfg: LossConfig,
    sr: torch.Tensor,
    lr: torch.Tensor,
    fake_logits: torch.Tensor | None,
    pair: torch.Tensor | None = None,
    has_pair: torch.Tensor | None = None,
    mediator: torch.nn.Module | None = None,
    scale: int = 2,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted generator loss and its parts (detached tensors: convert only when logging, to avoid a
    device sync every step).

    ``pair``/``has_pair``: the ZSSR output of each input face and whether it exists; the content and pixel
    terms average only over faces that have one and vanish when none does.
    """
    parts: dict[str, torch.Tensor] = {}
    total = sr.new_zeros((), dtype=torch.float32)
    if cfg.adversarial > 0 and fake_logits is not None:
        parts["g_adv"] = g_adversarial(fake_logits)
        total = total + cfg.adversarial * parts["g_adv"]
    if cfg.lr_consistency > 0:
        per = (bicubic_down(sr.float(), scale) - lr.float()).abs().flatten(1).mean(1)
        parts["g_lrc"] = per.mean()
        total = total + cfg.lr_consistency * parts["g_lrc"]
    paired = pair is not None and has_pair is not None and bool(has_pair.any())
    if paired and cfg.pixel > 0:
        per = (sr.float() - pair.float()).abs().flatten(1).mean(1)
        parts["g_pix"] = _masked_mean(per, has_pair)
        total = total + cfg.pixel * parts["g_pix"]
    if paired and cfg.content > 0 and mediator is not None:
        idx = has_pair.nonzero().squeeze(1)
        s = cfg.content_feature_scale
        f_sr = mediator(sr.index_select(0, idx)).float() / s
        with torch.no_grad():
            f_hr = mediator(pair.index_select(0, idx)).float() / s
        parts["g_vgg"] = F.mse_loss(f_sr, f_hr)
        total = total + cfg.content * parts["g_vgg"]
    return total, {k: v.detach() for k, v in parts.items()}
