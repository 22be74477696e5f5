"""Ingest speed: decode+detect frames/s and peak memory, for carphone (176x144, 29.97 fps) and a generated
640x360 25 fps clip with a moving face.

Each case runs in fresh worker processes (peak RSS is per process). ``--workers 2`` runs two processes at
once, each on its own copy of the stream (what two Ray detector actors do with two videos / chunks), and
reports their summed throughput. Besides wall-clock fps the CPU-time fps is reported: on a shared machine
it is the steadier figure (wall fps = CPU fps only when the cores are otherwise idle).

    .venv/bin/python benchmarks/ingest.py                 # full run (about 1-3 minutes on 2 idle cores)
    .venv/bin/python benchmarks/ingest.py --smoke         # seconds; checks the benchmark itself works
    .venv/bin/python benchmarks/ingest.py --ray           # also time the whole Ray Data ingest pipeline
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# name -> DetectorConfig overrides. "ingest" = the defaults of configs/ingest.yaml (MTCNN, full scan every 4th
# frame, O-Net following the faces in between, plus the MOG2 motion map); "per-frame" = a full MTCNN scan of
# every frame; "fast" = faces >= 24 px only, full scan every 8th frame; "haar" = the Haar cascade (old default).
SETTINGS = {
    "decode only": None,
    "ingest": {},
    "per-frame": {"full_scan_every": 1},
    "fast": {"full_scan_every": 8, "min_face": 24},
    "haar": {"kind": "haar"},
}


def _work(path: str, det_kw: dict | None, chunk: int, max_frames: int | None, q) -> None:
    import cv2
    import torch

    from survsr.pipelines.ingest import load_config
    from survsr.video.decode import iter_frames
    from survsr.video.detect import detect_sequence, make_detector
    from survsr.video.motion import MotionMap

    cv2.setNumThreads(1)  # one core per worker: the 2-core figure comes from 2 workers
    torch.set_num_threads(1)
    cfg = load_config(None, [f"detector.{k}={v}" for k, v in (det_kw or {}).items()])
    det = make_detector(cfg.detector) if det_kw is not None else None
    motion = MotionMap(cfg.motion) if det_kw is not None and cfg.motion.enabled else None
    w0, c0 = time.perf_counter(), time.process_time()
    n = faces = 0
    first = None  # (frames, wall, cpu) after the first chunk: per-shape kernel set-up is paid by then
    buf = []

    def flush():
        nonlocal faces, first
        if det is not None and buf:
            faces += sum(len(d) for d in detect_sequence(det, buf))
        buf.clear()
        if first is None:
            first = (n, time.perf_counter(), time.process_time())

    for f in iter_frames(path, max_frames=max_frames):
        n += 1
        buf.append(f.image)
        if motion is not None:
            motion.update(f.image)
        if len(buf) >= chunk:
            flush()
    flush()
    steady = (n - first[0], time.process_time() - first[2]) if first and n > first[0] else (0, 0.0)
    q.put({"frames": n, "faces": faces, "wall_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0,
           "steady_frames": steady[0], "steady_cpu_s": steady[1],
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def run_case(path: str, det_kw: dict | None, workers: int, max_frames: int | None, chunk: int = 16) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_work, args=(path, det_kw, chunk, max_frames, q)) for _ in range(workers)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    for p in procs:
        p.join()
    wall = time.perf_counter() - t0
    frames = sum(r["frames"] for r in results)
    slowest = max(r["wall_s"] for r in results)
    return {
        "workers": workers,
        "frames": frames,
        "faces_per_worker": results[0]["faces"],
        "fps_wall": frames / slowest,
        "fps_cpu": frames / sum(r["cpu_s"] for r in results) * workers,  # if each worker had its own core
        # the same after each worker's first chunk (one-off per-shape set-up excluded: a long video's rate)
        "fps_cpu_steady": (sum(r["steady_frames"] for r in results) / max(1e-9, sum(r["steady_cpu_s"] for r in results))
                           * workers),
        "peak_rss_mib_per_worker": max(r["peak_rss_mib"] for r in results),
        "wall_s_incl_startup": wall,
    }


def make_640_clip(path: Path, frames: int) -> Path:
    from survsr.video.synth import moving_face_frames, write_clip

    imgs, _ = moving_face_frames(n=frames, width=640, height=360, sizes=(64, 28), seed=1)
    return write_clip(path, imgs, fps=25)


def run_ray_pipeline(path: str, max_frames: int | None) -> dict:
    from survsr.pipelines.ingest import load_config, run_ingest
    from survsr.ray_utils import RayConfig, init_ray

    init_ray(RayConfig(num_cpus=os.cpu_count()))
    cfg = load_config(None, [f"decode.max_frames={max_frames}"] if max_frames else [])
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        rep = run_ingest([path], out, cfg)
        wall = time.perf_counter() - t0
    return {"frames": rep["frames"], "crops": rep["crops"], "wall_s": wall, "fps_wall": rep["frames"] / wall}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: check that the benchmark runs")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--frames-640", type=int, default=250, help="length of the generated 640x360 clip")
    ap.add_argument("--ray", action="store_true", help="also time the Ray Data ingest pipeline end to end")
    ap.add_argument("--json", default=None, help="write all results here")
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--clips", nargs="+", default=["carphone", "640"], choices=["carphone", "640"])
    args = ap.parse_args(argv)

    from survsr.data import carphone_paths

    max_frames = 20 if args.smoke else None
    workers = [1] if args.smoke else args.workers
    tmp = Path(tempfile.mkdtemp(prefix="survsr-bench-"))
    clips = {}
    if "carphone" in args.clips:
        clips["carphone 176x144 @29.97"] = (str(carphone_paths()["pristine"]), 30000 / 1001)
    if "640" in args.clips:
        n640 = 30 if args.smoke else args.frames_640
        clips["synthetic 640x360 @25"] = (str(make_640_clip(tmp / "clip640.mp4", n640)), 25.0)
    results = []
    print(f"load average before: {os.getloadavg()}  cpus: {os.cpu_count()}")
    print("| clip | setting | workers | frames/s (wall) | frames/s (CPU time) | frames/s (CPU, after 1st chunk) | "
          "x real time (wall) | x real time (CPU, after 1st chunk) | peak RSS/worker MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for clip, (path, fps) in clips.items():
        for name in args.settings:
            kw = SETTINGS[name]
            for w in workers:
                r = run_case(path, kw, w, max_frames)
                r.update(clip=clip, setting=name, realtime_x=r["fps_wall"] / fps)
                results.append(r)
                print(f"| {clip} | {name} | {w} | {r['fps_wall']:.0f} | {r['fps_cpu']:.0f} | "
                      f"{r['fps_cpu_steady']:.0f} | {r['realtime_x']:.1f} | {r['fps_cpu_steady'] / fps:.1f} | "
                      f"{r['peak_rss_mib_per_worker']:.0f} |", flush=True)
    if args.ray:
        for clip, (path, fps) in clips.items():
            r = run_ray_pipeline(path, max_frames)
            r.update(clip=clip, setting="ray pipeline (configs/ingest.yaml)", realtime_x=r["fps_wall"] / fps)
            results.append(r)
            print(f"| {clip} | Ray Data ingest end to end | all | {r['fps_wall']:.0f} | - | {r['realtime_x']:.1f} | - |")
    print(f"load average after: {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
