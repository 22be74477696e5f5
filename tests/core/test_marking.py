"""The visible AI-ENHANCED label and the model-output metadata, plus the audit log context manager."""

from __future__ import annotations

import json

import numpy as np
import pytest
from skimage.data import astronaut

from survsr import marking as M
from survsr.audit import audited, read_audit
from survsr.config import ConfigError, from_dict
from survsr.provenance import PROVENANCE_KEY, provenance, read_png_text, sha256_file, stage_record


@pytest.fixture(scope="module")
def img():
    return np.ascontiguousarray(astronaut()[::2, ::2])  # 256x256 real photo


def test_label_present_by_default_and_absent_when_off(img):
    out = M.mark_image(img)
    bh = M.band_height(img.shape[1], M.MarkingConfig())
    # default: the band is added below the picture; every picture pixel is left as it was
    assert out.shape == (img.shape[0] + bh, img.shape[1], 3) and M.label_present(out)
    assert np.array_equal(out[:img.shape[0]], img)
    assert not M.label_present(img)
    off = M.MarkingConfig(enabled=False)
    assert np.array_equal(M.mark_image(img, off), img)
    # The band is opaque with high-contrast text: both colours cover a real share of it.
    band = out[-bh:]
    assert (band == 0).all(axis=2).mean() > 0.5 and (band.min(axis=2) > 200).sum() > 100
    over = M.MarkingConfig(mode="overlay")  # opt-in: over the picture, size unchanged
    out = M.mark_image(img, over)
    assert out.shape == img.shape and M.label_present(out, over)
    assert np.array_equal(out[:-bh], img[:-bh])  # the rest of the picture is untouched


def test_label_position_mode_and_text(img):
    top = M.MarkingConfig(position="top")
    out = M.mark_image(img, top)
    assert M.label_present(out, top) and not M.label_present(out)  # bottom config finds no band
    ext = M.MarkingConfig(mode="extend")
    out = M.mark_image(img, ext)
    bh = M.band_height(img.shape[1], ext)
    assert out.shape == (img.shape[0] + bh, img.shape[1], 3) and bh % 2 == 0
    assert np.array_equal(out[:img.shape[0]], img) and M.label_present(out, ext)
    other = M.MarkingConfig(text="MODEL OUTPUT")
    assert M.label_present(M.mark_image(img, other), other) and not M.label_present(M.mark_image(img, other))


def test_small_face_and_tolerance():
    face = np.full((64, 64, 3), 128, np.uint8)
    out = M.mark_image(face)
    assert M.label_present(out)
    noisy = np.clip(out.astype(int) + np.random.default_rng(0).integers(-3, 4, out.shape), 0, 255).astype(np.uint8)
    assert not M.label_present(noisy) and M.label_present(noisy, tolerance=4.0)
    with pytest.raises(ValueError, match="too small"):
        M.mark_image(np.zeros((8, 64, 3), np.uint8), M.MarkingConfig(mode="overlay"))
    assert M.label_present(M.mark_image(np.zeros((8, 64, 3), np.uint8), M.MarkingConfig(mode="extend")),
                           M.MarkingConfig(mode="extend"))


def test_config_validation_through_config_system():
    cfg = from_dict(M.MarkingConfig, {"enabled": False, "position": "top", "band_color": [10, 20, 30]})
    assert cfg.enabled is False and cfg.band_color == (10, 20, 30)
    with pytest.raises((ConfigError, ValueError)):
        from_dict(M.MarkingConfig, {"position": "left"})
    with pytest.raises((ConfigError, ValueError)):
        M.MarkingConfig(text="ÄI").validate()


@pytest.mark.parametrize("enabled", [True, False])
def test_write_marked_png_metadata_always_says_model_output(tmp_path, img, enabled):
    cfg = M.MarkingConfig(enabled=enabled)
    doc = provenance("sr_image", source=None, parents=[], stages=[stage_record("enhance", "h", model_sha256="x")],
                     model_output=False)  # the writer must force it to true
    p = tmp_path / "out.png"
    sha = M.write_marked_png(p, img, doc, cfg)
    assert sha == sha256_file(p)
    text = read_png_text(p)
    rec = json.loads(text[PROVENANCE_KEY])
    assert rec["model_output"] is True and text[M.MODEL_OUTPUT_KEY] == "true"
    assert "not a photograph" in text["Description"]
    assert rec["marking"]["visible_label"] is enabled and rec["marking"]["text"] == "AI-ENHANCED"
    from PIL import Image

    pixels = np.asarray(Image.open(p).convert("RGB"))
    assert M.label_present(pixels) is enabled
    assert M.config_from_record(rec["marking"]) == cfg  # the record is enough to re-render and check the band


def test_audited_records_success_and_failure(tmp_path):
    inp = tmp_path / "in.bin"
    inp.write_bytes(b"abc")
    run = tmp_path / "run"
    run.mkdir()
    with audited(run, "ingest", {"out": str(run), "max_frames": 3}, "cfg123", inputs=[inp]) as job:
        (run / "o.txt").write_text("x")
        job.add_output(run / "o.txt")
        job.extra["faces"] = 2
    with pytest.raises(RuntimeError):
        with audited(run, "zssr", ["--faces", "d"], "cfg456", inputs=[tmp_path / "gone"]):
            raise RuntimeError("face 7 failed\nmore")
    ok, bad = read_audit(run)
    assert ok["command"] == "ingest" and ok["outcome"] == "ok" and ok["config_hash"] == "cfg123"
    assert ok["inputs"] == [{"path": str(inp), "sha256": sha256_file(inp), "bytes": 3}]
    assert ok["outputs"][0]["sha256"] == sha256_file(run / "o.txt") and ok["extra"] == {"faces": 2}
    assert ok["arguments"] == {"out": str(run), "max_frames": 3} and "time" in ok and ok["duration_s"] >= 0
    assert bad["outcome"] == "error: RuntimeError: face 7 failed" and bad["inputs"][0]["missing"] is True
    lines = (run / "audit.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line) for line in lines)
