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


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``):
    the CI box is shared and small, and several threads per tiny op stall on oversubscription; results do not
    depend on it. The previous setting is restored after the module."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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


@pytest.fixture(scope="session")
def serve_app(ray_session):
    """``with serve_app(args, name, token) as (client, base):`` the survsr Serve app built from ``args`` on a free
    127.0.0.1 port of the shared test Ray, up (``/healthz`` 200) before the block runs, deleted after it."""
    import contextlib
    import socket
    import time

    # up_within_s: a deadline, not a speed goal. On a 2-core box with two CPU-bound jobs beside the suite, Serve's
    # proxy failed its 5-15 s readiness checks and was restarted twice; it came up after ~95 s (2026-12-05).
    @contextlib.contextmanager
    def run(args: dict, name: str, token: str, *, up_within_s: float = 240.0, client_timeout_s: float = 60.0):
        import httpx
        from ray import serve

        from survsr.serve.app import build_app

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(args), name=name, route_prefix="/", blocking=False)
        base = f"http://127.0.0.1:{port}"
        client = httpx.Client(base_url=base, timeout=client_timeout_s, headers={"Authorization": f"Bearer {token}"})
        deadline = time.time() + up_within_s
        try:
            while True:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.time() < deadline, "service did not come up"
                time.sleep(0.5)
            yield client, base
        finally:
            client.close()
            serve.delete(name)
            serve.shutdown()

    return run


@pytest.fixture(scope="session")
def lfw_faces_dir():
    """``lfw_faces_dir(root, n)``: an ingest directory whose faces.parquet follows the ingest contract, with n
    real 32x32 face crops (LFW via scikit-image), one track, the first crop in the test split."""
    def make(root: Path, n: int = 3) -> Path:
        import numpy as np
        import pandas as pd
        from PIL import Image
        from skimage.data import lfw_subset

        from survsr.provenance import write_png

        faces = lfw_subset()[:n]
        rows = []
        for k, f in enumerate(faces):
            img = np.asarray(Image.fromarray((f * 255).astype(np.uint8)).resize((32, 32), Image.BICUBIC))
            rel = f"crops/lr/face{k}.png"
            sha = write_png(root / rel, np.repeat(img[:, :, None], 3, axis=2))
            rows.append({"crop_id": f"abc123-f{k:06d}-0", "source_path": "/data/cam.mp4", "source_sha256": "ab" * 32,
                         "frame_index": k, "time_s": k / 25.0, "box_x": 10, "box_y": 12, "box_w": 40, "box_h": 40,
                         "detector": "haar-frontal", "score": 9.0, "track_id": "t0", "split": "train" if k else "test",
                         "native_path": rel, "native_w": 32, "native_h": 32, "lr_path": rel, "lr_size": 32,
                         "resize_method": "area", "sharpness": 1.0, "sha256": sha, "native_sha256": sha,
                         "config_hash": "0" * 16})
        pd.DataFrame(rows).to_parquet(root / "faces.parquet")
        return root

    return make
