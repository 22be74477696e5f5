"""Face-stage precision on real camera footage: tracks kept per clip vs what a person sees, per detector.

Runs the plain ingest (``run_ingest(use_ray=False)``, configs/ingest.yaml + the setting's overrides) on each
clip of /work/shared/data/footage (six GIFs; its README counts the faces by eye) and both carphone clips,
prints a markdown table (one row per clip, one column group per setting) and writes one contact sheet PNG
per clip and setting (the best-quality crop of every kept track, 64x64, captions below the crops).

    .venv/bin/python benchmarks/footage.py --out runs/footage --sheets docs/img/footage
    .venv/bin/python benchmarks/footage.py --settings mtcnn haar --clips store-aisle carphone-pristine
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FOOTAGE = Path(os.environ.get("SURVSR_FOOTAGE", "/work/shared/data/footage"))
# What its README says a person sees: (min, max) faces to find.
EXPECTED = {
    "head-pose-face-detection-female": (1, 1),
    "head-pose-face-detection-male": (1, 1),
    "people-detection": (0, 1),
    "person-bicycle-car-detection": (0, 0),
    "store-aisle-detection": (0, 1),
    "worker-zone-detection": (0, 0),
    "carphone-pristine": (1, 1),
    "carphone-distorted": (1, 1),
}
SETTINGS = {
    "mtcnn": [],  # the default (configs/ingest.yaml)
    "haar": ["detector.kind=haar"],  # the previous default, same filters
    "haar-nofilter": ["detector.kind=haar", "motion.enabled=false"],  # the previous pipeline as it was
}


def clips() -> dict[str, str]:
    from survsr.data import carphone_paths

    out = {p.stem: str(p) for p in sorted(FOOTAGE.glob("*.gif"))}
    cp = carphone_paths()
    out["carphone-pristine"] = str(cp["pristine"])
    out["carphone-distorted"] = str(cp["distorted"])
    return out


def contact_sheet(out_dir: Path, df, path: Path, title: str) -> None:
    """One 64x64 tile per kept track (its best-quality crop), caption (track, score) under each tile."""
    from PIL import Image, ImageDraw

    tiles = []
    for tid, g in df.groupby("track_id", sort=True):
        best = g.sort_values("quality", ascending=False).iloc[0]
        img = Image.open(out_dir / best["native_path"]).convert("RGB").resize((64, 64), Image.BICUBIC)
        tiles.append((img, f"t{tid.split('-t')[-1]} {best['score']:.2f}"))
    n = max(1, len(tiles))
    sheet = Image.new("RGB", (max(200, 70 * n), 64 + 30), (255, 255, 255))
    d = ImageDraw.Draw(sheet)
    d.text((2, 0), title, fill=(0, 0, 0))
    if not tiles:
        d.text((2, 40), "no tracks kept", fill=(0, 0, 0))
    for i, (img, cap) in enumerate(tiles):
        sheet.paste(img, (70 * i + 3, 12))
        d.text((70 * i + 3, 12 + 66), cap, fill=(0, 0, 0))  # below the crop, never on it
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/footage")
    ap.add_argument("--sheets", default=None, help="write contact sheets here (e.g. docs/img/footage)")
    ap.add_argument("--settings", nargs="+", default=["mtcnn", "haar"], choices=list(SETTINGS))
    ap.add_argument("--clips", nargs="+", default=None, help="clip names (default: all)")
    ap.add_argument("--json", default=None)
    ap.add_argument("overrides", nargs="*", help="extra key=value overrides for every setting")
    args = ap.parse_args(argv)

    import pandas as pd

    from survsr.pipelines.ingest import load_config, run_ingest

    all_clips = clips()
    names = args.clips or list(all_clips)
    results = {}
    print(f"load average before: {os.getloadavg()}  cpus: {os.cpu_count()}", flush=True)
    for setting in args.settings:
        cfg = load_config(None, SETTINGS[setting] + list(args.overrides))
        for name in names:
            out = Path(args.out) / setting / name
            t0 = time.perf_counter()
            rep = run_ingest([all_clips[name]], out, cfg, use_ray=False)
            dt = time.perf_counter() - t0
            v = rep["videos"][0] if rep["videos"] else {"frames": 0, "tracks": 0}
            df = pd.read_parquet(out / "faces.parquet")
            results[(setting, name)] = {**v, "seconds": dt, "failed": rep["failed"]}
            if args.sheets:
                contact_sheet(out, df, Path(args.sheets) / f"{name}-{setting}.png", f"{name} [{setting}]")
            print(f"{setting:14s} {name:34s} frames {v['frames']:4d} dets {v.get('faces', 0):5d} "
                  f"tracks {v.get('tracks_found', 0):3d} -> kept {v['tracks']:2d} "
                  f"dropped {v.get('tracks_dropped')} frames_in_tracks {v.get('frames_in_tracks')} "
                  f"{dt:.1f}s", flush=True)
    print(f"load average after: {os.getloadavg()}")
    head = "| clip | a person sees | " + " | ".join(f"{s}: tracks kept (found) | {s}: frames w/ kept face"
                                                      for s in args.settings) + " |"
    print(head)
    print("|" + " --- |" * (2 + 2 * len(args.settings)))
    for name in names:
        lo, hi = EXPECTED.get(name, (None, None))
        sees = "?" if lo is None else (str(lo) if lo == hi else f"{lo}-{hi}")
        cells = []
        for s in args.settings:
            r = results[(s, name)]
            ok = lo is not None and lo <= r["tracks"] <= hi
            cells.append(f"{r['tracks']} ({r.get('tracks_found', 0)}){'' if ok else ' ✗'}")
            cells.append(f"{r.get('frames_in_tracks', 0)}/{r['frames']}")
        print(f"| {name} | {sees} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({f"{s}/{n}": r for (s, n), r in results.items()}, indent=2,
                                              default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
