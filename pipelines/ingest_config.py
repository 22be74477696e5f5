"""The ingest stage's config schema (``configs/ingest.yaml``), its manifest's columns and the stage's
identity."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from survsr.config import config_hash, load, to_dict
from survsr.video.crops import CropConfig
from survsr.video.detect import DetectorConfig
from survsr.video.motion import MotionConfig
from survsr.video.track import FilterConfig, SelectConfig, TrackerConfig

log = logging.getLogger("survsr.ingest")

MANIFEST_COLUMNS = [
    "crop_id", "source_path", "source_sha256", "frame_index", "time_s", "box_x", "box_y", "box_w", "box_h",
    "detector", "score", "track_id", "split", "native_path", "native_w", "native_h", "lr_path", "lr_size",
    "resize_method", "sharpness", "sha256", "native_sha256", "config_hash", "role",
    "landmarks",  # JSON list x0, y0, ..., x4, y4 (eyes, nose, mouth corners) in source px; "" when none
    "quality",  # face-quality score that ranked the crop within its track (track.quality)
    "motion",  # share of the box that ever moved in the video (motion gating); -1 = not measured
]
ASSIGNED_COLUMNS = ("split", "role")  # set in assemble() over all videos, not per video
REPORT_NAME = "ingest_report.json"
MANIFEST_NAME = "faces.parquet"




@dataclass
class DecodeConfig:
    stride: int = 1  # keep every n-th decoded frame
    fps: float | None = None  # or: at most this many frames per second of video time
    max_frames: int | None = None  # per video (needed for live streams, which never end)
    start_s: float | None = None  # time window [start_s, end_s) in seconds of video time
    end_s: float | None = None
    timeout_s: float = 10.0  # open/read timeout for network streams
    chunk_frames: int = 16  # frames detected together (one Ray block); the detector's full-scan cycle restarts

    def validate(self) -> None:
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {self.max_frames}")
        if self.chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {self.chunk_frames}")
        if self.start_s is not None and self.end_s is not None and self.end_s <= self.start_s:
            raise ValueError(f"end_s ({self.end_s}) must be after start_s ({self.start_s})")


@dataclass
class SplitConfig:
    train_fraction: float = 0.7  # share of TRACKS (not crops) in the train split
    seed: int = 0
    # Paper: 70:30 of the train faces go to the discriminator (ZSSR'd) : the generator, split by track
    # (survsr.pipelines.roles); written as the manifest's `role` column (D | G | test).
    d_fraction: float = 0.7

    def validate(self) -> None:
        if not 0.0 <= self.train_fraction <= 1.0:
            raise ValueError(f"train_fraction must be in [0, 1], got {self.train_fraction}")


@dataclass
class PoolConfig:
    """Parallelism only: changing it never changes a crop (left out of the stage's identity)."""

    enabled: bool = True  # false = plain in-process pipeline (same outputs, no Ray)
    detect_actors: int = 0  # detector actor pool size; 0 = cluster CPUs - 1 (at least 1)
    detect_cpus: float = 1.0  # CPUs reserved per detector actor
    detect_gpus: float = 0.0  # GPUs per detector actor (> 0: the MTCNN detector runs on the actor's GPU)
    decode_cpus: float = 0.5  # CPUs reserved per decoding task (decoding is lighter than detection)
    wave_videos: int = 8  # videos per Ray Data run; each finished wave is committed to DIR


@dataclass
class IngestConfig:
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    crops: CropConfig = field(default_factory=CropConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)


def output_hash(cfg: IngestConfig) -> str:
    """The stage's identity: every setting but parallelism. It keys each video's done-marker and the
    pipeline's ingest marker alike (the split is in it: it changes the manifest)."""
    return config_hash({k: v for k, v in to_dict(cfg).items() if k != "pool"})


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> IngestConfig:
    return load(IngestConfig, path, list(overrides), default_name="ingest.yaml")
