"""survsr/telemetry.py: names, tags, the in-process tally, and no-op safety with and without Ray.

That the metrics actually reach Ray's Prometheus endpoint under the documented names is checked on a real
`ray start` cluster in tests/cluster/test_faults.py (the shared test Ray has no fast metrics export interval).
"""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest

from survsr import telemetry as M


@pytest.fixture(autouse=True)
def _clean_tally():
    M.reset()
    yield
    M.reset()


def test_names_are_valid_prometheus_names_and_documented():
    assert len(M.METRICS) >= 11
    for name, (kind, desc, tags, bounds) in M.METRICS.items():
        assert re.fullmatch(r"survsr_[a-z_]+", name), name
        assert kind in (M.COUNTER, M.GAUGE, M.HISTOGRAM) and desc
        assert (bounds is not None) == (kind == M.HISTOGRAM)
        if bounds:
            assert list(bounds) == sorted(bounds) and bounds[0] > 0
    assert M.prometheus_name(M.FRAMES_DECODED) == "ray_survsr_frames_decoded_total"
    assert M.prometheus_name(M.TRAIN_LOSS) == "ray_survsr_train_loss"
    assert M.prometheus_name(M.SERVE_LATENCY) == "ray_survsr_serve_latency_seconds"


def test_tally_sums_counters_and_histograms_and_keeps_the_last_gauge():
    M.frames_decoded(10)
    M.frames_decoded(5)
    M.frames_decoded(7, stage="enhance")
    M.faces_detected(3, detector="haar")
    M.zssr_face_done(300)
    M.zssr_face_done(500)
    M.zssr_face_done(None, ok=False)
    M.train_losses({"g_total": 1.5, "d": 0.7}, epoch=1)
    M.train_losses({"g_total": 1.2, "d": 0.6}, epoch=2)
    M.train_d_outputs(0.8, 0.3)
    M.serve_request("/v1/enhance", 200, 0.02)
    M.serve_request("/v1/enhance", 413)
    M.stream_frames_dropped(4, stream="cam1")
    assert M.total(M.FRAMES_DECODED) == 22
    assert M.total(M.FRAMES_DECODED, stage="ingest") == 15
    assert M.total(M.FACES_DETECTED, detector="haar") == 3
    assert M.total(M.ZSSR_FACES_DONE, outcome="ok") == 2 and M.total(M.ZSSR_FACES_DONE, outcome="failed") == 1
    assert M.total(M.ZSSR_ITERATIONS) == 800  # sum of observations
    assert M.total(M.TRAIN_LOSS, loss="g_total") == 1.2  # gauge: last value
    assert M.total(M.TRAIN_EPOCH) == 2
    assert M.total(M.TRAIN_D_OUTPUT, which="real") == 0.8 and M.total(M.TRAIN_D_OUTPUT, which="fake") == 0.3
    assert M.total(M.SERVE_REQUESTS) == 2 and M.total(M.SERVE_REQUESTS, status="413") == 1
    assert M.total(M.SERVE_LATENCY) == pytest.approx(0.02)
    assert M.total(M.STREAM_FRAMES_DROPPED, stream="cam1") == 4


def test_bad_calls_are_errors_but_odd_values_are_not():
    with pytest.raises(KeyError, match="unknown metric"):
        M.record("survsr_nope", 1)
    with pytest.raises(ValueError, match="unknown tag"):
        M.record(M.FRAMES_DECODED, 1, {"video": "x"})
    M.frames_decoded(0)  # nothing decoded is not an error (Ray counters refuse 0; the wrapper skips it)
    M.train_losses({"d": math.nan, "g_total": None})  # a diverged loss must not crash the training loop
    assert M.total(M.FRAMES_DECODED) == 0


def test_no_ray_import_outside_ray():
    """A plain function call must not pay for importing Ray just to count frames."""
    code = ("import sys; from survsr import telemetry as M; M.frames_decoded(3); M.serve_request('/x', 200, 0.1);"
            "assert 'ray' not in sys.modules, 'ray imported'; print(M.total(M.FRAMES_DECODED))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3.0"


def test_records_inside_ray_workers(ray_session):
    ray = ray_session

    @ray.remote(num_cpus=0)
    def work(n):
        from survsr import telemetry

        telemetry.frames_decoded(n)
        telemetry.zssr_face_done(256, device="cpu")
        telemetry.train_losses({"d": 0.5})
        telemetry.serve_request("/v1/enhance", 200, 0.01)
        return telemetry.total(telemetry.FRAMES_DECODED), sorted(telemetry._ray_metrics)

    total, registered = ray.get(work.remote(5))
    assert total == 5
    # Inside a worker the ray.util.metrics objects were really created (and recorded without error).
    assert {M.FRAMES_DECODED, M.ZSSR_FACES_DONE, M.ZSSR_ITERATIONS, M.TRAIN_LOSS, M.SERVE_REQUESTS,
            M.SERVE_LATENCY} <= set(registered)
