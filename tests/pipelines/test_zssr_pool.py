"""The ZSSR actor pool: output contract, provenance, retry-then-report, resume, empty/missing manifests."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from survsr.pipelines.zssr_pool import ZSSRStageConfig, load_config, run_zssr
from survsr.provenance import PROVENANCE_KEY, read_png_text, sha256_file

TINY = ["zssr.max_iters=6", "zssr.min_iters=2", "zssr.run_test_every=2", "zssr.learning_rate_policy_check_every=3",
        "zssr.learning_rate_slope_range=10", "zssr.width=16", "zssr.depth=4", "zssr.back_projection_iters=2",
        "zssr.output_flip=false", "zssr.device=cpu", "pool.num_gpus=0", "pool.batch_size=2", "pool.slots=2",
        "select.generator_faces=true"]  # the pool contract on every face; the paper's selection: see below


def test_pool_writes_contract_retries_reports_and_resumes(tmp_path, ray_session, lfw_faces_dir):
    faces = lfw_faces_dir(tmp_path / "faces", 3)
    df = pd.read_parquet(faces / "faces.parquet")
    # A fourth face whose LR file is corrupt: retried once, then reported; the others are unaffected.
    bad = df.iloc[0].to_dict() | {"crop_id": "abc123-f000009-0", "lr_path": "crops/lr/broken.png", "sha256": "0" * 64}
    (faces / "crops/lr/broken.png").write_bytes(b"garbage")
    pd.concat([df, pd.DataFrame([bad])]).to_parquet(faces / "faces.parquet")
    out = tmp_path / "zssr"
    cfg = load_config("zssr.yaml", TINY)

    s1 = run_zssr(faces, out, cfg)
    assert (s1["faces"], s1["done"], s1["ran"], s1["resumed"]) == (4, 3, 3, 0)
    assert [f["crop_id"] for f in s1["failed"]] == ["abc123-f000009-0"]
    assert s1["failed"][0]["attempts"] == 2 and "broken.png" in s1["failed"][0]["error"]
    man = pd.read_parquet(out / "zssr.parquet")
    for col in ("crop_id", "hr_path", "sha256", "iterations", "final_lr", "final_loss", "seconds", "config_hash",
                "device", "split", "lr_path", "residual_rms"):
        assert col in man.columns
    # 6 iterations from the seed's random net: alive (the net adds something), none reported dead
    assert (man["residual_rms"] > 0).all() and s1["dead_networks"] == []
    assert sorted(man["crop_id"]) == sorted(df["crop_id"])
    man = man.set_index("crop_id")
    for cid, row in man.iterrows():
        png = out / row["hr_path"]
        assert np.asarray(Image.open(png)).shape == (64, 64, 3)
        assert sha256_file(png) == row["sha256"]
        assert row["iterations"] == 6 and row["device"] == "cpu" and row["config_hash"] == s1["config_hash"]
        src = df.set_index("crop_id").loc[cid]
        assert row["split"] == src["split"] and row["lr_path"] == src["lr_path"]
        prov = json.loads(read_png_text(png)[PROVENANCE_KEY])
        assert prov["kind"] == "zssr_hr" and prov["model_output"] is True
        assert prov["parents"] == [{"path": src["lr_path"], "sha256": src["sha256"]}]
        assert prov["source"]["frame_index"] == src["frame_index"] and prov["source"]["box"] == [10, 12, 40, 40]
        assert prov["stages"][0]["stage"] == "zssr" and prov["stages"][0]["seed"] == row["seed"]
    assert json.loads((out / "zssr_failures.json").read_text())[0]["crop_id"] == "abc123-f000009-0"

    # Re-run: nothing is done twice; outputs are untouched.
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "hr").iterdir()}
    s2 = run_zssr(faces, out, cfg)
    assert (s2["done"], s2["ran"], s2["resumed"]) == (3, 0, 3)
    assert {p: p.stat().st_mtime_ns for p in (out / "hr").iterdir()} == mtimes

    # An interrupted face (no record) is redone, and only it; same seed -> the same bytes as before.
    victim = man.index[1]
    old_sha = man.loc[victim, "sha256"]
    (out / "records" / f"{victim}.json").unlink()
    s3 = run_zssr(faces, out, cfg)
    assert (s3["done"], s3["ran"], s3["resumed"]) == (3, 1, 2)
    assert pd.read_parquet(out / "zssr.parquet").set_index("crop_id").loc[victim, "sha256"] == old_sha


def test_pool_cli_and_bad_manifests(tmp_path, ray_session, capsys, lfw_faces_dir):
    from survsr.cli import main

    empty = tmp_path / "empty"
    empty.mkdir()
    pd.DataFrame(columns=["crop_id", "lr_path", "sha256", "split"]).to_parquet(empty / "faces.parquet")
    with pytest.raises(ValueError, match="no faces"):
        run_zssr(empty, tmp_path / "o1", ZSSRStageConfig())
    with pytest.raises(FileNotFoundError, match="faces.parquet"):
        run_zssr(tmp_path / "nowhere", tmp_path / "o2", ZSSRStageConfig())
    assert main(["zssr", "--faces", str(empty), "--out", str(tmp_path / "o3")]) == 1
    assert "no faces" in capsys.readouterr().out

    faces = lfw_faces_dir(tmp_path / "faces", 1)
    args = ["zssr", "--faces", str(faces), "--out", str(tmp_path / "o4")]
    for t in TINY:
        args += ["--set", t]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["done"] == 1 and summary["failed"] == 0
    assert main(args + ["--set", "zssr.sacle=3"]) == 2  # config error names the key


def test_paper_default_runs_zssr_only_on_the_discriminators_faces_and_the_test_split(tmp_path, ray_session,
                                                                                     lfw_faces_dir):
    """configs/zssr.yaml (the paper): the generator's faces (role G, by track) stay LR; D's faces and the
    test split are super-resolved. An ingest-written role column is what decides."""
    faces = lfw_faces_dir(tmp_path / "faces", 6)
    df = pd.read_parquet(faces / "faces.parquet")
    df["track_id"] = ["t9", "t9", "t0", "t0", "t1", "t1"]
    df["split"] = ["test", "test", "train", "train", "train", "train"]
    df.to_parquet(faces / "faces.parquet")
    tiny = [t for t in TINY if not t.startswith("select.")]
    s = run_zssr(faces, tmp_path / "z", load_config("zssr.yaml", tiny))
    from survsr.pipelines.roles import assign_roles

    roles = dict(zip(df["crop_id"], assign_roles(df)))
    assert sorted(roles.values()) == ["D", "D", "G", "G", "test", "test"]  # 2 train tracks: one each, by track
    done = set(pd.read_parquet(tmp_path / "z" / "zssr.parquet")["crop_id"])
    assert done == {c for c, r in roles.items() if r != "G"} and s["generator_faces_skipped"] == 2
    # the ingest's own role column wins over re-deriving it
    df["role"] = ["test", "test", "G", "G", "D", "D"]
    df.to_parquet(faces / "faces.parquet")
    run_zssr(faces, tmp_path / "z2", load_config("zssr.yaml", tiny))
    assert set(pd.read_parquet(tmp_path / "z2" / "zssr.parquet")["crop_id"]) == set(df["crop_id"][[0, 1, 4, 5]])
