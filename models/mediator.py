"""The VGG-19 "mediator": frozen ImageNet VGG-19 features that the content loss compares in.

Weights are only ever read from disk (the torch hub cache or a configured file); nothing here downloads.
When the ImageNet weights are missing, what happens instead is a decision the config must state
(``weights: random|off`` or ``allow_fallback: true``): a random-init VGG still gives a (weak) structural
loss, but a run that used one must say so, so ``MediatorStatus`` goes into the run's metadata.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHT_CHOICES = ("imagenet", "file", "random", "off")

# Status strings written into train_meta.json (shared contract with evaluate/serve).
STATUS_IMAGENET = "imagenet"
STATUS_RANDOM_FALLBACK = "random-init (fallback)"
STATUS_RANDOM = "random-init (configured)"
STATUS_OFF = "off"


@dataclass
class MediatorConfig:
    weights: str = "imagenet"  # imagenet (torch hub cache) | file | random | off
    file: str = ""  # torchvision vgg19 state_dict (.pth) used when weights == "file"
    layer: str = "VGG54"  # VGGij = j-th conv before the i-th max-pool (Ledig); also conv5_4 / relu5_4
    after_activation: bool = True  # Ledig: "obtained by the j-th convolution (after activation)"
    allow_fallback: bool = False  # missing ImageNet/file weights: use `fallback` instead of failing
    fallback: str = "random"  # random | off

    def validate(self) -> None:
        if self.weights not in WEIGHT_CHOICES:
            raise ValueError(f"weights must be one of {WEIGHT_CHOICES}, got {self.weights!r}")
        if self.fallback not in ("random", "off"):
            raise ValueError(f"fallback must be random or off, got {self.fallback!r}")
        if self.weights == "file" and not self.file:
            raise ValueError("weights: file needs mediator.file (path to a vgg19 state_dict)")
        parse_layer(self.layer)


@dataclass
class MediatorStatus:
    status: str  # one of the STATUS_* strings
    source: str  # where the weights came from (path), "random" or "none"
    layer: str
    feature_index: int  # last torchvision vgg19.features index used (inclusive); -1 when off
    warning: str = ""

    @property
    def enabled(self) -> bool:
        return self.status != STATUS_OFF

    def to_dict(self) -> dict:
        return asdict(self)


def parse_layer(name: str) -> tuple[int, int]:
    """``VGG54`` / ``conv5_4`` / ``relu5_4`` -> (block 5, conv 4)."""
    m = re.fullmatch(r"(?:VGG|vgg)(\d)(\d)|(?:conv|relu)(\d)_(\d)", name.strip())
    if not m:
        raise ValueError(f"layer must look like VGG54 or conv5_4, got {name!r}")
    i, j = (int(g) for g in (m.groups()[:2] if m.group(1) else m.groups()[2:]))
    convs_per_block = (2, 2, 4, 4, 4)
    if not (1 <= i <= 5 and 1 <= j <= convs_per_block[i - 1]):
        raise ValueError(f"layer {name!r} does not exist in VGG-19")
    return i, j


def feature_index(layer: str, after_activation: bool = True) -> int:
    """Index into torchvision's ``vgg19().features`` of the requested conv (or its ReLU)."""
    i, j = parse_layer(layer)
    convs_per_block = (2, 2, 4, 4, 4)
    idx = 0
    for block in range(1, i):
        idx += 2 * convs_per_block[block - 1] + 1  # conv+relu pairs, then the max-pool
    idx += 2 * (j - 1)  # conv index of the j-th conv in block i
    return idx + (1 if after_activation else 0)


def hub_cache_file() -> Path:
    """Where torchvision would keep VGG19_Weights.IMAGENET1K_V1; we only look, never fetch."""
    from torchvision.models import VGG19_Weights

    name = VGG19_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def _resolve(cfg: MediatorConfig) -> tuple[str, Path | None, str]:
    """Decide (status, weights file or None, warning) without building anything."""
    if cfg.weights == "off":
        return STATUS_OFF, None, ""
    if cfg.weights == "random":
        return STATUS_RANDOM, None, "mediator uses a random-init VGG-19 as configured (weights: random)"
    wanted = hub_cache_file() if cfg.weights == "imagenet" else Path(cfg.file).expanduser()
    if wanted.is_file():
        return STATUS_IMAGENET, wanted, ""
    missing = f"VGG-19 ImageNet weights not found at {wanted} (weights: {cfg.weights}; nothing is downloaded)"
    if not cfg.allow_fallback:
        raise FileNotFoundError(
            f"{missing}. Put the file there, or state the fallback explicitly: "
            "mediator.allow_fallback=true (with mediator.fallback=random|off) or mediator.weights=random|off"
        )
    if cfg.fallback == "off":
        return STATUS_OFF, None, f"{missing}; mediator OFF (fallback), content loss disabled"
    return STATUS_RANDOM_FALLBACK, None, f"{missing}; using a RANDOM-INIT VGG-19 (fallback)"


def resolve_status(cfg: MediatorConfig) -> MediatorStatus:
    status, path, warning = _resolve(cfg)
    idx = -1 if status == STATUS_OFF else feature_index(cfg.layer, cfg.after_activation)
    source = str(path) if path else ("random" if status.startswith("random") else "none")
    return MediatorStatus(status=status, source=source, layer=cfg.layer, feature_index=idx, warning=warning)


class VGGMediator(nn.Module):
    """Frozen VGG-19 features[: index + 1] on ImageNet-normalised [0, 1] RGB input."""

    def __init__(self, cfg: MediatorConfig, status: MediatorStatus | None = None, seed: int = 0):
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        self.status = status or resolve_status(cfg)
        if not self.status.enabled:
            raise ValueError("VGGMediator built with the mediator off; check status.enabled first")
        if self.status.warning:
            log.warning("%s", self.status.warning)
        # Only the conv trunk is built: the 120M-parameter classifier is never used and costs seconds to
        # initialise in every worker. Random init is seeded (same VGG on every worker and after a resume)
        # and follows torchvision's VGG init.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            features = make_layers(cfgs["E"], batch_norm=False)  # "E" = VGG-19
            for m in features.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    nn.init.zeros_(m.bias)
        if self.status.status == STATUS_IMAGENET:
            state = torch.load(self.status.source, map_location="cpu", weights_only=True)
            feats = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
            if not feats:
                raise ValueError(f"{self.status.source}: not a torchvision vgg19 state_dict (no features.* keys)")
            features.load_state_dict(feats)
        self.features = features[: self.status.feature_index + 1]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "VGGMediator":
        # Always eval: a frozen feature extractor (the training loop's .train() must not flip it).
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features((x - self.mean) / self.std)


def build_mediator(cfg: MediatorConfig, seed: int = 0) -> tuple[VGGMediator | None, MediatorStatus]:
    """The mediator (None when off) and its status for the run's metadata."""
    status = resolve_status(cfg)
    if not status.enabled:
        if status.warning:
            log.warning("%s", status.warning)
        return None, status
    return VGGMediator(cfg, status, seed=seed), status
