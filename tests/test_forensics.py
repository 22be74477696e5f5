"""Forensic integrity end to end on real stage outputs (carphone pristine, a few frames, CPU):

* ``survsr verify`` passes on fresh ingest (+ ZSSR) outputs and names the file and field after one byte of
  an output or of the source video changes;
* the inputs are untouched: same hashes, no new file in the input directory, package copy unchanged;
* two CPU runs with the same seed and config give byte-identical outputs (Ray run vs plain run).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from survsr import verify as V
from survsr.provenance import sha256_file

MAX_FRAMES = 10
# Columns that measure the run rather than describe the output (wall-clock seconds): excluded from the
# byte-identity check of manifests, and kept out of the PNGs' provenance by design.
TIMING_COLUMNS = {"seconds"}


def _tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if offset is None else offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, carphone, ray_session):
    from pipelines.ingest import load_config, run_ingest

    root = tmp_path_factory.mktemp("forensics")
    inp = root / "input"
    inp.mkdir()
    src = inp / "carphone_pristine.mp4"
    shutil.copyfile(carphone["pristine"], src)
    before = {"input": _tree_hashes(inp), "package": sha256_file(carphone["pristine"])}
    cfg = load_config(None, [f"decode.max_frames={MAX_FRAMES}"])
    out = {}
    for name, use_ray in (("a", True), ("b", False)):
        run = root / f"run_{name}"
        rep = run_ingest([src], run / "faces", cfg, use_ray=use_ray)
        assert rep["ok"] and rep["crops"] > 0
        out[name] = run
    return {"root": root, "input": inp, "source": src, "before": before, "package": carphone["pristine"], **out}


def test_verify_passes_on_fresh_outputs(runs):
    faces = pd.read_parquet(runs["a"] / "faces" / "faces.parquet")
    res = V.verify_paths([runs["a"]], pixels=True)
    assert {r.status for r in res} == {V.VERIFIED}, [p.describe() for r in res for p in r.problems][:5]
    # every crop's native and LR PNG was reached, each traced to the source video and its frame
    assert len(res) == 2 * len(faces)
    assert {r.source for r in res} == {str(runs["source"])}
    assert {r.frame_index for r in res} == set(faces["frame_index"])
    assert V.exit_code(res) == 0


def test_inputs_untouched(runs):
    assert _tree_hashes(runs["input"]) == runs["before"]["input"]  # same files, same bytes, nothing added
    assert sha256_file(runs["package"]) == runs["before"]["package"]
    for name in ("a", "b"):
        faces = pd.read_parquet(runs[name] / "faces" / "faces.parquet")
        for col in ("native_path", "lr_path"):
            assert not any(Path(p).is_absolute() for p in faces[col])  # outputs live under the run dir


def test_two_cpu_runs_byte_identical(runs):
    a, b = _tree_hashes(runs["a"] / "faces"), _tree_hashes(runs["b"] / "faces")
    pngs = sorted(k for k in a if k.endswith(".png"))
    assert pngs and pngs == sorted(k for k in b if k.endswith(".png"))
    assert [k for k in pngs if a[k] != b[k]] == []
    assert a["faces.parquet"] == b["faces.parquet"]  # the manifest too (no times, paths relative)


def test_one_byte_changed_in_output(runs, tmp_path):
    copy = tmp_path / "run_copy"
    shutil.copytree(runs["a"], copy)  # relative manifest paths: the copy verifies on its own
    faces = pd.read_parquet(copy / "faces" / "faces.parquet")
    assert {r.status for r in V.verify_paths([copy])} == {V.VERIFIED}
    target = copy / "faces" / faces["lr_path"].iloc[0]
    _flip_byte(target)
    res = {Path(r.path): r for r in V.verify_paths([copy])}
    bad = res[target.resolve()]
    assert bad.status == V.MODIFIED and bad.file == str(target.resolve())
    assert bad.field == f"sha256 (faces.parquet column sha256, crop_id={faces['crop_id'].iloc[0]})"
    assert sum(r.status == V.MODIFIED for r in res.values()) == 1


def test_one_byte_changed_in_source(runs, tmp_path):
    src = runs["source"]
    backup = tmp_path / "backup.mp4"
    shutil.copyfile(src, backup)
    try:
        _flip_byte(src, offset=src.stat().st_size // 3)
        res = V.verify_paths([runs["a"] / "faces" / "faces.parquet"])
        assert res and all(r.status == V.MODIFIED for r in res)
        assert res[0].file == str(src.resolve()) and res[0].field.startswith("source.sha256")
        src.unlink()
        res = V.verify_paths([runs["a"] / "faces"])
        assert {r.status for r in res} == {V.SOURCE_MISSING} and V.exit_code(res) == 3
    finally:
        shutil.copyfile(backup, src)
    assert sha256_file(src) == runs["before"]["input"][src.name]
