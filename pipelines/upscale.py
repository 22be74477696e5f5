"""``survsr upscale IMAGE... --method zssr|bicubic --scale 2 --out DIR``: enlarge still images.

Each output is ``DIR/<input stem>.png`` with a provenance record, listed (path, SHA-256, input and its
SHA-256) in ``DIR/upscale.parquet`` so ``survsr verify DIR`` can check it. ZSSR output is model output: it
carries the visible AI-ENHANCED label by default (``--no-label`` to leave it off; grayscale becomes RGB
then). A bad image (unreadable, 16-bit, too small) is reported by name and the batch goes on; the exit code
is 1 when any image failed.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from survsr.config import config_hash, load
from survsr.images import read_image
from survsr.provenance import (PROVENANCE_KEY, check_output_dir, provenance, sha256_file, stage_record,
                               write_png)
from survsr.stage import Command, batch_exit_code

log = logging.getLogger(__name__)


def upscale_files(paths: list[str | Path], out_dir: str | Path, method: str = "zssr", scale: float = 2.0,
                  cfg=None, seed: int = 0, label: bool = True) -> dict:
    """Upscale each file into ``out_dir/<stem>.png``; returns {"written": [...], "failed": [{path, error}]}."""
    from survsr.models.zssr import ZSSR, ZSSRConfig, bicubic_upscale
    import dataclasses

    cfg = dataclasses.replace(cfg or ZSSRConfig(), scale=float(scale))
    cfg.validate()
    out_dir = check_output_dir(out_dir, paths, "upscale")
    out_dir.mkdir(parents=True, exist_ok=True)
    engine = ZSSR(cfg) if method == "zssr" else None
    chash = config_hash({"method": method, "zssr": dataclasses.asdict(cfg) if engine else None, "scale": scale})
    stems: dict[str, Path] = {}
    written, failed = [], []
    for p in map(Path, paths):
        target = out_dir / f"{p.stem}.png"
        if p.stem in stems:
            failed.append({"path": str(p), "error": f"{p}: output {target} would overwrite that of {stems[p.stem]}"})
            log.error("%s", failed[-1]["error"])
            continue
        stems[p.stem] = p
        try:
            img = read_image(p)
            if engine is not None:
                out, info = engine.run(img, seed=seed, name=str(p))
            else:
                out, info = bicubic_upscale(img, scale), {"device": "cpu"}
        except ValueError as exc:  # ImageError and survsr.models.zssr.check_image both name the file
            msg = str(exc) if str(p) in str(exc) else f"{p}: {exc}"
            failed.append({"path": str(p), "error": msg})
            log.error("%s", msg)
            continue
        except Exception as exc:  # noqa: BLE001 - anything else one file causes: report it, go on
            msg = f"{p}: {type(exc).__name__}: {exc}"
            failed.append({"path": str(p), "error": msg})
            log.error("%s", msg)
            continue
        prov = provenance(kind=f"{method}_upscale", source={"path": str(p.resolve()), "sha256": sha256_file(p)},
                          parents=[], model_output=engine is not None,
                          stages=[stage_record(f"upscale-{method}", chash, seed=seed if engine else None,
                                               device=info.get("device"))])
        text = {PROVENANCE_KEY: prov}
        if engine is not None:  # model output: the label (if on) and, always, metadata that says so
            from survsr.marking import MarkingConfig, mark_document, mark_image, model_output_text

            mcfg = MarkingConfig(enabled=label)
            if label:
                out = mark_image(np.repeat(out[..., None], 3, axis=2) if out.ndim == 2 else out, mcfg)
            text = {PROVENANCE_KEY: mark_document(prov, mcfg), **model_output_text()}
        sha = write_png(target, out, text=text)
        written.append({"path": str(target), "input": str(p), "sha256": sha,
                        **{k: info[k] for k in ("iterations", "seconds") if k in info}})
        _record(out_dir, {"path": target.name, "sha256": sha, "source_path": str(p.resolve()),
                          "source_sha256": prov["source"]["sha256"], "method": method, "scale": float(scale),
                          "seed": seed, "config_hash": chash})
        log.info("%s -> %s (%dx%d)", p, target, out.shape[1], out.shape[0])
    return {"written": written, "failed": failed}


def _record(out_dir: Path, row: dict) -> None:
    """Add/replace the output's row in ``out_dir/upscale.parquet`` (paths relative to out_dir)."""
    import pandas as pd

    from survsr.provenance import write_parquet_atomic

    man = out_dir / "upscale.parquet"
    df = pd.read_parquet(man) if man.is_file() else pd.DataFrame(columns=list(row))
    df = pd.concat([df[df["path"] != row["path"]], pd.DataFrame([row])], ignore_index=True)
    write_parquet_atomic(df.sort_values("path").reset_index(drop=True), man)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from survsr.config import add_config_args

    parser.add_argument("images", nargs="+", help="input images (PNG/JPEG/...); key=value tokens are overrides")
    parser.add_argument("--method", choices=("zssr", "bicubic"), default="zssr")
    parser.add_argument("--scale", type=float, default=2.0)
    parser.add_argument("--out", required=True, help="output directory (outputs keep the input file stem)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-label", action="store_true", help="no visible AI-ENHANCED label on ZSSR output")
    add_config_args(parser, "zssr.yaml")


def main(args: argparse.Namespace) -> int:
    from survsr.config import split_overrides
    from survsr.pipelines.zssr_pool import ZSSRStageConfig

    split_overrides(args, "images")
    cfg = load(ZSSRStageConfig, args.config, args.overrides, default_name="zssr.yaml")
    res = upscale_files(args.images, args.out, args.method, args.scale, cfg.zssr, args.seed,
                        label=not args.no_label)
    print(f"upscaled {len(res['written'])} image(s) into {args.out}; {len(res['failed'])} failed")
    for f in res["failed"]:
        print(f"  FAILED {f['error']}")
    return batch_exit_code(len(res["written"]), len(res["failed"]))


COMMAND = Command(name="upscale", add_arguments=add_arguments, main=main)
