"""Issue 15 items 2, 3 and 4: runs are relocatable and ``verify`` checks the files it is pointed at; a
missing crop is reported as missing (exit 3) at its real path; an interrupted ingest leaves nothing that
no manifest lists, and its audit line says so.

The run is real where it is cheap: ``run_ingest`` (no Ray) on the first 24 frames of the carphone clip,
the evaluation report's sidecar written by evaluate's own writer, and generator bytes standing in for
``train/`` (verify checks them by hash, as it does a real export)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from survsr import verify as V
from survsr.pipelines import ingest as I
from survsr.provenance import provenance, sha256_file, stage_record
from survsr.sidecars import write_sidecar


def _cfg():
    return I.load_config(None, ["decode.max_frames=24", "select.best_k=3"])


def _make_run(root: Path, carphone_src: Path) -> Path:
    run = root / "run"
    rep = I.run_ingest([str(carphone_src)], run / "ingest", _cfg(), use_ray=False)
    assert rep["crops"] > 0
    gen = run / "train" / "generator.safetensors"
    gen.parent.mkdir(parents=True)
    gen.write_bytes(b"generator weights stand-in " * 100)
    ev = run / "evaluate"
    ev.mkdir()
    (ev / "metrics.json").write_text('{"psnr": 1}\n')
    (ev / "index.html").write_text("<html></html>\n")
    fm = run / "ingest" / "faces.parquet"
    inputs = [{"role": "faces manifest", "path": str(fm), "sha256": sha256_file(fm)},
              {"role": "generator", "path": str(gen), "sha256": sha256_file(gen)}]
    from survsr.pipelines.evaluate import _write_report_sidecars

    _write_report_sidecars(ev, inputs, stage_record("evaluate", "cfgE"))  # the writer evaluate uses
    # The format every run written before issue 15 has: parents by absolute path.
    doc = provenance("evaluation_report", source=None, parents=[{"path": str(p["path"]), "sha256": p["sha256"]}
                                                                   for p in inputs],
                     stages=[stage_record("evaluate", "cfgE")], model_output=True)
    write_sidecar(ev / "index.html", doc)
    return run


@pytest.fixture(scope="module")
def pristine_run(tmp_path_factory, carphone) -> Path:
    return _make_run(tmp_path_factory.mktemp("case"), carphone["pristine"])


@pytest.fixture
def copy(pristine_run, tmp_path) -> Path:
    dst = tmp_path / "elsewhere" / "dc"
    shutil.copytree(pristine_run, dst, symlinks=True)
    return dst


def _problems(results) -> list[V.Problem]:
    return [p for r in results for p in r.problems]


def test_original_and_untouched_copy_verify(pristine_run, copy):
    assert V.exit_code(V.verify_paths([pristine_run])) == 0
    assert V.exit_code(V.verify_paths([copy])) == 0


def test_tampered_generator_in_a_copy_is_caught(pristine_run, copy):
    """Repro: cp -a runs/demo /tmp/dc && printf X >> /tmp/dc/train/generator.safetensors && verify /tmp/dc."""
    with open(copy / "train" / "generator.safetensors", "ab") as f:
        f.write(b"X")
    res = V.verify_paths([copy])
    assert V.exit_code(res) == 1
    bad = [p for p in _problems(res) if p.status == V.MODIFIED]
    assert bad and all(p.file.startswith(str(copy)) for p in bad)  # the copy's file, not the original's
    assert any(p.file.endswith("train/generator.safetensors") for p in bad)
    status = {Path(r.path).name: r.status for r in res}
    assert status["metrics.json"] == V.MODIFIED  # written now: run-relative parents
    assert status["index.html"] == V.MODIFIED    # written the old way: absolute parents, re-based by verify
    assert V.exit_code(V.verify_paths([pristine_run])) == 0


def test_split_edit_in_a_copy_is_caught(copy):
    fm = copy / "ingest" / "faces.parquet"
    df = pd.read_parquet(fm)
    df.loc[0, "split"] = "test" if df.loc[0, "split"] == "train" else "train"
    df.to_parquet(fm, index=False)
    res = V.verify_paths([copy])
    assert V.exit_code(res) == 1
    assert any(p.file == str(fm.resolve()) for p in _problems(res) if p.status == V.MODIFIED)


def test_moved_run_verifies_and_new_records_are_run_relative(pristine_run, copy, tmp_path):
    moved = tmp_path / "moved-again"
    shutil.move(str(copy), str(moved))
    assert V.exit_code(V.verify_paths([moved])) == 0
    side = json.loads((moved / "evaluate" / "metrics.json.provenance.json").read_text())
    parents = side["survsr:provenance"]["parents"]
    assert {p["path"] for p in parents} == {"../ingest/faces.parquet", "../train/generator.safetensors"}
    # external evidence stays by hash plus last-known (absolute) path
    row = pd.read_parquet(moved / "ingest" / "faces.parquet").iloc[0]
    assert Path(row["source_path"]).is_absolute() and len(row["source_sha256"]) == 64


def test_deleted_lr_crop_is_missing_at_its_real_path(copy):
    """Item 3: exit 3 (source-missing: a file is gone), naming ingest/crops/<vid>/lr/<id>.png, not a path
    under ingest/parts/."""
    row = pd.read_parquet(copy / "ingest" / "faces.parquet").iloc[0]
    lr = (copy / "ingest" / row["lr_path"]).resolve()
    lr.unlink()
    res = V.verify_paths([copy])
    assert V.exit_code(res) == 3
    missing = [p for p in _problems(res) if p.field == "file"]
    assert missing and {p.file for p in missing} == {str(lr)}
    assert all("/parts/" not in p.file for p in _problems(res))


def test_verify_lists_what_it_did_not_check(copy, capsys):
    cache = copy / "evaluate" / "cache" / "zssr"
    cache.mkdir(parents=True)
    (cache / "face.png").write_bytes(b"cached")
    (copy / "notes.txt").write_text("an analyst's note\n")
    results, unchecked = V.verify_run([copy])
    assert V.exit_code(results) == 0
    why = {Path(u["path"]).relative_to(copy).as_posix(): u["reason"] for u in unchecked}
    assert "cache" in why["evaluate/cache/zssr/face.png"]
    assert "no manifest or sidecar records" in why["notes.txt"]
    assert "audit log" in why["ingest/audit.jsonl"]
    # hashed against a record, so not listed: outputs, and data reached as a parent (faces.parquet)
    assert "evaluate/metrics.json" not in why and "ingest/faces.parquet" not in why
    assert "train/generator.safetensors" not in why
    from survsr.cli import main

    assert main(["verify", str(copy)]) == 0
    out = capsys.readouterr().out
    assert "not checked:" in out and "evaluate/cache/zssr/face.png" in out


def test_interrupted_ingest_leaves_no_unlisted_crops(tmp_path, carphone, monkeypatch):
    """Item 4: SIGINT in the middle of writing crops (KeyboardInterrupt at the third PNG)."""
    out = tmp_path / "ing"
    from survsr.pipelines import ingest_video

    real = ingest_video.write_png
    calls = {"n": 0}

    def interrupted_write(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(ingest_video, "write_png", interrupted_write)
    with pytest.raises(KeyboardInterrupt):
        I.run_ingest([str(carphone["pristine"])], out, _cfg(), use_ray=False)
    visible = [p for p in out.rglob("*.png") if not any(c.startswith(".") for c in p.relative_to(out).parts)]
    assert visible == []
    assert list((out / "crops").iterdir()) == [] if (out / "crops").exists() else True
    audit = [json.loads(line) for line in (out / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["outcome"] == "interrupted" and audit[-1]["command"] == "ingest"
    # re-running resumes into a clean, fully verifiable directory
    monkeypatch.setattr(ingest_video, "write_png", real)
    rep = I.run_ingest([str(carphone["pristine"])], out, _cfg(), use_ray=False)
    assert rep["crops"] > 0
    assert V.exit_code(V.verify_paths([out])) == 0
