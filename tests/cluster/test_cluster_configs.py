"""Every file in cluster/ parses and carries what the tool that reads it needs.

Launcher YAMLs go through the autoscaler's own ``prepare_config`` + ``validate_config`` (the first thing
``ray up`` does, before it talks to a cloud); KubeRay manifests are checked against the fields the RayJob and
RayService CRDs require, their runtime env through ``RuntimeEnv`` and their Serve config through Serve's own
``ServeDeploySchema``; the Grafana dashboard must chart every metric survsr/telemetry.py defines.
"""

from __future__ import annotations

import ast
import importlib.util
import copy
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from survsr import telemetry as M

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
LAUNCHERS = [CLUSTER / "aws.yaml", CLUSTER / "gcp.yaml"]
KUBE = CLUSTER / "kuberay"


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def test_every_cluster_file_parses():
    files = sorted(p for p in CLUSTER.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))
    assert len(files) >= 6, files
    for p in files:
        if p.suffix == ".json":
            assert isinstance(json.loads(p.read_text()), dict), p
        else:
            docs = _docs(p)
            assert docs and all(isinstance(d, dict) for d in docs), p


# --- Ray cluster launcher -----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_launcher_yaml_passes_ray_up_validation(path):
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load(path.read_text())
    cfg = prepare_config(copy.deepcopy(raw))
    validate_config(cfg)  # raises jsonschema.ValidationError on a missing/unknown key
    assert cfg["provider"]["type"] == path.stem  # aws.yaml is the aws provider, gcp.yaml gcp
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and not head["resources"].get("GPU")

    # Ingest on CPU nodes, GPU work on GPU nodes: a custom resource and a label tell them apart.
    cpu = [t for t in types.values() if t.get("labels", {}).get("survsr.io/node-kind") == "cpu"]
    gpu = [t for t in types.values() if t.get("labels", {}).get("survsr.io/node-kind") == "gpu"]
    assert cpu and gpu
    assert all(t["resources"].get("survsr_cpu_node", 0) >= 1 and not t["resources"].get("GPU") for t in cpu)
    assert all(t["resources"].get("GPU", 0) >= 1 and t["resources"].get("survsr_gpu_node", 0) >= 1 for t in gpu)
    for t in cpu + gpu:
        assert t["max_workers"] >= t["min_workers"] >= 0

    from ray._private.label_utils import validate_node_label_syntax

    for t in types.values():
        validate_node_label_syntax(t.get("labels", {}))

    # The checkout that setup_commands installs from is synced to every node.
    assert any(Path(src) == Path(".") for src in cfg["file_mounts"].values())
    assert any("pip install" in c and "survsr" in c for c in cfg["setup_commands"])
    head_start = " ".join(cfg["head_start_ray_commands"])
    assert "--head" in head_start and "--dashboard-host=0.0.0.0" in head_start
    assert any("--address=$RAY_HEAD_IP:6379" in c for c in cfg["worker_start_ray_commands"])


def test_launcher_validation_rejects_a_broken_config():
    """The check above can fail: a typo'd key or a missing provider is caught by the same validator."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load(LAUNCHERS[0].read_text())
    bad = copy.deepcopy(raw)
    bad["available_node_types"]["gpu_worker"]["resourcez"] = bad["available_node_types"]["gpu_worker"].pop(
        "resources")
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))
    bad = copy.deepcopy(raw)
    del bad["provider"]
    with pytest.raises((jsonschema.ValidationError, KeyError)):
        validate_config(prepare_config(bad))


# --- KubeRay ------------------------------------------------------------------------------------------------

def _kube_objects() -> dict[str, dict]:
    out = {}
    for p in sorted(KUBE.glob("*.yaml")):
        for d in _docs(p):
            for key in ("apiVersion", "kind", "metadata"):
                assert key in d, f"{p.name}: {key} missing"
            assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", d["metadata"]["name"]), p
            out[d["kind"]] = d
    return out


def _check_pod_template(tpl: dict, where: str, claims: set[str]) -> dict:
    spec = tpl["spec"]
    containers = spec["containers"]
    assert containers and all(c.get("name") and c.get("image") for c in containers), where
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for c in containers:
        for m in c.get("volumeMounts", []):
            assert m["name"] in volumes, f"{where}: mount {m['name']} has no volume"
            claim = volumes[m["name"]].get("persistentVolumeClaim", {}).get("claimName")
            if claim:
                assert claim in claims, f"{where}: PVC {claim} not defined in cluster/kuberay"
    return containers[0]


def _check_ray_cluster_spec(spec: dict, where: str, claims: set[str]) -> None:
    assert str(spec["rayVersion"]).startswith("2."), where
    head = spec["headGroupSpec"]
    params = head["rayStartParams"]
    # KubeRay passes rayStartParams as `--key=value`: every value must be a string.
    assert all(isinstance(v, str) for v in params.values()), f"{where}: head rayStartParams must be strings"
    assert params.get("dashboard-host") == "0.0.0.0"
    c = _check_pod_template(head["template"], f"{where} head", claims)
    ports = {p["containerPort"] for p in c.get("ports", [])}
    assert {6379, 8265} <= ports, f"{where}: head must expose GCS (6379) and dashboard (8265)"
    groups = spec["workerGroupSpecs"]
    assert groups
    kinds = {}
    for g in groups:
        for key in ("groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams", "template"):
            assert key in g, f"{where}: worker group {g.get('groupName')} lacks {key}"
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        p = g["rayStartParams"]
        assert all(isinstance(v, str) for v in p.values()), f"{where}/{g['groupName']}: params must be strings"
        res = json.loads(json.loads(p["resources"])) if "resources" in p else {}
        label = dict(kv.split("=", 1) for kv in p.get("labels", "").split(",") if kv)
        kinds[label.get("survsr.io/node-kind")] = (g, res)
        wc = _check_pod_template(g["template"], f"{where}/{g['groupName']}", claims)
        if p.get("num-gpus", "0") != "0":
            limits = wc["resources"]["limits"]
            assert limits.get("nvidia.com/gpu") == p["num-gpus"], f"{where}: GPU limit != num-gpus"
    assert "cpu" in kinds and "survsr_cpu_node" in kinds["cpu"][1]
    assert "gpu" in kinds and "survsr_gpu_node" in kinds["gpu"][1]


def _claims(objs) -> set[str]:
    return {o["metadata"]["name"] for o in objs.values() if o["kind"] == "PersistentVolumeClaim"}


def test_rayjob_manifest():
    objs = _kube_objects()
    job = objs["RayJob"]
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    argv = shlex.split(spec["entrypoint"])
    assert argv[:3] == ["python", "-m", "survsr.pipelines.run"]
    assert (REPO / "pipelines" / "run.py").exists()
    cfg = argv[argv.index("--config") + 1]
    assert (REPO / "configs" / cfg).exists(), f"entrypoint config {cfg} not in configs/"
    from ray.runtime_env import RuntimeEnv

    env = yaml.safe_load(spec["runtimeEnvYAML"])
    RuntimeEnv(**env)  # rejects unknown fields
    assert env["env_vars"]["RAY_AUTH_MODE"] == "disabled"
    assert spec["shutdownAfterJobFinishes"] is True
    _check_ray_cluster_spec(spec["rayClusterSpec"], "RayJob", _claims(objs))


def _serve_yaml_apps() -> list[dict]:
    path = REPO / "configs" / "serve.yaml"
    if not path.exists():
        return []
    data = yaml.safe_load(path.read_text()) or {}
    return data.get("applications", []) if isinstance(data, dict) else []


def test_rayservice_manifest_serves_the_project_app():
    objs = _kube_objects()
    svc = objs["RayService"]
    assert svc["apiVersion"] == "ray.io/v1"
    spec = svc["spec"]
    from ray.serve.schema import ServeDeploySchema

    serve_cfg = yaml.safe_load(spec["serveConfigV2"])
    schema = ServeDeploySchema.model_validate(serve_cfg) if hasattr(ServeDeploySchema, "model_validate") \
        else ServeDeploySchema.parse_obj(serve_cfg)
    assert schema.applications
    from survsr.config import from_dict

    from survsr.serve.schema import ServeArgs

    for app in schema.applications:
        from_dict(ServeArgs, app.args, "RayService args:")  # unknown / mistyped keys raise
    for app in schema.applications:
        module, _, attr = app.import_path.partition(":")
        spec_ = importlib.util.find_spec(module)
        assert spec_ is not None and spec_.origin, f"{app.import_path}: module not found"
        src = Path(spec_.origin)
        assert src.exists(), f"{app.import_path}: no {src}"
        names = {n.name for n in ast.walk(ast.parse(src.read_text()))
                 if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        names |= {t.id for n in ast.walk(ast.parse(src.read_text())) if isinstance(n, ast.Assign)
                  for t in n.targets if isinstance(t, ast.Name)}
        assert attr in names, f"{app.import_path}: {attr} not defined in {src.name}"
    # The manifest serves the same app(s) as `serve run configs/serve.yaml`.
    local = {a["import_path"] for a in _serve_yaml_apps()}
    if local:
        assert local == {a.import_path for a in schema.applications}
    _check_ray_cluster_spec(spec["rayClusterConfig"], "RayService", _claims(objs))


# --- Grafana ------------------------------------------------------------------------------------------------

def test_grafana_dashboard_charts_every_metric():
    dash = json.loads((CLUSTER / "grafana_dashboard.json").read_text())
    for key in ("title", "uid", "panels", "schemaVersion", "templating"):
        assert key in dash
    panels = dash["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    exprs = []
    for p in panels:
        assert {"x", "y", "w", "h"} <= set(p["gridPos"]), p["title"]
        if p["type"] == "row":
            continue
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["refId"] and t["expr"], p["title"]
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]
            exprs.append(t["expr"])
    # Every series a panel queries is one Ray exports (ray_ prefix, _total on counters, _bucket/_sum/_count on
    # histograms: checked live in test_faults.py), read as whole names, not substrings: a typo or a metric that
    # was renamed or removed shows as an unknown series; and every label a query groups or filters by is one
    # of that metric's tags (or Ray's SessionName, or le on a histogram's buckets).
    series = _dashboard_series()
    charted: set[str] = set()
    for expr in exprs:
        names = re.findall(r"\bray_survsr_\w+", expr)
        assert names, f"panel query charts no survsr metric: {expr}"
        for name in names:
            assert name in series, f"{expr}: {name} is not a series Ray exports for survsr/telemetry.py"
            metric, suffix = series[name]
            charted.add(metric)
            allowed = set(M.METRICS[metric][2]) | {"SessionName"} | ({"le"} if suffix == "_bucket" else set())
            used = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"", expr))
            for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
                used |= {g.strip() for g in group.split(",") if g.strip()}
            assert used <= allowed, f"{expr}: label(s) {sorted(used - allowed)} are not tags of {metric}"
    missing = sorted(M.prometheus_name(n) for n in set(M.METRICS) - charted)
    assert not missing, f"metrics without a panel: {missing}"


def _dashboard_series() -> dict[str, tuple[str, str]]:
    """Every series name Ray exports for the survsr metrics -> (metric, suffix)."""
    out: dict[str, tuple[str, str]] = {}
    for name, (kind, *_rest) in M.METRICS.items():
        base = M.prometheus_name(name)
        for suffix in (("_bucket", "_sum", "_count") if kind == M.HISTOGRAM else ("",)):
            out[base + suffix] = (name, suffix)
    return out


# --- Dockerfile and README ----------------------------------------------------------------------------------

def test_dockerfile_copies_existing_paths():
    lines = (CLUSTER / "Dockerfile").read_text().splitlines()
    assert lines[[i for i, l in enumerate(lines) if l.startswith("FROM")][0]].startswith("FROM rayproject/ray:2.")
    for line in lines:
        if line.startswith("COPY"):
            srcs = [a for a in line.split()[1:-1] if not a.startswith("--")]
            for s in srcs:
                assert (REPO / s).exists(), f"Dockerfile copies missing {s}"


def test_readme_gives_each_targets_commands():
    text = (CLUSTER / "README.md").read_text()
    for needle in ("ray up cluster/aws.yaml", "ray up cluster/gcp.yaml", "ray job submit",
                   "--working-dir .", "--runtime-env-json", "python -m survsr.pipelines.run",
                   "kubectl apply -f cluster/kuberay/rayjob-pipeline.yaml",
                   "kubectl apply -f cluster/kuberay/rayservice-serve.yaml", "grafana_dashboard.json",
                   "ray dashboard"):
        assert needle in text, f"cluster/README.md lacks {needle!r}"
    for name in M.METRICS:
        assert M.prometheus_name(name) in text, f"README does not list {M.prometheus_name(name)}"
