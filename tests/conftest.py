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


@pytest.fixture(scope="session")
def make_generator():
    """``make_generator(path, channels=16, n_blocks=2, note=...)``: a small random SRGAN generator export
    (seeded), for tests of everything that runs a generator but not of its quality."""
    def make(path: Path, *, channels: int = 16, n_blocks: int = 2, note: str = "random test generator") -> Path:
        import torch

        from survsr.models.export import save_generator
        from survsr.models.srgan import Generator, GeneratorConfig

        torch.manual_seed(0)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_generator(Generator(GeneratorConfig(n_blocks=n_blocks, channels=channels)), path, {"note": note})
        return path

    return make


@pytest.fixture(scope="session")
def tiny_generator(make_generator, tmp_path_factory) -> Path:
    """One session-wide random generator export (16 channels, 2 residual blocks)."""
    return make_generator(tmp_path_factory.mktemp("gen") / "generator.safetensors")


def pytest_sessionfinish(session, exitstatus):
    """In CI (``CI=true``) a skipped test is a failure: every test here backs a claimed feature (the browser
    rendering of the report included), so a skip would hide a missing one behind a green run."""
    if not os.environ.get("CI") or exitstatus != 0:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        for rep in skipped:
            reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
            reporter.write_line(f"CI: skipped test is a failure: {rep.nodeid}: {reason}", red=True)
        session.exitstatus = 1
