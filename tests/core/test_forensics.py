"""Forensic integrity end to end on real stage outputs (carphone pristine, a few frames, CPU):

* ``survsr verify`` passes on fresh ingest + ZSSR outputs and names the file and field after one byte of
  an output or of the source video changes;
* the inputs are untouched: same hashes, no new file in the input directory (the video's for ingest, the
  faces directory for ZSSR), package copy unchanged;
* two CPU runs with the same seed and config give byte-identical outputs (ingest: a Ray Data run vs the
  plain run; ZSSR: two Ray actor-pool runs).

Byte identity needs the same code version: every PNG records it. ``init_ray`` pins it for the whole Ray
session (``SURVSR_CODE_VERSION``), so a commit landing in the working tree between the two runs cannot
change it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

import pandas as pd
import pytest

from survsr import verify as V
from survsr.provenance import PROVENANCE_KEY, read_png_text, sha256_file

MAX_FRAMES = 8
# CPU-sized ZSSR: the schedule is short but every part of the model runs (training, lr policy, inference).
ZSSR_SET = ["zssr.max_iters=20", "zssr.min_iters=10", "zssr.run_test_every=5",
            "zssr.learning_rate_policy_check_every=10", "zssr.learning_rate_slope_range=25",
            "zssr.back_projection_iters=2", "zssr.output_flip=false", "zssr.device=cpu", "zssr.precision=fp32",
            "pool.actors=1", "pool.num_gpus=0", "pool.num_cpus=1", "pool.seed=0"]
# Columns that measure the run rather than describe the output (wall-clock seconds): excluded from the
# byte-identity check of manifests, and kept out of the PNGs' provenance by design.
TIMING_COLUMNS = {"seconds"}


def _tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _doc(png: Path) -> dict:
    return json.loads(read_png_text(png)[PROVENANCE_KEY])


def _explain_difference(a: Path, b: Path) -> str:
    """What differs between two PNGs that should be identical (for the failure message)."""
    from PIL import Image

    if not np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b))):
        return f"{a.name}: pixels differ"
    da, db = _doc(a), _doc(b)
    return f"{a.name}: same pixels, provenance differs: " + ", ".join(
        k for k in sorted(set(da) | set(db)) if da.get(k) != db.get(k))


def _flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if offset is None else offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, carphone, ray_session):
    from survsr.pipelines.ingest import load_config, run_ingest

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
    from survsr.pipelines.zssr_pool import load_config as zssr_config
    from survsr.pipelines.zssr_pool import run_zssr

    zcfg = zssr_config(None, ZSSR_SET)
    faces_before = _tree_hashes(out["a"] / "faces")
    for name in ("a", "b"):
        summary = run_zssr(out[name] / "faces", out[name] / "zssr", zcfg)
        assert summary["done"] == summary["faces"] > 0 and not summary["failed"], summary
    faces_after = _tree_hashes(out["a"] / "faces")
    return {"root": root, "input": inp, "source": src, "before": before, "package": carphone["pristine"],
            "faces_before": faces_before, "faces_after": faces_after, **out}


def test_verify_passes_on_fresh_outputs(runs):
    faces = pd.read_parquet(runs["a"] / "faces" / "faces.parquet")
    res = V.verify_paths([runs["a"]], pixels=True)
    assert {r.status for r in res} == {V.VERIFIED}, [p.describe() for r in res for p in r.problems][:5]
    # every crop's native and LR PNG and every ZSSR HR PNG (D's faces and the test split: the paper's
    # selection) was reached, each traced to the source video and its frame
    hr = pd.read_parquet(runs["a"] / "zssr" / "zssr.parquet")
    assert 0 < len(hr) <= len(faces) and len(res) == 2 * len(faces) + len(hr)
    assert {r.source for r in res} == {str(runs["source"])}
    assert {r.frame_index for r in res} == set(faces["frame_index"])
    assert sorted(r.kind for r in res).count("zssr_hr") == len(hr)
    assert V.exit_code(res) == 0


def test_inputs_untouched(runs):
    assert _tree_hashes(runs["input"]) == runs["before"]["input"]  # same files, same bytes, nothing added
    assert sha256_file(runs["package"]) == runs["before"]["package"]
    assert runs["faces_after"] == runs["faces_before"]  # ZSSR wrote nothing into its input directory
    for name in ("a", "b"):
        faces = pd.read_parquet(runs[name] / "faces" / "faces.parquet")
        for col in ("native_path", "lr_path"):
            assert not any(Path(p).is_absolute() for p in faces[col])  # outputs live under the run dir


@pytest.mark.parametrize("stage, manifest", [("faces", "faces.parquet"), ("zssr", "zssr.parquet")])
def test_two_cpu_runs_byte_identical(runs, stage, manifest):
    a_dir, b_dir = runs["a"] / stage, runs["b"] / stage
    pngs = sorted(str(p.relative_to(a_dir)) for p in a_dir.rglob("*.png"))
    assert pngs and pngs == sorted(str(p.relative_to(b_dir)) for p in b_dir.rglob("*.png"))
    differ = [_explain_difference(a_dir / k, b_dir / k) for k in pngs
              if (a_dir / k).read_bytes() != (b_dir / k).read_bytes()]
    assert differ == []
    ma, mb = (pd.read_parquet(d / manifest).sort_values("crop_id").reset_index(drop=True) for d in (a_dir, b_dir))
    timing = [c for c in ma.columns if c in TIMING_COLUMNS]
    if not timing:
        assert sha256_file(a_dir / manifest) == sha256_file(b_dir / manifest)  # no times, relative paths
    # equal content apart from wall-clock columns (zssr.parquet's ``seconds``)
    pd.testing.assert_frame_equal(ma.drop(columns=timing), mb.drop(columns=timing))
    assert len(ma) == len(pngs) if stage == "zssr" else 2 * len(ma) == len(pngs)


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
    # the ZSSR output made from that LR crop fails too, naming the crop as its changed parent
    hr = res[(copy / "zssr" / "hr" / f"{faces['crop_id'].iloc[0]}.png").resolve()]
    assert hr.status == V.MODIFIED
    assert any(p.file == str(target.resolve()) and p.field.startswith("parents[0].sha256") for p in hr.problems)
    assert sum(r.status == V.MODIFIED for r in res.values()) == 2
    # one byte of a ZSSR output
    zssr = pd.read_parquet(copy / "zssr" / "zssr.parquet")
    ztarget = copy / "zssr" / zssr["hr_path"].iloc[-1]
    _flip_byte(ztarget)
    bad = {Path(r.path): r for r in V.verify_paths([copy / "zssr" / "zssr.parquet"])}[ztarget.resolve()]
    assert bad.status == V.MODIFIED and bad.file == str(ztarget.resolve())
    assert bad.field == f"sha256 (zssr.parquet column sha256, crop_id={zssr['crop_id'].iloc[-1]})"


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


AUDIT_FIELDS = ("time", "command", "arguments", "config_hash", "inputs", "outputs", "outcome")


@pytest.mark.parametrize("stage, manifest", [("faces", "faces.parquet"), ("zssr", "zssr.parquet")])
def test_audit_log_of_each_job(runs, stage, manifest):
    lines = [json.loads(x) for x in (runs["a"] / stage / "audit.jsonl").read_text().splitlines()]
    assert len(lines) == 1  # one job ran in this directory
    rec = lines[0]
    assert all(rec.get(k) is not None for k in AUDIT_FIELDS), {k: rec.get(k) for k in AUDIT_FIELDS}
    assert rec["command"] == {"faces": "ingest", "zssr": "zssr"}[stage] and rec["outcome"] == "ok"
    assert rec["outputs"][manifest] == sha256_file(runs["a"] / stage / manifest)
    if stage == "zssr":
        assert rec["inputs"] == {"faces.parquet": sha256_file(runs["a"] / "faces" / "faces.parquet")}
    else:
        assert rec["inputs"] == [str(runs["source"])]


def test_pixels_check_recomputes_crops_from_the_source_frame(runs, tmp_path):
    """An LR crop re-drawn (one pixel) with every hash re-recorded passes the hash checks; --pixels, which
    recomputes it from the decoded source frame with ingest's own resize, still catches it."""
    from PIL import Image

    from survsr.provenance import write_parquet_atomic, write_png

    copy = tmp_path / "run_copy"
    shutil.copytree(runs["a"] / "faces", copy / "faces")
    faces = pd.read_parquet(copy / "faces" / "faces.parquet")
    target = copy / "faces" / faces["lr_path"].iloc[0]
    img = np.asarray(Image.open(target).convert("RGB")).copy()
    img[16, 16] ^= 8
    sha = write_png(target, img, {PROVENANCE_KEY: read_png_text(target)[PROVENANCE_KEY]})
    for m in [copy / "faces" / "faces.parquet", *(copy / "faces" / "parts").glob("*.parquet")]:
        df = pd.read_parquet(m)
        df.loc[df["crop_id"] == faces["crop_id"].iloc[0], "sha256"] = sha
        write_parquet_atomic(df, m)
    assert {r.status for r in V.verify_paths([copy])} == {V.VERIFIED}
    res = {Path(r.path): r for r in V.verify_paths([copy], pixels=True)}
    bad = res[target.resolve()]
    assert bad.status == V.MODIFIED and bad.field == "pixels" and "resized (area)" in bad.problems[0].message
    assert sum(r.status == V.MODIFIED for r in res.values()) == 1
