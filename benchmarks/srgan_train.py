"""SRGAN training speed (and a CPU-sized quality check).

  step     faces/s of the full training step (G fwd/bwd + D on real and fake + VGG-19 content loss + Adam),
           paper-size models, one device (GPU when present, bf16 autocast there):
             python benchmarks/srgan_train.py step --batch 50 512            # the GPU figures
             python benchmarks/srgan_train.py step --smoke                   # tiny, CPU, seconds
  workers  1 -> 2 Ray Train workers on CPU through the real pipeline (run_train on toy manifests):
             python benchmarks/srgan_train.py workers --batch 8 --steps 8
  quality  short CPU training on real carphone faces, then PSNR of G vs bicubic on held-out real faces
           downscaled to 32x32 (ground truth = the 64x64 pristine crop):
             python benchmarks/srgan_train.py quality --minutes 5

Each mode prints one JSON object per measurement (faces/s counts LR faces through G per second).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _machine(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} x{os.cpu_count()} CPU (load {os.getloadavg()[0]:.1f})"


def bench_step(args) -> list[dict]:
    import torch

    from survsr.models.mediator import MediatorConfig, build_mediator
    from survsr.models.srgan import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig
    from survsr.models.losses import LossConfig
    from survsr.pipelines.srgan_loop import SRGANStep

    device = _device(args.device)
    torch.manual_seed(0)
    if args.smoke:
        gcfg, dcfg, layer, batches, steps = GeneratorConfig(channels=8, n_blocks=2), \
            DiscriminatorConfig(channels=8, dense=16), "VGG22", [4], 2
    else:
        gcfg, dcfg, layer, batches, steps = GeneratorConfig(), DiscriminatorConfig(), args.layer, args.batch, args.steps
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    G, D = Generator(gcfg).to(device), Discriminator(dcfg).to(device)
    # Random-init VGG: same FLOPs as ImageNet weights, and none can be downloaded here.
    med, _ = build_mediator(MediatorConfig(weights="random", layer=layer))
    med = med.to(device)
    if args.channels_last:
        G, D, med = (m.to(memory_format=torch.channels_last) for m in (G, D, med))
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-4)
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-4)
    bf16 = device.type == "cuda" and not args.fp32
    step = SRGANStep(G, D, G, D, opt_g, opt_d, med, LossConfig(), gcfg.scale, bf16=bf16)  # the paper's G step
    results = []
    for b in batches:
        lr = torch.rand(b, 3, 32, 32, device=device)
        real = torch.rand(b, 3, 64, 64, device=device)
        pair = torch.rand(b, 3, 64, 64, device=device)
        has = torch.ones(b, dtype=torch.bool, device=device)
        if args.channels_last:
            lr, real, pair = (t.contiguous(memory_format=torch.channels_last) for t in (lr, real, pair))
        for _ in range(args.warmup if not args.smoke else 1):
            step(real, lr, pair, has, do_d=True, do_g=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            parts = step(real, lr, pair, has, do_d=True, do_g=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        assert all(np.isfinite(float(v)) for v in parts.values())
        rec = {"bench": "srgan_step", "batch": b, "steps": steps, "faces_per_s": round(b * steps / dt, 2),
               "step_ms": round(1000 * dt / steps, 1), "device": _machine(device), "bf16": bf16,
               "channels_last": args.channels_last, "vgg_layer": layer, "smoke": args.smoke,
               "torch": torch.__version__, "threads": torch.get_num_threads()}
        if device.type == "cuda":
            rec["max_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        print(json.dumps(rec), flush=True)
        results.append(rec)
    return results


def make_toy_manifests(root: Path, n_train: int, n_test: int = 4):
    """lfw_subset images as 64x64 'ZSSR' outputs + their 32x32 downscales (speed only: content is irrelevant)."""
    import pandas as pd
    from PIL import Image
    from skimage.data import lfw_subset

    from survsr.provenance import write_parquet_atomic, write_png

    imgs = lfw_subset()
    rows, zrows = [], []
    for i in range(n_train + n_test):
        face = imgs[i % len(imgs)]
        hr = np.asarray(Image.fromarray((np.stack([face] * 3, -1) * 255).astype(np.uint8)).resize((64, 64)))
        if i >= len(imgs):
            hr = hr[:, ::-1].copy()
        lr = np.asarray(Image.fromarray(hr).resize((32, 32), Image.BICUBIC))
        cid, split = f"bench{i:05d}", ("train" if i < n_train else "test")
        rows.append({"crop_id": cid, "lr_path": f"lr/{cid}.png", "split": split,
                     "sha256": write_png(root / "faces" / "lr" / f"{cid}.png", lr)})
        zrows.append({"crop_id": cid, "hr_path": f"hr/{cid}.png", "split": split,
                      "sha256": write_png(root / "zssr" / "hr" / f"{cid}.png", hr)})
    write_parquet_atomic(pd.DataFrame(rows), root / "faces" / "faces.parquet")
    write_parquet_atomic(pd.DataFrame(zrows), root / "zssr" / "zssr.parquet")
    return root / "faces", root / "zssr"


def bench_workers(args) -> list[dict]:
    from survsr.pipelines.train_srgan import load_config, run_train
    from survsr.ray_utils import RayConfig, init_ray

    init_ray(RayConfig(num_cpus=os.cpu_count()))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        n = max(64, 4 * args.batch * 2)
        faces, zssr = make_toy_manifests(Path(tmp), n)
        for workers in args.workers:
            over = [f"scaling.num_workers={workers}", f"scaling.cpus_per_worker={args.cpus_per_worker}",
                    f"train.batch_size={args.batch}", f"train.max_steps={args.steps}", "train.log_every=1",
                    f"train.checkpoint_every={args.steps}", "train.schedule=alternate",
                    "mediator.weights=random", f"mediator.layer={args.layer}", "data.heldout_max=4"]
            if args.small:
                over += ["generator.channels=32", "generator.n_blocks=4", "discriminator.channels=16",
                         "discriminator.dense=128"]
            out = Path(tmp) / f"run_w{workers}"
            t0 = time.perf_counter()
            run_train(faces, zssr, out, load_config(None, over))
            wall = time.perf_counter() - t0
            steps = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
            rates = [r["faces_per_s"] for r in steps if r.get("kind") == "step" and r["step"] > 2]
            rec = {"bench": "srgan_ray_workers", "workers": workers, "cpus_per_worker": args.cpus_per_worker,
                   "global_batch": args.batch, "steps": args.steps, "faces_per_s": round(statistics.median(rates), 3),
                   "wall_s_incl_startup": round(wall, 1), "small_models": args.small, "vgg_layer": args.layer,
                   "machine": _machine(_device("cpu"))}
            print(json.dumps(rec), flush=True)
            results.append(rec)
    if len(results) >= 2:
        print(json.dumps({"bench": "srgan_ray_workers_ratio",
                          "ratio_2_over_1": round(results[1]["faces_per_s"] / results[0]["faces_per_s"], 3)}))
    return results


def _carphone_faces(n_frames: int = 120):
    """64x64 face crops from the pristine carphone clip (fixed box around the face, every frame)."""
    from PIL import Image

    from survsr.data import carphone_paths
    from survsr.video.decode import iter_frames

    crops = []
    for fr in iter_frames(carphone_paths()["pristine"], max_frames=n_frames):
        img = fr.image  # 144x176
        crop = img[20:100, 60:140]  # 80x80 around the driver's face
        crops.append(np.asarray(Image.fromarray(crop).resize((64, 64), Image.BICUBIC)))
    return crops


def bench_quality(args) -> dict:
    """Honest CPU-budget check: train G on carphone faces (D's reals = the 64x64 crops of even frames,
    G's inputs = 32x32 downscales of odd frames < 90), evaluate on frames >= 90 against the true 64x64."""
    import pandas as pd
    import torch
    from PIL import Image

    from survsr.models.export import load_generator
    from survsr.pipelines.quality import MetricsConfig, score_pair
    from survsr.pipelines.train_srgan import load_config, run_train

    def psnr(ref, test):  # RGB, whole image: the definition of the figures already in docs/benchmarks.md
        return score_pair(ref, test, cfg=MetricsConfig(border=0))["psnr_rgb"]
    from survsr.provenance import write_parquet_atomic, write_png
    from survsr.ray_utils import RayConfig, init_ray

    init_ray(RayConfig(num_cpus=os.cpu_count()))
    crops = _carphone_faces()
    down = lambda im: np.asarray(Image.fromarray(im).resize((32, 32), Image.BICUBIC))  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows, zrows = [], []
        for i, hr in enumerate(crops):
            cid, split = f"carphone-f{i:06d}", ("train" if i < 90 else "test")
            rows.append({"crop_id": cid, "lr_path": f"lr/{cid}.png", "split": split,
                         "sha256": write_png(root / "faces" / "lr" / f"{cid}.png", down(hr))})
            # "ZSSR" set: the true HR crop stands in for ZSSR here (an upper bound for the synthetic set)
            zrows.append({"crop_id": cid, "hr_path": f"hr/{cid}.png", "split": split,
                          "sha256": write_png(root / "zssr" / "hr" / f"{cid}.png", hr)})
        write_parquet_atomic(pd.DataFrame(rows), root / "faces" / "faces.parquet")
        write_parquet_atomic(pd.DataFrame(zrows), root / "zssr" / "zssr.parquet")
        over = ["train.max_steps=%d" % args.steps, "scaling.cpus_per_worker=%d" % (os.cpu_count() or 1),
                *args.set]
        t0 = time.perf_counter()
        summary = run_train(root / "faces", root / "zssr", root / "run", load_config(args.config, over))
        G = load_generator(root / "run" / "generator.safetensors")
        test = crops[90:]
        with torch.no_grad():
            lr = torch.from_numpy(np.stack([down(c) for c in test])).permute(0, 3, 1, 2).float() / 255
            sr = (G(lr).clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
        bic = [np.asarray(Image.fromarray(down(c)).resize((64, 64), Image.BICUBIC)) for c in test]
        rec = {"bench": "srgan_quality_carphone", "steps": summary["final_step"],
               "train_s": round(time.perf_counter() - t0, 1), "config": args.config, "overrides": over,
               "mediator": summary["mediator_status"], "n_test": len(test),
               "psnr_generator": round(float(np.mean([psnr(t, s) for t, s in zip(test, sr)])), 2),
               "psnr_bicubic": round(float(np.mean([psnr(t, b) for t, b in zip(test, bic)])), 2),
               "machine": _machine(_device("cpu"))}
    print(json.dumps(rec), flush=True)
    return rec


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("step")
    s.add_argument("--batch", type=int, nargs="+", default=[50, 512])
    s.add_argument("--steps", type=int, default=20)
    s.add_argument("--warmup", type=int, default=3)
    s.add_argument("--device", default="auto")
    s.add_argument("--layer", default="VGG54")
    s.add_argument("--fp32", action="store_true", help="no bf16 autocast on GPU")
    s.add_argument("--channels-last", action="store_true")
    s.add_argument("--smoke", action="store_true", help="tiny models, batch 4, 2 steps (CPU check)")
    w = sub.add_parser("workers")
    w.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    w.add_argument("--cpus-per-worker", type=int, default=1)
    w.add_argument("--batch", type=int, default=8, help="global batch")
    w.add_argument("--steps", type=int, default=8)
    w.add_argument("--layer", default="VGG54")
    w.add_argument("--small", action="store_true", help="demo-size G/D instead of the paper's")
    q = sub.add_parser("quality")
    q.add_argument("--config", default="srgan_demo")
    q.add_argument("--steps", type=int, default=200)
    q.add_argument("--set", action="append", default=[])
    args = p.parse_args(argv)
    {"step": bench_step, "workers": bench_workers, "quality": bench_quality}[args.mode](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
