"""Faults survived on real local multi-node Ray clusters (CPU only, everything on 127.0.0.1).

- a node removed while the ZSSR actor pool runs: every face is done exactly once;
- a Ray Train worker process SIGKILLed mid-run: training resumes from the last checkpoint and finishes;
- a Serve replica process SIGKILLed: Serve replaces it and requests after recovery succeed;
- `ray start --head` + `ray job submit` of the tiny pipeline: SUCCEEDED; the job stopped mid-run and
  re-submitted finishes without redoing the stages that were done; the custom metrics are on the node's
  Prometheus endpoint.

These clusters cannot live in the pytest process (tests/conftest.py's shared ``ray_session`` owns this
process's Ray), so each scenario runs in a fresh interpreter: ``python tests/cluster/test_faults.py SCENARIO ARGS``.
The scenario prints one ``FAULT_RESULT {json}`` line with what it observed and the test asserts on that.
A scenario always tears its cluster down (``Cluster.shutdown()``, or SIGTERM to its own
``ray start --block``): never ``ray stop``, which would kill every Ray on the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # when run as a script
    sys.path.insert(0, str(REPO))

RESULT = "FAULT_RESULT "
ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1",
       # metrics reach the Prometheus endpoint within a second instead of ten
       "RAY_metrics_report_interval_ms": "1000"}


# =============================================================================================== helpers
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _emit(result: dict) -> None:
    print(RESULT + json.dumps(result, default=str), flush=True)


def _wait_for(pred, timeout: float, what: str, every: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def _connect(cluster) -> None:
    """Join the scenario's cluster, and make sure every process of it that looks a cluster up by itself (Ray
    Train's placement-group cleaner uses the state API) finds this one, not another Ray on the machine."""
    import ray

    os.environ["RAY_ADDRESS"] = cluster.address
    ray.init(address=cluster.address, runtime_env={"env_vars": {**ENV, "RAY_ADDRESS": cluster.address}})


def _alive_actors(class_part: str) -> list[dict]:
    """Actors of the connected cluster only (GCS table): never a process of another Ray on this machine."""
    import ray

    table = ray._private.state.actors(actor_state_name="ALIVE")
    return [a for a in table.values() if class_part in a.get("ActorClassName", "")]


def make_faces(out: Path, max_frames: int, best_k: int) -> Path:
    """Real ingest output (carphone pristine, plain in-process pipeline: no Ray needed)."""
    from survsr.pipelines.ingest import load_config, run_ingest
    from survsr.data import carphone_paths

    cfg = load_config(None, [f"decode.max_frames={max_frames}", f"select.best_k={best_k}"])
    report = run_ingest([str(carphone_paths()["pristine"])], out, cfg, use_ray=False)
    assert report["crops"] == best_k, report
    return out


def make_bicubic_zssr(faces_dir: Path, out: Path) -> Path:
    """A stand-in for the ZSSR stage's output (same manifest contract, bicubic x2 instead of ZSSR), so the
    training fault test does not depend on ZSSR's run time."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    from survsr.provenance import write_parquet_atomic, write_png

    faces = pd.read_parquet(faces_dir / "faces.parquet")
    rows = []
    for r in faces.itertuples():
        lr = np.asarray(Image.open(faces_dir / r.lr_path).convert("RGB"))
        hr = np.asarray(Image.fromarray(lr).resize((lr.shape[1] * 2, lr.shape[0] * 2), Image.BICUBIC))
        rel = f"hr/{r.crop_id}.png"
        sha = write_png(out / rel, hr)
        rows.append({"crop_id": r.crop_id, "hr_path": rel, "sha256": sha, "iterations": 0, "final_lr": 0.0,
                     "final_loss": 0.0, "seconds": 0.0, "config_hash": "bicubic", "device": "cpu",
                     "split": r.split, "lr_path": str(faces_dir / r.lr_path)})
    write_parquet_atomic(pd.DataFrame(rows), out / "zssr.parquet")
    return out


# ============================================================================== scenarios (subprocess)
def _spy_worker(base, spy_dir: str):
    """``base`` (the pool's ZSSRWorker) that leaves a marker per face around each ZSSR run: ``CID__start__NODE__TAG``
    before, ``CID__end__NODE__TAG`` after it is written (TAG = time and pid of that attempt). Defined here, in the
    scenario's ``__main__``, so Ray ships it by value to the actors; everything else is the real worker."""

    class SpyWorker(base):
        def _run(self, engine, rows, status):
            import ray

            node = ray.get_runtime_context().get_node_id()
            tag = f"{time.time_ns()}-{os.getpid()}"
            for cid in rows:
                (Path(spy_dir) / f"{cid}__start__{node}__{tag}").touch()
            super()._run(engine, rows, status)
            for cid in rows:
                if status.get(cid, {}).get("status") == "done":
                    (Path(spy_dir) / f"{cid}__end__{node}__{tag}").touch()

    return SpyWorker


def _spy_attempts(spy_dir: Path) -> dict[str, list[dict]]:
    """crop_id -> its ZSSR attempts: node, and whether that attempt finished."""
    attempts: dict[tuple, dict] = {}
    for f in spy_dir.iterdir():
        cid, what, node, tag = f.name.split("__")
        a = attempts.setdefault((cid, node, tag), {"node": node, "tag": tag, "finished": False})
        a["finished"] |= what == "end"
    out: dict[str, list[dict]] = {}
    for (cid, _, _), a in sorted(attempts.items(), key=lambda kv: kv[0][2]):
        out.setdefault(cid, []).append(a)
    return out


def scenario_zssr_node_removed(args: dict) -> dict:
    import pandas as pd
    import ray
    from ray.cluster_utils import Cluster

    from survsr.pipelines import zssr_pool

    # Placement by capacity: the head takes no actor (0 CPUs), the kept node one, the doomed node the other two
    # of the pool's three single-CPU actors. A spare node joins just before the removal, so the pool can put
    # its restarted actors somewhere.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        keep = cluster.add_node(num_cpus=1)
        doomed = cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        _connect(cluster)
        faces_dir, out, spy = Path(args["faces"]), Path(args["out"]), Path(args["spy"])
        spy.mkdir(parents=True, exist_ok=True)
        zssr_pool.ZSSRWorker = _spy_worker(zssr_pool.ZSSRWorker, str(spy))
        cfg = zssr_pool.load_config(args["config"], args["overrides"])
        box: dict = {}

        def work():
            try:
                box["result"] = zssr_pool.run_zssr(faces_dir, out, cfg)
            except BaseException as exc:  # noqa: BLE001 - reported to the parent test
                box["error"] = f"{type(exc).__name__}: {exc}"

        def busy_on_doomed() -> bool:
            return any(not a["finished"] and a["node"] == doomed.node_id
                       for tries in _spy_attempts(spy).values() for a in tries)

        t = threading.Thread(target=work)
        t0 = time.time()
        t.start()
        # Once the pool is demonstrably working (first HR faces written; its actors placed), the spare joins;
        # the doomed node is removed as soon as it has a face in progress.
        _wait_for(lambda: len(list(out.rglob("*.png"))) >= args["remove_after"] or not t.is_alive(), 240,
                  "the first ZSSR outputs")
        spare = cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        _wait_for(lambda: busy_on_doomed() or not t.is_alive(), 60, "a face in progress on the doomed node",
                  every=0.05)
        pngs_before = len(list(out.rglob("*.png")))
        finished_before_removal = not t.is_alive()
        busy_at_removal = busy_on_doomed()
        cluster.remove_node(doomed)
        removed_at = time.time() - t0
        t.join(timeout=args["timeout"])
        manifest = pd.read_parquet(out / "zssr.parquet") if (out / "zssr.parquet").is_file() else None
        faces = pd.read_parquet(faces_dir / "faces.parquet")
        rows = [] if manifest is None else manifest.to_dict("records")
        from survsr.provenance import sha256_file

        return {
            "error": box.get("error"), "still_running": t.is_alive(),
            "finished_before_removal": finished_before_removal, "pngs_before_removal": pngs_before,
            "doomed_busy_at_removal": busy_at_removal,
            "removed_at_s": round(removed_at, 1), "seconds": round(time.time() - t0, 1),
            "face_ids": sorted(faces["crop_id"]), "done_ids": [r["crop_id"] for r in rows],
            "hashes_ok": all(sha256_file(out / r["hr_path"]) == r["sha256"] for r in rows),
            "nodes_alive": sum(n["Alive"] for n in ray.nodes()),
            "nodes": {"keep": keep.node_id, "doomed": doomed.node_id, "spare": spare.node_id},
            "attempts": _spy_attempts(spy),
        }
    finally:
        ray.shutdown()
        cluster.shutdown()


def scenario_train_worker_killed(args: dict) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from survsr.pipelines import train_srgan

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        for _ in range(2):  # two nodes: one data-parallel worker each
            cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        _connect(cluster)
        out = Path(args["out"])
        cfg = train_srgan.load_config("srgan_demo.yaml", args["overrides"])
        log_path = out / "train_log.jsonl"

        def records() -> list[dict]:
            if not log_path.is_file():
                return []
            return [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]

        box: dict = {}

        def work():
            try:
                box["result"] = train_srgan.run_train(args["faces"], args["zssr"], out, cfg)
            except BaseException as exc:  # noqa: BLE001
                box["error"] = f"{type(exc).__name__}: {exc}"

        t = threading.Thread(target=work)
        t.start()

        def progressed():
            steps = [r["step"] for r in records() if r.get("kind") == "step"]
            return steps and max(steps) >= args["kill_after_step"]

        _wait_for(lambda: progressed() or not t.is_alive(), 300, "training to pass the kill step")
        killed = None
        if t.is_alive():
            workers = _alive_actors("RayTrainWorker")
            victim = max(workers, key=lambda a: a["Pid"])
            os.kill(victim["Pid"], signal.SIGKILL)  # a crash, not a polite exception
            killed = {"pid": victim["Pid"], "workers": len(workers),
                      "step_at_kill": max(r["step"] for r in records() if r.get("kind") == "step")}
        t.join(timeout=args["timeout"])
        res = box.get("result") or {}
        return {"error": box.get("error"), "still_running": t.is_alive(), "killed": killed,
                "starts": [r for r in records() if r.get("kind") == "start"],
                "final_step": res.get("final_step"), "total_steps": res.get("total_steps"),
                "generator": (out / "generator.safetensors").is_file()}
    finally:
        ray.shutdown()
        cluster.shutdown()


def scenario_serve_replica_killed(args: dict) -> dict:
    import io

    import httpx
    import numpy as np
    import ray
    from PIL import Image
    from ray import serve
    from ray.cluster_utils import Cluster

    from survsr.serve.app import MODEL_DEPLOYMENT, build_app

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        _connect(cluster)
        port = _free_port()
        os.environ.pop("SURVSR_SERVE_TOKEN", None)
        app_args = {"generator": args["generator"], "app_name": "faults", "ingress_num_cpus": 0.1,
                    "model": {"num_cpus": 0.5, "health_check_period_s": 1.0,
                              "autoscaling": {"min_replicas": 1, "max_replicas": 1}},
                    "batch": {"max_batch_size": 4, "batch_wait_timeout_s": 0.01},
                    "jobs": {"dir": args["jobs"], "num_cpus": 0.1}}
        # One proxy, on the head: this cluster's nodes share one host, so a proxy per node would race for the port.
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(app_args), name="faults", route_prefix="/", blocking=False)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0)
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buf, "PNG")
        png = buf.getvalue()

        def enhance() -> int:
            try:
                r = client.post("/v1/enhance?label=false", content=png, headers={"Content-Type": "image/png"})
            except httpx.HTTPError:
                return -1
            if r.status_code == 200:
                assert Image.open(io.BytesIO(r.content)).size == (32, 32)
            return r.status_code

        _wait_for(lambda: enhance() == 200, 120, "the service to answer")
        before = _alive_actors(f"ServeReplica:faults:{MODEL_DEPLOYMENT}")
        assert len(before) == 1, before
        victim = before[0]
        t_kill = time.time()
        os.kill(victim["Pid"], signal.SIGKILL)
        during = []

        def replaced():
            during.append(enhance())
            now = _alive_actors(f"ServeReplica:faults:{MODEL_DEPLOYMENT}")
            return [a for a in now if a["ActorID"] != victim["ActorID"]] if during[-1] == 200 else None

        new = _wait_for(replaced, 120, "a replacement replica serving requests", every=0.5)
        recovered_s = time.time() - t_kill
        after = [enhance() for _ in range(args["requests_after"])]
        client.close()
        serve.shutdown()
        return {"victim": victim["ActorID"], "new": [a["ActorID"] for a in new], "during": during,
                "after": after, "recovered_s": round(recovered_s, 1)}
    finally:
        ray.shutdown()
        cluster.shutdown()


def _our_processes(marker: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd:
            pids.append(int(d.name))
    return pids


def _scrape(port: int) -> str:
    import urllib.request

    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return ""


def scenario_ray_job_pipeline(args: dict) -> dict:
    """`ray start --head` on 127.0.0.1, the tiny pipeline through `ray job submit`, stopped once its first
    stage is done, re-submitted, run to SUCCEEDED; then the Prometheus endpoint is read."""
    from survsr import telemetry as M

    venv_bin = str(Path(sys.executable).parent)
    env = {**os.environ, **ENV, "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    temp = tempfile.mkdtemp(prefix="svf", dir="/tmp")  # short: Ray's unix socket paths must fit 107 bytes
    gcs, dash, prom = _free_port(), _free_port(), _free_port()
    # Every fixed default port gets a free one: another Ray on the machine (the shared test Ray, a
    # colleague's run) already holds e.g. the dashboard agent's 52365, and the job agent would never start.
    more = {flag: str(_free_port()) for flag in (
        "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port",
        "--ray-client-server-port", "--node-manager-port", "--object-manager-port")}
    ray_bin = str(Path(venv_bin) / "ray")
    head = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(gcs),
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--num-cpus", "2",
         "--metrics-export-port", str(prom), "--temp-dir", temp, "--disable-usage-stats",
         *[x for kv in more.items() for x in kv]],
        env=env, stdout=open(Path(temp) / "ray_start.log", "w"), stderr=subprocess.STDOUT,
        start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    run_dir = Path(args["run_dir"])
    out: dict = {"jobs": []}

    def ray_job(*a, timeout=120) -> subprocess.CompletedProcess:
        return subprocess.run([ray_bin, "job", *a], env={**env, "RAY_ADDRESS": address}, capture_output=True,
                              text=True, timeout=timeout, cwd=REPO)

    def status(job_id: str) -> str:
        # Polling through the SDK (the CLI would cost an interpreter start per poll); submit/stop/logs use
        # the `ray job` CLI a user types.
        from ray.job_submission import JobSubmissionClient

        try:
            return str(JobSubmissionClient(address).get_job_status(job_id).value)
        except Exception:  # noqa: BLE001 - dashboard busy: ask again
            return "UNKNOWN"

    runtime_env = json.dumps({"env_vars": ENV, "excludes": [".git", ".venv", "runs", "*.pyc", ".pytest_cache"]})
    entry = ["--", "python", "-m", "survsr.pipelines.run", "--config", "configs/pipeline_tiny.yaml",
             f"run_dir={run_dir}", *args["overrides"]]

    def submit(tag: str) -> str:
        last: list = []

        def go():
            # A fresh id per attempt: a refused attempt ("No available agent" while the job agent is still
            # registering after `ray start`) may leave its id reserved.
            job_id = f"{tag}-{os.getpid()}-{time.time_ns()}"
            r = ray_job("submit", "--no-wait", "--submission-id", job_id,
                        "--working-dir", ".", "--runtime-env-json", runtime_env, *entry)
            last[:] = [r.stdout[-1000:], r.stderr[-1000:]]
            return job_id if r.returncode == 0 else None

        try:
            return _wait_for(go, 180, "the job agent to accept a submission", every=3)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; last attempt: {last}") from None

    try:
        t_up = time.time()
        _wait_for(lambda: _scrape_ok(address), 120, "the dashboard", every=1)
        out["cluster_up_s"] = round(time.time() - t_up, 1)

        # 1) submit; stop it once the first stage is done (its marker exists) and the next one is running
        t1 = time.time()
        job1 = submit("tiny1")
        first = args["stop_after_stage"]
        _wait_for(lambda: (run_dir / "_markers" / f"{first}.json").is_file()
                  or status(job1) not in ("RUNNING", "PENDING"), args["timeout"], f"stage {first} of job 1", every=1)
        time.sleep(args["stop_delay_s"])
        stop = ray_job("stop", job1)
        if stop.returncode != 0:
            raise RuntimeError(f"ray job stop {job1} failed: {stop.stdout[-500:]} {stop.stderr[-1500:]}")
        _wait_for(lambda: status(job1) in ("STOPPED", "FAILED", "SUCCEEDED"), 120, "job 1 to stop", every=1)
        marker1 = json.loads((run_dir / "_markers" / f"{first}.json").read_text())
        out["jobs"].append({"id": job1, "status": status(job1), "seconds": round(time.time() - t1, 1),
                            "stop_rc": stop.returncode})

        # 2) re-submit the same command: done stages skipped, the rest run, SUCCEEDED
        t2 = time.time()
        job2 = submit("tiny2")
        seen: set[str] = set()

        def job2_over():
            # What the dashboard's Prometheus source shows while the job runs (gauges are live values).
            seen.update(line.split("{")[0].split(" ")[0] for line in _scrape(prom).splitlines()
                        if line.startswith("ray_survsr_"))
            return status(job2) in ("SUCCEEDED", "FAILED", "STOPPED")

        _wait_for(job2_over, args["timeout"], "job 2", every=2)
        logs2 = ray_job("logs", job2).stdout
        marker1_after = json.loads((run_dir / "_markers" / f"{first}.json").read_text())
        out["jobs"].append({"id": job2, "status": status(job2), "seconds": round(time.time() - t2, 1),
                            "log_tail": logs2[-3000:]})
        out["first_stage_marker_unchanged"] = marker1 == marker1_after
        out["skipped_in_job2"] = [s for s in ("ingest", "zssr", "train", "evaluate")
                                  if f"] {s}: done (key" in logs2 and "skipped" in logs2]
        out["pipeline"] = json.loads((run_dir / "pipeline.json").read_text()) \
            if (run_dir / "pipeline.json").is_file() else None
        audit = run_dir / "audit.jsonl"
        out["pipeline_audit"] = [json.loads(x) for x in audit.read_text().splitlines()] if audit.is_file() else []
        out["pipeline_audit"] = [{k: a.get(k) for k in ("step", "outcome", "error")}
                                 for a in out["pipeline_audit"] if a.get("stage") == "pipeline"]

        # 3) what a user sees on the node's Prometheus endpoint (during job 2, and once more after it)
        time.sleep(2)
        seen.update(line.split("{")[0].split(" ")[0] for line in _scrape(prom).splitlines()
                    if line.startswith("ray_survsr_"))
        out["prometheus_names"] = sorted(seen)
        out["known_names"] = {n: M.prometheus_name(n) for n in M.METRICS}
        return out
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops exactly the processes it started
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            head.kill()
        time.sleep(1)
        leftovers = _our_processes(temp)
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        out["leftover_processes"] = len(leftovers)
        if not leftovers and not os.environ.get("SURVSR_KEEP_FAULT_LOGS"):
            shutil.rmtree(temp, ignore_errors=True)


def _scrape_ok(address: str) -> bool:
    import urllib.request

    try:
        urllib.request.urlopen(f"{address}/api/version", timeout=3).read()
        return True
    except OSError:
        return False


SCENARIOS = {
    "zssr_node_removed": scenario_zssr_node_removed,
    "train_worker_killed": scenario_train_worker_killed,
    "serve_replica_killed": scenario_serve_replica_killed,
    "ray_job_pipeline": scenario_ray_job_pipeline,
}


def _script_main(argv: list[str]) -> int:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.update(ENV)
    # The parent's SIGTERM (timeout) must still run the scenario's finally: cluster teardown.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit(143)))
    name, args = argv[0], json.loads(argv[1])
    _emit(SCENARIOS[name](args))
    return 0


# ============================================================================================ the tests
if __name__ != "__main__":
    import pytest

    pytestmark = pytest.mark.slow

    def run_scenario(name: str, args: dict, timeout: float) -> dict:
        env = {**os.environ, **ENV}
        env.pop("RAY_ADDRESS", None)
        p = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), name, json.dumps(args)], cwd=REPO,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
        try:
            stdout, stderr = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGTERM)  # lets the scenario shut its cluster down
            try:
                stdout, stderr = p.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                stdout, stderr = p.communicate()
            pytest.fail(f"scenario {name} timed out after {timeout:.0f} s\n--- stderr tail ---\n{stderr[-4000:]}")
        lines = [line for line in stdout.splitlines() if line.startswith(RESULT)]
        if p.returncode != 0 or not lines:
            pytest.fail(f"scenario {name} exited {p.returncode}\n--- stdout tail ---\n{stdout[-2000:]}"
                        f"\n--- stderr tail ---\n{stderr[-6000:]}")
        return json.loads(lines[-1][len(RESULT):])

    @pytest.fixture(scope="module")
    def faces_dir(tmp_path_factory) -> Path:
        return make_faces(tmp_path_factory.mktemp("faults_faces"), max_frames=60, best_k=20)

    def test_zssr_pool_survives_node_removal(faces_dir, tmp_path):
        from survsr.pipelines import run as pipeline_run

        tiny = pipeline_run.load_config("pipeline_tiny.yaml").zssr
        # three single-CPU actors, two of them on the node that is removed, one face per batch: the node goes
        # with faces in flight on it
        res = run_scenario("zssr_node_removed", {
            "faces": str(faces_dir), "out": str(tmp_path / "zssr"), "spy": str(tmp_path / "spy"),
            "remove_after": 2, "timeout": 300,
            "config": tiny.config, "overrides": list(tiny.overrides) + ["pool.actors=3", "pool.batch_size=1",
                                                                        "pool.slots=1"]}, timeout=480)
        assert res["error"] is None and not res["still_running"], res
        assert res["doomed_busy_at_removal"], f"no face was in progress on the node when it was removed: {res}"
        assert not res["finished_before_removal"], "the pool finished before the node could be removed"
        assert res["nodes_alive"] == 3  # head + the kept node + the spare
        nodes, attempts = res["nodes"], res["attempts"]
        # work was placed on the doomed node, and faces were in progress there when it died
        on_doomed = {cid: [a for a in tries if a["node"] == nodes["doomed"]] for cid, tries in attempts.items()}
        assert any(on_doomed.values()), attempts
        lost = sorted(cid for cid, tries in on_doomed.items() if any(not a["finished"] for a in tries))
        assert lost, f"no face was in flight on the removed node: {attempts}"
        # each of them was redone exactly once, elsewhere, and finished
        for cid in lost:
            again = [a for a in attempts[cid] if a["node"] != nodes["doomed"]]
            assert len(again) == 1 and again[0]["finished"], (cid, attempts[cid])
        # every face finished exactly once (a face finished on the doomed node is not redone) and is in the
        # manifest once: none lost with the node, none written twice
        assert sorted(attempts) == res["face_ids"]
        assert all(sum(a["finished"] for a in tries) == 1 for tries in attempts.values()), attempts
        assert sorted(res["done_ids"]) == res["face_ids"]
        assert len(res["done_ids"]) == len(set(res["done_ids"])) == 20
        assert res["hashes_ok"]
        print(json.dumps({"in_flight_on_removed_node": lost, "removed_at_s": res["removed_at_s"],
                          "seconds": res["seconds"]}))

    def test_training_worker_killed_resumes_from_checkpoint(faces_dir, tmp_path):
        zssr = make_bicubic_zssr(faces_dir, tmp_path / "zssr")
        res = run_scenario("train_worker_killed", {
            "faces": str(faces_dir), "zssr": str(zssr), "out": str(tmp_path / "train"), "kill_after_step": 5,
            "timeout": 300,
            "overrides": ["scaling.num_workers=2", "scaling.cpus_per_worker=1", "scaling.max_failures=2",
                          "train.batch_size=4", "train.max_steps=12", "train.checkpoint_every=2",
                          "train.log_every=1", "data.heldout_max=4"]}, timeout=480)
        assert res["error"] is None and not res["still_running"], res
        assert res["killed"] and res["killed"]["workers"] == 2, res
        starts = res["starts"]
        # first start from scratch, then a restart from the last checkpoint (not from step 0)
        assert starts[0]["step"] == 0 and starts[0]["resumed"] is False
        resumed = [s for s in starts[1:] if s["resumed"]]
        assert resumed, starts
        assert 2 <= resumed[0]["step"] <= res["killed"]["step_at_kill"] and resumed[0]["step"] % 2 == 0
        assert res["final_step"] == res["total_steps"] == 12 and res["generator"]

    def test_serve_replica_killed_is_replaced(tmp_path, tiny_generator):
        res = run_scenario("serve_replica_killed", {"generator": str(tiny_generator), "jobs": str(tmp_path / "jobs"),
                                                    "requests_after": 8}, timeout=300)
        assert res["new"] and res["victim"] not in res["new"]
        assert res["after"] == [200] * 8, res
        assert res["recovered_s"] < 120

    def test_ray_job_submit_tiny_pipeline_killed_and_resubmitted(tmp_path):
        res = run_scenario("ray_job_pipeline", {
            "run_dir": str(tmp_path / "run"), "overrides": [], "stop_after_stage": "ingest", "stop_delay_s": 2,
            "timeout": 420}, timeout=600)
        print(json.dumps({k: res[k] for k in ("prometheus_names", "cluster_up_s")}, indent=1))
        print(json.dumps([{k: j.get(k) for k in ("id", "status", "seconds")} for j in res["jobs"]], indent=1))
        job1, job2 = res["jobs"]
        assert job1["status"] == "STOPPED", job1
        assert job2["status"] == "SUCCEEDED", job2["log_tail"]
        assert res["leftover_processes"] == 0
        # the re-submitted job skipped what the stopped one had finished and did not redo it
        assert res["first_stage_marker_unchanged"]
        assert "ingest" in res["skipped_in_job2"]
        ok_runs = [a["step"] for a in res["pipeline_audit"] if a["outcome"] == "ok"]
        assert ok_runs.count("ingest") == 1, res["pipeline_audit"]
        assert sorted(set(ok_runs)) == sorted(["ingest", "zssr", "train", "evaluate"])
        summary = res["pipeline"]
        assert summary["ok"] and summary["stages"]["ingest"]["outcome"] == "skipped"
        # the dashboard's Prometheus source shows the custom metrics under the documented names
        names = set(res["prometheus_names"])
        for stage_metric in ("ray_survsr_pipeline_stage_seconds", "ray_survsr_zssr_faces_done_total",
                             "ray_survsr_train_loss"):  # job 2 ran ZSSR and training
            assert stage_metric in names, sorted(names)
        assert names <= {n for v in res["known_names"].values() for n in (v, v + "_bucket", v + "_count", v + "_sum")}


if __name__ == "__main__":
    sys.exit(_script_main(sys.argv[1:]))
