"""The SRGAN training stage's config schema (``configs/srgan.yaml``) and the two hashes that decide reuse:
the stage's identity (what shapes the generator) and the checkpoint's resume hash (what a longer run may
continue)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from survsr.models.losses import LossConfig
from survsr.models.mediator import MediatorConfig
from survsr.models.srgan import DiscriminatorConfig, GeneratorConfig
from survsr.config import config_hash, load, to_dict

@dataclass
class InputsConfig:
    # Only needed for `python -m survsr.pipelines.train_srgan --config ...` (ray job submit); CLI flags win.
    faces: str = ""
    zssr: str = ""
    out: str = ""


@dataclass
class DataConfig:
    train_split: str = "train"
    heldout_split: str = "test"
    # D:G roles come from faces.parquet's `role` column (ingest, by track); these two only assign them, the
    # same way, for a manifest without one. Paper: 14,000 D : 6,000 G = 70:30.
    d_fraction: float = 0.7
    role_seed: int = 0
    flips: str = "horizontal"  # horizontal | none (vertical flips would give upside-down faces)
    heldout_max: int = 64
    decode_batch: int = 256

    def validate(self) -> None:
        if not 0.0 < self.d_fraction < 1.0:
            raise ValueError(f"d_fraction must be in (0, 1), got {self.d_fraction}")
        if self.flips not in ("horizontal", "none"):
            raise ValueError(f"flips must be horizontal or none, got {self.flips!r}")


@dataclass
class LoopConfig:
    batch_size: int = 50  # global; each of the N workers takes batch_size // N
    epochs: int = 2000
    max_steps: int = 0  # > 0: stop after this many optimizer steps (overrides epochs)
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    # epoch_blocks (paper: "DN for some epochs and then GN"): d_epochs epochs of D alone (G frozen), then
    # g_epochs epochs of G alone (D frozen), repeated. k_step: D for k steps then G for k steps.
    # alternate: D and G on every batch.
    schedule: str = "epoch_blocks"
    d_epochs: int = 5
    g_epochs: int = 5
    k: int = 1
    pretrain_steps: int = 0  # G-only steps first (no adversarial term), like Ledig's SRResNet initialisation
    checkpoint_every: int = 500  # steps
    keep_checkpoints: int = 2
    log_every: int = 10  # steps
    eval_every_epochs: int = 1
    bf16: bool = True  # autocast on GPU only (CPU bf16 autocast is slower than fp32 here)
    seed: int = 0

    def validate(self) -> None:
        if self.schedule not in ("epoch_blocks", "k_step", "alternate"):
            raise ValueError(f"schedule must be epoch_blocks, k_step or alternate, got {self.schedule!r}")
        for name in ("batch_size", "epochs", "k", "d_epochs", "g_epochs", "checkpoint_every", "log_every",
                     "eval_every_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if len(self.betas) != 2:
            raise ValueError("betas must be two numbers")


@dataclass
class ScalingConfig:
    """Ray Train's worker layout (where Ray runs is the job's ``ray:`` / ``--address``, not this)."""

    num_workers: int = 1
    use_gpu: Optional[bool] = None  # null = use GPUs when the cluster has them
    cpus_per_worker: int = 1
    max_failures: int = 2
    name: str = "srgan"
    storage_path: str = ""  # default: <out>/ray (must be shared storage on a multi-node cluster)
    sync_batchnorm: bool = False  # GPU + >1 worker: SyncBatchNorm instead of per-replica BN statistics


@dataclass
class DebugConfig:
    fail_at_step: int = -1  # raise once (per run dir) in rank `fail_rank` when reaching this step
    fail_rank: int = 0


@dataclass
class TrainSRGANConfig:
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    mediator: MediatorConfig = field(default_factory=MediatorConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: LoopConfig = field(default_factory=LoopConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    inputs: InputsConfig = field(default_factory=InputsConfig)

    def validate(self) -> None:
        if self.discriminator.input_size % self.generator.scale:
            raise ValueError("discriminator.input_size must be a multiple of generator.scale")

    @property
    def lr_size(self) -> int:
        return self.discriminator.input_size // self.generator.scale


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> TrainSRGANConfig:
    return load(TrainSRGANConfig, path, overrides, default_name="srgan.yaml")


def _shaping(cfg: TrainSRGANConfig) -> dict:
    """The settings that shape the generator: not I/O, fault injection, or where checkpoints are kept. The
    worker count stays: it sets the per-worker batch and so the BatchNorm statistics."""
    d = to_dict(cfg)
    for key in ("debug", "inputs"):
        d.pop(key)
    for key in ("cpus_per_worker", "max_failures", "name", "storage_path"):
        d["scaling"].pop(key)
    return d


def identity(cfg: TrainSRGANConfig) -> str:
    """The stage's identity: keys the pipeline's train marker and the "already trained" check."""
    return config_hash(_shaping(cfg))


def resume_hash(cfg: TrainSRGANConfig) -> str:
    """What a checkpoint must agree on to be continued: the identity less run length and worker layout, so a
    longer schedule or another worker count continues the same run."""
    d = _shaping(cfg)
    for key in ("epochs", "max_steps", "checkpoint_every", "keep_checkpoints", "log_every", "eval_every_epochs"):
        d["train"].pop(key)
    d.pop("scaling")
    return config_hash(d)


