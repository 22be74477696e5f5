"""Issue 15 items 5, 6, 7, 9 and 10 against the real Serve app (in-process, HTTP on 127.0.0.1 only, a
small random generator, a bounded number of requests).

* 7: the stream allow-list compared strings by prefix: ``allowed/../secret/x.mp4`` and
  ``http://127.0.0.1:8099@127.0.0.1:8098/...`` passed. Now real paths and parsed URLs are compared.
* 9: a stream accepted while no CPU is free hung GET and DELETE for 30-60 s. Now: ``pending``, stoppable.
* 10: /healthz and 422 answers carried server paths.
* 5: a video job whose frames grow past the limit after the first one is refused with a clear error.
* 6: the model's health check waited on a running forward (Serve then killed the replica mid-request)."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from survsr.serve.stream import SourceNotAllowed, check_source_allowed

TOKEN = "hostile-token-1"


# ----------------------------------------------------------------------------- 7, unit level (no server)

def test_allow_list_paths_are_compared_as_real_paths(tmp_path):
    allowed, secret = tmp_path / "allowed", tmp_path / "secret"
    allowed.mkdir()
    secret.mkdir()
    (secret / "x.mp4").write_bytes(b"x")
    (allowed / "ok.mp4").write_bytes(b"x")
    (allowed / "link.mp4").symlink_to(secret / "x.mp4")
    (tmp_path / "allowed2").mkdir()
    entries = [str(allowed)]
    assert check_source_allowed(str(allowed / "ok.mp4"), entries) == str((allowed / "ok.mp4").resolve())
    for bad in (f"{allowed}/../secret/x.mp4", str(allowed / "link.mp4"), str(tmp_path / "allowed2" / "a.mp4"),
                str(secret / "x.mp4")):
        with pytest.raises(SourceNotAllowed):
            check_source_allowed(bad, entries)


@pytest.mark.parametrize("source, ok", [
    ("http://127.0.0.1:8099/cam.ts", True),
    ("http://127.0.0.1:8099/cams/../cam.ts", False),
    ("http://127.0.0.1:8099@127.0.0.1:8098/cam.ts", False),
    ("http://user:pw@127.0.0.1:8099/cam.ts", False),
    ("http://127.0.0.1:8098/cam.ts", False),
    ("http://127.0.0.1:80990/cam.ts", False),
    ("http://127.0.0.1.evil.example:8099/cam.ts", False),
    ("https://127.0.0.1:8099/cam.ts", False),
    ("rtsp://10.20.0.5/live", True),
    ("rtsp://10.20.0.5:554/live", True),
    ("rtsp://10.20.0.5:8554/live", False),
    ("rtsp://10.20.0.55/live", False),
    ("rtsp://10.20.0.5/liveX", False),
    ("file:///etc/passwd", False),
])
def test_allow_list_urls_are_compared_parsed(source, ok):
    entries = ["http://127.0.0.1:8099", "rtsp://10.20.0.5/live", "rtsp://10.20.0."]  # host prefix: admits nothing
    if ok:
        assert check_source_allowed(source, entries) == source
    else:
        with pytest.raises(SourceNotAllowed):
            check_source_allowed(source, entries)


# ----------------------------------------------------------------------------- 6, model level (no server)

@pytest.fixture(scope="module")
def gen_path(tmp_path_factory) -> Path:
    import torch

    from survsr.models.export import save_generator
    from survsr.models.srgan import Generator, GeneratorConfig

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("gen") / "generator.safetensors"
    save_generator(Generator(GeneratorConfig(n_blocks=2, channels=16)), path, {"note": "random test generator"})
    return path


def test_health_check_does_not_wait_for_a_running_forward(gen_path):
    from survsr.serve.app import EnhancerModel

    model = EnhancerModel.func_or_class(str(gen_path), {"device": "cpu"}, 4, 0.01)
    model.check_health()  # idle: a tiny forward
    model.enhancer._lock.acquire()  # a long forward is running
    try:
        t = threading.Thread(target=model.check_health, daemon=True)
        t0 = time.monotonic()
        t.start()
        t.join(timeout=10)
        assert not t.is_alive(), "check_health blocked on the running forward"
        assert time.monotonic() - t0 < 5
    finally:
        model.enhancer._lock.release()


def test_long_calls_release_the_model_between_forwards(gen_path):
    """A call of many frames is a series of bounded forwards; another caller gets in between them."""
    from survsr.enhance.runner import EngineConfig, Enhancer

    enh = Enhancer(gen_path, EngineConfig(device="cpu", max_pixels_per_batch=48 * 64))  # one frame per forward
    order: list[str] = []
    real = enh._forward
    started = threading.Event()

    def forward(batch):
        order.append("small" if batch.shape[1] == 8 else "big")
        started.set()
        time.sleep(0.05)
        return real(batch)

    enh._forward = forward
    big = [np.zeros((48, 64, 3), np.uint8)] * 8
    t = threading.Thread(target=enh.enhance, args=(big,))
    t.start()
    started.wait(10)
    enh.enhance([np.zeros((8, 8, 3), np.uint8)])
    t.join(30)
    assert order.count("big") == 8 and order.index("small") < 7


def test_one_large_image_is_tiled_into_bounded_forwards_with_the_same_pixels(gen_path):
    """Item 6: a single large frame no longer holds the model for its whole forward: it goes through in tiles
    (one locked forward each, context around every tile), and the stitched output is the whole-frame output."""
    from survsr.enhance.runner import EngineConfig, Enhancer

    img = np.random.default_rng(3).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    whole = Enhancer(gen_path, EngineConfig(device="cpu")).enhance([img])[0]
    tiled = Enhancer(gen_path, EngineConfig(device="cpu", tile=32, tile_overlap=24))
    shapes: list[tuple[int, ...]] = []
    real = tiled._forward
    tiled._forward = lambda batch: (shapes.append(batch.shape), real(batch))[1]
    out = tiled.enhance([img])[0]
    assert len(shapes) == 9 and max(h * w for _, h, w, _ in shapes) <= (32 + 2 * 24) ** 2  # 3 x 3 tiles
    assert out.shape == whole.shape
    assert np.abs(out.astype(int) - whole.astype(int)).max() <= 1 and np.mean(out == whole) > 0.999


# ----------------------------------------------------------------------------- the running service

@pytest.fixture(scope="module")
def service(serve_app, gen_path, tmp_path_factory):
    from survsr.provenance import sha256_bytes

    jobs = tmp_path_factory.mktemp("hostile-jobs")
    allowed = tmp_path_factory.mktemp("allowed")
    secret = allowed.parent / "secret"
    secret.mkdir(exist_ok=True)
    (secret / "x.mp4").write_bytes(b"secret")
    (allowed / "cam.mp4").write_bytes(b"not really a video")
    args = {
        "generator": str(gen_path), "app_name": "survsr-hostile", "ingress_num_cpus": 0.1,
        "auth_token_sha256": sha256_bytes(TOKEN.encode()),
        "model": {"num_cpus": 0.5, "autoscaling": {"min_replicas": 1, "max_replicas": 1}},
        "limits": {"max_video_bytes": 5_000_000, "max_video_pixels": 640 * 480},
        "jobs": {"dir": str(jobs), "num_cpus": 0.25, "batch_size": 2},
        # a stream actor asks for more CPUs than the box has: it is accepted but can never start (item 9)
        "streams": {"allowed_prefixes": [str(allowed), "http://127.0.0.1:8099"], "out_dir": str(jobs / "streams"),
                    "num_cpus": 64, "max_streams": 1},
    }
    with serve_app(args, "survsr-hostile", TOKEN, client_timeout_s=20.0) as (client, _):
        yield {"client": client, "jobs": jobs, "allowed": allowed, "gen": gen_path}


def test_stream_allow_list_on_the_endpoint(service):
    c, allowed = service["client"], service["allowed"]
    for source in (f"{allowed}/../secret/x.mp4", "http://127.0.0.1:8099@127.0.0.1:8098/cam.ts",
                   "http://127.0.0.1:8098/cam.ts"):
        r = c.post("/v1/streams", json={"source": source})
        assert r.status_code == 403, (source, r.text)


def test_pending_stream_reports_pending_and_can_be_stopped(service):
    c = service["client"]
    r = c.post("/v1/streams", json={"source": str(service["allowed"] / "cam.mp4")})
    assert r.status_code == 201, r.text
    sid = r.json()["stream_id"]
    t0 = time.monotonic()
    st = c.get(f"/v1/streams/{sid}")
    assert st.status_code == 200 and st.json()["state"] == "pending"
    d = c.delete(f"/v1/streams/{sid}")
    assert d.status_code == 200 and d.json()["state"] == "stopped"
    assert time.monotonic() - t0 < 15
    assert c.get(f"/v1/streams/{sid}").status_code == 404


def test_too_many_streams_is_429_until_one_ends(service):
    """streams.max_streams (1 here): a stream still pending (it can never get its 64 CPUs) counts; the next
    one is refused with 429 until it is stopped, then accepted."""
    c = service["client"]
    source = {"source": str(service["allowed"] / "cam.mp4")}
    first = c.post("/v1/streams", json=source)
    assert first.status_code == 201, first.text
    second = c.post("/v1/streams", json=source)
    assert second.status_code == 429 and second.json()["detail"] == "already 1 streams running (streams.max_streams)"
    assert c.delete(f"/v1/streams/{first.json()['stream_id']}").json()["state"] == "stopped"
    third = c.post("/v1/streams", json=source)
    assert third.status_code == 201, third.text
    assert c.delete(f"/v1/streams/{third.json()['stream_id']}").json()["state"] == "stopped"


def test_no_server_paths_in_health_or_422(service):
    c = service["client"]
    h = c.get("/healthz", headers={"Authorization": ""})
    assert h.status_code == 200
    assert str(service["gen"].parent) not in h.text and h.json()["generator"] == "generator.safetensors"
    r = c.post("/v1/videos", content=b"\x00garbage, not a video" * 50)
    assert r.status_code == 422
    assert str(service["jobs"]) not in r.text and "/tmp" not in r.text


def test_video_job_checks_every_frame(service, tmp_path):
    from PIL import Image

    def jpeg(w, h):
        buf = io.BytesIO()
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(buf, format="JPEG")
        return buf.getvalue()

    data = b"".join([jpeg(176, 144)] * 3 + [jpeg(2500, 2500)] * 2)
    c = service["client"]
    r = c.post("/v1/videos?mode=frame", content=data, headers={"x-filename": "cam.mjpeg"})
    assert r.status_code == 202, r.text  # the first frame is within the limit
    job = r.json()["job_id"]
    deadline = time.time() + 120
    while (st := c.get(f"/v1/videos/{job}").json())["state"] in ("queued", "running"):
        assert time.time() < deadline
        time.sleep(0.5)
    assert st["state"] == "failed", st
    assert "2500x2500" in st["error"] and "max_frame_pixels" in st["error"]
    assert str(service["jobs"]) not in st["error"]

