"""The pipeline job's bookkeeping (pipelines/run.py): one run directory, done-markers, skip, resume,
config changes, tampered outputs, missing stages, URI run directories.

Most tests swap the four stage modules for small fakes that write their key files and count their calls,
so the orchestration is tested in a second instead of minutes; one test runs the real ingest stage
through the pipeline on Ray Data, and tests/cluster/test_faults.py runs the whole tiny pipeline via `ray job submit`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from survsr.pipelines import run as R
from survsr.config import ConfigError, config_hash, load, to_dict
from survsr.pipelines import zssr_pool
from survsr.stage import Stage

CALLS: dict[str, int] = {}
FAIL: dict[str, int] = {}  # stage -> raise on this call number (1-based)


@dataclass
class FakePool:
    actors: int = 1


@dataclass
class FakeCfg:
    level: int = 1
    pool: FakePool = field(default_factory=FakePool)


def _fake_load(path=None, overrides=()):
    return load(FakeCfg, None, list(overrides))


def _fake_identity(cfg: FakeCfg) -> str:
    return config_hash({k: v for k, v in to_dict(cfg).items() if k != "pool"})


def _tick(stage: str) -> int:
    CALLS[stage] = CALLS.get(stage, 0) + 1
    return CALLS[stage]


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def fake_ingest(inputs, out, cfg):
    _tick("ingest")
    _write(Path(out) / "faces.parquet", f"faces {sorted(inputs)} level={cfg.level}")
    return {"ok": True, "crops": 3, "videos_done": len(inputs), "failed": []}


def fake_zssr(faces_dir, out, cfg):
    n = _tick("zssr")
    out = Path(out)
    # Per-face outputs appear one by one: an interrupted run leaves some, a resumed one only adds the rest.
    for i in range(3):
        f = out / f"face{i}.txt"
        if not f.exists():
            f.write_text((Path(faces_dir) / "faces.parquet").read_text() + f" face{i}")
        if FAIL.get("zssr") == n and i == 1:
            raise RuntimeError("zssr worker lost")
    _write(out / "zssr.parquet", "\n".join(sorted(p.read_text() for p in out.glob("face*.txt"))))
    return {"faces": 3, "done": 3, "failed": [], "level": getattr(cfg, "level", None)}


def fake_train(faces_dir, zssr_dir, out, cfg):
    _tick("train")
    if FAIL.get("train") == CALLS["train"]:
        raise RuntimeError("training crashed")
    src = (Path(zssr_dir) / "zssr.parquet").read_text()
    _write(Path(out) / "generator.safetensors", f"G({src}, level={cfg.level})")
    _write(Path(out) / "train_meta.json", json.dumps({"final_step": 4}))
    return {"final_step": 4, "mediator_status": "off", "generator": {"path": "generator.safetensors"}}


def fake_evaluate(out, *, faces=None, zssr=None, generator=None, cfg=None):
    _tick("evaluate")
    have = {"faces": bool(faces), "zssr": bool(zssr), "generator": bool(generator and Path(generator).is_file())}
    _write(Path(out) / "metrics.json", json.dumps(have))
    _write(Path(out) / "index.html", "<html>report</html>")
    return {"report": str(Path(out) / "index.html")}


FAKES = {"ingest": fake_ingest, "zssr": fake_zssr, "train": fake_train, "evaluate": fake_evaluate}


@pytest.fixture
def fake_stages(monkeypatch):
    CALLS.clear()
    FAIL.clear()
    steps = {}
    for name, step in R.STEPS.items():
        fake = Stage(name=name, add_arguments=step.stage.add_arguments, main=step.stage.main,
                     load_config=_fake_load, identity=_fake_identity, run=FAKES[name])
        steps[name] = dataclasses.replace(step, stage=fake)
    monkeypatch.setattr(R, "STEPS", steps)
    monkeypatch.setattr(R, "init_ray", lambda cfg: None)  # the fakes need no Ray
    return steps


def _cfg(tmp_path, **over) -> R.PipelineConfig:
    video = tmp_path / "clip.mp4"
    if not video.exists():
        video.parent.mkdir(parents=True, exist_ok=True)
        video.write_bytes(b"not decoded by the fake ingest")
    overrides = [f"run_dir={tmp_path / 'run'}", f"inputs=[{video}]"] + [f"{k}={v}" for k, v in over.items()]
    return R.load_config("pipeline.yaml", overrides)


def _markers(run: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (run / "_markers").glob("*.json")
            if not p.name.endswith(".started.json")}


def test_fresh_run_then_rerun_skips_every_stage(fake_stages, tmp_path):
    cfg = _cfg(tmp_path)
    s1 = R.run_pipeline(cfg)
    run = tmp_path / "run"
    assert s1["ok"] and [st["outcome"] for st in s1["stages"].values()] == ["done"] * 4
    assert CALLS == {"ingest": 1, "zssr": 1, "train": 1, "evaluate": 1}
    for stage in R.STAGE_ORDER:  # one run directory, one subdirectory per stage
        assert (run / stage).is_dir()
    m = _markers(run)
    assert set(m) == set(R.STAGE_ORDER)
    assert m["train"]["upstream"] == {"ingest": m["ingest"]["key"], "zssr": m["zssr"]["key"]}
    assert set(m["train"]["files"]) == {"generator.safetensors", "train_meta.json"}
    assert json.loads((run / "evaluate" / "metrics.json").read_text()) == {
        "faces": True, "zssr": True, "generator": True}
    assert not list((run / "_markers").glob("*.started.json"))
    audit = [json.loads(line) for line in (run / "audit.jsonl").read_text().splitlines()]
    assert [a["step"] for a in audit if a.get("stage") == "pipeline"] == list(R.STAGE_ORDER)

    s2 = R.run_pipeline(cfg)
    assert [st["outcome"] for st in s2["stages"].values()] == ["skipped"] * 4
    assert CALLS == {"ingest": 1, "zssr": 1, "train": 1, "evaluate": 1}
    assert _markers(run) == m  # markers untouched by a skipping run
    assert json.loads((run / "pipeline.json").read_text())["ok"] is True


def test_interrupted_stage_resumes_and_done_stages_are_not_redone(fake_stages, tmp_path):
    cfg = _cfg(tmp_path)
    FAIL["zssr"] = 1
    with pytest.raises(RuntimeError, match="zssr worker lost"):
        R.run_pipeline(cfg)
    run = tmp_path / "run"
    assert set(_markers(run)) == {"ingest"}  # no marker for the interrupted stage
    assert (run / "_markers" / "zssr.started.json").is_file()
    partial = sorted(p.name for p in (run / "zssr").glob("face*.txt"))
    assert partial == ["face0.txt", "face1.txt"]
    first = {p.name: p.stat().st_mtime_ns for p in (run / "zssr").glob("face*.txt")}
    summary = json.loads((run / "pipeline.json").read_text())
    assert summary["ok"] is False and summary["stages"]["zssr"]["outcome"] == "failed"

    s = R.run_pipeline(cfg)
    assert [st["outcome"] for st in s["stages"].values()] == ["skipped", "done", "done", "done"]
    assert CALLS == {"ingest": 1, "zssr": 2, "train": 1, "evaluate": 1}
    # The resumed stage ran in the same directory: faces finished before the interrupt were kept as they were.
    assert {p.name: p.stat().st_mtime_ns for p in (run / "zssr").glob("face*.txt") if p.name in first} == first
    assert len(list((run / "zssr").glob("face*.txt"))) == 3


def test_config_change_reruns_that_stage_and_downstream_only(fake_stages, tmp_path):
    R.run_pipeline(_cfg(tmp_path))
    run = tmp_path / "run"
    old = _markers(run)
    old_gen = (run / "train" / "generator.safetensors").read_text()
    s = R.run_pipeline(_cfg(tmp_path, **{"train.overrides": "[level=2]"}))
    assert [st["outcome"] for st in s["stages"].values()] == ["skipped", "skipped", "done", "done"]
    assert CALLS == {"ingest": 1, "zssr": 1, "train": 2, "evaluate": 2}
    new = _markers(run)
    assert new["train"]["key"] != old["train"]["key"] and new["evaluate"]["key"] != old["evaluate"]["key"]
    assert new["ingest"] == old["ingest"] and new["zssr"] == old["zssr"]
    assert "level=2" in (run / "train" / "generator.safetensors").read_text()
    # The outputs made under the old config are set aside, not mixed with or overwritten by the new ones.
    prev = list(run.glob("train.prev-*"))
    assert len(prev) == 1 and (prev[0] / "generator.safetensors").read_text() == old_gen


def test_parallelism_settings_do_not_invalidate_done_stages(fake_stages, tmp_path):
    R.run_pipeline(_cfg(tmp_path))
    s = R.run_pipeline(_cfg(tmp_path, **{"zssr.overrides": "[pool.actors=8]"}))
    assert s["stages"]["zssr"]["outcome"] == "skipped"
    assert CALLS["zssr"] == 1


def test_zssr_pool_layout_keeps_its_pipeline_marker(fake_stages, monkeypatch, tmp_path):
    """The real ZSSR stage's config and identity (only its run is faked): more actors, bigger batches or more
    CPUs per actor compute the same pixels, so a done zssr stage stays done; the seed and the model do not.
    (The pipeline once keyed stages on their config minus a ``ray:`` section, and ZSSR's is ``pool:``.)"""
    real = dataclasses.replace(zssr_pool.STAGE, run=fake_zssr)
    monkeypatch.setitem(R.STEPS, "zssr", dataclasses.replace(R.STEPS["zssr"], stage=real))
    R.run_pipeline(_cfg(tmp_path))
    s = R.run_pipeline(_cfg(tmp_path, **{"zssr.overrides": "[pool.actors=8, pool.batch_size=7, pool.num_cpus=2]"}))
    assert s["stages"]["zssr"]["outcome"] == "skipped" and CALLS["zssr"] == 1
    for change in ("pool.seed=1", "zssr.max_iters=100"):
        s = R.run_pipeline(_cfg(tmp_path, **{"zssr.overrides": f"[{change}]"}))
        assert s["stages"]["zssr"]["outcome"] == "done", change
    # The stage's own resume uses the same hash: each face record carries it.
    cfg = zssr_pool.load_config(None, ["pool.actors=8"])
    assert zssr_pool.stage_hash(cfg) == zssr_pool.stage_hash(zssr_pool.load_config(None, []))


def test_changed_upstream_output_reruns_downstream(fake_stages, tmp_path):
    R.run_pipeline(_cfg(tmp_path))
    run = tmp_path / "run"
    (run / "ingest" / "faces.parquet").write_text("tampered")
    s = R.run_pipeline(_cfg(tmp_path))
    # The tampered manifest fails its marker's hash, ingest re-runs, and since its output is byte-identical
    # to the original, nothing downstream is recomputed.
    assert [st["outcome"] for st in s["stages"].values()] == ["done", "skipped", "skipped", "skipped"]
    assert CALLS["ingest"] == 2 and CALLS["zssr"] == 1
    # A genuinely different upstream output (another input list) changes every downstream key.
    other = tmp_path / "other.mp4"
    other.write_bytes(b"x")
    s = R.run_pipeline(_cfg(tmp_path, inputs=f"[{tmp_path / 'clip.mp4'}, {other}]"))
    assert [st["outcome"] for st in s["stages"].values()] == ["done"] * 4


def test_only_runs_one_stage_on_top_of_done_upstream(fake_stages, tmp_path):
    R.run_pipeline(_cfg(tmp_path, stages="[ingest, zssr]"))
    assert CALLS == {"ingest": 1, "zssr": 1}
    s = R.run_pipeline(_cfg(tmp_path), only=["evaluate"])
    assert list(s["stages"]) == ["evaluate"] and CALLS["evaluate"] == 1
    assert json.loads((tmp_path / "run" / "evaluate" / "metrics.json").read_text()) == {
        "faces": True, "zssr": True, "generator": False}
    with pytest.raises(ConfigError, match="train needs"):
        R.run_pipeline(_cfg(tmp_path / "fresh"), only=["train"])


def test_bad_pipeline_config_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="stages: unknown stage"):
        R.load_config("pipeline.yaml", ["stages=[ingest, upscale]"])
    with pytest.raises(ConfigError, match="zssr.confg: unknown key"):
        R.load_config("pipeline.yaml", ["zssr.confg=x.yaml"])
    bad = tmp_path / "p.yaml"
    bad.write_text("run_dir: x\ntrain: {overrides: [no_equals_sign]}\n")
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        R.load_stage_config(R.STEPS["train"], R.load_config(bad).train)


def test_uri_run_dir_publishes_stages_and_a_new_machine_reuses_them(fake_stages, tmp_path):
    """run_dir as a pyarrow URI (file:// here; s3:// and gs:// take the same code path)."""
    remote = tmp_path / "bucket" / "runs" / "r1"
    cfg = _cfg(tmp_path, run_dir=remote.as_uri(), staging_dir=str(tmp_path / "stage_a"))
    R.run_pipeline(cfg)
    assert set(_markers(remote)) == set(R.STAGE_ORDER)
    assert (remote / "train" / "generator.safetensors").is_file()
    assert (remote / "zssr" / "face2.txt").is_file()  # whole stage directories are uploaded
    assert json.loads((remote / "pipeline.json").read_text())["ok"] is True

    # Another machine (empty staging dir): nothing recomputed, finished stages are downloaded as needed.
    cfg_b = _cfg(tmp_path, run_dir=remote.as_uri(), staging_dir=str(tmp_path / "stage_b"))
    s = R.run_pipeline(cfg_b)
    assert [st["outcome"] for st in s["stages"].values()] == ["skipped"] * 4
    assert CALLS == {"ingest": 1, "zssr": 1, "train": 1, "evaluate": 1}
    assert (tmp_path / "stage_b" / "train" / "generator.safetensors").read_text() == \
        (remote / "train" / "generator.safetensors").read_text()

    # A changed training config there: only train + evaluate run, on top of the downloaded upstream.
    cfg_c = _cfg(tmp_path, run_dir=remote.as_uri(), staging_dir=str(tmp_path / "stage_c"),
                 **{"train.overrides": "[level=3]"})
    s = R.run_pipeline(cfg_c)
    assert [st["outcome"] for st in s["stages"].values()] == ["skipped", "skipped", "done", "done"]
    assert "level=3" in (remote / "train" / "generator.safetensors").read_text()


def test_real_ingest_stage_through_the_pipeline(ray_session, tmp_path):
    """The real ingest stage on Ray Data, driven by the pipeline: marker written, re-run skipped."""
    cfg = R.load_config("pipeline_tiny.yaml", [f"run_dir={tmp_path / 'run'}", "stages=[ingest]",
                                               "ingest.overrides=[decode.max_frames=24, select.best_k=4, "
                                               "pool.detect_actors=1]"])
    s1 = R.run_pipeline(cfg)
    assert s1["stages"]["ingest"]["outcome"] == "done"
    res = s1["stages"]["ingest"]["result"]
    assert res["frames"] == 24 and res["crops"] == 4 and res["tracks"] == 1
    m = _markers(tmp_path / "run")["ingest"]
    import pandas as pd

    df = pd.read_parquet(tmp_path / "run" / "ingest" / "faces.parquet")
    assert len(df) == 4 and m["config_hash"] and m["files"]["faces.parquet"]["bytes"] > 0
    ingest_dir = tmp_path / "run" / "ingest"
    before = {p.relative_to(ingest_dir): p.stat().st_mtime_ns for p in ingest_dir.rglob("*") if p.is_file()}
    s2 = R.run_pipeline(cfg)
    assert s2["stages"]["ingest"]["outcome"] == "skipped"
    # Skipped means untouched: the stage did not run (it would append to its audit log and rewrite its
    # manifest and report), only the marker's hash check happened.
    after = {p.relative_to(ingest_dir): p.stat().st_mtime_ns for p in ingest_dir.rglob("*") if p.is_file()}
    assert after == before
