"""Bounded load on the enhancement service, 127.0.0.1 only: requests/s, p50/p99 latency, errors, and the
batch sizes the model deployment actually formed.

    .venv/bin/python benchmarks/serve_load.py                       # starts Ray + the app in-process
    .venv/bin/python benchmarks/serve_load.py --requests 400 --concurrency 32 --size 32
    .venv/bin/python benchmarks/serve_load.py --url http://127.0.0.1:8000   # an already running service

Without --generator, a random generator is exported (--blocks/--channels; default full size 16x64), so
the numbers are the serving stack's cost for the real architecture, not a trained model's quality.
The request count is bounded (--requests) and every request goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png(img: np.ndarray) -> bytes:
    from survsr.provenance import encode_png

    return encode_png(img)


def run_load(base: str, bodies: list[bytes], concurrency: int, token: str | None, timeout: float) -> dict:
    import httpx

    lat: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    it = iter(range(len(bodies)))
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    def worker() -> None:
        with httpx.Client(base_url=base, timeout=timeout, headers=headers) as c:
            while True:
                with lock:
                    i = next(it, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                try:
                    r = c.post("/v1/enhance?label=false", content=bodies[i])
                    key = None if r.status_code == 200 else f"HTTP {r.status_code}"
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                dt = time.perf_counter() - t0
                with lock:
                    if key:
                        errors[key] = errors.get(key, 0) + 1
                    else:
                        lat.append(dt)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    arr = np.array(lat) if lat else np.array([np.nan])
    return {"requests": len(bodies), "ok": len(lat), "errors": errors, "seconds": round(wall, 2),
            "req_per_s": round(len(lat) / wall, 2), "p50_ms": round(float(np.percentile(arr, 50)) * 1e3, 1),
            "p99_ms": round(float(np.percentile(arr, 99)) * 1e3, 1), "concurrency": concurrency}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default=None, help="running service (127.0.0.1 only); default: start one")
    p.add_argument("--generator", default=None)
    p.add_argument("--blocks", type=int, default=16)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--size", type=int, default=32, help="square input side (32 = an LR face)")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--wait", type=float, default=0.01, help="batch_wait_timeout_s")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    if a.requests > 10_000 or a.concurrency > 256:
        p.error("bounded load only: --requests <= 10000 and --concurrency <= 256")

    rng = np.random.default_rng(0)
    bodies = [_png(rng.integers(0, 256, (a.size, a.size, 3), dtype=np.uint8)) for _ in range(a.requests)]
    token = os.environ.get("SURVSR_SERVE_TOKEN")
    started = False
    tmp = None
    if a.url:
        if not a.url.startswith(("http://127.0.0.1", "http://localhost")):
            p.error("--url must be on 127.0.0.1")
        base = a.url.rstrip("/")
    else:
        import torch
        from ray import serve

        from survsr.models.export import save_generator
        from survsr.models.srgan import Generator, GeneratorConfig
        from survsr.serve.app import build_app
        from survsr.ray_utils import init_ray

        gen = a.generator
        if gen is None:
            torch.manual_seed(0)
            tmp = tempfile.TemporaryDirectory()
            gen = str(Path(tmp.name) / "g.safetensors")
            save_generator(Generator(GeneratorConfig(n_blocks=a.blocks, channels=a.channels)), gen)
        init_ray()
        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        args = {"generator": gen, "app_name": "survsr-load", "ingress_num_cpus": 0.1,
                "jobs": {"dir": str(Path(tempfile.gettempdir()) / "survsr_load_jobs")},
                "batch": {"max_batch_size": a.max_batch, "batch_wait_timeout_s": a.wait}}
        serve.run(build_app(args), name="survsr-load", route_prefix="/")
        base = f"http://127.0.0.1:{port}"
        started = True
    import httpx

    hdr = {"Authorization": f"Bearer {token}"} if token else {}
    run_load(base, bodies[: min(8, len(bodies))], min(4, a.concurrency), token, a.timeout)  # warm-up
    before = httpx.get(f"{base}/healthz", timeout=30).json()
    res = run_load(base, bodies, a.concurrency, token, a.timeout)
    after = httpx.get(f"{base}/healthz", headers=hdr, timeout=30).json()
    hist = {k: v - before["batch_sizes"].get(k, 0) for k, v in after["batch_sizes"].items()}
    res.update(size=f"{a.size}x{a.size}", device=after["device"], max_batch=a.max_batch, wait_s=a.wait,
               batch_sizes={k: v for k, v in hist.items() if v > 0})
    print(json.dumps(res, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    if started:
        from ray import serve

        serve.shutdown()
    if tmp:
        tmp.cleanup()
    return 0 if not res["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
