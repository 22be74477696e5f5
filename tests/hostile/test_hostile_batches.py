"""Issue 15 items 12 and 5: partial batches and per-frame limits.

* ``ingest`` with some failed inputs and ``enhance`` stopped by a corrupt tail both exited 0; "done with
  failures" is now exit 3 (``survsr.cli.EXIT_PARTIAL``), nothing done is 1, all done is 0;
* the video frame-size limit was checked on the first frame only: an MJPEG of 176x144 frames followed by
  2500x2500 frames was taken whole (a model process grew to 14 GB). Every frame is checked now."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from survsr.cli import main
from survsr.stage import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL


@pytest.fixture(scope="module")
def gen_path(tmp_path_factory) -> Path:
    import torch

    from survsr.models.export import save_generator
    from survsr.models.srgan import Generator, GeneratorConfig

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("gen") / "generator.safetensors"
    save_generator(Generator(GeneratorConfig(n_blocks=1, channels=8)), path)
    return path


def _jpeg(w: int, h: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[: min(h, 32), : min(w, 32)] = (rng.random((min(h, 32), min(w, 32), 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def mjpeg(path: Path, sizes: list[tuple[int, int]], tail: bytes = b"") -> Path:
    """A raw MJPEG stream: JPEG frames back to back (each may have its own size), then ``tail``."""
    path.write_bytes(b"".join(_jpeg(w, h, i) for i, (w, h) in enumerate(sizes)) + tail)
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    return {
        "good": mjpeg(d / "good.mjpeg", [(64, 48)] * 6),
        "corrupt_tail": mjpeg(d / "tail.mjpeg", [(64, 48)] * 6, tail=b"\xff\xd8\xff\xe0" + b"\x13" * 3000),
        "growing": mjpeg(d / "growing.mjpeg", [(176, 144)] * 3 + [(2500, 2500)] * 2),
        "empty": (d / "empty.mp4", (d / "empty.mp4").write_bytes(b""))[0],
    }


def test_enhance_corrupt_tail_exits_partial(gen_path, videos, tmp_path):
    from survsr.enhance.worker import EnhanceConfig, PoolConfig
    from survsr.pipelines.enhance import run_enhance

    rep = run_enhance([videos["corrupt_tail"]], gen_path, tmp_path / "probe",
                      EnhanceConfig(pool=PoolConfig(enabled=False)))
    assert rep["partial"] == 1, rep  # the fixture really is a corrupt tail, not a failure
    common = ["--generator", str(gen_path), "--no-ray", "--no-label"]
    assert main(["enhance", str(videos["good"]), *common, "--out", str(tmp_path / "a")]) == EXIT_OK
    assert main(["enhance", str(videos["corrupt_tail"]), *common, "--out", str(tmp_path / "b")]) == EXIT_PARTIAL
    assert main(["enhance", str(videos["good"]), str(videos["empty"]), *common,
                 "--out", str(tmp_path / "c")]) == EXIT_PARTIAL
    assert main(["enhance", str(videos["empty"]), *common, "--out", str(tmp_path / "d")]) == EXIT_FAILED


def test_ingest_with_failed_inputs_exits_partial(carphone, videos, tmp_path, capsys):
    common = ["--no-ray", "--set", "decode.max_frames=12", "--set", "select.best_k=2"]
    rc = main(["ingest", str(carphone["pristine"]), str(videos["empty"]), *common, "--out", str(tmp_path / "a")])
    assert rc == EXIT_PARTIAL
    assert "empty.mp4" in capsys.readouterr().err
    rep = json.loads((tmp_path / "a" / "ingest_report.json").read_text())
    assert rep["videos_done"] == 1 and len(rep["failed"]) == 1
    assert main(["ingest", str(videos["empty"]), *common, "--out", str(tmp_path / "b")]) == EXIT_FAILED


def test_every_frame_is_checked_against_the_pixel_limit(gen_path, videos, tmp_path):
    from survsr.enhance.worker import EnhanceConfig, enhance_video
    from survsr.enhance.runner import Enhancer

    enh = Enhancer(gen_path)
    seen: list[tuple[int, int]] = []

    def fn(frames):
        seen.extend(f.shape[:2] for f in frames)
        return enh.enhance(frames)

    cfg = EnhanceConfig(batch_size=1, max_frame_pixels=640 * 480)
    rep = enhance_video(videos["growing"], tmp_path / "out", cfg, fn, model_sha256="x", device="cpu")
    assert rep["status"] == "partial" and rep["frames"] == 3
    assert "frame 3 is 2500x2500" in rep["reason"] and "max_frame_pixels" in rep["reason"]
    assert seen == [(144, 176)] * 3  # the big frames never reached the model
