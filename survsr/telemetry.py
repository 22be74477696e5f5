"""Custom metrics for the Ray dashboard and its Prometheus endpoint, safe to call from anywhere.

Stages call the helpers below (``frames_decoded(n)``, ``zssr_face_done(iters)``, ...). Inside a Ray driver or
worker they record through ``ray.util.metrics``; Ray exports them on each node's metrics port with a ``ray_``
prefix (counters also get ``_total``), which is what ``cluster/grafana_dashboard.json`` queries. Outside Ray
(plain function calls, unit tests without a cluster) they only update an in-process tally, so a stage never
needs an ``if ray`` around its bookkeeping, and a metrics hiccup never fails the work it measures.

Metric objects are created lazily, once per process: a Ray worker that never records a metric never
registers it, and nothing Ray-related is imported here unless Ray is already loaded in the process.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import defaultdict
from typing import Any, Mapping

log = logging.getLogger(__name__)

# --- metric names (also the Prometheus names, after Ray's "ray_" prefix) -------------------------------
FRAMES_DECODED = "survsr_frames_decoded"            # counter, tags: stage
FACES_DETECTED = "survsr_faces_detected"            # counter, tags: stage, detector
ZSSR_FACES_DONE = "survsr_zssr_faces_done"          # counter, tags: device, outcome (ok|failed)
ZSSR_ITERATIONS = "survsr_zssr_iterations"          # histogram of per-face training iterations, tags: device
TRAIN_LOSS = "survsr_train_loss"                    # gauge, tags: loss (g_total, d, adv, content, ...), split
TRAIN_D_OUTPUT = "survsr_train_d_output"            # gauge of mean sigmoid(D(.)), tags: which (real|fake)
TRAIN_EPOCH = "survsr_train_epoch"                  # gauge, the epoch last reported
SERVE_REQUESTS = "survsr_serve_requests"            # counter, tags: endpoint, status (HTTP code)
SERVE_LATENCY = "survsr_serve_latency_seconds"      # histogram, tags: endpoint
STREAM_FRAMES_DROPPED = "survsr_stream_frames_dropped"  # counter, tags: stream
STREAM_FRAMES_ENHANCED = "survsr_stream_frames_enhanced"  # counter, tags: stream
PIPELINE_STAGE_SECONDS = "survsr_pipeline_stage_seconds"  # gauge, tags: stage, outcome (done|skipped|failed)

COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"

# name -> (kind, description, tag keys, histogram boundaries)
METRICS: dict[str, tuple[str, str, tuple[str, ...], tuple[float, ...] | None]] = {
    FRAMES_DECODED: (COUNTER, "video frames decoded", ("stage",), None),
    FACES_DETECTED: (COUNTER, "faces detected in decoded frames", ("stage", "detector"), None),
    ZSSR_FACES_DONE: (COUNTER, "faces finished by ZSSR", ("device", "outcome"), None),
    ZSSR_ITERATIONS: (HISTOGRAM, "ZSSR training iterations per face", ("device",),
                      (64, 128, 256, 512, 1000, 1500, 2000, 3000, 5000)),
    TRAIN_LOSS: (GAUGE, "SRGAN training losses (latest epoch or step)", ("loss", "split"), None),
    TRAIN_D_OUTPUT: (GAUGE, "mean discriminator probability on real (synthetic HR) and fake (G output)",
                     ("which",), None),
    TRAIN_EPOCH: (GAUGE, "SRGAN training epoch last reported", (), None),
    SERVE_REQUESTS: (COUNTER, "enhancement service requests", ("endpoint", "status"), None),
    SERVE_LATENCY: (HISTOGRAM, "enhancement service request latency in seconds", ("endpoint",),
                    (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)),
    STREAM_FRAMES_DROPPED: (COUNTER, "live stream frames dropped under overload", ("stream",), None),
    STREAM_FRAMES_ENHANCED: (COUNTER, "live stream frames enhanced and written", ("stream",), None),
    PIPELINE_STAGE_SECONDS: (GAUGE, "wall time of the pipeline job's stages", ("stage", "outcome"), None),
}


def prometheus_name(name: str) -> str:
    """The series name Ray exports for ``name`` (what Grafana and the Prometheus endpoint show)."""
    kind = METRICS[name][0]
    return f"ray_{name}_total" if kind == COUNTER else f"ray_{name}"


_lock = threading.Lock()
_ray_metrics: dict[str, Any] = {}
_disabled: set[str] = set()
# In-process tally, kept whatever Ray does: counters/histograms sum, gauges keep the last value.
_tally: dict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)
_observations: dict[str, int] = defaultdict(int)


def _ray_active() -> bool:
    # Only record into Ray when this process is a connected driver or worker; importing Ray just to learn
    # that it is not running would cost a second per CLI call.
    ray = sys.modules.get("ray")
    if ray is None:
        return False
    try:
        return bool(ray.is_initialized())
    except Exception:  # noqa: BLE001 - a half-torn-down Ray at interpreter exit
        return False


def _metric(name: str):
    m = _ray_metrics.get(name)
    if m is not None or name in _disabled:
        return m
    with _lock:
        if name in _ray_metrics:
            return _ray_metrics[name]
        kind, desc, tags, bounds = METRICS[name]
        try:
            from ray.util import metrics as rm

            if kind == COUNTER:
                m = rm.Counter(name, description=desc, tag_keys=tags)
            elif kind == GAUGE:
                m = rm.Gauge(name, description=desc, tag_keys=tags)
            else:
                m = rm.Histogram(name, description=desc, boundaries=list(bounds), tag_keys=tags)
        except Exception as exc:  # noqa: BLE001 - metrics must never break a stage
            log.warning("metric %s unavailable: %s", name, exc)
            _disabled.add(name)
            return None
        _ray_metrics[name] = m
        return m


def _tags(name: str, tags: Mapping[str, Any] | None) -> dict[str, str]:
    keys = METRICS[name][2]
    tags = dict(tags or {})
    unknown = set(tags) - set(keys)
    if unknown:
        raise ValueError(f"metric {name}: unknown tag(s) {sorted(unknown)} (valid: {list(keys)})")
    # Ray requires every declared tag and string values; an unset tag reads as "" in the dashboard.
    return {k: "" if tags.get(k) is None else str(tags[k]) for k in keys}


def record(name: str, value: float, tags: Mapping[str, Any] | None = None) -> None:
    """Record ``value`` for metric ``name``: counter increment, gauge value or histogram observation."""
    if name not in METRICS:
        raise KeyError(f"unknown metric {name!r}; known: {sorted(METRICS)}")
    kind = METRICS[name][0]
    value = float(value)
    final = _tags(name, tags)
    key = (name, tuple(sorted(final.items())))
    with _lock:
        if kind == GAUGE:
            _tally[key] = value
        else:
            _tally[key] += value
        _observations[name] += 1
    if kind == COUNTER and value <= 0:
        return  # Ray counters reject non-positive increments; zero work is nothing to report
    if value != value:  # NaN: keep it out of Prometheus (it poisons rate() and averages)
        return
    if not _ray_active():
        return
    m = _metric(name)
    if m is None:
        return
    try:
        if kind == COUNTER:
            m.inc(value, tags=final)
        elif kind == GAUGE:
            m.set(value, tags=final)
        else:
            m.observe(value, tags=final)
    except Exception as exc:  # noqa: BLE001
        log.debug("metric %s not recorded: %s", name, exc)


def snapshot() -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """This process's tally: {name: {sorted tag items: value}} (sums for counters/histograms)."""
    out: dict[str, dict] = defaultdict(dict)
    with _lock:
        for (name, tags), value in _tally.items():
            out[name][tags] = value
    return dict(out)


def total(name: str, **tags: str) -> float:
    """Sum of this process's tally for ``name`` over series matching ``tags`` (a convenience for tests
    and summaries; the cluster-wide figure is in Prometheus)."""
    want = {k: str(v) for k, v in tags.items()}
    return sum(v for t, v in snapshot().get(name, {}).items() if want.items() <= dict(t).items())


def reset() -> None:
    """Forget the in-process tally (tests)."""
    with _lock:
        _tally.clear()
        _observations.clear()


# --- helpers the stages call ----------------------------------------------------------------------------

def frames_decoded(n: int = 1, stage: str = "ingest") -> None:
    record(FRAMES_DECODED, n, {"stage": stage})


def faces_detected(n: int = 1, stage: str = "ingest", detector: str = "") -> None:
    record(FACES_DETECTED, n, {"stage": stage, "detector": detector})


def zssr_face_done(iterations: int | None, device: str = "cpu", ok: bool = True) -> None:
    record(ZSSR_FACES_DONE, 1, {"device": device, "outcome": "ok" if ok else "failed"})
    if ok and iterations is not None:
        record(ZSSR_ITERATIONS, iterations, {"device": device})


def train_losses(losses: Mapping[str, float], split: str = "train", epoch: int | None = None) -> None:
    """``losses`` like {"g_total": .., "d": .., "adv": .., "content": .., "pixel": ..}."""
    for loss, value in losses.items():
        if value is not None:
            record(TRAIN_LOSS, value, {"loss": loss, "split": split})
    if epoch is not None:
        record(TRAIN_EPOCH, epoch)


def train_d_outputs(d_real: float | None, d_fake: float | None) -> None:
    if d_real is not None:
        record(TRAIN_D_OUTPUT, d_real, {"which": "real"})
    if d_fake is not None:
        record(TRAIN_D_OUTPUT, d_fake, {"which": "fake"})


def serve_request(endpoint: str, status: int, seconds: float | None = None) -> None:
    record(SERVE_REQUESTS, 1, {"endpoint": endpoint, "status": status})
    if seconds is not None:
        record(SERVE_LATENCY, seconds, {"endpoint": endpoint})


def stream_frames_dropped(n: int = 1, stream: str = "") -> None:
    record(STREAM_FRAMES_DROPPED, n, {"stream": stream})


def stream_frames_enhanced(n: int = 1, stream: str = "") -> None:
    record(STREAM_FRAMES_ENHANCED, n, {"stream": stream})


def pipeline_stage(stage: str, seconds: float, outcome: str) -> None:
    record(PIPELINE_STAGE_SECONDS, seconds, {"stage": stage, "outcome": outcome})
