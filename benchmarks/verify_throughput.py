"""How fast ``survsr verify`` checks a run: outputs/s for a synthetic ingest + ZSSR-like run on carphone.

    .venv/bin/python benchmarks/verify_throughput.py [--crops 600] [--pixels] [--smoke]

Builds ``--crops`` chains (native crop -> 32x32 LR -> 64x64 "HR", 3 PNGs each, manifests like the stages
write them, all from the real carphone clip), then times ``verify_paths`` on the run directory.
CPU only; no GPU involved.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build(root: Path, n_crops: int) -> int:
    import av
    import cv2
    import pandas as pd

    from survsr.data import carphone_paths
    from survsr.provenance import (PROVENANCE_KEY, provenance, sha256_file, stage_record, write_parquet_atomic,
                                   write_png)

    src = root / "input" / "carphone.mp4"
    src.parent.mkdir(parents=True)
    shutil.copyfile(carphone_paths()["pristine"], src)
    sha = sha256_file(src)
    with av.open(str(src)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    faces, hrs = [], []
    ing, z = stage_record("ingest", "cfgI"), stage_record("zssr", "cfgZ", seed=0, device="cpu")
    for i in range(n_crops):
        fi, k = i % len(frames), i // len(frames)
        x, y, w, h = 40 + 2 * (k % 10), 16 + (k // 10), 64, 72
        source = {"path": str(src), "sha256": sha, "frame_index": fi, "time_s": fi * 1001 / 30000,
                  "box": [x, y, w, h]}
        cid = f"{sha[:12]}-f{fi:06d}-{k}"
        native = frames[fi][y:y + h, x:x + w]
        nrel, lrel = f"crops/native/{cid}.png", f"crops/lr/{cid}.png"
        nsha = write_png(root / "faces" / nrel, native, {PROVENANCE_KEY: provenance(
            "crop_native", source=source, parents=[{"path": str(src), "sha256": sha}], stages=[ing],
            model_output=False)})
        lr = cv2.resize(native, (32, 32), interpolation=cv2.INTER_AREA)
        lsha = write_png(root / "faces" / lrel, lr, {PROVENANCE_KEY: provenance(
            "crop_lr", source=source, parents=[{"path": str(src), "sha256": sha}], stages=[ing],
            model_output=False)})
        faces.append(dict(crop_id=cid, source_path=str(src), source_sha256=sha, frame_index=fi, box_x=x, box_y=y,
                          box_w=w, box_h=h, native_path=nrel, native_sha256=nsha, lr_path=lrel, sha256=lsha))
        hsha = write_png(root / "zssr" / f"hr/{cid}.png", cv2.resize(lr, (64, 64), interpolation=cv2.INTER_CUBIC),
                         {PROVENANCE_KEY: provenance("zssr_hr", source=source,
                                                     parents=[{"path": f"../faces/{lrel}", "sha256": lsha}],
                                                     stages=[ing, z], model_output=True)})
        hrs.append(dict(crop_id=cid, hr_path=f"hr/{cid}.png", sha256=hsha))
    write_parquet_atomic(pd.DataFrame(faces), root / "faces" / "faces.parquet")
    write_parquet_atomic(pd.DataFrame(hrs), root / "zssr" / "zssr.parquet")
    return 3 * n_crops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--crops", type=int, default=600)
    ap.add_argument("--pixels", action="store_true", help="also compare native crops with decoded frames")
    ap.add_argument("--smoke", action="store_true", help="tiny size (CI)")
    args = ap.parse_args()
    n = 12 if args.smoke else args.crops
    from survsr.verify import VERIFIED, verify_paths

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        t = time.perf_counter()
        files = build(root, n)
        built = time.perf_counter() - t
        t = time.perf_counter()
        res = verify_paths([root / "faces", root / "zssr"], pixels=args.pixels)
        dt = time.perf_counter() - t
    assert len(res) == files and all(r.status == VERIFIED for r in res), "benchmark run did not verify"
    print(f"built {files} PNGs in {built:.1f}s; verify{' --pixels' if args.pixels else ''}: {files} outputs in "
          f"{dt:.2f}s = {files / dt:.0f} outputs/s")


if __name__ == "__main__":
    main()
