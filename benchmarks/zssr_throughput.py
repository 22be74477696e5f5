"""ZSSR faces/s for 32x32 -> 64x64: one network at a time vs the batched engine, same faces, same run.

Faces are real (LFW via scikit-image, resized to 32x32), schedule = configs/zssr.yaml (the full paper
schedule) unless overridden. The goal on one H100/H200 is >= 250 faces/s for the batched engine.

  .venv/bin/python benchmarks/zssr_throughput.py --device cuda --faces 2048 --slots 1024 --single-faces 4
  .venv/bin/python benchmarks/zssr_throughput.py --device cpu --faces 8 --slots 8 --single-faces 2 \
      --set zssr.max_iters=300                                     # CPU-sized
  .venv/bin/python benchmarks/zssr_throughput.py --smoke           # seconds, any machine
  .venv/bin/python benchmarks/zssr_throughput.py --config zssr_fast.yaml --device cuda --faces 2048 --slots 1024 \
      --single-faces 0                          # warm start: the init's training counts in the batched time
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from survsr.models.zssr import ZSSR  # noqa: E402
from survsr.models.zssr_batched import BatchedZSSR  # noqa: E402
from survsr.pipelines.zssr_pool import load_config  # noqa: E402

SMOKE = ["zssr.max_iters=10", "zssr.min_iters=4", "zssr.run_test_every=2", "zssr.learning_rate_policy_check_every=4",
         "zssr.learning_rate_slope_range=10"]


def faces32(n: int) -> list[np.ndarray]:
    from skimage.data import lfw_subset

    lfw = lfw_subset()[:100]  # the first 100 are faces
    out = []
    for i in range(n):
        g = (lfw[i % 100] * 255).astype(np.uint8)
        g = np.asarray(Image.fromarray(g).resize((32, 32), Image.BICUBIC))
        out.append(np.repeat(g[:, :, None], 3, axis=2))
    return out


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--faces", type=int, default=256, help="faces for the batched engine")
    ap.add_argument("--slots", type=int, default=256, help="networks trained at once")
    ap.add_argument("--single-faces", type=int, default=2, help="faces for the one-at-a-time baseline (0 = skip)")
    ap.add_argument("--precision", default=None, help="auto | fp32 | bf16 (default: config)")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--config", default=None)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = (SMOKE if args.smoke else []) + list(args.overrides) + [f"zssr.device={args.device}"]
    if args.precision:
        overrides.append(f"zssr.precision={args.precision}")
    if args.smoke:
        args.faces, args.slots, args.single_faces = min(args.faces, 4), min(args.slots, 4), min(args.single_faces, 1)
    stage = load_config(args.config, overrides)
    cfg = stage.zssr
    faces = faces32(max(args.faces, args.single_faces))
    res = {"device": None, "overrides": overrides, "threads": torch.get_num_threads()}

    if args.single_faces:
        eng = ZSSR(cfg)
        res["device"] = str(eng.device)
        eng.run(faces[0][:16, :16], seed=0)  # warm-up (imports, kernels)
        t0, c0 = time.perf_counter(), time.process_time()
        iters = [eng.run(f, seed=i)[1]["iterations"] for i, f in enumerate(faces[: args.single_faces])]
        _sync(eng.device)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        res["single"] = {"faces": args.single_faces, "seconds": dt, "cpu_seconds": cpu,
                         "faces_per_s": args.single_faces / dt, "mean_iterations": float(np.mean(iters))}
        print(f"one at a time: {args.single_faces} faces in {dt:.1f}s (process CPU {cpu:.1f}s) = "
              f"{args.single_faces / dt:.3f} faces/s (mean {np.mean(iters):.0f} iterations)", flush=True)

    eng = BatchedZSSR(cfg, slots=args.slots)
    res["device"] = str(eng.device)
    list(eng.run([(i, f[:16, :16], i) for i, f in enumerate(faces[: min(4, args.slots)])]))  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    if stage.warm_start.enabled:  # the init is part of the cost: trained here, on these faces only
        from survsr.models.zssr_init import train_init

        init, info = train_init(faces[: args.faces], cfg, stage.warm_start, device=eng.device)
        _sync(eng.device)
        res["init"] = info | {"seconds_incl_sync": time.perf_counter() - t0}
        print(f"warm-start init: {info['face_iterations']} face-iterations in {time.perf_counter() - t0:.1f}s",
              flush=True)
        eng = BatchedZSSR(cfg, slots=args.slots, device=eng.device, init=init)
    iters, done = [], 0
    last = t0
    for _, out, info in eng.run([(i, f, i) for i, f in enumerate(faces[: args.faces])]):
        if out is None:
            raise SystemExit(f"face failed: {info}")
        iters.append(info["iterations"])
        done += 1
        if time.perf_counter() - last > 10:
            last = time.perf_counter()
            print(f"  {done}/{args.faces} faces, {done / (last - t0):.2f} faces/s", flush=True)
    _sync(eng.device)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    res["batched"] = {"faces": args.faces, "slots": args.slots, "seconds": dt, "cpu_seconds": cpu,
                      "faces_per_s": args.faces / dt,
                      "mean_iterations": float(np.mean(iters)), "steps": eng.steps_run,
                      "precision": cfg.precision}
    print(f"batched ({args.slots} slots): {args.faces} faces in {dt:.1f}s (process CPU {cpu:.1f}s) = "
          f"{args.faces / dt:.3f} faces/s "
          f"(mean {np.mean(iters):.0f} iterations, {eng.steps_run} steps) on {eng.device}")
    if "single" in res:
        print(f"speed-up: {res['batched']['faces_per_s'] / res['single']['faces_per_s']:.1f}x")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
