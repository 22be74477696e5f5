"""``survsr verify`` on a small run built with the provenance helpers the stages use: a copy of the real
carphone clip as source, a native crop, its 32x32 LR crop (faces.parquet), a 64x64 "HR" from a fake
model stage (zssr.parquet), and a marked export. Each test tampers with one thing and checks that verify
names the file and the field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd
import pytest

from survsr import marking
from survsr import verify as V
from survsr.provenance import (PROVENANCE_KEY, provenance, read_png_text, sha256_file, stage_record,
                               write_parquet_atomic, write_png)
from survsr.sidecars import write_sidecar

FRAMES = (3, 10)
BOX = (60, 20, 48, 56)  # x, y, w, h in carphone's 176x144 frame


def _decode(path: Path, upto: int) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        out = []
        for f in c.decode(video=0):
            out.append(f.to_ndarray(format="rgb24"))
            if len(out) > upto:
                return out
    return out


def _flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


def build_run(root: Path, carphone_src: Path) -> dict:
    """Write a miniature ingest + zssr + export run under ``root`` like the stages do."""
    src_dir = root / "input"
    src_dir.mkdir()
    src = src_dir / "carphone.mp4"
    shutil.copyfile(carphone_src, src)
    src_sha = sha256_file(src)
    frames = _decode(src, max(FRAMES))
    faces, hr_rows, out = [], [], {"source": src, "faces": root / "faces", "zssr": root / "zssr"}
    x, y, w, h = BOX
    for fi in FRAMES:
        source = {"path": str(src), "sha256": src_sha, "frame_index": fi, "time_s": fi * 1001 / 30000,
                  "box": [x, y, w, h]}
        ing = stage_record("ingest", "cfgI", seed=0, detector="haar")
        crop_id = f"{src_sha[:12]}-f{fi:06d}-0"
        native = frames[fi][y:y + h, x:x + w].copy()
        nrel = f"crops/{crop_id}.native.png"
        nsha = write_png(out["faces"] / nrel, native,
                         {PROVENANCE_KEY: provenance("native_crop", source=source, parents=[], stages=[ing],
                                                     model_output=False)})
        lr = cv2.resize(native, (32, 32), interpolation=cv2.INTER_AREA)
        lrel = f"crops/{crop_id}.lr.png"
        lsha = write_png(out["faces"] / lrel, lr,
                         {PROVENANCE_KEY: provenance("lr_crop", source=source,
                                                     parents=[{"path": nrel, "sha256": nsha}], stages=[ing],
                                                     model_output=False)})
        faces.append(dict(crop_id=crop_id, source_path=str(src), source_sha256=src_sha, frame_index=fi,
                          time_s=fi * 1001 / 30000, box_x=x, box_y=y, box_w=w, box_h=h, split="train",
                          native_path=nrel, native_sha256=nsha, lr_path=lrel, sha256=lsha, config_hash="cfgI"))
        hr = cv2.resize(lr, (64, 64), interpolation=cv2.INTER_CUBIC)
        z = stage_record("zssr", "cfgZ", seed=0, model_sha256=None, device="cpu")
        hrel = f"hr/{crop_id}.png"
        hsha = write_png(out["zssr"] / hrel, hr,
                         {PROVENANCE_KEY: provenance("zssr_hr", source=source,
                                                     parents=[{"path": f"../faces/{lrel}", "sha256": lsha}],
                                                     stages=[ing, z], model_output=True)})
        hr_rows.append(dict(crop_id=crop_id, hr_path=hrel, sha256=hsha, lr_path=str(out["faces"] / lrel),
                            split="train", config_hash="cfgZ", seconds=0.1))
    write_parquet_atomic(pd.DataFrame(faces), out["faces"] / "faces.parquet")
    write_parquet_atomic(pd.DataFrame(hr_rows), out["zssr"] / "zssr.parquet")
    out["crop_ids"] = [r["crop_id"] for r in faces]
    out["lr"] = [out["faces"] / r["lr_path"] for r in faces]
    out["native"] = [out["faces"] / r["native_path"] for r in faces]
    out["hr"] = [out["zssr"] / r["hr_path"] for r in hr_rows]
    return out


@pytest.fixture
def run(tmp_path, carphone):
    return build_run(tmp_path, carphone["pristine"])


def _by_path(results) -> dict[str, V.Result]:
    return {Path(r.path).name: r for r in results}


def test_fresh_run_verifies(run):
    res = V.verify_paths([run["faces"], run["zssr"]], pixels=True)
    assert len(res) == 3 * len(FRAMES)  # native + lr + hr per frame
    assert {r.status for r in res} == {V.VERIFIED}, [p.describe() for r in res for p in r.problems]
    assert V.exit_code(res) == 0
    hr = _by_path(res)[run["hr"][0].name]
    assert hr.kind == "zssr_hr" and hr.frame_index == FRAMES[0] and hr.source == str(run["source"])
    # A single file and a single manifest work too.
    assert [r.status for r in V.verify_paths([run["hr"][1]])] == [V.VERIFIED]
    assert {r.status for r in V.verify_paths([run["zssr"] / "zssr.parquet"])} == {V.VERIFIED}


def test_one_byte_in_output_is_named(run):
    target = run["hr"][0]
    _flip_byte(target)
    res = _by_path(V.verify_paths([run["zssr"]]))
    bad = res[target.name]
    assert bad.status == V.MODIFIED
    assert bad.file == str(target.resolve()) and bad.field.startswith("sha256 (zssr.parquet column sha256")
    assert bad.problems[0].expected != bad.problems[0].actual
    assert res[run["hr"][1].name].status == V.VERIFIED  # the other output is untouched
    assert V.exit_code(list(res.values())) == 1


def test_byte_flip_in_parent_fails_child(run):
    lr = run["lr"][1]
    _flip_byte(lr, offset=len(lr.read_bytes()) - 20)  # inside the last chunks
    res = _by_path(V.verify_paths([run["zssr"]]))
    hr = res[run["hr"][1].name]
    assert hr.status == V.MODIFIED
    fields = {(Path(p.file).name, p.field.split(" ")[0]) for p in hr.problems}
    assert (lr.name, "parents[0].sha256") in fields  # the child's record of its parent
    assert (lr.name, "sha256") in fields              # and faces.parquet's record
    assert res[run["hr"][0].name].status == V.VERIFIED


def test_byte_flip_without_manifest_is_still_caught(run):
    """A lone PNG whose manifest is gone: the chunk CRCs still expose a flipped byte."""
    (run["zssr"] / "zssr.parquet").unlink()
    target = run["hr"][0]
    (clean,) = V.verify_paths([target])
    assert clean.status == V.UNVERIFIABLE and clean.field == "sha256"  # nothing records its own hash
    _flip_byte(target)
    (res,) = V.verify_paths([target])
    assert res.status == V.MODIFIED and res.field == "png data"


def test_source_changed(run):
    _flip_byte(run["source"], offset=5000)
    res = V.verify_paths([run["faces"]])
    assert all(r.status == V.MODIFIED for r in res)
    p = res[0].problems[0]
    assert p.file == str(run["source"].resolve()) and p.field.startswith("source.sha256")


def test_source_missing_and_moved(run, tmp_path):
    moved = tmp_path / "evidence-store"
    moved.mkdir()
    shutil.move(run["source"], moved / "carphone.mp4")
    res = V.verify_paths([run["zssr"]])
    assert {r.status for r in res} == {V.SOURCE_MISSING} and V.exit_code(res) == 3
    assert res[0].field == "source.path" and res[0].file.endswith("carphone.mp4")
    # Found again by name + SHA-256 under --source-root.
    res = V.verify_paths([run["zssr"]], source_roots=[moved])
    assert {r.status for r in res} == {V.VERIFIED}


def test_missing_parent_breaks_chain(run):
    run["lr"][0].unlink()
    res = _by_path(V.verify_paths([run["zssr"] / "zssr.parquet"]))
    hr = res[run["hr"][0].name]
    assert hr.status == V.SOURCE_MISSING and hr.field == "parents[0].path"


def test_frame_not_in_source(run):
    """Re-written output (hash updated in the manifest too) that claims a frame the video lacks."""
    target = run["native"][0]
    doc = json.loads(read_png_text(target)[PROVENANCE_KEY])
    doc["source"]["frame_index"] = 500
    img = np.asarray(__import__("PIL.Image").Image.open(target).convert("RGB"))
    sha = write_png(target, img, {PROVENANCE_KEY: doc})
    df = pd.read_parquet(run["faces"] / "faces.parquet")
    df.loc[df.crop_id == run["crop_ids"][0], "native_sha256"] = sha
    write_parquet_atomic(df, run["faces"] / "faces.parquet")
    res = _by_path(V.verify_paths([run["faces"]]))
    fields = {(Path(p.file).name, p.field.split(" ")[0]) for p in res[target.name].problems}
    assert ("faces.parquet", "frame_index") in fields  # manifest says 3, document says 500
    assert (target.name, "source.frame_index") in fields  # carphone has 120 frames
    # The LR crop derived from it now disagrees with its parent about the frame as well.
    lr = res[run["lr"][0].name]
    assert lr.status == V.MODIFIED and any(p.field == "source.frame_index" for p in lr.problems)


def test_pixels_check_catches_swapped_crop(run):
    """Native crop replaced by other pixels and every hash re-recorded: only --pixels can tell."""
    target = run["native"][0]
    doc = read_png_text(target)[PROVENANCE_KEY]
    img = np.asarray(__import__("PIL.Image").Image.open(target).convert("RGB")).copy()
    img[10:20, 10:20] = 255
    sha = write_png(target, img, {PROVENANCE_KEY: doc})
    df = pd.read_parquet(run["faces"] / "faces.parquet")
    df.loc[df.crop_id == run["crop_ids"][0], "native_sha256"] = sha
    write_parquet_atomic(df, run["faces"] / "faces.parquet")
    lr = run["lr"][0]
    ldoc = json.loads(read_png_text(lr)[PROVENANCE_KEY])
    ldoc["parents"][0]["sha256"] = sha
    lsha = write_png(lr, np.asarray(__import__("PIL.Image").Image.open(lr).convert("RGB")), {PROVENANCE_KEY: ldoc})
    df.loc[df.crop_id == run["crop_ids"][0], "sha256"] = lsha
    write_parquet_atomic(df, run["faces"] / "faces.parquet")
    assert {r.status for r in V.verify_paths([run["faces"]])} == {V.VERIFIED}
    res = _by_path(V.verify_paths([run["faces"]], pixels=True))
    assert res[target.name].status == V.MODIFIED and res[target.name].field == "pixels"
    assert res[lr.name].status == V.MODIFIED  # inherits its parent's failure
    assert res[run["native"][1].name].status == V.VERIFIED


def test_manifest_field_edited(run):
    df = pd.read_parquet(run["faces"] / "faces.parquet")
    df.loc[0, "box_x"] = 0
    write_parquet_atomic(df, run["faces"] / "faces.parquet")
    res = _by_path(V.verify_paths([run["faces"]]))
    bad = res[Path(df.loc[0, "lr_path"]).name]
    assert bad.status == V.MODIFIED
    assert bad.file.endswith("faces.parquet") and bad.field.startswith("box_x (faces.parquet crop_id=")


def test_png_without_provenance_is_unverifiable(tmp_path):
    p = tmp_path / "photo.png"
    write_png(p, np.zeros((8, 8, 3), np.uint8))
    (r,) = V.verify_paths([p])
    assert r.status == V.UNVERIFIABLE and r.field == PROVENANCE_KEY and V.exit_code([r]) == 4


def test_stripped_provenance_in_manifest_listed_file(run):
    target = run["hr"][0]
    img = np.asarray(__import__("PIL.Image").Image.open(target).convert("RGB"))
    write_png(target, img)  # same pixels, provenance chunk dropped
    res = _by_path(V.verify_paths([run["zssr"]]))
    assert res[target.name].status == V.MODIFIED and res[target.name].field.startswith("sha256")


def test_usage_errors(tmp_path, capsys):
    with pytest.raises(V.VerifyUsageError):
        V.verify_paths([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(V.VerifyUsageError):
        V.verify_paths([tmp_path / "empty"])
    from survsr.cli import main

    assert main(["verify", str(tmp_path / "nope")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_cli_output_and_exit_codes(run, capsys):
    from survsr.cli import main

    assert main(["verify", str(run["faces"]), str(run["zssr"])]) == 0
    out = capsys.readouterr().out
    assert "6 outputs: verified 6; exit code 0" in out
    _flip_byte(run["hr"][1])
    assert main(["verify", "--json", str(run["zssr"])]) == 1
    doc = json.loads(capsys.readouterr().out)
    bad = [r for r in doc["results"] if r["status"] == "modified"]
    assert doc["exit_code"] == 1 and len(bad) == 1 and bad[0]["path"] == str(run["hr"][1].resolve())


def _write_video(path: Path, frames: list[np.ndarray], fps: int = 10) -> None:
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        s.options = {"crf": "18"}
        for img in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def test_video_sidecar(run, tmp_path):
    src = run["source"]
    frames = _decode(src, 5)
    cfg = marking.MarkingConfig()
    marked = [marking.mark_frame(cv2.resize(f, (352, 288), interpolation=cv2.INTER_CUBIC), cfg) for f in frames]
    out = tmp_path / "enhanced" / "carphone_x2.mp4"
    out.parent.mkdir()
    _write_video(out, marked)
    doc = marking.mark_document(provenance(
        "enhanced_video", source={"path": str(src), "sha256": sha256_file(src), "frame_index": 0, "time_s": 0.0,
                                  "box": None},
        parents=[], stages=[stage_record("enhance", "cfgE", seed=0, model_sha256="ab" * 32)],
        model_output=True), cfg)
    side = write_sidecar(out, doc)
    assert side.name == "carphone_x2.mp4.provenance.json"
    res = V.verify_paths([out.parent])
    assert [r.status for r in res] == [V.VERIFIED], [p.describe() for p in res[0].problems]
    assert res[0].kind == "enhanced_video"
    # A video whose frames lack the label its record claims.
    _write_video(out, [cv2.resize(f, (352, 288)) for f in frames])
    write_sidecar(out, doc)
    (r,) = V.verify_paths([side])
    assert r.status == V.MODIFIED and r.field == "marking.visible_label"
    # One byte of the video changed after the sidecar was written.
    _write_video(out, marked)
    write_sidecar(out, doc)
    _flip_byte(out)
    (r,) = V.verify_paths([out])
    assert r.status == V.MODIFIED and r.field == f"sha256 (sidecar {side.name})"
    # A video with no sidecar is not verifiable.
    side.unlink()
    (r,) = V.verify_paths([out])
    assert r.status == V.UNVERIFIABLE


def test_parent_recorded_relative_to_another_run_dir(run, tmp_path):
    """ZSSR records its parent as written in faces.parquet (relative to the faces directory). Beside the
    faces directory verify finds it by name + hash; far away it needs --source-root or a ``manifest`` hint."""
    far = tmp_path / "elsewhere" / "deep" / "zssr"
    lr = run["lr"][0]
    rel = str(lr.relative_to(run["faces"]))
    src_doc = json.loads(read_png_text(lr)[PROVENANCE_KEY])
    img = cv2.resize(np.asarray(__import__("PIL.Image").Image.open(lr).convert("RGB")), (64, 64))
    rows = []
    for name, parent in (("plain", {"path": rel, "sha256": sha256_file(lr)}),
                         ("hinted", {"path": rel, "sha256": sha256_file(lr),
                                     "manifest": "../../../faces/faces.parquet"})):
        sha = write_png(far / f"{name}.png", img, {PROVENANCE_KEY: provenance(
            "zssr_hr", source=src_doc["source"], parents=[parent], stages=[stage_record("zssr", "z")],
            model_output=True)})
        rows.append({"crop_id": name, "hr_path": f"{name}.png", "sha256": sha})
    write_parquet_atomic(pd.DataFrame(rows), far / "zssr.parquet")
    assert (far / ".." / ".." / ".." / "faces" / "faces.parquet").resolve() == (run["faces"] / "faces.parquet")
    res = _by_path(V.verify_paths([far]))
    assert res["plain.png"].status == V.SOURCE_MISSING and res["plain.png"].field == "parents[0].path"
    assert "--source-root" in res["plain.png"].problems[0].message
    assert res["hinted.png"].status == V.VERIFIED
    res = _by_path(V.verify_paths([far], source_roots=[run["faces"]]))
    assert {r.status for r in res.values()} == {V.VERIFIED}


def test_report_sidecar_with_data_parents(run, tmp_path):
    """A non-image output (a report) verified through its sidecar: its parents are a manifest and a PNG;
    the manifest has no provenance of its own and is checked by hash alone. Caches are not scanned."""
    rep_dir = tmp_path / "evaluate"
    rep_dir.mkdir()
    report = rep_dir / "index.html"
    report.write_text("<html>PSNR 30.1 dB</html>")
    faces_manifest = run["faces"] / "faces.parquet"
    doc = provenance("evaluation_report", source=None,
                     parents=[{"path": str(faces_manifest), "sha256": sha256_file(faces_manifest)},
                              {"path": str(run["hr"][0]), "sha256": sha256_file(run["hr"][0])}],
                     stages=[stage_record("evaluate", "e", seed=0)], model_output=True)
    write_sidecar(report, doc)
    write_png(rep_dir / "cache" / "zssr" / "x.png", np.zeros((4, 4, 3), np.uint8))  # no provenance: skipped
    (r,) = V.verify_paths([rep_dir])
    assert r.status == V.VERIFIED and r.kind == "evaluation_report", [p.describe() for p in r.problems]
    df = pd.read_parquet(faces_manifest)
    df.loc[0, "score"] = 99.0
    write_parquet_atomic(df, faces_manifest)
    (r,) = V.verify_paths([report])
    assert r.status == V.MODIFIED and r.file == str(faces_manifest.resolve())
    assert r.field == "parents[0].sha256 (recorded in index.html)"
    # a data file given alone has nothing to verify it by
    (tmp_path / "x.csv").write_text("a,b\n")
    (r,) = V.verify_paths([tmp_path / "x.csv"])
    assert r.status == V.UNVERIFIABLE and r.field == PROVENANCE_KEY


def test_parent_marked_original_is_checked_by_hash_alone(tmp_path):
    """A report built from a user's photo (no survsr history) verifies when the record calls it original,
    is unverifiable when it does not, and is modified when the photo's bytes change."""
    import numpy as np

    from survsr.provenance import encode_png, provenance, sha256_file, stage_record
    from survsr.verify import verify_paths

    photo = tmp_path / "inputs" / "face.png"
    photo.parent.mkdir()
    photo.write_bytes(encode_png(np.full((8, 8, 3), 7, np.uint8)))
    out = tmp_path / "report"
    out.mkdir()

    def report(original: bool):
        target = out / "index.html"
        target.write_text("<html>PSNR 30.0 dB</html>")
        par = {"path": str(photo), "sha256": sha256_file(photo), **({"original": True} if original else {})}
        write_sidecar(target, provenance("evaluation_report", source=None, parents=[par],
                                         stages=[stage_record("evaluate", "0" * 16)], model_output=False))
        return verify_paths([target])[0]

    assert report(original=False).status == "unverifiable"
    assert report(original=True).status == "verified"
    photo.write_bytes(photo.read_bytes() + b"\0")
    res = verify_paths([out / "index.html"])[0]
    assert res.status == "modified" and any("parents[0].sha256" in p.field for p in res.problems)
