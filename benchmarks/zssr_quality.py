"""ZSSR quality on Set5 / Set14 at x2 against bicubic, in the same run.

Protocol (the one SR papers use): HR cropped to a multiple of the scale, LR = PIL bicubic downscale, PSNR and
SSIM on Y (BT.601) after a ``scale``-pixel border crop (``survsr.pipelines.quality.score_pair``, scikit-image).
The ZSSR paper reports 37.37 dB (Set5) / 33.00 dB (Set14); bicubic scores 33.67 / 30.32.

  .venv/bin/python benchmarks/zssr_quality.py                 # full, paper schedule (GPU: minutes; CPU: hours)
  .venv/bin/python benchmarks/zssr_quality.py --smoke         # 1 image, 96x96 centre crop, 20 iterations
  .venv/bin/python benchmarks/zssr_quality.py --sets Set5 --set zssr.max_iters=500 --device cuda
  .venv/bin/python benchmarks/zssr_quality.py --sets Set5 --gradual --images head woman   # official gradual x2 (~6x)
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from survsr.models.zssr import ZSSR, is_dead  # noqa: E402
from survsr.models.zssr_gradual import GradualZSSR  # noqa: E402
from survsr.pipelines.quality import score_pair  # noqa: E402
from survsr.pipelines.zssr_pool import load_config  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "sr-benchmarks"
SMOKE = ["zssr.max_iters=20", "zssr.min_iters=10", "zssr.run_test_every=5",
         "zssr.learning_rate_policy_check_every=10", "zssr.learning_rate_slope_range=25"]


def matlab_resize(img: np.ndarray, size: tuple[int, int], factor) -> np.ndarray:
    """uint8 HxWx3 through MATLAB's imresize (bicubic, antialiased when shrinking), rounded back to uint8."""
    import torch

    from survsr.models.zssr import resize, to_uint8

    t = torch.from_numpy(img.astype(np.float64).transpose(2, 0, 1)[None] / 255.0)
    return to_uint8(resize(t, size, "matlab", factor), gray=False)


def prepare(path: Path, scale: int, crop: int | None,
            method: str = "pil") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HR, LR and the bicubic baseline; ``method`` makes LR and the baseline with PIL (default) or with MATLAB's
    imresize, which is how the benchmark LR sets of the SR literature (and so the ZSSR paper's table) were made."""
    hr = np.asarray(Image.open(path).convert("RGB"))
    if crop:
        h, w = hr.shape[:2]
        y, x = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
        hr = hr[y:y + crop, x:x + crop]
    h, w = (hr.shape[0] // scale) * scale, (hr.shape[1] // scale) * scale
    hr = np.ascontiguousarray(hr[:h, :w])
    if method == "matlab":
        lr = matlab_resize(hr, (h // scale, w // scale), 1.0 / scale)
        return hr, lr, matlab_resize(lr, (h, w), float(scale))
    lr = np.asarray(Image.fromarray(hr).resize((w // scale, h // scale), Image.BICUBIC))
    bic = np.asarray(Image.fromarray(lr).resize((w, h), Image.BICUBIC))
    return hr, lr, bic


def score_stage(hr: np.ndarray, lr: np.ndarray, scale: int, into: list, n: int, factor, out: np.ndarray) -> None:
    """A gradual stage's output against the ground truth resized to that stage's factor (MATLAB imresize,
    as the official ``gt_per_sf``), next to the bicubic upscale of the input to the same size."""
    size = out.shape[:2]
    gt = matlab_resize(hr, size, tuple(v / scale for v in factor))
    bic = matlab_resize(lr, size, tuple(factor))
    s, b = score_pair(gt, out, scale=scale), score_pair(gt, bic, scale=scale)
    into.append({"psnr_y": s["psnr_y"], "ssim_y": s["ssim_y"], "psnr_y_bicubic": b["psnr_y"]})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--sets", nargs="+", default=["Set5", "Set14"])
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="1 image, 96x96 centre crop, 20 iterations")
    ap.add_argument("--max-images", type=int, default=0, help="per set; 0 = all")
    ap.add_argument("--crop", type=int, default=0, help="centre-crop HR to this size (0 = whole image)")
    ap.add_argument("--device", default=None, help="cpu | cuda | auto (default: config)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", default=None)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default; --smoke: 1)")
    ap.add_argument("--json", type=Path, default=None, help="write rows and means here")
    ap.add_argument("--gradual", action="store_true",
                    help="the official X2_GRADUAL_IDEAL_CONF (survsr.models.zssr_gradual; x2 only, ~6x the compute)")
    ap.add_argument("--gradual-fresh", action="store_true",
                    help="with --gradual: a fresh network per stage (official init_net_for_each_sf = True)")
    ap.add_argument("--gradual-restart-dead", action="store_true",
                    help="with --gradual: train a stage whose network died again from a fresh one (opt-in)")
    ap.add_argument("--images", nargs="+", default=None, help="only these image stems")
    ap.add_argument("--lr-resize", choices=("pil", "matlab"), default="pil",
                    help="how LR and the bicubic baseline are made: PIL bicubic (default) or MATLAB imresize")
    args = ap.parse_args(argv)
    overrides = list(args.overrides) + [f"zssr.scale={float(args.scale)}"]
    if args.smoke:
        args.sets, args.max_images, args.crop = args.sets[:1], 1, args.crop or 96
        overrides = SMOKE + overrides
    if args.device:
        overrides.append(f"zssr.device={args.device}")
    if args.threads or args.smoke:
        import torch

        torch.set_num_threads(args.threads or 1)
    stage = load_config(args.config, overrides)
    cfg, ws = stage.zssr, stage.warm_start
    if args.gradual and args.scale != 2:
        ap.error("--gradual: x2 only (the official gradual factors)")
    if args.gradual:  # an image takes an hour on a CPU: show each stage as it ends (models/zssr_gradual.py logs it)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    engine = (GradualZSSR(cfg, fresh_net_per_stage=args.gradual_fresh, restart_dead=args.gradual_restart_dead)
              if args.gradual else ZSSR(cfg))
    rows = []
    print(f"ZSSR x{args.scale} on {engine.device} ({engine.dtype}, amp={engine.amp}); max_iters={cfg.max_iters}")
    print(f"{'set':6} {'image':12} {'size':>9} {'bic PSNR':>9} {'ZSSR PSNR':>9} {'bic SSIM':>8} {'ZSSR SSIM':>9} "
          f"{'iters':>5} {'sec':>7} {'CPU-s':>7}")
    inits = {}

    def dump(rows: list[dict], means: dict) -> None:
        if args.json:
            tmp = args.json.with_name(args.json.name + ".tmp")
            tmp.write_text(json.dumps({"rows": rows, "means": means, "device": str(engine.device),
                                       "overrides": overrides, "zssr": dataclasses.asdict(engine.cfg),
                                       "gradual": args.gradual, "gradual_fresh": args.gradual_fresh,
                                       "gradual_restart_dead": args.gradual_restart_dead,
                                       "lr_resize": args.lr_resize,
                                       "warm_start": inits}, indent=1))
            tmp.replace(args.json)

    for set_name in args.sets:
        files = sorted(p for p in (args.data / set_name).glob("*.png") if not args.images or p.stem in args.images)
        if not files:
            print(f"no images in {args.data / set_name}", file=sys.stderr)
            return 2
        files = files[: args.max_images or None]
        init = None
        if ws.enabled:  # zssr_fast.yaml: one init from the set's own LR images (its cost is counted per set)
            from survsr.models.zssr_init import train_init

            lrs = [prepare(p, args.scale, args.crop or None, args.lr_resize)[1] for p in files]
            init, iinfo = train_init(lrs, cfg, ws)
            inits[set_name] = iinfo
            print(f"{set_name}: warm-start init ({ws.method}, {iinfo['face_iterations']} face-iterations) "
                  f"{iinfo['seconds']:.1f} s, {iinfo['cpu_seconds']:.1f} CPU-s", flush=True)
        for path in files:
            hr, lr, bic = prepare(path, args.scale, args.crop or None, args.lr_resize)
            t0, c0 = time.perf_counter(), time.process_time()
            stage_scores: list[dict] = []
            kw = {"on_stage": functools.partial(score_stage, hr, lr, args.scale, stage_scores)} if args.gradual else {}
            sr, info = engine.run(lr, seed=args.seed, name=str(path), init=init, **kw)
            sec, cpu = time.perf_counter() - t0, time.process_time() - c0  # CPU-s: comparable on a shared box
            sb, sz = score_pair(hr, bic, scale=args.scale), score_pair(hr, sr, scale=args.scale)
            row = {"set": set_name, "image": path.stem, "w": hr.shape[1], "h": hr.shape[0],
                   "psnr_bicubic": sb["psnr_y"], "psnr_zssr": sz["psnr_y"], "ssim_bicubic": sb["ssim_y"],
                   "ssim_zssr": sz["ssim_y"], "iterations": info["iterations"], "seconds": sec, "cpu_seconds": cpu,
                   "residual_rms": info.get("residual_rms")}
            if "stages" in info:  # gradual: each factor's iterations, lr changes and scores
                row["stages"] = [st | sc for st, sc in zip(info["stages"], stage_scores)]
                for st in row["stages"]:
                    print(f"  stage {st['factor']}: {st['iterations']} it., PSNR-Y {st['psnr_y']:.2f} "
                          f"(bicubic {st['psnr_y_bicubic']:.2f}), residual RMS {st['residual_rms']:.2e}"
                          + (" (dead network)" if is_dead(st["residual_rms"]) else ""), flush=True)
            rows.append(row)
            dump(rows, {})  # an interrupted hour-long run keeps its finished images
            print(f"{set_name:6} {path.stem:12} {hr.shape[1]:>4}x{hr.shape[0]:<4} {row['psnr_bicubic']:9.2f} "
                  f"{row['psnr_zssr']:9.2f} {row['ssim_bicubic']:8.4f} {row['ssim_zssr']:9.4f} "
                  f"{row['iterations']:5d} {sec:7.1f} {cpu:7.1f}", flush=True)
    means = {}
    for set_name in args.sets:
        rs = [r for r in rows if r["set"] == set_name]
        means[set_name] = {k: float(np.mean([r[k] for r in rs]))
                           for k in ("psnr_bicubic", "psnr_zssr", "ssim_bicubic", "ssim_zssr", "seconds",
                                     "cpu_seconds")}
        m = means[set_name]
        print(f"{set_name:6} {'mean':12} {'':9} {m['psnr_bicubic']:9.2f} {m['psnr_zssr']:9.2f} "
              f"{m['ssim_bicubic']:8.4f} {m['ssim_zssr']:9.4f} {'':5} {m['seconds']:7.1f} {m['cpu_seconds']:7.1f}")
    dump(rows, means)
    return 0


if __name__ == "__main__":
    sys.exit(main())
