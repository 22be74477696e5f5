"""Generator throughput: full frames (640x360 -> 1280x720) and 32x32 faces, end to end through
survsr.enhance.runner.Enhancer (uint8 frames in host memory -> GPU -> uint8 frames back), as the service and the
archive job run it.

    .venv/bin/python benchmarks/enhance_gpu.py                 # on a GPU: fp32, bf16, bf16+compile
    .venv/bin/python benchmarks/enhance_gpu.py --smoke         # tiny CPU run that checks the script works
    .venv/bin/python benchmarks/enhance_gpu.py --generator RUN/generator.safetensors --variants bf16+compile

Goal (issue 5): >= 400 frames/s at 640x360 full-frame x2 on one H100/H200.
Without --generator a randomly initialised full-size generator (16 blocks, 64 channels; speed does not
depend on the weights) is exported to a temp file and loaded the same way the service loads it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

VARIANTS = {
    "fp32": dict(precision="fp32", compile=False),
    "bf16": dict(precision="bf16", compile=False),
    "bf16+compile": dict(precision="bf16", compile=True),
    "fp16+compile": dict(precision="fp16", compile=True),
}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(enhancer, frames: list[np.ndarray], batch: int, seconds: float, warmup: int) -> dict:
    """Throughput of ``enhancer.enhance`` on batches of ``frames`` for about ``seconds``."""
    batches = [frames[i:i + batch] for i in range(0, len(frames), batch)]
    for b in batches[:warmup]:
        enhancer.enhance(b)
    _sync(enhancer.device)
    n, t0 = 0, time.perf_counter()
    while True:
        for b in batches:
            enhancer.enhance(b)
            n += len(b)
        _sync(enhancer.device)
        dt = time.perf_counter() - t0
        if dt >= seconds:
            break
    return {"items": n, "seconds": round(dt, 3), "per_s": round(n / dt, 1)}


def carphone(a) -> int:
    """The archive stage end to end on the demo clip (plain loop, no Ray), as the demo runs it."""
    import torch

    from survsr.models.export import save_generator
    from survsr.models.srgan import Generator, GeneratorConfig
    from survsr.enhance.worker import EnhanceConfig, PoolConfig
    from survsr.pipelines.enhance import run_enhance
    from survsr.enhance.runner import EngineConfig
    from survsr.data import carphone_paths

    with tempfile.TemporaryDirectory() as d:
        gen = a.generator
        if gen is None:
            torch.manual_seed(0)
            gen = str(Path(d) / "g.safetensors")
            save_generator(Generator(GeneratorConfig()), gen)
        cfg = EnhanceConfig(max_frames=a.carphone, engine=EngineConfig(device=a.device),
                            pool=PoolConfig(enabled=False))
        t0 = time.perf_counter()
        rep = run_enhance([carphone_paths()["distorted"]], gen, Path(d) / "out", cfg)
        dt = time.perf_counter() - t0
    v = rep["videos"][0]
    print(json.dumps({"clip": "carphone distorted 176x144", "frames": v["frames"], "seconds": round(dt, 1),
                      "frames_per_s": round(v["frames"] / dt, 2), "status": v["status"]}))
    return 0


def main(argv: list[str] | None = None) -> int:
    import torch

    from survsr.models.export import save_generator
    from survsr.models.srgan import Generator, GeneratorConfig
    from survsr.enhance.runner import EngineConfig, Enhancer, pick_device

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--generator", default=None, help="generator export (default: random full-size)")
    p.add_argument("--device", default="auto")
    p.add_argument("--variants", default=None, help=f"comma list of {list(VARIANTS)}")
    p.add_argument("--size", default="640x360", help="full-frame input WxH")
    p.add_argument("--batch", type=int, default=16, help="frames per forward")
    p.add_argument("--face-batch", type=int, default=512, help="32x32 faces per forward")
    p.add_argument("--seconds", type=float, default=10.0, help="timed seconds per measurement")
    p.add_argument("--smoke", action="store_true", help="tiny sizes so a CPU finishes in seconds")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--carphone", type=int, default=0, metavar="N",
                   help="instead: time run_enhance (decode + enhance + label + H.264) on N carphone frames")
    a = p.parse_args(argv)
    if a.carphone:
        return carphone(a)

    device = pick_device(a.device)
    w, h = (int(v) for v in a.size.lower().split("x"))
    gen_cfg = GeneratorConfig()
    if a.smoke:
        w, h, a.batch, a.face_batch, a.seconds = 160, 90, 2, 16, 1.0
        gen_cfg = GeneratorConfig(n_blocks=2, channels=16)
    variants = (a.variants.split(",") if a.variants else
                (["fp32", "bf16", "bf16+compile"] if device.startswith("cuda") else ["fp32"]))
    tmp = None
    gen_path = a.generator
    if gen_path is None:
        torch.manual_seed(0)
        tmp = tempfile.TemporaryDirectory()
        gen_path = str(Path(tmp.name) / "random_generator.safetensors")
        save_generator(Generator(gen_cfg), gen_path, {"note": "random weights for benchmarking"})
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(a.batch * 4)]
    faces = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(a.face_batch * 2)]
    results = []
    for name in variants:
        opts = VARIANTS[name]
        if device == "cpu" and opts["precision"] != "fp32":
            print(f"skip {name}: reduced precision is GPU-only", file=sys.stderr)
            continue
        enh = Enhancer(gen_path, EngineConfig(device=device, **opts))
        warm = 3 if opts["compile"] else 1
        t0 = time.perf_counter()
        enh.enhance(frames[: a.batch])  # first call: compile / cudnn autotune, reported separately
        first_call = time.perf_counter() - t0
        full = measure(enh, frames, a.batch, a.seconds, warm)
        face = measure(enh, faces, a.face_batch, a.seconds, warm)
        row = {"variant": name, "device": enh.device_name, "frame_size": f"{w}x{h}", "batch": a.batch,
               "frames_per_s": full["per_s"], "face_batch": a.face_batch, "faces_per_s": face["per_s"],
               "first_call_s": round(first_call, 2),
               "peak_gpu_mem_gib": (round(torch.cuda.max_memory_allocated() / 2**30, 2)
                                    if device.startswith("cuda") else None)}
        results.append(row)
        print(json.dumps(row), flush=True)
        del enh
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    print(f"\n| variant | device | {w}x{h} frames/s (batch {a.batch}) | 32x32 faces/s (batch {a.face_batch}) |")
    print("|---|---|---|---|")
    for r in results:
        print(f"| {r['variant']} | {r['device']} | {r['frames_per_s']} | {r['faces_per_s']} |")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
