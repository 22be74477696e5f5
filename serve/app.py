"""The enhancement service on Ray Serve: a FastAPI ingress in front of a batching model deployment.

    serve run configs/serve.yaml          # Ray Serve's own CLI
    survsr serve [--generator G] [--port P] [key=value ...]

Endpoints (OpenAPI at /docs and /openapi.json):
    GET  /healthz                       model loaded, device, model sha256, batch statistics
    POST /v1/enhance                    image bytes (PNG/JPEG) -> PNG x2 (provenance in a tEXt chunk)
    POST /v1/faces                      image bytes -> JSON: detected boxes + enhanced crops (base64 PNG)
    POST /v1/videos?mode=frame          video bytes -> 202 {job_id}; modes frame | faces | side-by-side
    GET  /v1/videos/{job_id}            job status
    GET  /v1/videos/{job_id}/result     the enhanced MP4 (or a zip of face crops + manifest)
    POST /v1/streams                    {"source": URL, "options": {...}} -> start a live stream (allow-listed)
    GET  /v1/streams/{id}               frames read / written / dropped, reconnects, segments
    DELETE /v1/streams/{id}             stop it; returns the final stats

The model deployment loads the generator from its safetensors export (never a pickle) and batches single
frames from concurrent requests with ``@serve.batch``. Every output is marked as model output.
"""

# no "from __future__ import annotations": FastAPI must see real types through serve.ingress

import argparse
import asyncio
import base64
import collections
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from ray import serve
from ray.serve.handle import DeploymentHandle

from survsr.enhance.runner import EngineConfig
from survsr.enhance.frames import mark_crop
from survsr.serve.uploads import BadInput, decode_image
from survsr.serve.schema import MODEL_DEPLOYMENT, ServeArgs
from survsr.config import ConfigError, apply_overrides, config_hash, from_dict, to_dict
from survsr.stage import Command

log = logging.getLogger("survsr.serve")

INGRESS_DEPLOYMENT = "Ingress"
VIDEO_MODES = ("frame", "faces", "side-by-side")


# ---------------------------------------------------------------- model deployment

@serve.deployment(name=MODEL_DEPLOYMENT)
class EnhancerModel:
    """Holds the generator; ``enhance_one`` is batched across concurrent callers."""

    def __init__(self, generator: str, engine: dict, max_batch_size: int, batch_wait_timeout_s: float):
        from survsr.enhance.runner import Enhancer

        self.enhancer = Enhancer(generator, from_dict(EngineConfig, engine, "model.engine:"))
        self.enhance_one.set_max_batch_size(max_batch_size)
        self.enhance_one.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self.max_batch_size = max_batch_size
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        self.frames = 0

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def enhance_one(self, images: list[np.ndarray]) -> list[np.ndarray]:
        self.batch_sizes[len(images)] += 1
        self.frames += len(images)
        # in a thread: the event loop keeps queueing the next batch while this one runs
        return await asyncio.to_thread(self.enhancer.enhance, images)

    async def enhance_many(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """A caller that already has a batch (video job, stream) sends it in one call."""
        self.batch_sizes[len(images)] += 1
        self.frames += len(images)
        return await asyncio.to_thread(self.enhancer.enhance, images)

    def info(self) -> dict:
        return {"model_sha256": self.enhancer.model_sha256, "device": self.enhancer.device_name,
                "generator": str(self.enhancer.generator_path), "scale": self.enhancer.scale,
                "max_batch_size": self.max_batch_size, "frames": self.frames,
                "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())}}

    def check_health(self) -> None:
        # Serve restarts the replica if this raises. It must never wait for a running forward (3 missed
        # checks during a long CPU forward made Serve kill the replica mid-request): a tiny forward when
        # idle proves the weights are usable; while busy, the running forward is the proof of life.
        self.enhancer.health()


# ---------------------------------------------------------------- video jobs (Ray tasks)

def _write_status(job_dir: Path, **fields: Any) -> None:
    from survsr.provenance import atomic_write_json

    path = job_dir / "status.json"
    try:
        cur = json.loads(path.read_text())
    except (OSError, ValueError):
        cur = {}
    cur.update(fields, updated=time.time())
    atomic_write_json(path, cur)


def run_video_job(job_dir: str, input_name: str, mode: str, args_dict: dict, app_name: str) -> dict:
    """Body of a video job: decode + encode here, frames enhanced by the model deployment."""
    from survsr.enhance.worker import EnhanceConfig, PoolConfig, enhance_video, make_detector

    args = from_dict(ServeArgs, args_dict)
    jd = Path(job_dir)
    _write_status(jd, state="running", started=time.time())
    handle = serve.get_deployment_handle(MODEL_DEPLOYMENT, app_name=app_name)
    info = handle.info.remote().result()
    cfg = EnhanceConfig(mode=mode, batch_size=args.jobs.batch_size, label=args.label, output=args.video_output,
                        faces=args.faces, pool=PoolConfig(enabled=False),
                        max_frame_pixels=args.limits.max_video_pixels)  # every frame, not just the probed one
    last = [0.0]

    def progress(_path: str, frames: int) -> None:
        if time.time() - last[0] > 0.5:
            last[0] = time.time()
            _write_status(jd, frames_done=frames)

    def enhance_fn(frames):
        return handle.enhance_many.remote(list(frames)).result()

    from survsr.audit import audited

    try:
        with audited(jd, "serve video job", {"job_id": jd.name, "mode": mode}, config_hash(cfg),
                     inputs=[jd / input_name]) as job:
            detector = make_detector(cfg.faces) if mode == "faces" else None
            rep = enhance_video(jd / input_name, jd / "out", cfg, enhance_fn, model_sha256=info["model_sha256"],
                                device=info["device"], detector=detector, progress=progress)
            if rep.get("output"):
                job.add_output(jd / "out" / rep["output"])
            job.outcome = rep["status"]
    except Exception as exc:  # noqa: BLE001 - the job fails, the service does not
        log.exception("video job %s failed", jd.name)
        _write_status(jd, state="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    if rep["status"] == "partial" and "max_frame_pixels" in str(rep.get("reason")):
        # a frame over the service's limit: the job is refused, not half-served
        _write_status(jd, state="failed", error=str(rep["reason"]).replace(str(jd / input_name), "upload"),
                      report=rep)
        return rep
    if rep["status"] in ("done", "partial"):
        result = jd / "out" / rep["output"]
        if mode == "faces":  # many PNGs + manifest -> one download, renamed into place when complete
            archive = shutil.make_archive(str(jd / ".result.partial"), "zip", root_dir=jd / "out", base_dir=".")
            final = jd / f"{rep['output']}.zip"
            os.replace(archive, final)
            result = final
        _write_status(jd, state="done", result=str(result.relative_to(jd)), report=rep,
                      frames_done=rep.get("frames", 0))
    else:
        _write_status(jd, state="failed", error=rep.get("reason"), report=rep)
    return rep


# ---------------------------------------------------------------- HTTP ingress

api = FastAPI(
    title="survsr enhancement service",
    description="SRGAN generator (x2) for surveillance footage. Every output is model output, not a photograph.",
    version="1",
)


class _RequestMetrics:
    """ASGI middleware: request count by endpoint + status, and latency, for the dashboard (survsr.telemetry).
    Endpoints are route templates (/v1/videos/{job_id}), so ids and scanners' paths cannot blow up the series."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope.get("type") != "http":
            return await self.app(scope, receive, send)
        from survsr import telemetry

        t0 = time.perf_counter()
        status = [500]

        async def send_status(message):
            if message.get("type") == "http.response.start":
                status[0] = int(message.get("status", 500))
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            telemetry.serve_request(route, status[0], time.perf_counter() - t0)


api.add_middleware(_RequestMetrics)

_IMAGE_BODY = {"requestBody": {"required": True, "content": {
    "image/png": {"schema": {"type": "string", "format": "binary"}},
    "image/jpeg": {"schema": {"type": "string", "format": "binary"}}}}}
_VIDEO_BODY = {"requestBody": {"required": True, "content": {
    "video/mp4": {"schema": {"type": "string", "format": "binary"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


def _http_error(exc: BadInput) -> HTTPException:
    return HTTPException(status_code=exc.status, detail=exc.message)


async def _read_body(request: Request, limit: int, what: str) -> bytes:
    """The request body, refused (413) as soon as it passes ``limit``: never buffer an oversized upload."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"{what}: body is {declared} bytes, limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"{what}: body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    data = b"".join(chunks)
    if not data:
        raise HTTPException(400, f"{what}: empty body (send the file's bytes as the request body)")
    return data


def probe_video(path: Path, max_pixels: int) -> dict:
    """Check an upload is a video with at least one decodable frame (raises BadInput otherwise)."""
    import av

    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise BadInput(422, "upload has no video stream")
            vs = c.streams.video[0]
            for frame in c.decode(vs):
                if frame.width * frame.height > max_pixels:
                    raise BadInput(413, f"video frames are {frame.width}x{frame.height}, limit is {max_pixels} "
                                        "pixels")
                return {"width": frame.width, "height": frame.height, "fps": str(vs.average_rate),
                        "frames": vs.frames or None}
    except BadInput:
        raise
    except Exception as exc:  # noqa: BLE001 - any FFmpeg failure means the same to the client
        # FFmpeg's message names the file: keep the server's job directory out of the answer
        why = str(exc).replace(str(path), "upload").replace(str(path.parent), "job")
        raise BadInput(422, f"upload is not a readable video: {why}") from None
    raise BadInput(422, "video has no frames")


@serve.deployment(name=INGRESS_DEPLOYMENT)
@serve.ingress(api)
class Ingress:
    def __init__(self, model: DeploymentHandle, args: dict):
        self.model = model
        self.args = from_dict(ServeArgs, args)
        self.args_dict = to_dict(self.args)
        self.cfg_hash = config_hash(self.args)
        from survsr.provenance import sha256_bytes

        token = os.environ.get(self.args.auth_token_env) or None
        # only a hash is kept: compared in constant time, and a config file never has to hold the secret
        self.token_sha256 = sha256_bytes(token.encode()) if token else self.args.auth_token_sha256
        self.jobs_dir = Path(self.args.jobs.dir).resolve()
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.jobs: dict[str, Any] = {}
        self._detector = None
        self._info: dict | None = None
        self._streams: dict[str, tuple] = {}  # id -> (StreamActor, ObjectRef of its final stats)

    # -- helpers
    def _auth(self, request: Request) -> None:
        import hmac

        from survsr.provenance import sha256_bytes

        if not self.token_sha256:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        presented = sha256_bytes(token.strip().encode()) if scheme.lower() == "bearer" else ""
        if not hmac.compare_digest(presented, self.token_sha256.lower()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    async def _model_info(self) -> dict:
        if self._info is None:
            self._info = await self.model.info.remote()
        return self._info

    async def _provenance(self, kind: str, upload_sha: str, **extra: Any) -> dict:
        from survsr.provenance import provenance, stage_record

        info = await self._model_info()
        return provenance(kind, source={"path": None, "sha256": upload_sha, "frame_index": None, "time_s": None,
                                        "box": extra.pop("box", None)},
                          parents=[{"path": "upload", "sha256": upload_sha}],
                          stages=[stage_record("serve", self.cfg_hash, model_sha256=info["model_sha256"],
                                               device=info["device"], **extra)],
                          model_output=True)

    def _marking(self, label: bool | None):
        """The label config for this request (the query parameter can only switch it on or off)."""
        from dataclasses import replace

        return self.args.label if label is None else replace(self.args.label, enabled=label)

    def _png(self, img: np.ndarray, prov: dict, marking) -> bytes:
        from survsr.marking import mark_document, model_output_text
        from survsr.provenance import PROVENANCE_KEY, encode_png

        return encode_png(img, {PROVENANCE_KEY: mark_document(prov, marking), **model_output_text()})

    # -- endpoints
    @api.get("/healthz", summary="liveness + model status")
    async def healthz(self) -> dict:
        info = await self.model.info.remote()
        # unauthenticated: the generator's file name and hash, never where it lives on the server
        info["generator"] = Path(str(info.get("generator", ""))).name
        return {"status": "ok", **info}

    async def _read_image(self, request: Request) -> tuple[bytes, np.ndarray]:
        """Authenticate, read the body within the size limit and decode it; bad input -> 4xx naming it."""
        self._auth(request)
        lim = self.args.limits
        data = await _read_body(request, lim.max_image_bytes, "image")
        try:
            img = decode_image(data, max_bytes=lim.max_image_bytes, max_pixels=lim.max_pixels, name="image")
        except BadInput as exc:
            raise _http_error(exc) from None
        return data, img

    @api.post("/v1/enhance", summary="enhance one image x2 (PNG/JPEG body -> PNG)",
              response_class=Response, responses={200: {"content": {"image/png": {}}}}, openapi_extra=_IMAGE_BODY)
    async def enhance(self, request: Request,
                      label: bool | None = Query(None, description="burn the AI-ENHANCED label (default: config)")):
        from survsr.provenance import sha256_bytes

        data, img = await self._read_image(request)
        out = await self.model.enhance_one.remote(img)
        from dataclasses import replace

        from survsr.marking import mark_image

        # the band is added below the picture, so no pixel of it is covered (as for video frames)
        marking = replace(self._marking(label), mode="extend")
        out = mark_image(out, marking)
        upload_sha = sha256_bytes(data)
        prov = await self._provenance("enhanced_image", upload_sha)
        png = await asyncio.to_thread(self._png, out, prov, marking)
        info = await self._model_info()
        return Response(png, media_type="image/png", headers={
            "X-Model-Output": "true", "X-Model-SHA256": info["model_sha256"], "X-Source-SHA256": upload_sha})

    @api.post("/v1/faces", summary="detect faces in a frame and enhance each crop x2", openapi_extra=_IMAGE_BODY)
    async def faces(self, request: Request, label: bool | None = Query(None)) -> dict:
        from survsr.provenance import sha256_bytes

        data, img = await self._read_image(request)
        if self._detector is None:
            from survsr.enhance.worker import make_detector

            self._detector = make_detector(self.args.faces)
        dets = await asyncio.to_thread(self._detector.detect, img)
        from dataclasses import replace

        from survsr.enhance.worker import expand_box

        h, w = img.shape[:2]
        boxes = [expand_box(d.box, self.args.faces.margin, w, h) for d in dets
                 if min(d.box[2], d.box[3]) >= self.args.faces.min_size]
        crops = [np.ascontiguousarray(img[y:y + bh, x:x + bw]) for x, y, bw, bh in boxes]
        outs = await asyncio.gather(*[self.model.enhance_one.remote(c) for c in crops])
        upload_sha = sha256_bytes(data)
        marking = self._marking(label)
        faces = []
        for det, box, out in zip([d for d in dets if min(d.box[2], d.box[3]) >= self.args.faces.min_size],
                                 boxes, outs):
            out = mark_crop(out, marking)
            prov = await self._provenance("enhanced_face", upload_sha, box=list(box))
            png = self._png(out, prov, replace(marking, mode="extend"))
            faces.append({"box": list(box), "score": det.score, "detector": det.detector,
                          "width": int(out.shape[1]), "height": int(out.shape[0]),
                          "png_base64": base64.b64encode(png).decode()})
        return {"faces": faces, "count": len(faces), "frame": {"width": w, "height": h},
                "source_sha256": upload_sha, "model_output": True}

    @api.post("/v1/videos", status_code=202, summary="submit a video; returns a job id",
              openapi_extra=_VIDEO_BODY)
    async def submit_video(self, request: Request,
                           mode: str = Query("frame", description="frame | faces | side-by-side")) -> dict:
        import ray

        self._auth(request)
        if mode not in VIDEO_MODES:
            raise HTTPException(422, f"mode must be one of {list(VIDEO_MODES)}, got {mode!r}")
        lim = self.args.limits
        job_id = uuid.uuid4().hex
        jd = self.jobs_dir / job_id
        jd.mkdir(parents=True)
        ext = Path(request.headers.get("x-filename", "input.mp4")).suffix.lower() or ".mp4"
        input_name = f"input{ext if ext.isascii() and len(ext) <= 6 else '.mp4'}"
        try:
            size = await self._save_upload(request, jd / input_name, lim.max_video_bytes)
            probe = await asyncio.to_thread(probe_video, jd / input_name, lim.max_video_pixels)
        except BadInput as exc:
            shutil.rmtree(jd, ignore_errors=True)
            raise _http_error(exc) from None
        except HTTPException:
            shutil.rmtree(jd, ignore_errors=True)
            raise
        _write_status(jd, job_id=job_id, state="queued", mode=mode, bytes=size, probe=probe, frames_done=0)
        # max_calls=1: each job in a fresh worker process. A reused worker keeps the Serve client it cached for
        # an earlier application (e.g. before a `serve shutdown` and restart in the same Ray), and its
        # deployment handle then points at a controller that is gone.
        task = ray.remote(max_calls=1)(run_video_job).options(num_cpus=self.args.jobs.num_cpus, max_retries=0)
        self.jobs[job_id] = task.remote(str(jd), input_name, mode, self.args_dict, self.args.app_name)
        return {"job_id": job_id, "state": "queued", "mode": mode, "status_url": f"/v1/videos/{job_id}",
                "result_url": f"/v1/videos/{job_id}/result", "probe": probe}

    async def _save_upload(self, request: Request, path: Path, limit: int) -> int:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise BadInput(413, f"video: body is {declared} bytes, limit is {limit}")
        size = 0
        with open(path, "wb") as f:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise BadInput(413, f"video: body exceeds the limit of {limit} bytes")
                f.write(chunk)
        if size == 0:
            raise BadInput(400, "video: empty body (send the file's bytes as the request body)")
        return size

    def _job_status(self, job_id: str) -> dict:
        import ray

        jd = self.jobs_dir / job_id
        if len(job_id) != 32 or not all(c in "0123456789abcdef" for c in job_id) or not jd.is_dir():
            raise HTTPException(404, f"no job {job_id!r}")
        try:
            st = json.loads((jd / "status.json").read_text())
        except (OSError, ValueError):
            raise HTTPException(404, f"job {job_id!r} has no status") from None
        ref = self.jobs.get(job_id)
        if ref is not None and st.get("state") in ("queued", "running"):
            ready, _ = ray.wait([ref], timeout=0)
            if ready:
                try:
                    ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - the task died before it could record it
                    st = {**st, "state": "failed", "error": str(exc).splitlines()[0]}
                    _write_status(jd, state="failed", error=st["error"])
        return st

    @api.post("/v1/streams", status_code=201, summary="start enhancing a live source (allow-listed prefixes)")
    async def start_stream_ep(self, request: Request) -> dict:
        from survsr.serve.stream import StreamConfig, start_stream

        self._auth(request)
        sc = self.args.streams
        try:
            body = json.loads(await _read_body(request, 64 * 1024, "stream request"))
            source, options = str(body["source"]), dict(body.get("options") or {})
        except (ValueError, KeyError, TypeError):
            raise HTTPException(422, 'body must be JSON {"source": URL, "options": {...}}') from None
        from survsr.serve.stream import SourceNotAllowed, check_source_allowed

        try:
            source = check_source_allowed(source, sc.allowed_prefixes)
        except SourceNotAllowed as exc:
            raise HTTPException(403, f"source {body['source']!r} is refused: {exc}") from None
        self._streams = {k: v for k, v in self._streams.items() if not self._stream_done(v)}
        if len(self._streams) >= sc.max_streams:
            raise HTTPException(429, f"already {len(self._streams)} streams running (streams.max_streams)")
        stream_id = uuid.uuid4().hex
        for key in ("source", "out_dir"):
            options.pop(key, None)
        data = {**sc.defaults, **options, "source": source,
                "out_dir": str(Path(sc.out_dir).resolve() / stream_id)}
        try:
            cfg = from_dict(StreamConfig, data, "options:")
        except ConfigError as exc:
            raise HTTPException(422, str(exc)) from None
        self._streams[stream_id] = start_stream(cfg, app_name=self.args.app_name, num_cpus=sc.num_cpus)
        return {"stream_id": stream_id, "source": source, "out_dir": cfg.out_dir,
                "status_url": f"/v1/streams/{stream_id}"}

    @staticmethod
    def _stream_done(entry) -> bool:
        import ray

        return bool(ray.wait([entry[1]], timeout=0)[0])

    # How long GET/DELETE wait for a stream actor's answer. An actor still waiting for a free CPU cannot
    # answer at all (the call used to hang 30-60 s, then fail CANCELLED): past this it is reported pending.
    STREAM_ANSWER_S = 2.0

    async def _final(self, stream_id: str, done) -> dict:
        try:
            return {"stream_id": stream_id, **(await done)}
        except Exception as exc:  # noqa: BLE001 - killed (stopped while pending) or crashed
            return {"stream_id": stream_id, "state": "stopped" if "kill" in str(exc).lower() else "failed",
                    "error": type(exc).__name__}

    async def _live_stats(self, stream_id: str, actor) -> dict | None:
        """The actor's stats, or None when it has not started (no CPU free yet)."""
        try:
            return {"stream_id": stream_id, **(await asyncio.wait_for(actor.stats.remote(), self.STREAM_ANSWER_S))}
        except asyncio.TimeoutError:
            return None

    async def _stream_stats(self, stream_id: str) -> dict:
        entry = self._streams.get(stream_id)
        if entry is None:
            raise HTTPException(404, f"no stream {stream_id!r}")
        actor, done = entry
        if self._stream_done(entry):
            return await self._final(stream_id, done)
        stats = await self._live_stats(stream_id, actor)
        if stats is None:
            return {"stream_id": stream_id, "state": "pending",
                    "detail": "accepted, waiting for a free CPU to start; DELETE cancels it"}
        return stats

    @api.get("/v1/streams/{stream_id}", summary="live stream statistics")
    async def stream_status(self, stream_id: str, request: Request) -> dict:
        self._auth(request)
        return await self._stream_stats(stream_id)

    @api.delete("/v1/streams/{stream_id}", summary="stop a live stream; returns its final statistics")
    async def stop_stream(self, stream_id: str, request: Request) -> dict:
        self._auth(request)
        import ray

        entry = self._streams.get(stream_id)
        if entry is None:
            raise HTTPException(404, f"no stream {stream_id!r}")
        actor, done = entry
        if not self._stream_done(entry) and await self._live_stats(stream_id, actor) is None:
            # never started (no CPU free): nothing to flush, so end it now instead of queueing a stop behind it
            ray.kill(actor, no_restart=True)
            self._streams.pop(stream_id, None)
            return {"stream_id": stream_id, "state": "stopped", "frames_read": 0,
                    "detail": "stopped before it started (it was pending)"}
        actor.stop.remote()
        return await self._final(stream_id, done)

    @api.get("/v1/videos/{job_id}", summary="job status")
    async def video_status(self, job_id: str, request: Request) -> dict:
        self._auth(request)
        return self._job_status(job_id)

    @api.get("/v1/videos/{job_id}/result", summary="download the enhanced video (or zip of face crops)")
    async def video_result(self, job_id: str, request: Request):
        self._auth(request)
        st = self._job_status(job_id)
        if st.get("state") != "done":
            return JSONResponse({"detail": f"job is {st.get('state')}", **st}, status_code=409)
        path = self.jobs_dir / job_id / st["result"]
        media = "application/zip" if path.suffix == ".zip" else "video/mp4"
        return FileResponse(path, media_type=media, filename=path.name,
                            headers={"X-Model-Output": "true"})


# ---------------------------------------------------------------- builders + CLI

def build_app(args: dict | None = None):
    """Application builder for ``serve run`` / ``serve.run``: ``args`` is the ``args`` mapping of the
    app's entry in configs/serve.yaml, validated against ServeArgs."""
    cfg = from_dict(ServeArgs, dict(args or {}), "serve args:")
    gen = cfg.generator_path()
    if not gen.is_file():
        raise ConfigError(f"serve args: generator: {gen} not found (train one or pass --generator)")
    m = cfg.model
    a = m.autoscaling
    model = EnhancerModel.options(
        ray_actor_options={"num_cpus": m.num_cpus, "num_gpus": m.num_gpus},
        max_ongoing_requests=m.max_ongoing_requests,
        health_check_period_s=m.health_check_period_s,
        autoscaling_config={"min_replicas": a.min_replicas, "max_replicas": a.max_replicas,
                            "initial_replicas": max(1, a.min_replicas),
                            "target_ongoing_requests": a.target_ongoing_requests,
                            "upscale_delay_s": a.upscale_delay_s, "downscale_delay_s": a.downscale_delay_s},
    ).bind(str(gen), to_dict(m.engine), cfg.batch.max_batch_size, cfg.batch.batch_wait_timeout_s)
    resolved = to_dict(cfg)
    resolved["generator"] = str(gen)
    resolved["jobs"]["dir"] = str(Path(cfg.jobs.dir).expanduser().resolve())
    return Ingress.options(ray_actor_options={"num_cpus": cfg.ingress_num_cpus}).bind(model, resolved)


def read_serve_config(path: str | Path | None, overrides: list[str]) -> tuple[dict, dict, dict]:
    """(http_options, app entry, args) from a Serve config file, with ``key=value`` overrides on args."""
    import yaml

    from survsr.config import resolve_path

    p = resolve_path(path, "serve.yaml")
    if p is None or not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    doc = yaml.safe_load(p.read_text()) or {}
    apps = doc.get("applications") or []
    if not apps or not isinstance(apps, list):
        raise ConfigError(f"{p}: applications: expected a list with the survsr app")
    app = apps[0]
    args = apply_overrides(dict(app.get("args") or {}), overrides)
    from_dict(ServeArgs, args, f"{p}: applications[0].args:")  # validate early, naming the file
    return dict(doc.get("http_options") or {}), app, args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from survsr.config import add_config_args

    parser.add_argument("overrides_pos", nargs="*", metavar="KEY=VALUE", help="overrides of the app's args")
    parser.add_argument("--generator", default=None, help="generator export (.safetensors)")
    parser.add_argument("--host", default=None, help="bind address (default from config: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--address", default=None, help="Ray cluster to join (default: start a local one)")
    parser.add_argument("--stream", action="append", default=[], metavar="SOURCE",
                        help="also enhance a live source (rtsp://, http(s)://, a file); repeatable")
    parser.add_argument("--stream-out", default="stream_out", help="segments go to DIR/stream<N>/")
    parser.add_argument("--stream-set", action="append", default=[], metavar="KEY=VALUE",
                        help="StreamConfig override for every --stream, e.g. queue_size=64")
    add_config_args(parser, "serve.yaml")


def main(args: argparse.Namespace) -> int:
    from survsr.config import split_overrides
    from survsr.ray_utils import RayConfig, init_ray

    split_overrides(args, "overrides_pos")
    overrides = list(args.overrides)
    if args.generator:
        overrides.append(f"generator={args.generator}")
    http, app, app_args = read_serve_config(args.config, overrides)
    http = {"host": "127.0.0.1", "port": 8000, **http}
    if args.host:
        http["host"] = args.host
    if args.port is not None:
        http["port"] = args.port
    init_ray(RayConfig(address=args.address or ""))
    serve.start(http_options=http)
    name = app.get("name", "survsr")
    app_args.setdefault("app_name", name)
    serve.run(build_app(app_args), name=name, route_prefix=app.get("route_prefix", "/"))
    token = " (bearer token required)" if (os.environ.get(app_args.get("auth_token_env", "SURVSR_SERVE_TOKEN"))
                                           or app_args.get("auth_token_sha256")) else ""
    print(f"survsr serve: http://{http['host']}:{http['port']}/docs{token}; Ctrl-C to stop", flush=True)
    streams = _start_streams(args, name)
    try:
        while True:
            time.sleep(30)
            for src, (actor, _) in streams.items():
                import ray

                st = ray.get(actor.stats.remote())
                log.info("stream %s: %s read, %s written, %s dropped, %s reconnects, state %s", src,
                         st["frames_read"], st["frames_written"], st["frames_dropped"], st["reconnects"], st["state"])
    except KeyboardInterrupt:
        import ray

        for actor, done in streams.values():
            actor.stop.remote()
        ray.wait([d for _, d in streams.values()], num_returns=len(streams), timeout=30)
        serve.shutdown()
    return 0


def _start_streams(args: argparse.Namespace, app_name: str) -> dict:
    from survsr.serve.stream import StreamConfig, start_stream
    from survsr.config import from_dict as _fd

    out = {}
    for i, src in enumerate(args.stream):
        data = apply_overrides({"source": src, "out_dir": str(Path(args.stream_out) / f"stream{i}")}, args.stream_set)
        cfg = _fd(StreamConfig, data, "--stream-set:")  # a bad key is a ConfigError naming it
        out[src] = start_stream(cfg, app_name=app_name)
        print(f"survsr serve: enhancing stream {src} -> {cfg.out_dir}", flush=True)
    return out


COMMAND = Command(name="serve", add_arguments=add_arguments, main=main)
