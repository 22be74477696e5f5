"""Full ZSSR (random init, paper schedule) against warm-started ZSSR (``configs/zssr_fast.yaml``) on real faces.

Faces: carphone (pristine clip, faces found by the video module's detector) and the two head-pose clips of
``../shared/data/footage``; each detected face square-cropped and resized to 64x64 = the true face, LR = PIL
bicubic 32x32 (``survsr.pipelines.eval_faces``). Scores: PSNR-Y / SSIM-Y after a 2-pixel border
(``survsr.pipelines.quality.score_pair``). Compute: iterations (a face-sized network update = 1; the init's
training counts all its updates), CPU-seconds (``time.process_time`` of the worker, training + the final
self-ensemble; the curve's extra inferences are not counted) and faces/s (wall, same workers for both).
The curve: PSNR-Y of the network after 0/10/30/100/300 fine-tuning iterations and at the stopping rule, for
the random init (the full run's own prefix) and the warm init.

  .venv/bin/python benchmarks/zssr_warm.py --json /tmp/warm.json          # everything (CPU: about an hour)
  .venv/bin/python benchmarks/zssr_warm.py --carphone 4 --headpose 2 --skip-full --set warm_start.steps=100
  .venv/bin/python benchmarks/zssr_warm.py --only-full --gradual carried --json /tmp/g.json   # issue 17's faces rule
  .venv/bin/python benchmarks/zssr_warm.py --only-full --full-set zssr.adam_eps=1e-16 --json /tmp/e.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FOOTAGE = next((p for p in (REPO.parent / "shared" / "data" / "footage", REPO.parent.parent / "shared" / "data" / "footage")
                if p.is_dir()), REPO.parent / "shared" / "data" / "footage")  # checkout in /work/main or /work/wt/*
CURVE = (0, 10, 30, 100, 300)


def collect(n_carphone: int, n_headpose: int) -> list[dict]:
    from survsr.pipelines.eval_faces import DegradationConfig, carphone, degrade, detect_video_faces, square_hr

    notes: list[str] = []
    faces = []
    sources = [(carphone("pristine"), "carphone", n_carphone)]
    for clip in ("head-pose-face-detection-female.gif", "head-pose-face-detection-male.gif"):
        sources.append((FOOTAGE / clip, clip.split(".")[0], n_headpose))
    for path, label, n in sources:
        if not n:
            continue
        if path is None or not Path(path).is_file():
            raise SystemExit(f"{label}: {path} not available")
        for f in detect_video_faces(Path(path), label=label, stride=1, max_faces=n, notes=notes):
            hr = square_hr(f.image, 64)
            faces.append({"id": f.face_id, "source": label, "hr": hr, "lr": degrade(hr, 2, DegradationConfig(), 0)})
    for n in notes:
        print("note:", n)
    return faces


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def run_face(job: dict) -> dict:
    """One face: train (from the init or the seed's random network), final output, then the curve."""
    import torch

    from survsr.models.zssr import ZSSR, to_uint8
    from survsr.pipelines.quality import score_pair

    cfg, face = job["cfg"], job["face"]
    if job.get("gradual"):
        return run_face_gradual(job)
    init = None if job["init"] is None else [torch.from_numpy(w) for w in job["init"]]
    eng = ZSSR(cfg)
    c0, t0 = time.process_time(), time.perf_counter()
    img = eng._tensor(face["lr"].astype(np.float64) / 255.0)
    weights, info = eng.train(img, job["seed"], init=init, snapshots=CURVE)
    out = to_uint8(eng.infer(weights, img), False)
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    rms = eng.last_residual_rms  # the final network's; the curve's inferences below overwrite it
    s = score_pair(face["hr"], out, scale=2)
    curve = {}
    for k, w in sorted(info.get("snapshots", {}).items()):
        sk = score_pair(face["hr"], to_uint8(eng.infer(w, img), False), scale=2)
        curve[str(k)] = [sk["psnr_y"], sk["ssim_y"]]
    curve["stop"] = [s["psnr_y"], s["ssim_y"], info["iterations"]]
    return {"id": face["id"], "source": face["source"], "psnr_y": s["psnr_y"], "ssim_y": s["ssim_y"],
            "iterations": info["iterations"], "cpu_s": cpu, "wall_s": wall, "curve": curve,
            "residual_rms": rms}


def run_face_gradual(job: dict) -> dict:
    """One face through the official gradual x2 (``GradualZSSR``, reference engine): no curve, only the end."""
    from survsr.models.zssr_gradual import GradualZSSR
    from survsr.pipelines.quality import score_pair

    face = job["face"]
    eng = GradualZSSR(job["cfg"], fresh_net_per_stage=job["gradual"] == "fresh")
    c0, t0 = time.process_time(), time.perf_counter()
    out, info = eng.run(face["lr"], job["seed"], name=face["id"])
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    s = score_pair(face["hr"], out, scale=2)
    return {"id": face["id"], "source": face["source"], "psnr_y": s["psnr_y"], "ssim_y": s["ssim_y"],
            "iterations": info["iterations"], "cpu_s": cpu, "wall_s": wall,
            "curve": {"stop": [s["psnr_y"], s["ssim_y"], info["iterations"]]},
            "residual_rms": info["residual_rms"],
            "stages": [{k: st[k] for k in ("stage", "factor", "iterations", "lr_changes", "residual_rms")}
                       for st in info["stages"]]}


def run_set(faces, cfg, init, workers: int, seed: int, gradual: str | None = None) -> tuple[list[dict], float]:
    from survsr.models.zssr import is_dead
    from survsr.pipelines.eval_faces import stable_seed

    jobs = [{"cfg": cfg, "face": f, "init": init, "seed": stable_seed(seed, f["id"]), "gradual": gradual}
            for f in faces]
    t0 = time.perf_counter()
    rows = []
    with mp.get_context("spawn").Pool(workers, initializer=_worker_init, initargs=(1,)) as pool:
        for r in pool.imap_unordered(run_face, jobs, chunksize=1):  # progress: a line per face as it ends
            rows.append(r)
            print(f"  {len(rows):3d}/{len(jobs)} {r['id']}: PSNR-Y {r['psnr_y']:.3f}, {r['iterations']} it., "
                  f"{r['cpu_s']:.0f} CPU-s, residual RMS {r['residual_rms']:.2e}"
                  + (" (dead network)" if is_dead(r["residual_rms"]) else ""), flush=True)
    return sorted(rows, key=lambda r: r["id"]), time.perf_counter() - t0


def summary(name: str, rows: list[dict], wall: float, extra_iters: int = 0, extra_cpu: float = 0.0,
            extra_wall: float = 0.0) -> dict:
    from survsr.models.zssr import is_dead

    iters = sum(r["iterations"] for r in rows) + extra_iters
    cpu = sum(r["cpu_s"] for r in rows) + extra_cpu
    m = {"name": name, "faces": len(rows), "psnr_y": float(np.mean([r["psnr_y"] for r in rows])),
         "ssim_y": float(np.mean([r["ssim_y"] for r in rows])), "iterations": iters, "cpu_s": cpu,
         "wall_s": wall + extra_wall, "faces_per_s": len(rows) / (wall + extra_wall),
         # below DEAD_RMS (0 included) = a dead network, output = bicubic + back-projection (models.zssr.is_dead)
         "dead_networks": sorted(r["id"] for r in rows if is_dead(r.get("residual_rms", float("nan"))))}
    for src in sorted({r["source"] for r in rows}):
        rs = [r for r in rows if r["source"] == src]
        m[f"psnr_y[{src}]"] = float(np.mean([r["psnr_y"] for r in rs]))
    print(f"{name:28} faces {m['faces']:3d}  PSNR-Y {m['psnr_y']:.3f}  SSIM-Y {m['ssim_y']:.4f}  iterations "
          f"{iters:8d}  CPU-s {cpu:9.1f}  wall {m['wall_s']:8.1f}s  {m['faces_per_s']:.4f} faces/s  "
          f"dead networks {len(m['dead_networks'])}/{len(rows)}", flush=True)
    return m


def curve_of(rows: list[dict]) -> dict:
    keys = [str(k) for k in CURVE] + ["stop"]
    return {k: float(np.mean([r["curve"].get(k, r["curve"]["stop"])[0] for r in rows])) for k in keys}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--carphone", type=int, default=12)
    ap.add_argument("--headpose", type=int, default=6, help="faces per head-pose clip (two clips)")
    ap.add_argument("--workers", type=int, default=2, help="processes, one torch thread each")
    ap.add_argument("--init-threads", type=int, default=2)
    ap.add_argument("--skip-full", action="store_true", help="no full (random init) run")
    ap.add_argument("--only-full", action="store_true", help="only the full (random init) run")
    ap.add_argument("--gradual", choices=("carried", "fresh"), default=None,
                    help="with --only-full: the official gradual x2 instead of one jump (network carried over "
                         "from stage to stage, as X2_GRADUAL_IDEAL_CONF, or fresh per stage); ~6x the compute")
    ap.add_argument("--full-json", type=Path, default=None,
                    help="take the full run from this earlier --only-full --json output (same faces) instead")
    ap.add_argument("--warm-full", action="store_true", help="also fine-tune from the init to the stopping rule")
    ap.add_argument("--extra", action="append", default=[],
                    help="NAME:field=value,... another fine-tuning run from the same init with these zssr fields")
    ap.add_argument("--config", default="zssr.yaml")
    ap.add_argument("--fast-config", default="zssr_fast.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="override of the fast config")
    ap.add_argument("--full-set", dest="full_overrides", action="append", default=[],
                    help="override of the full (paper) config, e.g. zssr.adam_eps=1e-16")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.gradual and not args.only_full:
        ap.error("--gradual: with --only-full (a warm init is a one-jump network)")

    import torch

    from survsr.models.zssr_init import train_init
    from survsr.pipelines.zssr_pool import load_config

    base = ["zssr.device=cpu", "zssr.precision=fp32"]
    full_cfg = load_config(args.config, base + args.full_overrides).zssr
    fast = load_config(args.fast_config, base + args.overrides)
    faces = collect(args.carphone, args.headpose)
    print(f"{len(faces)} faces: " + ", ".join(f"{s} {sum(f['source'] == s for f in faces)}"
                                                for s in sorted({f['source'] for f in faces})), flush=True)
    from survsr.models.zssr import bicubic_upscale
    from survsr.pipelines.quality import score_pair

    bic = [score_pair(f["hr"], bicubic_upscale(f["lr"]), scale=2) for f in faces]
    res = {"faces": len(faces), "bicubic": {"psnr_y": float(np.mean([b["psnr_y"] for b in bic])),
                                            "ssim_y": float(np.mean([b["ssim_y"] for b in bic]))},
           "fast_config": dataclasses.asdict(fast), "overrides": args.overrides,
           "full_config": dataclasses.asdict(full_cfg), "full_overrides": args.full_overrides}
    print(f"{'bicubic':28} PSNR-Y {res['bicubic']['psnr_y']:.3f}  SSIM-Y {res['bicubic']['ssim_y']:.4f}", flush=True)

    if args.only_full:
        rows_full, wall_full = run_set(faces, full_cfg, None, args.workers, args.seed, args.gradual)
        name = f"gradual ZSSR ({args.gradual})" if args.gradual else "full ZSSR (random init)"
        res["full"] = summary(name, rows_full, wall_full)
        res["gradual"] = args.gradual
        res["rows_full"] = rows_full
        if not args.gradual:  # a gradual run has no fine-tuning curve, only its end
            res["curve_random"] = curve_of(rows_full)
            print("curve_random  " + "  ".join(f"{k}: {v:.3f}" for k, v in res["curve_random"].items()), flush=True)
        if args.json:
            args.json.write_text(json.dumps(res, indent=1, default=float))
        return 0
    # the init: one task over every LR face (the only data it sees)
    torch.set_num_threads(args.init_threads)
    t0, c0 = time.perf_counter(), time.process_time()
    init_w, iinfo = train_init([f["lr"] for f in faces], fast.zssr, fast.warm_start)
    init_wall, init_cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"init ({iinfo['method']}): {iinfo['face_iterations']} face-iterations, {init_cpu:.1f} CPU-s, "
          f"{init_wall:.1f}s wall", flush=True)
    init_np = [w.numpy() for w in init_w]
    res["init"] = iinfo | {"cpu_s": init_cpu, "wall_s": init_wall}

    def dump() -> None:
        if args.json:
            args.json.write_text(json.dumps(res, indent=1, default=float))

    dump()
    rows_fast, wall_fast = run_set(faces, fast.zssr, init_np, args.workers, args.seed)
    res["fast"] = summary("zssr_fast (warm, capped)", rows_fast, wall_fast, iinfo["face_iterations"], init_cpu,
                          init_wall)
    res["curve_warm"] = curve_of(rows_fast)
    res["rows_fast"] = rows_fast
    dump()
    if args.warm_full:
        wf = dataclasses.replace(fast.zssr, max_iters=full_cfg.max_iters)
        rows_wf, wall_wf = run_set(faces, wf, init_np, args.workers, args.seed)
        res["warm_full"] = summary("warm, to the stopping rule", rows_wf, wall_wf, iinfo["face_iterations"],
                                   init_cpu, init_wall)
        res["curve_warm"] = curve_of(rows_wf)  # snapshots of the uncapped run: every point of the curve
        res["rows_warm_full"] = rows_wf
        dump()
    for spec in args.extra:
        name, _, kv = spec.partition(":")
        import yaml

        fields = {k: yaml.safe_load(v) for k, v in (x.split("=", 1) for x in kv.split(",") if x)}
        rows_x, wall_x = run_set(faces, dataclasses.replace(fast.zssr, **fields), init_np, args.workers, args.seed)
        res[f"extra:{name}"] = summary(f"warm, {name}", rows_x, wall_x, iinfo["face_iterations"], init_cpu, init_wall)
        res[f"curve_warm:{name}"] = curve_of(rows_x)
        dump()
    if args.full_json:
        prev = json.loads(args.full_json.read_text())
        if sorted(r["id"] for r in prev["rows_full"]) != sorted(f["id"] for f in faces):
            raise SystemExit(f"{args.full_json}: not the same faces")
        res["full"], res["curve_random"], res["rows_full"] = prev["full"], prev["curve_random"], prev["rows_full"]
        res["full_from"] = str(args.full_json)
        print(f"{'full ZSSR (random init)':28} (from {args.full_json}) PSNR-Y {res['full']['psnr_y']:.3f}  SSIM-Y "
              f"{res['full']['ssim_y']:.4f}  iterations {res['full']['iterations']}  CPU-s {res['full']['cpu_s']:.1f}")
    elif not args.skip_full:
        rows_full, wall_full = run_set(faces, full_cfg, None, args.workers, args.seed)
        res["full"] = summary("full ZSSR (random init)", rows_full, wall_full)
        res["curve_random"] = curve_of(rows_full)
        res["rows_full"] = rows_full
    if "full" in res:
        f, w = res["full"], res["fast"]
        res["ratio"] = {"iterations": f["iterations"] / w["iterations"], "cpu_s": f["cpu_s"] / w["cpu_s"],
                        "psnr_y_delta": w["psnr_y"] - f["psnr_y"]}
        print(f"full / fast: {res['ratio']['iterations']:.1f}x iterations, {res['ratio']['cpu_s']:.1f}x CPU-s, "
              f"PSNR-Y {res['ratio']['psnr_y_delta']:+.3f} dB", flush=True)
    for name in [k for k in res if k.startswith("curve_")]:
        if name in res:
            print(f"{name:13} " + "  ".join(f"{k}: {v:.3f}" for k, v in res[name].items()), flush=True)
    res["rows_fast"] = rows_fast
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
