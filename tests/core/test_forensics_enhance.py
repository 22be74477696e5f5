"""Forensics on the enhance stage's exports (a tiny random generator, 4 carphone frames, plain loop):
verify passes on the enhanced face PNGs and the enhanced video, names the file and field after a byte
changes, the input is untouched, the metadata always says model output and the visible label is there
when configured on and absent when configured off."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from survsr import verify as V
from survsr.provenance import PROVENANCE_KEY, read_png_text, sha256_file

FRAMES = 4


def _tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def enhanced(tmp_path_factory, carphone, make_generator):
    from survsr.enhance.worker import EnhanceConfig
    from survsr.pipelines.enhance import run_enhance

    root = tmp_path_factory.mktemp("enhance_forensics")
    inp = root / "input"
    inp.mkdir()
    src = inp / "carphone_pristine.mp4"
    shutil.copyfile(carphone["pristine"], src)
    before = _tree_hashes(inp)
    gen = make_generator(root / "model" / "generator.safetensors", channels=8, n_blocks=1, note="forensics test")
    out = {}
    for name, mode, label in (("faces", "faces", True), ("faces_nolabel", "faces", False),
                              ("frame", "frame", True)):
        cfg = EnhanceConfig(mode=mode, max_frames=FRAMES)
        cfg.pool.enabled = False
        cfg.label.enabled = label
        rep = run_enhance([src], gen, root / name, cfg)
        assert rep["done"] == 1, rep
        out[name] = root / name
    return {"root": root, "input": inp, "source": src, "before": before, **out}


def _face_pngs(d: Path) -> list[Path]:
    return sorted(d.rglob("*.png"))


def test_verify_passes_on_enhanced_outputs(enhanced):
    res = V.verify_paths([enhanced["faces"], enhanced["frame"]])
    assert {r.status for r in res} == {V.VERIFIED}, [p.describe() for r in res for p in r.problems][:5]
    kinds = sorted({r.kind for r in res})
    assert kinds == ["enhanced_face", "enhanced_video"]
    faces = [r for r in res if r.kind == "enhanced_face"]
    assert len(faces) == len(_face_pngs(enhanced["faces"])) >= FRAMES - 1
    assert all(r.source == str(enhanced["source"]) and r.frame_index < FRAMES for r in faces)
    assert enhanced["before"] == _tree_hashes(enhanced["input"])  # input untouched


def test_byte_changes_are_named(enhanced, tmp_path):
    copy = tmp_path / "faces"
    shutil.copytree(enhanced["faces"], copy)
    target = _face_pngs(copy)[0]
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 1
    target.write_bytes(bytes(data))
    res = {Path(r.path): r for r in V.verify_paths([copy])}
    bad = res[target.resolve()]
    assert bad.status == V.MODIFIED and bad.file == str(target.resolve())
    assert bad.field.startswith("sha256 (") and re.search(r"\.faces\.json crops\[\d+\]\.sha256\)$", bad.field)
    assert sum(r.status == V.MODIFIED for r in res.values()) == 1
    video = next(enhanced["frame"].glob("*.mp4"))
    vcopy = tmp_path / "frame"
    shutil.copytree(enhanced["frame"], vcopy)
    v = vcopy / video.name
    data = bytearray(v.read_bytes())
    data[len(data) // 2] ^= 1
    v.write_bytes(bytes(data))
    (r,) = V.verify_paths([vcopy])
    assert r.status == V.MODIFIED and r.file == str(v.resolve()) and r.field.startswith("sha256 (sidecar ")


def test_metadata_says_model_output_and_label_follows_config(enhanced):
    from survsr import marking as M

    on, off = _face_pngs(enhanced["faces"]), _face_pngs(enhanced["faces_nolabel"])
    assert on and [p.name for p in on] == [p.name for p in off]
    for a, b in zip(on, off):
        ta, tb = read_png_text(a), read_png_text(b)
        da, db = (json.loads(t[PROVENANCE_KEY]) for t in (ta, tb))
        # metadata says model output whether or not the label is burned in
        assert da["model_output"] is True and db["model_output"] is True
        assert ta[M.MODEL_OUTPUT_KEY] == tb[M.MODEL_OUTPUT_KEY] == "true"
        assert da["marking"]["visible_label"] is True and db["marking"]["visible_label"] is False
        ia, ib = (np.asarray(Image.open(p).convert("RGB")) for p in (a, b))
        box = da["source"]["box"]
        assert ib.shape[:2] == (2 * box[3], 2 * box[2])  # label off: exactly the model's x2 output
        cfg = M.config_from_record(da["marking"])
        assert M.label_present(ia, cfg) and not M.label_present(ib, replace(cfg, enabled=True))
        # label on: the same model pixels with the band added below the face (never over it)
        assert np.array_equal(ia[: ib.shape[0]], ib)
    # The enhanced video carries the band in its (lossy) frames; verify checked it in the first test.
    side = json.loads(next(enhanced["frame"].glob("*.frame.json")).read_text())
    assert side[PROVENANCE_KEY]["marking"]["visible_label"] is True


def test_upscale_exports_verify_and_carry_the_label(tmp_path):
    """`survsr upscale` (ZSSR, tiny budget): outputs listed in upscale.parquet verify back to the input
    image; the label is burned in by default and absent with --no-label; metadata says model output."""
    from skimage.data import astronaut

    from survsr import marking as M
    from survsr.cli import main

    inp = tmp_path / "stills"
    inp.mkdir()
    Image.fromarray(np.ascontiguousarray(astronaut()[40:88, 170:218])).save(inp / "face.png")  # 48x48
    before = _tree_hashes(inp)
    common = ["zssr.max_iters=3", "zssr.output_flip=false", "zssr.back_projection_iters=1", "--set",
              "zssr.device=cpu", "--method", "zssr"]
    assert main(["upscale", str(inp / "face.png"), *common, "--out", str(tmp_path / "on")]) == 0
    assert main(["upscale", str(inp / "face.png"), *common, "--no-label", "--out", str(tmp_path / "off")]) == 0
    assert _tree_hashes(inp) == before
    res = V.verify_paths([tmp_path / "on", tmp_path / "off"])
    assert [r.status for r in res] == [V.VERIFIED, V.VERIFIED], [p.describe() for r in res for p in r.problems]
    assert {r.source for r in res} == {str((inp / "face.png").resolve())}
    on, off = (np.asarray(Image.open(tmp_path / d / "face.png").convert("RGB")) for d in ("on", "off"))
    assert off.shape == (96, 96, 3) and on.shape == (96 + M.band_height(96, M.MarkingConfig()), 96, 3)
    assert np.array_equal(on[:96], off)  # the band is added below: the picture is exactly the unlabelled one
    assert M.label_present(on) and not M.label_present(off)
    for d in ("on", "off"):
        text = read_png_text(tmp_path / d / "face.png")
        assert json.loads(text[PROVENANCE_KEY])["model_output"] is True and text[M.MODEL_OUTPUT_KEY] == "true"
    target = tmp_path / "on" / "face.png"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 1
    target.write_bytes(bytes(data))
    (r,) = V.verify_paths([tmp_path / "on"])
    assert r.status == V.MODIFIED and r.field == "sha256 (upscale.parquet column sha256, path=face.png)"
