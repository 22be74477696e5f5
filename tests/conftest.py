"""Shared fixtures: one embedded Ray for the whole test session (ray.init costs seconds here)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def ray_session():
    import ray

    from survsr.ray_utils import RayConfig, init_ray

    init_ray(RayConfig(num_cpus=2))
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    yield ray
    # Serve and Train tests may leave actors behind; shutting down here ends them all.
    ray.shutdown()


@pytest.fixture(scope="session")
def carphone():
    from survsr.data import carphone_paths

    return carphone_paths()
