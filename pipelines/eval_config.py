"""The evaluation stage's config schema (``configs/evaluate.yaml``): the three protocols, the metric
settings, the actor pool, and the stage's identity."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from survsr.pipelines.eval_enhance import METHODS
from survsr.pipelines.eval_faces import DegradationConfig
from survsr.pipelines.quality import MetricsConfig
from survsr.config import config_hash, load, to_dict

METRIC_COLUMNS = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")
SPLITS = ("test", "train", "all")


@dataclass
class ZSSREvalConfig:
    enabled: bool = True
    config: str | None = None  # ZSSR yaml (path or name in configs/); null = configs/zssr.yaml
    set: list[str] = field(default_factory=list)  # overrides of that config, e.g. a small iteration budget
    seed: int = 0


@dataclass
class PoolConfig:
    enabled: bool = True  # false: the same work in this process (no Ray)
    actors: int = 2
    batch_size: int = 2  # faces per batch; small because one ZSSR face costs seconds on CPU


@dataclass
class PaperConfig:
    enabled: bool = True
    split: str = "test"
    fallback_to_all: bool = True  # an empty test split -> all faces, said on the page
    max_faces: int = 1000
    bicubic_baseline: bool = True  # also score bicubic vs ZSSR: how much agreement comes for free

    def validate(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")


def _check_split_and_methods(split: str, methods: list[str]) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown methods {bad} (known: {list(METHODS)})")


def _default_degradations() -> list[DegradationConfig]:
    return [DegradationConfig(name="bicubic"),
            DegradationConfig(name="surveillance", blur_sigma=0.8, noise_sigma=4.0, jpeg_quality=40)]


@dataclass
class GroundTruthConfig:
    enabled: bool = True
    hr_size: int = 64  # HR faces are centre-squared and resized to this; LR = hr_size / scale
    min_native: int = 40  # native crops smaller than this are not used as ground truth
    split: str = "test"
    fallback_to_all: bool = True
    max_faces: int = 12  # per source (video or folder), evenly spread over it
    sources: list[str] = field(default_factory=lambda: ["*"])  # fnmatch on the manifest's source_path
    exclude_sources: list[str] = field(default_factory=lambda: ["*distorted*"])  # not ground-truth quality
    carphone: bool = True  # without --faces: detect faces in carphone pristine
    carphone_stride: int = 10
    astronaut: bool = True
    degradations: list[DegradationConfig] = field(default_factory=_default_degradations)
    methods: list[str] = field(default_factory=lambda: list(METHODS))

    def validate(self) -> None:
        _check_split_and_methods(self.split, self.methods)
        names = [d.name for d in self.degradations]
        if len(set(names)) != len(names):
            raise ValueError(f"degradation names must be unique, got {names}")
        if self.hr_size < 16:
            raise ValueError(f"hr_size must be >= 16, got {self.hr_size}")


@dataclass
class RealFootageConfig:
    enabled: bool = True
    split: str = "test"
    fallback_to_all: bool = True
    max_faces: int = 4  # per source video / folder
    sources: list[str] = field(default_factory=lambda: ["*"])
    exclude_sources: list[str] = field(default_factory=list)
    carphone: bool = True  # without --faces: detect faces in carphone distorted
    carphone_stride: int = 10
    lr_size: int = 32  # detected native crops are resized to this, as ingest does
    methods: list[str] = field(default_factory=lambda: list(METHODS))

    def validate(self) -> None:
        _check_split_and_methods(self.split, self.methods)


@dataclass
class ReportConfig:
    title: str = "survsr evaluation report"
    grid_faces: int = 4  # faces shown per grid
    display_px: int = 128  # on-page size of each 64x64 tile (pixelated, no smoothing)
    label: bool = True  # AI-ENHANCED band (survsr.marking) on the ZSSR/SRGAN tiles: they are model output


@dataclass
class EvaluateConfig:
    scale: int = 2
    seed: int = 0
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    zssr: ZSSREvalConfig = field(default_factory=ZSSREvalConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    paper: PaperConfig = field(default_factory=PaperConfig)
    ground_truth: GroundTruthConfig = field(default_factory=GroundTruthConfig)
    real_footage: RealFootageConfig = field(default_factory=RealFootageConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def validate(self) -> None:
        if self.scale < 2:
            raise ValueError(f"scale must be >= 2, got {self.scale}")
        if self.ground_truth.hr_size % self.scale:
            raise ValueError(f"ground_truth.hr_size {self.ground_truth.hr_size} is not a multiple of "
                             f"scale {self.scale}")


def load_config(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> EvaluateConfig:
    return load(EvaluateConfig, path, list(overrides), default_name="evaluate.yaml")


def identity(cfg: EvaluateConfig) -> str:
    """The stage's identity: every setting but the actor pool (it keys the report and the pipeline marker)."""
    return config_hash({k: v for k, v in to_dict(cfg).items() if k != "pool"})
