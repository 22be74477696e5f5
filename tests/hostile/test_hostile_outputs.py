"""Issue 15 item 1: no command writes over, into, or beside its inputs. ``survsr upscale a.png --out DIR``
with DIR = a.png's directory used to replace a.png by its 2x output (exit 0). One helper
(``survsr.provenance.check_output_dir``) guards every command; these tests drive the real CLI."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from survsr.cli import main
from survsr.provenance import OutputOverlapError, check_output_dir


def _tree(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*"))
            if p.is_file()}


@pytest.fixture
def evidence(tmp_path) -> Path:
    d = tmp_path / "x"
    d.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((24, 20, 3)) * 255).astype(np.uint8)).save(d / "a.png")
    (d / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))  # never decoded: refused first
    return d


@pytest.mark.parametrize("out", [".", "sub", "sub/deeper"])
def test_upscale_refuses_output_in_input_directory(evidence, out, capsys):
    before = _tree(evidence)
    rc = main(["upscale", str(evidence / "a.png"), "--method", "bicubic", "--out", str(evidence / out)])
    assert rc == 2
    assert _tree(evidence) == before  # a.png untouched, nothing new (not even an empty sub/)
    assert not (evidence / "sub").exists()
    err = capsys.readouterr().err
    assert "refusing output directory" in err and "a.png" in err


def test_upscale_refuses_symlink_to_input_directory(evidence, tmp_path):
    link = tmp_path / "link"
    os.symlink(evidence, link)
    before = _tree(evidence)
    assert main(["upscale", str(evidence / "a.png"), "--method", "bicubic", "--out", str(link)]) == 2
    assert _tree(evidence) == before


def test_upscale_elsewhere_still_works(evidence, tmp_path):
    before = _tree(evidence)
    assert main(["upscale", str(evidence / "a.png"), "--method", "bicubic", "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "a.png").is_file() and _tree(evidence) == before


@pytest.mark.parametrize("argv", [
    ["ingest", "{x}/clip.mp4", "--no-ray", "--out", "{x}"],
    ["ingest", "{x}", "--no-ray", "--out", "{x}/faces"],
    ["enhance", "{x}/clip.mp4", "--generator", "{x}/g.safetensors", "--no-ray", "--out", "{x}/enh"],
    ["zssr", "--faces", "{x}", "--out", "{x}/zssr"],
])
def test_other_commands_refuse_the_input_directory(evidence, argv, capsys):
    before = _tree(evidence)
    rc = main([a.replace("{x}", str(evidence)) for a in argv])
    assert rc == 2
    assert _tree(evidence) == before and sorted(p.name for p in evidence.iterdir()) == ["a.png", "clip.mp4"]
    assert "refusing output directory" in capsys.readouterr().err


def test_output_directory_may_not_contain_an_input(tmp_path):
    (tmp_path / "run" / "in").mkdir(parents=True)
    (tmp_path / "run" / "in" / "v.mp4").write_bytes(b"x")
    with pytest.raises(OutputOverlapError, match="contains input"):
        check_output_dir(tmp_path / "run", [tmp_path / "run" / "in" / "v.mp4"], "ingest")
    # URLs and missing paths are not files on this disk: nothing to protect, the stage reports them
    assert check_output_dir(tmp_path / "o", ["rtsp://127.0.0.1/x", tmp_path / "nope.mp4"], "ingest") == \
        (tmp_path / "o").resolve()
