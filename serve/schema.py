"""Settings of the survsr Serve application: the ``args`` of its entry in ``configs/serve.yaml``.

The file itself is Ray Serve's own config format (``serve run configs/serve.yaml`` works); only the
``applications[].args`` mapping is ours and is validated against :class:`ServeArgs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from survsr.enhance.worker import FacesConfig, OutputConfig
from survsr.enhance.runner import EngineConfig
from survsr.marking import MarkingConfig


# The model deployment's name: the app defines it, live streams (serve/stream.py) look it up by it.
MODEL_DEPLOYMENT = "EnhancerModel"


@dataclass
class BatchConfig:
    max_batch_size: int = 16  # frames per forward pass (@serve.batch)
    batch_wait_timeout_s: float = 0.01  # how long the first request of a batch waits for company

    def validate(self) -> None:
        if self.max_batch_size < 1 or self.batch_wait_timeout_s < 0:
            raise ValueError("max_batch_size must be >= 1 and batch_wait_timeout_s >= 0")


@dataclass
class AutoscalingConfig:
    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 8.0
    upscale_delay_s: float = 10.0
    downscale_delay_s: float = 120.0

    def validate(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ValueError("need 0 <= min_replicas <= max_replicas and max_replicas >= 1")


@dataclass
class ModelDeploymentConfig:
    num_gpus: float = 0.0  # per replica (ray_actor_options)
    num_cpus: float = 1.0
    max_ongoing_requests: int = 64  # must exceed max_batch_size or batches can never fill
    health_check_period_s: float = 10.0
    autoscaling: AutoscalingConfig = field(default_factory=AutoscalingConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)


@dataclass
class LimitsConfig:
    max_image_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 1920 * 1080  # per uploaded image (checked from the header, before decoding)
    max_video_bytes: int = 512 * 1024 * 1024
    max_video_pixels: int = 1920 * 1080  # per frame


@dataclass
class JobsConfig:
    dir: str = "serve_jobs"  # job inputs and results (relative to the working directory)
    num_cpus: float = 0.5  # per video job task (decode + encode; the model runs in its deployment)
    batch_size: int = 16  # frames sent to the model deployment per call


@dataclass
class StreamsConfig:
    # Sources a client may ask the service to open (survsr.serve.stream.check_source_allowed): URL entries
    # match scheme + host + port (+ path prefix by segments; "host:*" = any port), e.g. "rtsp://10.20.0.5/";
    # path entries match files whose real path lies inside them. No string-prefix matching: a host prefix
    # such as "rtsp://10.20.0." admits nothing. Empty = /v1/streams refuses everything (no SSRF).
    allowed_prefixes: list[str] = field(default_factory=list)
    out_dir: str = "serve_streams"
    max_streams: int = 4
    num_cpus: float = 0.25  # per stream actor (decode + encode; the model runs in its deployment)
    defaults: dict = field(default_factory=dict)  # survsr.serve.stream.StreamConfig fields for every stream


@dataclass
class ServeArgs:
    generator: str = "runs/demo/train/generator.safetensors"
    app_name: str = "survsr"
    auth_token_env: str = "SURVSR_SERVE_TOKEN"  # bearer token read from this env var (ingress process)
    auth_token_sha256: str | None = None  # or: SHA-256 hex of the token (safe to keep in a config file)
    ingress_num_cpus: float = 0.25
    model: ModelDeploymentConfig = field(default_factory=ModelDeploymentConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    label: MarkingConfig = field(default_factory=MarkingConfig)  # visible AI-ENHANCED band on outputs
    jobs: JobsConfig = field(default_factory=JobsConfig)
    faces: FacesConfig = field(default_factory=FacesConfig)
    video_output: OutputConfig = field(default_factory=OutputConfig)
    streams: StreamsConfig = field(default_factory=StreamsConfig)

    def validate(self) -> None:
        if self.model.max_ongoing_requests < self.batch.max_batch_size:
            raise ValueError("model.max_ongoing_requests must be >= batch.max_batch_size")

    def generator_path(self) -> Path:
        return Path(self.generator).expanduser().resolve()
