"""Real camera footage (shared/data/footage, six GIFs counted by eye in its README): the default face stage
keeps the one face of a head-pose clip and nothing on a face-less overhead clip, through the Ray pipeline."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from survsr.pipelines.ingest import load_config, run_ingest, video_line

REPO = Path(__file__).resolve().parents[2]
CANDIDATES = [Path(os.environ["SURVSR_FOOTAGE"])] if os.environ.get("SURVSR_FOOTAGE") else []
CANDIDATES += [p / "shared" / "data" / "footage" for p in (REPO.parent, REPO.parent.parent)]
FOOTAGE = next((p for p in CANDIDATES if (p / "README.md").is_file()), None)
pytestmark = pytest.mark.skipif(FOOTAGE is None, reason="shared/data/footage not present")

FACE = "head-pose-face-detection-female.gif"  # 23 frames, one woman turning her head: 1 person to find
NO_FACE = "person-bicycle-car-detection.gif"  # 41 frames, parking lot from above: 0 faces


@pytest.fixture(scope="module")
def ingested(ray_session, tmp_path_factory):
    out = tmp_path_factory.mktemp("footage")
    report = run_ingest([str(FOOTAGE / FACE), str(FOOTAGE / NO_FACE)], out, load_config())
    return out, report


def test_face_clip_one_track_faceless_clip_none(ingested):
    out, report = ingested
    assert report["ok"] and not report["failed"]
    v = {Path(x["source"]).name: x for x in report["videos"]}
    assert v[FACE]["tracks"] == 1 and v[FACE]["frames"] == 23
    assert v[FACE]["frames_in_tracks"] >= 18  # she is found in (nearly) every frame
    assert v[NO_FACE]["tracks"] == 0 and v[NO_FACE]["crops"] == 0
    df = pd.read_parquet(out / "faces.parquet")
    assert df["track_id"].nunique() == 1 and (df["detector"] == "mtcnn").all()
    lm = [json.loads(s) for s in df["landmarks"]]
    assert all(len(p) == 10 for p in lm)
    assert (df["quality"] > 0).all() and (df["motion"] > 0).all()  # her head moves: motion measured, not still


def test_report_says_what_each_filter_dropped(ingested):
    _, report = ingested
    for v in report["videos"]:
        dropped = v["tracks_dropped"]
        assert set(dropped) == {"motion", "min_length", "min_mean_score", "steady_size"}
        assert v["tracks_found"] == v["tracks"] + sum(dropped.values())
        assert sum(dropped.values()) == sum(len(why) for why in v["dropped_why"].values())
        line = video_line(v)
        assert f"{v['frames']} frames" in line and f"{v['tracks']} kept" in line


def test_plain_pipeline_agrees(tmp_path):
    cfg = load_config(None, ["pool.enabled=false"])
    report = run_ingest([str(FOOTAGE / FACE)], tmp_path, cfg)
    assert report["videos"][0]["tracks"] == 1
