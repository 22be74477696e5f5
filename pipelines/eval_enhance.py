"""Super-resolve each evaluation face by every method and score it: a plain class (``FaceScorer``) that works
without Ray, and the Ray Data layer that runs it over all faces on an actor pool (one generator / ZSSR set-up
per actor, not per face).

An item is one LR face to enhance: ``key``, ``protocol``, ``face_id``, ``degradation``, ``lr_png`` (bytes),
``ref_png`` (bytes or None: the image to score against), ``methods`` (comma-separated), ``pre_zssr_png``
(a ZSSR output computed earlier, reused instead of recomputed), ``seed``. The result has one row per
(item, method) with the four metrics (NaN without a reference), the sharpness and the output PNG.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from survsr.pipelines.eval_faces import resize
from survsr.pipelines.quality import MetricsConfig, decode_png, score_pair, sharpness
from survsr.provenance import encode_png, sha256_bytes, write_png

log = logging.getLogger(__name__)

METHODS = ("nearest", "bicubic", "zssr", "srgan")
# Named generators are methods too: "srgan-<name>" (e.g. srgan-paper, srgan-distill), placed after "srgan".


def is_srgan(method: str) -> bool:
    return method == "srgan" or method.startswith("srgan-")


def method_order(method: str) -> tuple[int, str]:
    if method in METHODS:
        return METHODS.index(method), ""
    if is_srgan(method):
        return METHODS.index("srgan"), method
    return 99, method
RESULT_COLUMNS = ["key", "protocol", "face_id", "degradation", "method", "psnr_rgb", "ssim_rgb", "psnr_y",
                  "ssim_y", "identical", "sharpness", "seconds", "error", "sr_png"]


def load_zssr_config(config: str | None, overrides: list[str], scale: int):
    """The ZSSR model's config: the ``zssr:`` section of configs/zssr.yaml (or of the given file; a file
    that is just the model's keys also works) with the evaluation's overrides on top."""
    from survsr.models.zssr import ZSSRConfig

    from survsr.config import ConfigError, apply_overrides, from_dict, read_yaml, resolve_path

    path = resolve_path(config, "zssr.yaml")
    data: dict = {}
    if path is not None and (config is not None or path.exists()):
        data = read_yaml(path)
        if isinstance(data.get("zssr"), dict):
            data = dict(data["zssr"])
    apply_overrides(data, overrides)
    cfg = from_dict(ZSSRConfig, data, f"{path}:zssr" if path is not None else "zssr")
    if float(getattr(cfg, "scale", scale)) != float(scale):
        raise ConfigError(f"ZSSR config scale is {cfg.scale} but the evaluation scale is {scale}")
    return cfg


class FaceScorer:
    """Loads what the methods need once, then enhances and scores items."""

    def __init__(self, scale: int = 2, generator: str | None = None, zssr: dict | None = None,
                 metrics: dict | None = None, cache_dir: str | None = None,
                 generators: dict[str, str] | None = None):
        from survsr.config import from_dict

        self.scale = scale
        # method -> generator export: "srgan" (the --generator) and any named "srgan-<name>" ones
        self.generator_paths = dict(generators or {})
        if generator:
            self.generator_paths.setdefault("srgan", generator)
        self._generators: dict[str, Any] = {}
        self.zssr_spec = zssr  # {"config": path|None, "set": [...], "seed": int} or None
        self.metrics_cfg = from_dict(MetricsConfig, metrics or {})
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._zssr_cfg = None
        self._zssr_hash = ""

    # ------------------------------------------------------------ methods
    def _srgan(self, lr: np.ndarray, method: str = "srgan") -> np.ndarray:
        """Through the one generator runner (``survsr.enhance.runner``), as the service and the archive job: the
        same device choice and the same quantisation, so the report scores the pixels users get."""
        if method not in self._generators:
            from survsr.enhance.runner import Enhancer

            path = self.generator_paths.get(method)
            if path is None:
                raise ValueError(f"no generator for method {method!r}")
            runner = Enhancer(path)
            if runner.scale != self.scale:
                raise ValueError(f"{path}: generator is x{runner.scale}, evaluation scale is x{self.scale}")
            self._generators[method] = runner
        rgb = np.repeat(lr[..., None], 3, axis=2) if lr.ndim == 2 else lr
        return self._generators[method].enhance([np.ascontiguousarray(rgb)])[0]

    def _zssr(self, lr: np.ndarray, seed: int) -> tuple[np.ndarray, dict]:
        from survsr.models.zssr import super_resolve

        from survsr.config import config_hash

        if self._zssr_cfg is None:
            spec = self.zssr_spec or {}
            self._zssr_cfg = load_zssr_config(spec.get("config"), list(spec.get("set") or []), self.scale)
            self._zssr_hash = config_hash(self._zssr_cfg)
        # ZSSR on CPU costs seconds per face: outputs are cached by (input, config, seed) so a re-run
        # of the evaluation (or the demo) resumes instead of recomputing.
        cache = None
        if self.cache_dir is not None:
            key = sha256_bytes(lr.tobytes() + f"{lr.shape}|{self._zssr_hash}|{seed}".encode())[:32]
            cache = self.cache_dir / f"{key}.png"
            if cache.is_file():
                try:
                    return decode_png(cache.read_bytes()), {"cached": True}
                except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed
                    pass
        out, info = super_resolve(lr, self._zssr_cfg, seed=seed)
        out = np.asarray(out, dtype=np.uint8)
        if cache is not None:
            from survsr.provenance import PROVENANCE_KEY, provenance, stage_record

            # model output like any other: say so in the file, with the config and seed that made it
            doc = provenance("zssr-eval-cache", source=None,
                             parents=[{"path": "(evaluation LR face)", "sha256": sha256_bytes(encode_png(lr))}],
                             stages=[stage_record("evaluate-zssr", self._zssr_hash, seed=seed, device="cpu")],
                             model_output=True)
            write_png(cache, out, text={PROVENANCE_KEY: doc})
        return out, dict(info or {})

    def upscale(self, lr: np.ndarray, method: str, seed: int = 0,
                pre_zssr: np.ndarray | None = None) -> np.ndarray:
        h, w = lr.shape[:2]
        size = (w * self.scale, h * self.scale)
        if method == "nearest":
            return resize(lr, size, "nearest")
        if method == "bicubic":
            return resize(lr, size, "bicubic")
        if is_srgan(method):
            return self._srgan(lr, method)
        if method == "zssr":
            if pre_zssr is not None:
                return pre_zssr
            return self._zssr(lr, seed)[0]
        raise ValueError(f"unknown method {method!r} (known: {', '.join(METHODS)})")

    # ------------------------------------------------------------ items
    def process(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        lr = decode_png(item["lr_png"])
        ref = decode_png(item["ref_png"]) if item.get("ref_png") is not None else None
        pre = decode_png(item["pre_zssr_png"]) if item.get("pre_zssr_png") is not None else None
        rows = []
        for method in [m for m in str(item["methods"]).split(",") if m]:
            row = {k: item[k] for k in ("key", "protocol", "face_id", "degradation")}
            row.update(method=method, psnr_rgb=math.nan, ssim_rgb=math.nan, psnr_y=math.nan,
                       ssim_y=math.nan, identical=False, sharpness=math.nan, error=None, sr_png=None)
            t0 = time.perf_counter()
            try:
                sr = self.upscale(lr, method, int(item.get("seed") or 0), pre)
                row["seconds"] = time.perf_counter() - t0
                row["sharpness"] = sharpness(sr)
                row["sr_png"] = encode_png(sr)
                if ref is not None:
                    row.update(score_pair(ref, sr, scale=self.scale, cfg=self.metrics_cfg,
                                          ref_name=f"{item['face_id']} reference",
                                          test_name=f"{item['face_id']} {method} output"))
            except Exception as exc:  # noqa: BLE001 - one failing face/method is reported, the rest go on
                row["seconds"] = time.perf_counter() - t0
                row["error"] = f"{type(exc).__name__}: {exc}"
                log.warning("%s %s failed: %s\n%s", item["key"], method, exc, traceback.format_exc(limit=3))
            rows.append(row)
        return rows

    def __call__(self, batch):
        """Ray Data ``map_batches`` entry (pandas batches)."""
        import pandas as pd

        rows = []
        for item in batch.to_dict("records"):
            rows.extend(self.process(item))
        return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def run_local(items: list[dict], **enhancer_kwargs) -> list[dict]:
    enh = FaceScorer(**enhancer_kwargs)
    rows: list[dict] = []
    for i, item in enumerate(items, 1):
        rows.extend(enh.process(item))
        log.info("evaluated %d/%d faces", i, len(items))
    return rows


def run_ray(items: list[dict], *, actors: int, batch_size: int,
            **enhancer_kwargs) -> list[dict]:
    """The same work on a Ray Data actor pool; rows come back in no particular order (callers sort)."""
    import ray.data

    from survsr.ray_utils import init_ray

    init_ray()
    size = max(1, min(actors, len(items)))
    # Many small blocks: one ZSSR face costs seconds, so work must spread over the actors evenly.
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), size * 4)))
    out = ds.map_batches(FaceScorer, fn_constructor_kwargs=enhancer_kwargs, batch_size=batch_size,
                         batch_format="pandas", compute=ray.data.ActorPoolStrategy(size=size), num_cpus=1)
    rows = out.take_all()
    return [dict(r) for r in rows]
