"""The Serve app run in-process (serve.run on the shared test Ray), HTTP on 127.0.0.1, a small random
generator. Covers: image round trip, 32 concurrent requests with batching, each bad input's status,
bearer auth, faces endpoint, a video job end to end, and a live stream from a local HTTP source."""

from __future__ import annotations

import concurrent.futures as cf
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest

from survsr.serve.synthetic import make_clip

TOKEN = "test-token-123"


def _band(width: int) -> int:
    """Rows the default AI-ENHANCED band adds below a video frame of this width."""
    from survsr.marking import MarkingConfig, band_height

    return band_height(width, MarkingConfig())


def _png(img: np.ndarray) -> bytes:
    from survsr.provenance import encode_png

    return encode_png(img)


def _direct(gen_path: Path, img: np.ndarray) -> np.ndarray:
    """The generator called directly, without any of the serving code."""
    import torch

    from survsr.models.export import load_generator

    g = load_generator(gen_path)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        y = g(x)
    return (y.clamp(0, 1) * 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()


@pytest.fixture(scope="module")
def gen_path(tiny_generator) -> Path:
    return tiny_generator


@pytest.fixture(scope="module")
def server(serve_app, gen_path, tmp_path_factory):
    from survsr.provenance import sha256_bytes

    jobs = tmp_path_factory.mktemp("jobs")
    args = {
        "generator": str(gen_path), "app_name": "survsr-test", "ingress_num_cpus": 0.1,
        "auth_token_sha256": sha256_bytes(TOKEN.encode()),
        "model": {"num_cpus": 1.0, "max_ongoing_requests": 64,
                  "autoscaling": {"min_replicas": 1, "max_replicas": 1}},
        # a long wait makes batching observable on a 2-core box without making it flaky
        "batch": {"max_batch_size": 8, "batch_wait_timeout_s": 0.2},
        "limits": {"max_image_bytes": 600_000, "max_pixels": 520 * 520, "max_video_bytes": 2_000_000,
                   "max_video_pixels": 640 * 480},
        "jobs": {"dir": str(jobs), "num_cpus": 0.25, "batch_size": 8},
        "streams": {"allowed_prefixes": ["http://127.0.0.1:"], "out_dir": str(jobs / "streams"),
                    "num_cpus": 0.25},
    }
    with serve_app(args, "survsr-test", TOKEN) as (client, base):
        yield {"base": base, "client": client, "jobs": jobs}


def test_image_round_trip_matches_generator(server, gen_path):
    from PIL import Image

    from survsr.provenance import PROVENANCE_KEY

    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)
    r = server["client"].post("/v1/enhance?label=false", content=_png(img),
                              headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert r.headers["x-model-output"] == "true"
    im = Image.open(io.BytesIO(r.content))
    assert im.format == "PNG" and im.size == (56, 40)
    out = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(out, _direct(gen_path, img))
    prov = json.loads(im.text[PROVENANCE_KEY])
    assert prov["model_output"] is True
    assert prov["stages"][0]["model_sha256"] == r.headers["x-model-sha256"]


def test_jpeg_in_and_label_on_by_default(server):
    from PIL import Image

    from survsr.marking import label_present
    from survsr.provenance import PROVENANCE_KEY

    img = np.full((120, 200, 3), 128, np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG")
    c = server["client"]
    plain_im = Image.open(io.BytesIO(c.post("/v1/enhance?label=false", content=buf.getvalue()).content))
    lab_im = Image.open(io.BytesIO(c.post("/v1/enhance", content=buf.getvalue()).content))
    plain, labelled = np.asarray(plain_im), np.asarray(lab_im)
    from survsr.marking import MarkingConfig, band_height

    assert plain.shape == (240, 400, 3) and labelled.shape == (240 + band_height(400, MarkingConfig()), 400, 3)
    assert label_present(labelled) and not label_present(plain)
    assert np.array_equal(labelled[:240], plain)  # the band is added below: no picture pixel is covered
    for im, visible in ((plain_im, False), (lab_im, True)):
        doc = json.loads(im.text[PROVENANCE_KEY])
        assert doc["model_output"] is True and doc["marking"]["visible_label"] is visible
        assert im.text["survsr:model_output"] == "true"


def test_32_concurrent_requests_are_batched(server, gen_path):
    import httpx

    rng = np.random.default_rng(2)
    imgs = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(32)]
    before = server["client"].get("/healthz").json()["batch_sizes"]

    def call(img):
        with httpx.Client(base_url=server["base"], timeout=120,
                          headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            return c.post("/v1/enhance?label=false", content=_png(img))

    with cf.ThreadPoolExecutor(32) as ex:
        responses = list(ex.map(call, imgs))
    from PIL import Image

    for img, r in zip(imgs, responses):
        assert r.status_code == 200, r.text
        out = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))
        # batched convolutions may round differently from a batch of one: allow 1 grey level
        assert out.shape == (32, 32, 3)
        assert np.abs(out.astype(int) - _direct(gen_path, img).astype(int)).max() <= 1
    after = server["client"].get("/healthz").json()["batch_sizes"]
    new = {int(k): v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0) > 0}
    assert sum(k * v for k, v in new.items()) >= 32
    assert max(new) > 1, f"no batch larger than one: {new}"


def test_bad_inputs_get_4xx_and_server_keeps_serving(server, tmp_path):
    import av

    c = server["client"]
    r = c.post("/v1/enhance", content=b"this is not an image at all")
    assert r.status_code == 415 and "not a readable image" in r.json()["detail"]
    r = c.post("/v1/enhance", content=b"")
    assert r.status_code == 400 and "empty body" in r.json()["detail"]
    r = c.post("/v1/enhance", content=b"\x89PNG" + bytes(700_000))
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    big = _png(np.zeros((600, 600, 3), np.uint8))  # small file, too many pixels
    assert len(big) < 600_000
    r = c.post("/v1/enhance", content=big)
    assert r.status_code == 413 and "pixels" in r.json()["detail"]
    # a video container with a video stream but no frames
    empty = tmp_path / "empty.mp4"
    with av.open(str(empty), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        out.start_encoding()  # header only, no frame ever encoded
    r = c.post("/v1/videos", content=empty.read_bytes())
    assert r.status_code == 422, r.text
    r = c.post("/v1/videos", content=b"garbage" * 100)
    assert r.status_code == 422 and "not a readable video" in r.json()["detail"]
    r = c.post("/v1/videos?mode=nonsense", content=b"x")
    assert r.status_code == 422
    r = c.get("/v1/videos/" + "0" * 32)
    assert r.status_code == 404
    # still serving
    ok = c.post("/v1/enhance?label=false", content=_png(np.zeros((8, 8, 3), np.uint8)))
    assert ok.status_code == 200
    assert c.get("/healthz").json()["status"] == "ok"


def _chunks(total: int, size: int = 256 * 1024):
    """A body sent without Content-Length (httpx streams a generator with Transfer-Encoding: chunked)."""
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        sent += n
        yield b"\0" * n


def test_oversize_uploads_refused_by_size_and_by_pixels_without_leftovers(server, tmp_path):
    """The limits (server fixture: 2,000,000 video bytes, 640x480 video pixels, 600,000 image bytes): a declared
    size over the limit, a chunked upload that grows past it (no Content-Length to trust), and a small video
    whose frames are too big. Each is a 413 naming the limit, and no job directory is left behind."""
    c, jobs = server["client"], server["jobs"]
    before = sorted(p.name for p in jobs.iterdir())
    r = c.post("/v1/videos", content=b"\0" * 2_000_001)
    assert r.status_code == 413 and r.json()["detail"] == "video: body is 2000001 bytes, limit is 2000000"
    r = c.post("/v1/videos", content=_chunks(2_500_000))
    assert "content-length" not in r.request.headers and r.request.headers["transfer-encoding"] == "chunked"
    assert r.status_code == 413 and r.json()["detail"] == "video: body exceeds the limit of 2000000 bytes"
    r = c.post("/v1/enhance", content=_chunks(700_000))
    assert r.status_code == 413 and r.json()["detail"] == "image: body exceeds the limit of 600000 bytes"
    big = make_clip(tmp_path / "big.mp4", n=2, size=(656, 496))  # 325,376 pixels > 640 x 480 = 307,200
    assert big.stat().st_size < 2_000_000
    r = c.post("/v1/videos", content=big.read_bytes())
    assert r.status_code == 413 and r.json()["detail"] == "video frames are 656x496, limit is 307200 pixels"
    assert sorted(p.name for p in jobs.iterdir()) == before
    assert c.post("/v1/videos", content=make_clip(tmp_path / "ok.mp4", n=2, size=(640, 480)).read_bytes()
                  ).status_code == 202  # exactly at the limit is accepted


def test_result_of_a_job_not_done_is_409_then_200(server, tmp_path):
    """Asked for before the job has finished, the result is a 409 with the job's state, not a partial file. A
    job runs in a fresh worker process (max_calls=1) that must start and import torch before it decodes a
    frame, so a GET straight after the 202 always finds it queued or running."""
    c = server["client"]
    clip = make_clip(tmp_path / "clip.mp4", n=48, size=(64, 48))
    r = c.post("/v1/videos?mode=frame", content=clip.read_bytes())
    assert r.status_code == 202, r.text
    job = r.json()["job_id"]
    early = c.get(f"/v1/videos/{job}/result")
    assert early.status_code == 409, early.text
    state = early.json()["state"]
    assert state in ("queued", "running") and early.json()["detail"] == f"job is {state}"
    assert early.headers["content-type"] == "application/json" and early.json()["job_id"] == job
    assert _wait_job(c, job)["state"] == "done"
    done = c.get(f"/v1/videos/{job}/result")
    assert done.status_code == 200 and done.headers["content-type"] == "video/mp4"


def test_streams_endpoint_bad_bodies_and_unknown_ids(server):
    c = server["client"]
    for body in (b"not json at all", b"[1, 2]", b'"http://127.0.0.1:1/cam.ts"', b'{"options": {}}', b"{"):
        r = c.post("/v1/streams", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 422, (body, r.text)
        assert r.json()["detail"] == 'body must be JSON {"source": URL, "options": {...}}'
    r = c.post("/v1/streams", content=_chunks(70_000))  # the request body is small JSON: 64 KiB at most
    assert r.status_code == 413 and "65536" in r.json()["detail"]
    unknown = "0123456789abcdef" * 2
    for r in (c.get(f"/v1/streams/{unknown}"), c.delete(f"/v1/streams/{unknown}")):
        assert r.status_code == 404 and r.json()["detail"] == f"no stream {unknown!r}"
    assert c.get("/healthz").json()["status"] == "ok"


def test_bearer_token_required(server):
    import httpx

    img = _png(np.zeros((8, 8, 3), np.uint8))
    with httpx.Client(base_url=server["base"], timeout=30) as anon:
        assert anon.post("/v1/enhance", content=img).status_code == 401
        assert anon.post("/v1/enhance", content=img,
                         headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert anon.get("/healthz").status_code == 200  # liveness stays open for probes
        spec = anon.get("/openapi.json").json()
        assert {"/v1/enhance", "/v1/faces", "/v1/videos", "/v1/videos/{job_id}",
                "/v1/videos/{job_id}/result", "/healthz"} <= set(spec["paths"])


def test_faces_endpoint_finds_astronaut_face(server):
    from PIL import Image
    from skimage import data

    img = data.astronaut()  # 512x512, one face around x=170..250, y=80..180
    r = server["client"].post("/v1/faces?label=false", content=_png(img))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] >= 1 and body["model_output"] is True
    best = max(body["faces"], key=lambda f: f["score"])
    x, y, w, h = best["box"]
    assert 120 < x + w / 2 < 280 and 60 < y + h / 2 < 200
    crop = Image.open(io.BytesIO(__import__("base64").b64decode(best["png_base64"])))
    assert crop.size == (2 * w, 2 * h)


def _wait_job(c, job_id: str, timeout: float = 90) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = c.get(f"/v1/videos/{job_id}").json()
        if st["state"] in ("done", "failed"):
            return st
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish: {st}")


def test_video_job_end_to_end(server, tmp_path):
    import av

    from survsr.enhance.videoio import read_frame_times

    clip = make_clip(tmp_path / "clip.mp4", n=24, size=(64, 48), audio=True)
    c = server["client"]
    r = c.post("/v1/videos?mode=frame", content=clip.read_bytes(), headers={"Content-Type": "video/mp4"})
    assert r.status_code == 202, r.text
    job = r.json()["job_id"]
    r2 = c.post("/v1/videos?mode=side-by-side", content=clip.read_bytes())
    assert r2.status_code == 202
    st = _wait_job(c, job)
    assert st["state"] == "done", (st.get("error"), st)
    res = c.get(f"/v1/videos/{job}/result")
    assert res.status_code == 200 and res.headers["content-type"] == "video/mp4"
    out = tmp_path / "out.mp4"
    out.write_bytes(res.content)
    with av.open(str(out)) as o:
        vs = o.streams.video[0]
        assert (vs.width, vs.height) == (128, 96 + _band(128))  # AI-ENHANCED band added below the picture
        assert len(o.streams.audio) == 1
    assert read_frame_times(out) == pytest.approx(read_frame_times(clip), abs=1e-3)
    r3 = c.post("/v1/videos?mode=faces", content=clip.read_bytes())
    assert r3.status_code == 202
    st2 = _wait_job(c, r2.json()["job_id"])
    assert st2["state"] == "done", st2
    sbs = tmp_path / "sbs.mp4"
    sbs.write_bytes(c.get(f"/v1/videos/{r2.json()['job_id']}/result").content)
    with av.open(str(sbs)) as o:
        assert (o.streams.video[0].width, o.streams.video[0].height) == (256, 96 + _band(256))
    # faces mode: a zip of crops + the manifest sidecar (this synthetic clip has no face: zero crops)
    import zipfile

    st3 = _wait_job(c, r3.json()["job_id"])
    assert st3["state"] == "done", (st3.get("error"), st3)
    res3 = c.get(f"/v1/videos/{r3.json()['job_id']}/result")
    assert res3.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(res3.content)) as z:
        side = json.loads(z.read(next(n for n in z.namelist() if n.endswith(".faces.json"))))
    assert side["frames"] == 24 and side["faces"] == len(side["crops"]) and side["model_output"] is True


def test_live_stream_through_the_service(server, tmp_path):
    """POST /v1/streams starts a StreamActor (Ray) that reads an MPEG-TS stream over HTTP on 127.0.0.1
    and sends batches to the model deployment; a tiny queue forces drops, accounted for exactly."""
    import functools
    import http.server
    import threading

    from survsr.enhance.videoio import read_frame_times

    make_clip(tmp_path / "cam.ts", n=40, size=(64, 48), fps=25, format="mpegts")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    c = server["client"]
    try:
        assert c.post("/v1/streams", json={"source": "file:///etc/passwd"}).status_code == 403
        assert c.post("/v1/streams", json={"source": f"http://127.0.0.1:{srv.server_address[1]}/cam.ts",
                                           "options": {"queue_sise": 2}}).status_code == 422
        r = c.post("/v1/streams", json={
            "source": f"http://127.0.0.1:{srv.server_address[1]}/cam.ts",
            "options": {"on_eof": "stop", "queue_size": 2, "batch_size": 2, "segment_seconds": 0.5}})
        assert r.status_code == 201, r.text
        sid, out = r.json()["stream_id"], Path(r.json()["out_dir"])
        deadline = time.time() + 120
        while (stats := c.get(f"/v1/streams/{sid}").json())["state"] not in ("finished", "failed"):
            assert time.time() < deadline, stats
            time.sleep(0.5)
    finally:
        srv.shutdown()
    assert stats["state"] == "finished" and stats["frames_read"] == 40
    assert stats["frames_written"] + stats["frames_dropped"] == 40
    assert stats["frames_written"] > 0 and stats["queue_high_water"] <= 2
    recs = [json.loads(x) for x in (out / "segments.jsonl").read_text().splitlines()]
    times = [t for r in recs for t in read_frame_times(out / r["path"])]
    assert len(times) == stats["frames_written"] and all(b > a for a, b in zip(times, times[1:]))
    import av

    with av.open(str(out / recs[0]["path"])) as f:
        assert (f.streams.video[0].width, f.streams.video[0].height) == (128, 96 + _band(128))
    assert c.delete(f"/v1/streams/{sid}").json()["frames_read"] == 40


def test_serve_yaml_is_a_ray_serve_config_with_valid_args(gen_path):
    """configs/serve.yaml works with `serve run`: Ray Serve's own schema accepts it, the import path
    resolves to the builder, and its args validate against ServeArgs (typos are named)."""
    import yaml
    from ray._common.utils import import_attr
    from ray.serve.schema import ServeDeploySchema

    from survsr.serve.app import build_app, read_serve_config
    from survsr.config import CONFIG_DIR, ConfigError

    doc = yaml.safe_load((CONFIG_DIR / "serve.yaml").read_text())
    schema = ServeDeploySchema.model_validate(doc)
    assert schema.http_options.host == "127.0.0.1"
    app = schema.applications[0]
    assert import_attr(app.import_path) is build_app
    http, entry, args = read_serve_config(None, [f"generator={gen_path}", "batch.max_batch_size=4"])
    assert args["batch"]["max_batch_size"] == 4 and http["port"] == 8000
    built = build_app(args)
    assert type(built).__name__ == "Application"
    with pytest.raises(ConfigError, match="batch.max_batchsize"):
        read_serve_config(None, ["batch.max_batchsize=4"])
    with pytest.raises(ConfigError, match="not found"):
        build_app({**args, "generator": "/nonexistent/g.safetensors"})
