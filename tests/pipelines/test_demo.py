"""The demo end to end (every stage, shrunk): outputs exist, verify passes, the bundled inputs are untouched."""

from __future__ import annotations

import json

import pytest

from survsr.provenance import sha256_file

SMALL = [
    "ingest.overrides=[decode.max_frames=40, select.best_k=10]",
    "zssr.overrides=[zssr.max_iters=20, zssr.min_iters=10]",
    "train.overrides=[train.max_steps=4, train.batch_size=2, train.checkpoint_every=2, train.log_every=1, "
    "data.heldout_max=4, scaling.cpus_per_worker=1]",
    "evaluate.overrides=[ground_truth.max_faces=2, real_footage.max_faces=2, "
    "paper.max_faces=3, pool.actors=1]",
]


@pytest.mark.slow
def test_demo_end_to_end(ray_session, carphone, tmp_path, capsys):
    from survsr.pipelines.demo import run_demo, summary_lines

    before = {k: sha256_file(p) for k, p in carphone.items()}
    out = tmp_path / "demo"
    res = run_demo(out, SMALL, ["max_frames=6"])

    assert res["pipeline"]["ok"], res["pipeline"]
    assert set(res["pipeline"]["stages"]) == {"ingest", "zssr", "train", "evaluate"}
    assert (out / "evaluate" / "index.html").stat().st_size > 10_000
    meta = json.loads((out / "train" / "train_meta.json").read_text())
    assert "fallback" in json.dumps(meta)  # no ImageNet VGG here: the random-init fallback is on record
    assert res["enhance"]["done"] == 1 and res["enhance"]["failed"] == 0
    assert res["verify"]["exit_code"] == 0, res["verify"]
    assert res["verify"]["counts"].get("verified", 0) >= 20
    assert {k: sha256_file(p) for k, p in carphone.items()} == before
    lines = "\n".join(summary_lines(out, res["pipeline"], res["enhance"]))
    assert "bicubic" in lines and "index.html" in lines

    # a second run finds every stage done and redoes nothing
    again = run_demo(out, SMALL, ["max_frames=6"])
    assert {s["outcome"] for s in again["pipeline"]["stages"].values()} == {"skipped"}
    assert again["enhance"]["skipped"] == 1
