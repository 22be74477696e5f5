"""SRGAN losses.

Two ways to hold the generator, chosen by ``LossConfig.content_mode``:

* ``unpaired`` (Moreira et al., the default): the VGG-19 mediator takes features "from both GN and DN
  outputs", i.e. of G's batch and of the discriminator's *real* batch, which holds different faces (ZSSR
  outputs of the D set; G's own faces never went through ZSSR). A per-sample feature difference would pair
  unrelated faces, so the loss compares the two batches as distributions of conv features: see
  ``unpaired_feature_loss``. No other term: the paper has adversarial + mediator only.
* ``pseudo_pair`` (configs/srgan_distill.yaml, an opt-in improvement, not the paper): VGG content loss and
  pixel L1 against the ZSSR output of the *same* face (distillation of ZSSR, masked per sample), plus LR
  consistency: the bicubic downscale of G(x) must give back x.
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
    pixel: float = 0.0  # L1 vs the pseudo-pair (pseudo_pair mode only)
    lr_consistency: float = 0.0  # L1(bicubic_down(G(x)), x); not in the paper
    content_mode: str = "unpaired"  # unpaired (paper: G batch vs D's real batch) | pseudo_pair (distillation)
    unpaired_form: str = "moments"  # moments (mean + covariance of conv features) | gram

    def validate(self) -> None:
        for name in ("adversarial", "content", "pixel", "lr_consistency"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} weight must be >= 0")
        if self.content_feature_scale <= 0:
            raise ValueError("content_feature_scale must be > 0")
        if self.content_mode not in ("unpaired", "pseudo_pair"):
            raise ValueError(f"content_mode must be unpaired or pseudo_pair, got {self.content_mode!r}")
        if self.unpaired_form not in ("moments", "gram"):
            raise ValueError(f"unpaired_form must be moments or gram, got {self.unpaired_form!r}")
        if self.content_mode == "unpaired" and self.pixel > 0:
            raise ValueError("loss.pixel needs a pseudo-pair: set loss.content_mode=pseudo_pair or loss.pixel=0")


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


def _feature_moments(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (C) and covariance (C x C) of the feature vectors at every position of every image."""
    x = f.float().permute(0, 2, 3, 1).reshape(-1, f.shape[1])
    mu = x.mean(0)
    xc = x - mu
    return mu, xc.T @ xc / max(1, x.shape[0] - 1)


def _gram(f: torch.Tensor) -> torch.Tensor:
    """Batch-mean Gram matrix (C x C), normalised by the number of positions."""
    x = f.float().flatten(2)
    return (x @ x.transpose(1, 2)).mean(0) / x.shape[2]


def unpaired_feature_loss(f_fake: torch.Tensor, f_real: torch.Tensor, form: str = "moments") -> torch.Tensor:
    """Distance between the conv-feature distributions of two batches of *different* faces.

    ``moments`` (default): squared distance of the means plus that of the covariances (per element): the
    first two moments of the features over all positions and images, i.e. the terms of the Frechet
    distance without its matrix square root, so it stays cheap and its gradient stable at batch 50. It is
    zero when G's outputs have the same feature statistics as the ZSSR faces, and it never asks an output
    to look like one particular face it is not. ``gram``: the batch-mean Gram matrices (the uncentred second
    moment per image, Gatys' style loss). A sliced-Wasserstein distance would match more than two moments
    but adds random projections (noise and a hyperparameter) at batch 50; not implemented.
    """
    if form == "gram":
        return F.mse_loss(_gram(f_fake), _gram(f_real))
    mu_f, cov_f = _feature_moments(f_fake)
    mu_r, cov_r = _feature_moments(f_real)
    return F.mse_loss(mu_f, mu_r) + F.mse_loss(cov_f, cov_r)


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
    real: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted generator loss and its parts (detached tensors: convert only when logging, to avoid a
    device sync every step).

    ``unpaired`` mode: ``real`` is the discriminator's real batch (other faces' ZSSR outputs); ``pair`` is
    ignored. ``pseudo_pair`` mode: ``pair``/``has_pair`` are the ZSSR output of each input face and whether
    it exists; the content and pixel terms average only over faces that have one and vanish when none does.
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
    if cfg.content_mode == "unpaired":
        if cfg.content > 0 and mediator is not None and real is not None:
            s = cfg.content_feature_scale
            f_sr = mediator(sr).float() / s
            with torch.no_grad():
                f_real = mediator(real).float() / s
            parts["g_vgg"] = unpaired_feature_loss(f_sr, f_real, cfg.unpaired_form)
            total = total + cfg.content * parts["g_vgg"]
        return total, {k: v.detach() for k, v in parts.items()}
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
