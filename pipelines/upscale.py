"""``survsr upscale IMAGE... --method zssr|zssr-gradual|srgan|bicubic [--generator G.safetensors] --out DIR``:
enlarge still images.

``zssr-gradual`` (x2 only) is the official code's ``X2_GRADUAL_IDEAL_CONF`` (``survsr.models.zssr_gradual``:
six stages, the network carried over, the official fathers and resampler whatever the config says): the
configuration the ZSSR paper's image-SR table was most likely made with, at about 5x one jump's compute
(docs/benchmarks.md, issue 17). The face pipeline keeps one jump. ``--gradual-restart-dead`` (opt-in, not in the
official code) retrains a gradual stage whose network died; with ``zssr.adam_eps=1e-16`` it is the pair that
reaches the paper's Set5 and Set14 figures (docs/benchmarks.md "2026-12-06 (last)").

Each output is ``DIR/<input stem>.png`` with a provenance record, listed (path, SHA-256, input and its
SHA-256) in ``DIR/upscale.parquet`` so ``survsr verify DIR`` can check it. ZSSR and SRGAN output is model
output: it carries the visible AI-ENHANCED label by default, on a band ADDED below the picture (the picture's
pixels are exactly those of ``--no-label``; grayscale becomes RGB then), and always the model-output
metadata. ``--method srgan`` runs a trained generator export (``survsr train``'s generator.safetensors) in
one batched forward per input size, on the GPU when there is one. A bad image (unreadable, 16-bit, too
small) is reported by name and the batch goes on; the exit code is 1 when any image failed.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from survsr.config import ConfigError, config_hash, load
from survsr.images import read_image
from survsr.provenance import (PROVENANCE_KEY, OutputOverlapError, check_output_dir, provenance, sha256_file,
                               stage_record, write_png)
from survsr.stage import Command, batch_exit_code

log = logging.getLogger(__name__)


def _srgan_outputs(generator: str | Path, images: list[np.ndarray]) -> tuple[list[np.ndarray], str]:
    """Every image through the one generator runner (``survsr.enhance.runner``: batched per input size, on a
    GPU when there is one, the quantisation every other path uses). RGB uint8 in and out."""
    from survsr.enhance.runner import Enhancer

    runner = Enhancer(generator)
    return runner.enhance(images), runner.device_name


def upscale_files(paths: list[str | Path], out_dir: str | Path, method: str = "zssr", scale: float = 2.0,
                  cfg=None, seed: int = 0, label: bool = True, generator: str | Path | None = None,
                  warm_start=None, restart_dead: bool = False) -> dict:
    """Upscale each file into ``out_dir/<stem>.png``; returns {"written": [...], "failed": [{path, error}]}.
    ``warm_start`` (a ``WarmStartConfig`` with ``enabled``): ZSSR first learns one init from the given images'
    internal pairs (theirs only), then each image fine-tunes from it. ``restart_dead`` (zssr-gradual only):
    ``GradualZSSR``'s opt-in retraining of a stage whose network died."""
    from survsr.models.zssr import ZSSR, ZSSRConfig, bicubic_upscale
    from survsr.models.zssr_gradual import GradualZSSR
    import dataclasses
    import functools

    gen_info: dict = {}
    if method == "srgan":
        from survsr.models.export import read_metadata

        if generator is None:
            raise ValueError("--method srgan needs --generator G.safetensors (survsr train's export)")
        generator = Path(generator)
        if not generator.is_file():
            raise ValueError(f"{generator}: generator export not found")
        try:
            gcfg = read_metadata(generator)["generator_config"]
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own types on a bad file
            raise ValueError(f"{generator}: not a survsr generator export ({exc})") from None
        if float(gcfg.get("scale", 2)) != float(scale):
            raise ValueError(f"{generator}: the generator is x{gcfg.get('scale')}, --scale is {scale:g}")
        gen_info = {"path": str(generator.resolve()), "sha256": sha256_file(generator)}
    if method == "zssr-gradual":
        if float(scale) != 2.0:
            raise ValueError(f"--method zssr-gradual: x2 only (the official gradual factors), not --scale {scale:g}")
        if warm_start is not None and warm_start.enabled:
            raise ValueError("--method zssr-gradual: no warm start (a warm init is a one-jump network)")
    elif restart_dead:
        raise ValueError(f"--gradual-restart-dead: only with --method zssr-gradual, not --method {method}")
    cfg = dataclasses.replace(cfg or ZSSRConfig(), scale=float(scale))
    cfg.validate()
    out_dir = check_output_dir(out_dir, paths, "upscale")
    out_dir.mkdir(parents=True, exist_ok=True)
    engine = {"zssr": ZSSR, "zssr-gradual": functools.partial(GradualZSSR, restart_dead=restart_dead)}.get(method)
    engine = engine(cfg) if engine else None
    model_output = method in ("zssr", "zssr-gradual", "srgan")
    warm = engine is not None and warm_start is not None and warm_start.enabled
    # engine.cfg: what ran (gradual forces the official fathers and resampler, and its record says so)
    chash = config_hash({"method": method, "zssr": dataclasses.asdict(engine.cfg) if engine else None, "scale": scale,
                         "generator_sha256": gen_info.get("sha256")}
                        | ({"warm_start": dataclasses.asdict(warm_start)} if warm else {})
                        # only when on, so the hash of every run without it is what it always was
                        | ({"gradual_restart_dead": True} if restart_dead else {}))
    init, init_sha = (_warm_init(paths, cfg, warm_start) if warm else (None, None))
    stems: dict[str, Path] = {}
    written, failed = [], []
    inputs: list[tuple[Path, Path, np.ndarray]] = []

    def fail(p: Path, exc: Exception) -> None:
        msg = str(exc) if str(p) in str(exc) else f"{p}: {exc}"
        failed.append({"path": str(p), "error": msg})
        log.error("%s", msg)

    for p in map(Path, paths):
        target = out_dir / f"{p.stem}.png"
        if p.stem in stems:
            failed.append({"path": str(p), "error": f"{p}: output {target} would overwrite that of {stems[p.stem]}"})
            log.error("%s", failed[-1]["error"])
            continue
        stems[p.stem] = p
        try:
            inputs.append((p, target, read_image(p)))
        except ValueError as exc:  # ImageError names the file
            fail(p, exc)
    srgan_out: dict[str, np.ndarray] = {}
    srgan_device = None
    if method == "srgan" and inputs:
        rgb = [np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img for _, _, img in inputs]
        outs, srgan_device = _srgan_outputs(generator, rgb)
        srgan_out = {str(p): o for (p, _, _), o in zip(inputs, outs)}
    for p, target, img in inputs:
        try:
            if engine is not None:
                out, info = engine.run(img, seed=seed, name=str(p), init=init)
            elif method == "srgan":
                out, info = srgan_out[str(p)], {"device": srgan_device}
            else:
                out, info = bicubic_upscale(img, scale), {"device": "cpu"}
        except ValueError as exc:  # ImageError and survsr.models.zssr.check_image both name the file
            fail(p, exc)
            continue
        except Exception as exc:  # noqa: BLE001 - anything else one file causes: report it, go on
            fail(p, RuntimeError(f"{type(exc).__name__}: {exc}"))
            continue
        parents = [{"path": gen_info["path"], "sha256": gen_info["sha256"]}] if gen_info else []
        prov = provenance(kind=f"{method}_upscale", source={"path": str(p.resolve()), "sha256": sha256_file(p)},
                          parents=parents, model_output=model_output,
                          stages=[stage_record(f"upscale-{method}", chash, seed=seed if engine else None,
                                               model_sha256=gen_info.get("sha256"), device=info.get("device"),
                                               **({"warm_start_init_sha256": init_sha} if init_sha else {}),
                                               # which stages died and were trained again (1-based)
                                               **({"restarted_stages": [i + 1 for i, st in enumerate(info["stages"])
                                                                        if "restarted_after" in st]}
                                                  if restart_dead else {}))])
        text = {PROVENANCE_KEY: prov}
        if model_output:  # model output: the label (if on) and, always, metadata that says so
            from survsr.marking import MarkingConfig, mark_document, mark_image, model_output_text

            mcfg = MarkingConfig(enabled=label)  # default mode extend: a band below, no picture pixel covered
            if label:
                out = mark_image(np.repeat(out[..., None], 3, axis=2) if out.ndim == 2 else out, mcfg)
            text = {PROVENANCE_KEY: mark_document(prov, mcfg), **model_output_text()}
        sha = write_png(target, out, text=text)
        written.append({"path": str(target), "input": str(p), "sha256": sha,
                        **{k: info[k] for k in ("iterations", "seconds") if k in info}})
        _record(out_dir, {"path": target.name, "sha256": sha, "source_path": str(p.resolve()),
                          "source_sha256": prov["source"]["sha256"], "method": method, "scale": float(scale),
                          "seed": seed, "config_hash": chash, "generator_sha256": gen_info.get("sha256", "")})
        log.info("%s -> %s (%dx%d)", p, target, out.shape[1], out.shape[0])
    return {"written": written, "failed": failed}


def _warm_init(paths, cfg, warm_start):
    """The warm-start init learnt from the readable ones among ``paths`` (a bad one is reported by the loop)."""
    from survsr.models.zssr import check_image
    from survsr.models.zssr_init import init_to_bytes, sha256_bytes, train_init

    images = []
    for p in paths:
        try:
            img = read_image(p)
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
    from survsr.config import add_config_args

    parser.add_argument("images", nargs="+", help="input images (PNG/JPEG/...); key=value tokens are overrides")
    parser.add_argument("--method", choices=("zssr", "zssr-gradual", "srgan", "bicubic"), default="zssr",
                        help="zssr-gradual: the official gradual x2 (~5x zssr's compute; the paper's image-SR "
                             "figures)")
    parser.add_argument("--generator", default=None,
                        help="--method srgan: the generator export (survsr train's RUN/generator.safetensors)")
    parser.add_argument("--scale", type=float, default=2.0)
    parser.add_argument("--out", required=True, help="output directory (outputs keep the input file stem)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gradual-restart-dead", action="store_true",
                        help="--method zssr-gradual: retrain a stage whose network died (opt-in, not in the official "
                             "code; with zssr.adam_eps=1e-16 it reaches the paper's Set5/Set14 figures)")
    parser.add_argument("--no-label", action="store_true",
                        help="no visible AI-ENHANCED band (added below ZSSR/SRGAN output; metadata marks it anyway)")
    add_config_args(parser, "zssr.yaml")


def main(args: argparse.Namespace) -> int:
    from survsr.config import split_overrides
    from survsr.pipelines.zssr_pool import ZSSRStageConfig

    split_overrides(args, "images")
    cfg = load(ZSSRStageConfig, args.config, args.overrides, default_name="zssr.yaml")
    if args.method == "srgan" and not args.generator:
        raise ConfigError("--method srgan needs --generator G.safetensors")
    try:
        res = upscale_files(args.images, args.out, args.method, args.scale, cfg.zssr, args.seed,
                            label=not args.no_label, generator=args.generator, warm_start=cfg.warm_start,
                            restart_dead=args.gradual_restart_dead)
    except OutputOverlapError:  # a usage error: exit 2 (survsr.stage.run_command), nothing written
        raise
    except ValueError as exc:  # the generator itself is unusable: nothing to do for any image
        print(f"survsr upscale: {exc}")
        return 1
    print(f"upscaled {len(res['written'])} image(s) into {args.out}; {len(res['failed'])} failed")
    for f in res["failed"]:
        print(f"  FAILED {f['error']}")
    return batch_exit_code(len(res["written"]), len(res["failed"]))


COMMAND = Command(name="upscale", add_arguments=add_arguments, main=main)
