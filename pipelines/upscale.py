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
from survsr.provenance import PROVENANCE_KEY, provenance, sha256_file, stage_record, write_png

log = logging.getLogger(__name__)


class ImageError(ValueError):
    """An input image cannot be used; the message names the file."""


def read_image_uint8(path: str | Path) -> np.ndarray:
    """uint8 RGB HxWx3, or HxW for grayscale files; clear errors for what ZSSR cannot take."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                raise ImageError(f"{path}: {mode} ({'16-bit' if '16' in mode else '32-bit'}) image: "
                                 "only 8-bit images are supported, convert it to 8-bit first")
            if mode in ("L", "1"):
                return np.asarray(im.convert("L"), dtype=np.uint8).copy()
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ImageError(f"{path}: not a readable image ({exc})") from None


def upscale_files(paths: list[str | Path], out_dir: str | Path, method: str = "zssr", scale: float = 2.0,
                  cfg=None, seed: int = 0, label: bool = True, warm_start=None) -> dict:
    """Upscale each file into ``out_dir/<stem>.png``; returns {"written": [...], "failed": [{path, error}]}.
    ``warm_start`` (a ``WarmStartConfig`` with ``enabled``): ZSSR first learns one init from the given images'
    internal pairs (theirs only), then each image fine-tunes from it."""
    from survsr.models.zssr import ZSSR, ZSSRConfig, bicubic_upscale
    import dataclasses

    cfg = dataclasses.replace(cfg or ZSSRConfig(), scale=float(scale))
    cfg.validate()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    engine = ZSSR(cfg) if method == "zssr" else None
    warm = engine is not None and warm_start is not None and warm_start.enabled
    chash = config_hash({"method": method, "zssr": dataclasses.asdict(cfg) if engine else None, "scale": scale}
                        | ({"warm_start": dataclasses.asdict(warm_start)} if warm else {}))
    init, init_sha = (_warm_init(paths, cfg, warm_start) if warm else (None, None))
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
            img = read_image_uint8(p)
            if engine is not None:
                out, info = engine.run(img, seed=seed, name=str(p), init=init)
            else:
                out, info = bicubic_upscale(img, scale), {"device": "cpu"}
        except ValueError as exc:  # ImageError and survsr.models.zssr.check_image both name the file
            msg = str(exc) if str(p) in str(exc) else f"{p}: {exc}"
            failed.append({"path": str(p), "error": msg})
            log.error("%s", msg)
            continue
        prov = provenance(kind=f"{method}_upscale", source={"path": str(p.resolve()), "sha256": sha256_file(p)},
                          parents=[], model_output=engine is not None,
                          stages=[stage_record(f"upscale-{method}", chash, seed=seed if engine else None,
                                               device=info.get("device"),
                                               **({"warm_start_init_sha256": init_sha} if init_sha else {}))])
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


def _warm_init(paths, cfg, warm_start):
    """The warm-start init learnt from the readable ones among ``paths`` (a bad one is reported by the loop)."""
    from survsr.models.zssr import check_image
    from survsr.models.zssr_init import init_to_bytes, sha256_bytes, train_init

    images = []
    for p in paths:
        try:
            img = read_image_uint8(p)
            check_image(img, str(p))
            images.append(img)
        except ValueError:
            continue
    if not images:
        return None, None
    weights, info = train_init(images, cfg, warm_start)
    sha = sha256_bytes(init_to_bytes(weights))
    log.info("warm-start init %s from %d image(s): %s, %d face-iterations, %.1fs", sha[:16], len(images),
             info["method"], info["face_iterations"], info["seconds"])
    return weights, sha


def _record(out_dir: Path, row: dict) -> None:
    """Add/replace the output's row in ``out_dir/upscale.parquet`` (paths relative to out_dir)."""
    import pandas as pd

    from survsr.provenance import write_parquet_atomic

    man = out_dir / "upscale.parquet"
    df = pd.read_parquet(man) if man.is_file() else pd.DataFrame(columns=list(row))
    df = pd.concat([df[df["path"] != row["path"]], pd.DataFrame([row])], ignore_index=True)
    write_parquet_atomic(df.sort_values("path").reset_index(drop=True), man)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from survsr.cli import add_config_args

    parser.add_argument("images", nargs="+", help="input images (PNG/JPEG/...); key=value tokens are overrides")
    parser.add_argument("--method", choices=("zssr", "bicubic"), default="zssr")
    parser.add_argument("--scale", type=float, default=2.0)
    parser.add_argument("--out", required=True, help="output directory (outputs keep the input file stem)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-label", action="store_true", help="no visible AI-ENHANCED label on ZSSR output")
    add_config_args(parser, "zssr.yaml")


def main(args: argparse.Namespace) -> int:
    from survsr.cli import split_overrides
    from survsr.pipelines.zssr_pool import ZSSRStageConfig

    split_overrides(args, "images")
    cfg = load(ZSSRStageConfig, args.config, args.overrides, default_name="zssr.yaml")
    res = upscale_files(args.images, args.out, args.method, args.scale, cfg.zssr, args.seed,
                        label=not args.no_label, warm_start=cfg.warm_start)
    print(f"upscaled {len(res['written'])} image(s) into {args.out}; {len(res['failed'])} failed")
    for f in res["failed"]:
        print(f"  FAILED {f['error']}")
    return 1 if res["failed"] else 0
