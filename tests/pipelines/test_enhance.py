"""Archive enhancement: Ray Data over clips with a corrupt one, interruption + resume, audio and
timestamps passed through, provenance/label marking, faces and side-by-side modes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from survsr.enhance.worker import EnhanceConfig, FacesConfig, PoolConfig
from survsr.pipelines.enhance import run_enhance
from survsr.serve.synthetic import make_clip
from survsr.enhance.videoio import read_frame_times
from survsr.marking import MarkingConfig, band_height, label_present
from survsr.provenance import PROVENANCE_KEY, read_png_text, sha256_file


@pytest.fixture(scope="module")
def gen_path(tiny_generator) -> Path:
    return tiny_generator


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("archive")
    a = make_clip(d / "cam_a.mp4", n=20, size=(64, 48), fps=25, audio=True)
    b = make_clip(d / "cam_b.mp4", n=30, size=(80, 48), fps=15, audio=False)
    whole = make_clip(d / "tmp_whole.mp4", n=20, size=(64, 48), fps=25).read_bytes()
    corrupt = d / "cam_corrupt.mp4"
    corrupt.write_bytes(whole[: len(whole) // 2])  # truncated: no moov atom
    (d / "tmp_whole.mp4").unlink()
    return {"a": a, "b": b, "corrupt": corrupt}


def _audio_packets(path: Path) -> list[tuple[float, int]]:
    import av

    with av.open(str(path)) as c:
        if not c.streams.audio:
            return []
        s = c.streams.audio[0]
        return [(float(p.pts * s.time_base), p.size) for p in c.demux(s) if p.size]


def _first_frame(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return next(c.decode(video=0)).to_ndarray(format="rgb24")


def _outputs(out: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in out.glob("*.json")
            if p.name != "enhance_report.json" and "survsr:provenance" in p.read_text()}


def test_archive_with_corrupt_clip_on_ray_data(ray_session, gen_path, clips, tmp_path):
    out = tmp_path / "out"
    rep = run_enhance([clips["a"], clips["corrupt"]], gen_path, out, EnhanceConfig(pool=PoolConfig(actors=1)))
    assert (rep["done"], rep["failed"]) == (1, 1)
    bad = next(v for v in rep["videos"] if v["status"] == "failed")
    assert "cam_corrupt.mp4" in bad["reason"]
    good = next(v for v in rep["videos"] if v["status"] == "done")
    video = out / good["output"]
    # frame rate, timestamps, audio (copied packet for packet), size x2
    assert read_frame_times(video) == pytest.approx(read_frame_times(clips["a"]), abs=1e-3)
    got, want = _audio_packets(video), _audio_packets(clips["a"])
    assert len(want) > 5 and [n for _, n in got] == [n for _, n in want]  # same packets, not re-encoded
    assert [t for t, _ in got] == pytest.approx([t for t, _ in want], abs=1e-3)
    import av

    with av.open(str(video)) as c, av.open(str(clips["a"])) as s:
        assert c.streams.video[0].average_rate == s.streams.video[0].average_rate
        # the AI-ENHANCED band is added below the 128x96 picture, not drawn over it
        assert (c.streams.video[0].width, c.streams.video[0].height) == (128, 96 + band_height(128, MarkingConfig()))
    # marked as model output: sidecar provenance and the visible band (on by default)
    side = _outputs(out)[video.name[: -len(".mp4")] + ".json"]
    assert side["sha256"] == sha256_file(video)
    doc = side[PROVENANCE_KEY]
    assert doc["model_output"] is True and doc["marking"]["visible_label"] is True
    assert doc["stages"][0]["model_sha256"] == sha256_file(gen_path)
    assert doc["source"]["sha256"] == sha256_file(clips["a"])
    assert label_present(_first_frame(video), tolerance=12)
    assert json.loads((out / "enhance_report.json").read_text())["failed"] == 1
    audit = [json.loads(x) for x in (out / "audit.jsonl").read_text().splitlines()]
    assert len(audit) == 1 and audit[0]["command"] == "enhance"
    assert audit[0]["outcome"].startswith("ok with 1 failed")
    assert {o["path"] for o in audit[0]["outputs"]} >= {str(video), str(video.with_suffix(".json"))}


def test_interrupted_run_resumes_without_loss_or_duplicates(ray_session, gen_path, clips, tmp_path):
    out = tmp_path / "out"
    inputs = [clips["a"], clips["corrupt"], clips["b"]]
    cfg = EnhanceConfig(batch_size=4, pool=PoolConfig(enabled=False))

    def interrupt(path: str, frames: int) -> None:
        if path.endswith("cam_b.mp4") and frames >= 8:
            raise KeyboardInterrupt  # Ctrl-C in the middle of writing cam_b

    with pytest.raises(KeyboardInterrupt):
        run_enhance(inputs, gen_path, out, cfg, progress=interrupt)
    assert json.loads((out / "audit.jsonl").read_text().splitlines()[-1])["outcome"] == "interrupted"
    done_a = {n: s for n, s in _outputs(out).items()}
    assert len(done_a) == 1 and "cam_a" in next(iter(done_a))
    assert not list(out.glob("cam_b*")) and not list(out.glob(".*.tmp"))  # no half-written file survived
    a_video = out / next(iter(done_a.values()))["path"]
    a_sha, a_mtime = sha256_file(a_video), a_video.stat().st_mtime_ns
    # and what a kill -9 would leave behind: a stale temp file
    (out / ".cam_b-0000.frame.mp4.x1y2.tmp").write_bytes(b"partial")

    rep = run_enhance(inputs, gen_path, out, EnhanceConfig(batch_size=4, pool=PoolConfig(actors=1)))
    status = {Path(v["input"]).name: v["status"] for v in rep["videos"]}
    assert status == {"cam_a.mp4": "skipped", "cam_corrupt.mp4": "failed", "cam_b.mp4": "done"}
    assert sha256_file(a_video) == a_sha and a_video.stat().st_mtime_ns == a_mtime  # not redone
    assert not list(out.glob(".*.tmp"))
    videos = sorted(p.name for p in out.glob("*.mp4"))
    assert len(videos) == 2 and videos[0].startswith("cam_a-") and videos[1].startswith("cam_b-")
    b_video = next(out.glob("cam_b-*.mp4"))
    assert read_frame_times(b_video) == pytest.approx(read_frame_times(clips["b"]), abs=1e-3)
    assert _audio_packets(b_video) == []
    # a third run has nothing left to do
    again = run_enhance(inputs, gen_path, out, cfg)
    assert (again["skipped"], again["done"], again["failed"]) == (2, 0, 1)


def test_frame_mode_pixels_are_the_generators_output_before_the_label(gen_path, clips, tmp_path, monkeypatch):
    """Frame mode, in order: every frame handed to the encoder is the generator's output on that source frame
    (the generator run directly on the same batches of 4, none of the enhancement code), with the AI-ENHANCED
    band added below it (no enhanced pixel covered) and no other pixel changed; with the
    label off it is the generator's output as is. The encoded file then decodes to those frames within H.264's
    loss (crf 18; bound below)."""
    import av
    import torch

    from survsr.enhance import videoio
    from survsr.marking import render_band
    from survsr.models.export import load_generator

    with av.open(str(clips["a"])) as c:
        src = [(f.pts, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    g = load_generator(gen_path)
    direct = []
    for k in range(0, len(src), 4):
        x = torch.from_numpy(np.stack([img for _, img in src[k:k + 4]])).permute(0, 3, 1, 2).float() / 255.0
        with torch.no_grad():
            y = g(x)
        direct += list((y.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    assert len(direct) == 20 and direct[0].shape == (96, 128, 3)

    written: list[tuple[int, np.ndarray]] = []
    real_write = videoio.VideoWriter.write

    def spy(self, img, pts):
        written.append((pts, img.copy()))
        return real_write(self, img, pts)

    monkeypatch.setattr(videoio.VideoWriter, "write", spy)
    band = render_band(128, MarkingConfig())
    bh = band_height(128, MarkingConfig())
    for label in (True, False):
        written.clear()
        cfg = EnhanceConfig(batch_size=4, label=MarkingConfig(enabled=label), pool=PoolConfig(enabled=False))
        out = tmp_path / f"label_{label}"
        rep = run_enhance([clips["a"]], gen_path, out, cfg)
        assert rep["done"] == 1 and [pts for pts, _ in written] == [pts for pts, _ in src]
        for (_, frame), want in zip(written, direct):
            if label:  # the band is added below: every enhanced pixel is the generator's
                assert frame.shape == (want.shape[0] + bh, *want.shape[1:])
                assert np.array_equal(frame[:-bh], want) and np.array_equal(frame[-bh:], band)
            else:
                assert np.array_equal(frame, want)
        with av.open(str(out / rep["videos"][0]["output"])) as c:
            decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert len(decoded) == 20
        def y(img):  # luma (BT.601): the encoder keeps it at full resolution, chroma at a quarter
            return img.astype(float) @ np.array([0.299, 0.587, 0.114])

        # Measured: mean |luma error| per frame <= 1.72 (this random generator's noise-like output at crf 18);
        # the source's own bicubic upscale is ~98 away from the same decoded frames. Bound 3.
        err = [np.abs(y(d) - y(w)).mean() for d, (_, w) in zip(decoded, written)]
        assert max(err) < 3.0, err


def test_side_by_side_without_label(gen_path, clips, tmp_path):
    cfg = EnhanceConfig(mode="side-by-side", label=MarkingConfig(enabled=False), pool=PoolConfig(enabled=False))
    rep = run_enhance([clips["b"]], gen_path, tmp_path, cfg)
    video = tmp_path / rep["videos"][0]["output"]
    frame = _first_frame(video)
    assert frame.shape == (96, 320, 3)  # original (bicubic x2) | enhanced
    assert not label_present(frame, tolerance=12)
    side = json.loads(video.with_suffix(".json").read_text())
    assert side["model_output"] is True and side[PROVENANCE_KEY]["marking"]["visible_label"] is False


def test_faces_mode_on_carphone(gen_path, carphone, tmp_path):
    cfg = EnhanceConfig(mode="faces", max_frames=6, faces=FacesConfig(stride=2), pool=PoolConfig(enabled=False))
    rep = run_enhance([carphone["pristine"]], gen_path, tmp_path, cfg)
    v = rep["videos"][0]
    assert v["status"] == "done" and v["frames"] == 6 and v["faces"] >= 1
    side = json.loads((tmp_path / f"{v['output']}.json").read_text())
    crop = side["crops"][0]
    assert crop["frame_index"] % 2 == 0 and len(crop["box"]) == 4
    png = tmp_path / crop["path"]
    assert sha256_file(png) == crop["sha256"]
    doc = json.loads(read_png_text(png)[PROVENANCE_KEY])
    assert doc["model_output"] is True and doc["source"]["frame_index"] == crop["frame_index"]
    assert doc["source"]["box"] == crop["box"] and doc["source"]["sha256"] == sha256_file(carphone["pristine"])
    from PIL import Image

    img = np.asarray(Image.open(png).convert("RGB"))
    x, y, w, h = crop["box"]
    assert img.shape[1] == 2 * w and img.shape[0] > 2 * h  # x2 crop plus the label band below it
    assert label_present(img, MarkingConfig(mode="extend"))


def test_model_failure_is_reported_and_tiny_frames_get_a_band_below(gen_path, clips, tmp_path):
    from survsr.enhance.worker import enhance_video
    from survsr.enhance.runner import Enhancer

    def broken(frames):
        raise RuntimeError("model replica died")

    cfg = EnhanceConfig(pool=PoolConfig(enabled=False))
    rep = enhance_video(clips["a"], tmp_path / "x", cfg, broken, model_sha256="0" * 64, device="cpu")
    assert rep["status"] == "failed" and "model replica died" in rep["reason"] and "cam_a.mp4" in rep["reason"]
    assert not [p for p in (tmp_path / "x").iterdir()]  # nothing half-written
    tiny = make_clip(tmp_path / "tiny.mp4", n=5, size=(8, 6))
    enh = Enhancer(gen_path)
    rep = enhance_video(tiny, tmp_path / "y", cfg, enh, model_sha256=enh.model_sha256, device="cpu")
    assert rep["status"] == "done"
    frame = _first_frame(tmp_path / "y" / rep["output"])
    assert frame.shape[1] == 16 and frame.shape[0] > 12  # 16x12 picture + the label band under it
    side = json.loads((tmp_path / "y" / rep["output"]).with_suffix(".json").read_text())
    assert side[PROVENANCE_KEY]["marking"]["mode"] == "extend"
