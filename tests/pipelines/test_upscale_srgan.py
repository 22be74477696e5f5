"""`survsr upscale --method srgan`: a trained generator export on still images (real faces, CPU)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch
from PIL import Image

from survsr import marking as M
from survsr import verify as V
from survsr.cli import main
from survsr.models.export import save_generator
from survsr.models.srgan import Generator, GeneratorConfig
from survsr.provenance import PROVENANCE_KEY, read_png_text, sha256_file


def _faces(root):
    from skimage.data import lfw_subset

    root.mkdir()
    paths = []
    for i, face in enumerate(lfw_subset()[:3]):
        img = Image.fromarray((face * 255).astype(np.uint8)).resize((32, 32), Image.BICUBIC)
        p = root / f"cam{i}_face.{'png' if i < 2 else 'jpg'}"
        (img.convert("RGB") if i else img).save(p)  # one grayscale input: it becomes RGB
        paths.append(p)
    return paths


def test_upscale_srgan_keeps_stem_provenance_verifies_and_label_never_covers(tmp_path):
    torch.manual_seed(0)
    g = Generator(GeneratorConfig(channels=8, n_blocks=2, global_skip="bicubic"))
    g.train()
    g(torch.rand(4, 3, 32, 32))  # BN running stats off their init: a generator that is not the identity
    gen = tmp_path / "generator.safetensors"
    save_generator(g.eval(), gen, {"note": "test"})
    paths = _faces(tmp_path / "stills")
    before = {p.name: sha256_file(p) for p in paths}
    args = [*map(str, paths), "--method", "srgan", "--generator", str(gen)]
    assert main(["upscale", *args, "--out", str(tmp_path / "on")]) == 0
    assert main(["upscale", *args, "--no-label", "--out", str(tmp_path / "off")]) == 0
    assert {p.name: sha256_file(p) for p in paths} == before  # inputs never modified
    for d in ("on", "off"):
        assert sorted(p.name for p in (tmp_path / d).iterdir()) == [
            "cam0_face.png", "cam1_face.png", "cam2_face.png", "upscale.parquet"]  # each input's stem
    res = V.verify_paths([tmp_path / "on", tmp_path / "off"])
    assert all(r.status == V.VERIFIED for r in res), [p.describe() for r in res for p in r.problems]
    bh = M.band_height(64, M.MarkingConfig())
    gen_sha = sha256_file(gen)
    for p in paths:
        on = np.asarray(Image.open(tmp_path / "on" / f"{p.stem}.png").convert("RGB"))
        off = np.asarray(Image.open(tmp_path / "off" / f"{p.stem}.png").convert("RGB"))
        assert off.shape == (64, 64, 3) and on.shape == (64 + bh, 64, 3)
        assert np.array_equal(on[:64], off)  # labelled output's picture == the --no-label output, pixel for pixel
        assert M.label_present(on) and not M.label_present(off)
        # the model's output, not bicubic: computed here the same way
        x = torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1)[None].float() / 255
        with torch.inference_mode():
            ref = (g(x).clamp(0, 1) * 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
        assert np.array_equal(off, ref)
        doc = json.loads(read_png_text(tmp_path / "on" / f"{p.stem}.png")[PROVENANCE_KEY])
        assert doc["model_output"] is True and doc["kind"] == "srgan_upscale"
        assert doc["source"] == {"path": str(p.resolve()), "sha256": before[p.name]}
        assert doc["stages"][0]["model_sha256"] == gen_sha and doc["parents"][0]["sha256"] == gen_sha
        assert doc["marking"]["visible_label"] is True and doc["marking"]["mode"] == "extend"
        text = read_png_text(tmp_path / "off" / f"{p.stem}.png")
        assert text[M.MODEL_OUTPUT_KEY] == "true"  # metadata marking even without the visible label
    man = pd.read_parquet(tmp_path / "on" / "upscale.parquet")
    assert set(man["generator_sha256"]) == {gen_sha} and set(man["method"]) == {"srgan"}


def test_upscale_srgan_needs_a_generator(tmp_path, capsys):
    p = tmp_path / "a.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(p)
    assert main(["upscale", str(p), "--method", "srgan", "--out", str(tmp_path / "o")]) == 2
    bad = tmp_path / "g.safetensors"
    bad.write_bytes(b"nope")
    assert main(["upscale", str(p), "--method", "srgan", "--generator", str(bad), "--out", str(tmp_path / "o")]) == 1
    assert str(bad) in capsys.readouterr().out
