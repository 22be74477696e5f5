"""``survsr pipeline``: ingest -> ZSSR -> SRGAN training -> evaluation as one job.

    survsr pipeline --config configs/pipeline.yaml [run_dir=runs/x] [key.sub=value ...]
    ray job submit --working-dir . --runtime-env-json '{"env_vars": {...}}' -- \
        python -m survsr.pipelines.run --config configs/pipeline.yaml run_dir=/mnt/survsr/runs/x

Every stage writes into one run directory, ``RUN/<stage>/`` (``ingest``, ``zssr``, ``train``, ``evaluate``).
When a stage finishes, a done-marker ``RUN/_markers/<stage>.json`` is written atomically, last: it holds the
stage's *key* (a hash of the stage's validated config and of the upstream stages' keys and output hashes)
and the SHA-256 of the stage's key output files. On re-run a stage is skipped when its marker's key matches
and those files are intact; an interrupted stage (no marker) runs again in the same directory and resumes
by itself (ingest skips finished videos, ZSSR finished faces, training restarts from its last checkpoint).
A stage whose config changed is re-run from scratch: its old directory is kept aside as
``RUN/<stage>.prev-<oldkey>`` so nothing computed under another config is mixed into the new outputs.

``run_dir`` may also be a pyarrow filesystem URI (``s3://bucket/prefix``, ``gs://...``, ``file:///...``):
stages then write into a local staging directory (``staging_dir``; on a multi-node cluster put it on a
mount every node shares) and each finished stage is uploaded to the URI before its marker is written there;
a later run downloads the finished stages it needs instead of recomputing them.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from survsr.config import ConfigError, load, to_dict
from survsr.console import quiet_console
from survsr.pipelines import evaluate, ingest, train_srgan, zssr_pool
from survsr.provenance import append_audit, atomic_write_json, now_iso, sha256_file
from survsr.ray_utils import RayConfig, init_ray
from survsr.stage import Command, Stage

log = logging.getLogger("survsr.pipeline")

STAGE_ORDER = ("ingest", "zssr", "train", "evaluate")
MARKERS = "_markers"


class StageFailed(RuntimeError):
    """A stage ran and reported that it produced nothing usable."""


# ------------------------------------------------------------------------------------------------ config
@dataclass
class StageConfig:
    config: str = ""  # the stage's YAML (path or name in configs/); "" = the stage's own default
    overrides: list[str] = field(default_factory=list)  # key.sub=value applied on top of it


@dataclass
class PipelineConfig:
    run_dir: str = "runs/pipeline"  # local path or pyarrow filesystem URI (s3://, gs://, file://)
    staging_dir: str = ""  # URI run dirs: local working copy ("" = ~/.cache/survsr/staging/<hash of run_dir>)
    inputs: list[str] = field(default_factory=lambda: ["carphone"])  # videos/dirs/globs/URLs; carphone[:kind]
    stages: list[str] = field(default_factory=lambda: list(STAGE_ORDER))
    verify_outputs: bool = True  # re-hash a done stage's key files before trusting its marker
    ray: RayConfig = field(default_factory=RayConfig)  # the job's one Ray connection (stages have none)
    ingest: StageConfig = field(default_factory=StageConfig)
    zssr: StageConfig = field(default_factory=StageConfig)
    train: StageConfig = field(default_factory=lambda: StageConfig(config="srgan.yaml"))
    evaluate: StageConfig = field(default_factory=StageConfig)

    def validate(self) -> None:
        if not self.run_dir:
            raise ValueError("run_dir must not be empty")
        unknown = [s for s in self.stages if s not in STAGE_ORDER]
        if unknown:
            raise ValueError(f"stages: unknown stage(s) {unknown} (known: {list(STAGE_ORDER)})")
        if len(set(self.stages)) != len(self.stages):
            raise ValueError(f"stages: listed twice in {self.stages}")
        if not self.inputs and "ingest" in self.stages:
            raise ValueError("inputs: no videos given for the ingest stage")


def load_config(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> PipelineConfig:
    return load(PipelineConfig, path, list(overrides), default_name="pipeline.yaml")


# ------------------------------------------------------------------------------------------ run directory
def is_uri(path: str) -> bool:
    return "://" in str(path)


class RunDir:
    """Where the stages write (``local``), and where finished stages are published (the URI, if any)."""

    def __init__(self, run_dir: str, staging_dir: str = ""):
        self.spec = run_dir
        self.fs = None
        self.remote_base = ""
        if is_uri(run_dir):
            from pyarrow import fs as pafs

            self.fs, self.remote_base = pafs.FileSystem.from_uri(run_dir)
            self.remote_base = self.remote_base.rstrip("/")
            tag = hashlib.sha256(run_dir.encode()).hexdigest()[:12]
            self.local = Path(staging_dir or Path.home() / ".cache" / "survsr" / "staging" / tag).resolve()
        else:
            self.local = Path(run_dir).expanduser().resolve()
        self.local.mkdir(parents=True, exist_ok=True)

    @property
    def remote(self) -> bool:
        return self.fs is not None

    def stage_dir(self, stage: str) -> Path:
        return self.local / stage

    def _marker_local(self, stage: str) -> Path:
        return self.local / MARKERS / f"{stage}.json"

    def _marker_remote(self, stage: str) -> str:
        return f"{self.remote_base}/{MARKERS}/{stage}.json"

    def read_marker(self, stage: str) -> dict | None:
        """The published marker (the URI's when remote: the URI is the source of truth)."""
        try:
            if self.remote:
                from pyarrow import fs as pafs

                info = self.fs.get_file_info(self._marker_remote(stage))
                if info.type != pafs.FileType.File:
                    return None
                with self.fs.open_input_stream(self._marker_remote(stage)) as f:
                    return json.loads(f.read().decode())
            p = self._marker_local(stage)
            return json.loads(p.read_text()) if p.is_file() else None
        except (OSError, ValueError) as exc:
            log.warning("%s: unreadable marker for stage %s (%s); treating the stage as not done",
                        self.spec, stage, exc)
            return None

    def write_marker(self, stage: str, marker: dict) -> None:
        atomic_write_json(self._marker_local(stage), marker)
        if self.remote:
            # Outputs are uploaded before the marker, so a marker on the URI always means a complete stage.
            data = (json.dumps(marker, indent=2, sort_keys=True, default=str) + "\n").encode()
            self.fs.create_dir(f"{self.remote_base}/{MARKERS}", recursive=True)
            with self.fs.open_output_stream(self._marker_remote(stage)) as f:
                f.write(data)

    def drop_marker(self, stage: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._marker_local(stage).unlink()
        if self.remote:
            with contextlib.suppress(FileNotFoundError, OSError):
                self.fs.delete_file(self._marker_remote(stage))

    def read_started(self, stage: str) -> dict | None:
        p = self.local / MARKERS / f"{stage}.started.json"
        try:
            return json.loads(p.read_text()) if p.is_file() else None
        except (OSError, ValueError):
            return None

    def write_started(self, stage: str, key: str) -> None:
        atomic_write_json(self.local / MARKERS / f"{stage}.started.json",
                          {"stage": stage, "key": key, "started": now_iso(), "pid": os.getpid()})

    def set_aside(self, stage: str, old_key: str) -> Path | None:
        """Move a stage directory computed under another config out of the way (kept, never deleted)."""
        src = self.stage_dir(stage)
        if not src.exists():
            return None
        dst = self.local / f"{stage}.prev-{(old_key or 'unknown')[:12]}"
        n = 1
        while dst.exists():
            dst = self.local / f"{stage}.prev-{(old_key or 'unknown')[:12]}-{n}"
            n += 1
        os.replace(src, dst)
        if self.remote:
            with contextlib.suppress(FileNotFoundError, OSError):
                self.fs.delete_dir(f"{self.remote_base}/{stage}")
        return dst

    def publish(self, stage: str) -> None:
        if not self.remote:
            return
        from pyarrow import fs as pafs

        dst = f"{self.remote_base}/{stage}"
        self.fs.create_dir(dst, recursive=True)
        pafs.copy_files(str(self.stage_dir(stage)), dst, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.fs)

    def fetch(self, stage: str, marker: dict) -> None:
        """Make a finished remote stage's files present locally (a staging copy with the marker's key files
        intact is trusted: it is where the stage was computed or what an earlier run downloaded)."""
        if not self.remote:
            return
        local = self.stage_dir(stage)
        if all((local / rel).is_file() and (local / rel).stat().st_size == meta["bytes"]
               for rel, meta in marker.get("files", {}).items()):
            return
        from pyarrow import fs as pafs

        log.info("downloading finished stage %s from %s/%s", stage, self.spec, stage)
        local.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(f"{self.remote_base}/{stage}", str(local), source_filesystem=self.fs,
                        destination_filesystem=pafs.LocalFileSystem())

    def files_intact(self, stage: str, marker: dict, verify_hash: bool) -> tuple[bool, str]:
        """Are the marker's key files there with their recorded size (and hash)?"""
        files = marker.get("files") or {}
        if not files:
            return False, "marker lists no output files"
        if self.remote:
            from pyarrow import fs as pafs

            for rel, meta in files.items():
                info = self.fs.get_file_info(f"{self.remote_base}/{stage}/{rel}")
                if info.type != pafs.FileType.File or info.size != meta["bytes"]:
                    return False, f"{self.spec}/{stage}/{rel} missing or changed size"
            return True, ""
        for rel, meta in files.items():
            p = self.stage_dir(stage) / rel
            if not p.is_file():
                return False, f"{p} missing"
            if p.stat().st_size != meta["bytes"]:
                return False, f"{p} changed size"
            if verify_hash and sha256_file(p) != meta["sha256"]:
                return False, f"{p} changed (sha256 differs from the done-marker)"
        return True, ""


# ---------------------------------------------------------------------------------------------- stages
@dataclass(frozen=True)
class Step:
    """A stage's place in the pipeline: what it needs upstream and which of its files prove it done. Its
    marker key comes from the stage's own ``identity`` (the hash its own resume uses)."""

    stage: Stage
    needs: tuple[str, ...]  # upstream stages that must be done
    uses: tuple[str, ...]  # upstream stages used when done (evaluation reports what is missing)
    key_files: tuple[str, ...]  # relative to the stage dir; hashed into the marker and the next stages' keys
    call: Callable[..., dict]  # (stage.run, stage_cfg, ctx) -> summary dict

    @property
    def name(self) -> str:
        return self.stage.name


def _resolve_inputs(inputs: list[str]) -> list[str]:
    """``carphone`` = both bundled clips, ``carphone:pristine`` / ``carphone:distorted`` one of them."""
    out: list[str] = []
    for item in inputs:
        if item == "carphone" or item.startswith("carphone:"):
            from survsr.data import carphone_paths

            paths = carphone_paths()
            kinds = list(paths) if item == "carphone" else [item.split(":", 1)[1]]
            for k in kinds:
                if k not in paths:
                    raise ConfigError(f"inputs: {item!r}: unknown carphone clip (pristine|distorted)")
                out.append(str(paths[k]))
        else:
            out.append(item)
    return out


def _call_ingest(fn, cfg, ctx) -> dict:
    report = fn(ctx["inputs"], ctx["out"], cfg)
    if not report.get("ok", True) or not report.get("crops"):
        failed = "; ".join(f["reason"] for f in report.get("failed", [])) or "no faces found"
        raise StageFailed(f"ingest produced no face crops from {ctx['inputs']}: {failed}")
    return {k: report.get(k) for k in ("videos_done", "frames", "faces", "tracks", "crops", "splits", "failed")}


def _call_zssr(fn, cfg, ctx) -> dict:
    res = fn(ctx["dirs"]["ingest"], ctx["out"], cfg)
    failed = res.get("failed") or []
    if not res.get("done"):
        raise StageFailed(f"zssr produced no synthetic HR face ({len(failed)} failed; "
                          f"see {ctx['out']}/zssr_failures.json)")
    if failed:
        # Faces that fail after the stage's own retries are bad inputs (reported, not retried forever): the
        # stage counts as done with what it has, and training uses the faces that have a ZSSR output.
        log.warning("zssr: %d of %d faces failed after retries (see %s/zssr_failures.json)",
                    len(failed), res.get("faces"), ctx["out"])
    return {**_small(res), "failed": len(failed)}


def _call_train(fn, cfg, ctx) -> dict:
    res = fn(ctx["dirs"]["ingest"], ctx["dirs"]["zssr"], ctx["out"], cfg)
    return {k: res.get(k) for k in ("final_step", "total_steps", "mediator_status", "generator", "device",
                                    "world_size", "final_metrics") if k in res}


def _call_evaluate(fn, cfg, ctx) -> dict:
    dirs = ctx["dirs"]
    gen = dirs["train"] / "generator.safetensors" if "train" in dirs else None
    res = fn(ctx["out"], faces=dirs.get("ingest"), zssr=dirs.get("zssr"), generator=gen, cfg=cfg)
    return {"report": str(res.get("report", ""))}


def _small(res: Any) -> dict:
    """A JSON-able summary without per-item lists (they live in the stage's own files)."""
    if not isinstance(res, dict):
        return {"result": str(res)[:200]}
    return {k: v for k, v in res.items() if isinstance(v, (int, float, str, bool)) or v is None}


STEPS: dict[str, Step] = {
    "ingest": Step(ingest.STAGE, (), (), ("faces.parquet",), _call_ingest),
    "zssr": Step(zssr_pool.STAGE, ("ingest",), (), ("zssr.parquet",), _call_zssr),
    "train": Step(train_srgan.STAGE, ("ingest", "zssr"), (), ("generator.safetensors", "train_meta.json"),
                  _call_train),
    "evaluate": Step(evaluate.STAGE, ("ingest",), ("zssr", "train"), ("index.html", "metrics.json"), _call_evaluate),
}


def load_stage_config(step: Step, sc: StageConfig):
    """The stage's validated config (its own schema and defaults), named by stage in errors."""
    try:
        return step.stage.load_config(sc.config or None, list(sc.overrides))
    except ConfigError as exc:
        raise ConfigError(f"{step.name}: {exc}") from None


def stage_key(stage: str, cfg_hash: str, inputs: list[str], upstream: dict[str, dict]) -> str:
    """What a stage's outputs depend on: its config, its inputs, and what its upstream stages produced."""
    doc = {
        "stage": stage, "config_hash": cfg_hash,
        "inputs": _input_identity(inputs) if stage == "ingest" else None,
        "upstream": {s: {"key": m["key"], "files": {r: f["sha256"] for r, f in m["files"].items()}}
                     for s, m in sorted(upstream.items())},
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def _input_identity(inputs: list[str]) -> list:
    # Path, size and mtime: cheap, and a replaced video changes it (ingest itself hashes the content).
    out = []
    for item in inputs:
        p = Path(item)
        if not is_uri(item) and p.is_file():
            st = p.stat()
            out.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
        else:
            out.append([item])
    return out


def _key_files(stage: Stage, out: Path) -> dict[str, dict]:
    files = {}
    for rel in stage.key_files:
        p = out / rel
        if not p.is_file():
            raise StageFailed(f"stage {stage.name} finished but {p} is missing")
        files[rel] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    return files


# ------------------------------------------------------------------------------------------------- driver
class _StageClock:
    """The pipeline's stage wall-time gauge, re-recorded every few seconds while the job runs.

    Ray exports a gauge value around the time it is set, so a value set once at a stage's end would hardly
    ever be scraped; re-recording keeps finished stages (done/skipped/failed) and the running one (its
    elapsed time, outcome "running") on the dashboard for the whole job."""

    def __init__(self, period_s: float = 2.0):
        from survsr import telemetry

        self._metrics = telemetry
        self._values: dict[str, tuple[float, str]] = {}
        self._running: tuple[str, float] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(period_s,), name="survsr-stage-clock",
                                        daemon=True)
        self._thread.start()

    def start(self, stage: str) -> None:
        self._running = (stage, time.perf_counter())

    def finish(self, stage: str, seconds: float, outcome: str) -> None:
        self._running = None
        self._values[stage] = (seconds, outcome)
        self._metrics.pipeline_stage(stage, seconds, outcome)

    def _flush(self) -> None:
        for stage, (seconds, outcome) in list(self._values.items()):
            self._metrics.pipeline_stage(stage, seconds, outcome)
        running = self._running
        if running:
            self._metrics.pipeline_stage(running[0], time.perf_counter() - running[1], "running")

    def _loop(self, period_s: float) -> None:
        while not self._stop.wait(period_s):
            self._flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._flush()


def run_pipeline(cfg: PipelineConfig, *, only: list[str] | None = None) -> dict[str, Any]:
    """Run (or resume) the configured stages in order; returns the summary also written to RUN/pipeline.json.

    Raises StageFailed / the stage's own exception for the first stage that cannot
    finish; stages before it stay done (their markers are written) and are skipped by the next run."""
    t_all = time.perf_counter()
    if os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") and not is_uri(cfg.run_dir) \
            and not Path(cfg.run_dir).expanduser().is_absolute():
        # Under `ray job submit --working-dir` the cwd is a temporary unpacked copy of the upload: outputs
        # written relative to it are not where anyone will look and are garbage-collected with it.
        raise ConfigError(f"run_dir {cfg.run_dir!r} is relative, but this is a Ray job whose working directory "
                          f"({os.getcwd()}) is temporary: give an absolute path (on a shared mount) or a URI")
    rd = RunDir(cfg.run_dir, cfg.staging_dir)
    stages = [STEPS[s] for s in STAGE_ORDER if s in (only or cfg.stages)]
    inputs = _resolve_inputs(cfg.inputs)
    names = [s.name for s in stages]
    for s in stages:
        missing = [n for n in s.needs if n not in names and rd.read_marker(n) is None]
        if missing:
            raise ConfigError(f"stages: {s.name} needs {missing}, which are neither listed nor done in "
                              f"{cfg.run_dir}")
    # Fail before any work when a stage's config does not load.
    stage_cfgs = {s.name: load_stage_config(s, getattr(cfg, s.name)) for s in stages}

    summary: dict[str, Any] = {"run_dir": cfg.run_dir, "local_dir": str(rd.local), "stages": {},
                               "started": now_iso()}
    done: dict[str, dict] = {}
    dirs: dict[str, Path] = {}
    # Upstream stages not run this time (e.g. `--only evaluate`) still feed keys and directories if done.
    for name in STAGE_ORDER:
        if name not in (s.name for s in stages):
            m = rd.read_marker(name)
            if m:
                done[name] = m
                rd.fetch(name, m)
                dirs[name] = rd.stage_dir(name)

    clock = _StageClock()
    try:
        for i, stage in enumerate(stages, 1):
            scfg = stage_cfgs[stage.name]
            chash = stage.stage.identity(scfg)
            upstream = {n: done[n] for n in stage.needs + stage.uses if n in done}
            key = stage_key(stage.name, chash, inputs, upstream)
            out = rd.stage_dir(stage.name)
            tag = f"[{i}/{len(stages)}] {stage.name}"
            marker = rd.read_marker(stage.name)
            if marker and marker.get("key") == key:
                ok, why = rd.files_intact(stage.name, marker, cfg.verify_outputs)
                if ok:
                    rd.fetch(stage.name, marker)
                    log.info("%s: done (key %s, finished %s); skipped", tag, key, marker.get("finished"))
                    done[stage.name], dirs[stage.name] = marker, out
                    summary["stages"][stage.name] = {"outcome": "skipped", "key": key, "seconds": 0.0}
                    clock.finish(stage.name, 0.0, "skipped")
                    continue
                log.warning("%s: marker present but %s; running the stage again", tag, why)
                rd.drop_marker(stage.name)
            elif marker:
                log.info("%s: config or upstream changed (key %s -> %s)", tag, marker.get("key"), key)
                rd.drop_marker(stage.name)
                moved = rd.set_aside(stage.name, marker.get("key", ""))
                if moved:
                    log.info("%s: previous outputs kept in %s", tag, moved)
            else:
                started = rd.read_started(stage.name)
                if started and started.get("key") != key and out.exists():
                    moved = rd.set_aside(stage.name, started.get("key", ""))
                    log.info("%s: an interrupted run used another config; its outputs were moved to %s", tag, moved)
                elif started:
                    log.info("%s: resuming an interrupted run in %s", tag, out)

            init_ray(cfg.ray)  # only once a stage has work to do: a fully done run returns in a second
            rd.write_started(stage.name, key)
            out.mkdir(parents=True, exist_ok=True)
            log.info("%s: running -> %s", tag, out)
            t0 = time.perf_counter()
            clock.start(stage.name)
            ctx = {"inputs": inputs, "out": out, "dirs": dirs, "run_dir": rd.local}
            try:
                result = stage.call(stage.stage.run, scfg, ctx)
                files = _key_files(stage, out)
            except BaseException as exc:
                seconds = time.perf_counter() - t0
                clock.finish(stage.name, seconds, "failed")
                append_audit(rd.local, {"stage": "pipeline", "step": stage.name, "outcome": "failed", "key": key,
                                        "error": f"{type(exc).__name__}: {exc}", "seconds": round(seconds, 3)})
                summary["stages"][stage.name] = {"outcome": "failed", "key": key, "error": str(exc)}
                _write_summary(rd, summary, t_all, ok=False)
                raise
            seconds = time.perf_counter() - t0
            rd.publish(stage.name)
            marker = {"stage": stage.name, "key": key, "config_hash": chash, "config": to_dict(scfg),
                      "upstream": {n: m["key"] for n, m in upstream.items()}, "files": files,
                      "result": result, "seconds": round(seconds, 3), "finished": now_iso()}
            rd.write_marker(stage.name, marker)
            with contextlib.suppress(FileNotFoundError):
                (rd.local / MARKERS / f"{stage.name}.started.json").unlink()
            done[stage.name], dirs[stage.name] = marker, out
            clock.finish(stage.name, seconds, "done")
            append_audit(rd.local, {"stage": "pipeline", "step": stage.name, "outcome": "ok", "key": key,
                                    "config_hash": chash, "outputs": {r: f["sha256"] for r, f in files.items()},
                                    "seconds": round(seconds, 3)})
            summary["stages"][stage.name] = {"outcome": "done", "key": key, "seconds": round(seconds, 3),
                                             "result": result}
            log.info("%s: done in %.1f s", tag, seconds)
    finally:
        clock.close()
    return _write_summary(rd, summary, t_all, ok=True)


def _write_summary(rd: RunDir, summary: dict, t0: float, ok: bool) -> dict:
    summary = {**summary, "ok": ok, "seconds": round(time.perf_counter() - t0, 3), "finished": now_iso()}
    atomic_write_json(rd.local / "pipeline.json", summary)
    if rd.remote:
        with contextlib.suppress(OSError):
            with rd.fs.open_output_stream(f"{rd.remote_base}/pipeline.json") as f:
                f.write((json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n").encode())
    return summary


# ------------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from survsr.config import add_config_args

    parser.add_argument("overrides_pos", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. run_dir=runs/x train.overrides=[train.epochs=5]")
    parser.add_argument("--run-dir", default=None, help="run directory or URI (overrides run_dir)")
    parser.add_argument("--only", action="append", default=None, choices=STAGE_ORDER,
                        help="run only this stage (repeatable); upstream stages must be done")
    add_config_args(parser, "pipeline.yaml")


def main(args: argparse.Namespace) -> int:
    from survsr.config import split_overrides

    split_overrides(args, "overrides_pos")
    if args.overrides_pos:
        raise ConfigError(f"unexpected arguments {args.overrides_pos} (overrides look like key.sub=value)")
    overrides = list(args.overrides) + ([f"run_dir={args.run_dir}"] if args.run_dir else [])
    cfg = load_config(args.config, overrides)
    if not getattr(args, "verbose", False) and not is_uri(cfg.run_dir):
        log_file = quiet_console(Path(cfg.run_dir) / "logs")
        print(f"pipeline: full logs in {log_file} (-v prints them here)", flush=True)
    try:
        summary = run_pipeline(cfg, only=args.only)
    except StageFailed as exc:
        print(f"survsr pipeline: {exc}", file=sys.stderr, flush=True)
        return 1
    for name, st in summary["stages"].items():
        print(f"{name:<9} {st['outcome']:<8} {st.get('seconds', 0):8.1f} s  key {st['key']}", flush=True)
    print(f"pipeline finished in {summary['seconds']:.1f} s -> {cfg.run_dir}", flush=True)
    return 0


COMMAND = Command(name="pipeline", add_arguments=add_arguments, main=main)


if __name__ == "__main__":  # `ray job submit ... -- python -m survsr.pipelines.run --config configs/pipeline.yaml`
    from survsr.stage import run_command

    sys.exit(run_command(COMMAND, sys.argv[1:]))
