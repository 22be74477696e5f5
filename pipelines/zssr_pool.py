"""``survsr zssr --faces DIR --out DIR2``: the synthetic HR set, one ZSSR network per LR face, on a Ray pool.

Ray Data ``map_batches`` over ``DIR/faces.parquet`` with an ``ActorPoolStrategy``: each actor holds one batched
engine (``survsr.models.zssr_batched.BatchedZSSR``) that trains a whole batch of faces' networks at once. Per face the
actor writes ``DIR2/hr/<crop_id>.png`` (64x64, provenance inside) and then ``DIR2/records/<crop_id>.json``,
both atomically; the record is the proof a face is done, so a re-run skips it (resume) and a face is never
done twice. A failing face is retried alone, then reported in ``DIR2/zssr_failures.json``; the others go on.
``DIR2/zssr.parquet`` is rebuilt from the records at the end of every run.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from survsr.models.zssr import ZSSRConfig, is_dead
from survsr.models.zssr_init import WarmStartConfig
from survsr import telemetry
from survsr.config import ConfigError, config_hash, from_dict, load, to_dict
from survsr.ray_utils import use_address
from survsr.stage import Stage, batch_exit_code
from survsr.console import FORMAT, worker_log_level
from survsr.images import read_image
from survsr.provenance import (
    PROVENANCE_KEY, append_audit, atomic_write, atomic_write_json, provenance, sha256_file, stage_record, write_parquet_atomic,
    write_png,
)

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("crop_id", "lr_path", "sha256", "split")
# residual_rms: what the network added to the bicubic upscale; 0 = a dead network (the HR face is then bicubic
# plus back-projection, see survsr.models.zssr.residual_rms); NaN for records written before it was kept
MANIFEST_COLUMNS = ["crop_id", "hr_path", "sha256", "iterations", "final_lr", "final_loss", "seconds",
                    "config_hash", "device", "split", "lr_path", "seed", "residual_rms"]


@dataclasses.dataclass
class PoolConfig:
    actors: int = 1
    num_gpus: float | None = None     # per actor; None = 1 if the cluster has GPUs, else 0
    num_cpus: float = 1.0
    batch_size: int = 512             # faces per map_batches call
    slots: int = 512                  # networks trained at once in one engine
    retries: int = 1
    seed: int = 0

    def validate(self) -> None:
        if self.actors < 1 or self.batch_size < 1 or self.slots < 1 or self.retries < 0 or self.num_cpus <= 0:
            raise ValueError("actors, batch_size, slots >= 1, retries >= 0, num_cpus > 0 required")


@dataclasses.dataclass
class SelectConfig:
    # Moreira et al. run ZSSR only on the discriminator's faces (role D; the test split too, which the
    # evaluation needs); the generator's faces (role G) stay LR. true: also the G faces, which the
    # pseudo-pair distillation option (configs/srgan_distill.yaml) needs as its targets.
    generator_faces: bool = False
    d_fraction: float = 0.7  # only for a faces.parquet without a role column (see survsr.pipelines.roles)
    role_seed: int = 0


@dataclasses.dataclass
class ZSSRStageConfig:
    zssr: ZSSRConfig = dataclasses.field(default_factory=ZSSRConfig)
    pool: PoolConfig = dataclasses.field(default_factory=PoolConfig)
    select: SelectConfig = dataclasses.field(default_factory=SelectConfig)
    warm_start: WarmStartConfig = dataclasses.field(default_factory=WarmStartConfig)


def face_seed(crop_id: str, seed: int) -> int:
    """Stable per-face seed: the same face gets the same network init and draws in every run and actor."""
    return int(hashlib.sha256(f"{seed}:{crop_id}".encode()).hexdigest()[:8], 16)


def stage_hash(cfg: ZSSRStageConfig) -> str:
    """The stage's identity: what decides the pixels, i.e. every section but the pool layout, plus the
    pool's seed; a warm start that is off counts as just "off". Each face's record and the pipeline's zssr
    marker are keyed by it."""
    d = {k: v for k, v in to_dict(cfg).items() if k != "pool"}
    if not cfg.warm_start.enabled:
        d["warm_start"] = {"enabled": False}
    return config_hash({**d, "seed": cfg.pool.seed})


def _safe_name(crop_id: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in crop_id)
    return keep if keep == crop_id else f"{keep}-{hashlib.sha256(crop_id.encode()).hexdigest()[:8]}"


def _record_path(out_dir: Path, crop_id: str) -> Path:
    return out_dir / "records" / f"{_safe_name(crop_id)}.json"


def _hr_rel(crop_id: str) -> str:
    return f"hr/{_safe_name(crop_id)}.png"


def load_done(out_dir: Path, crop_id: str, chash: str, lr_sha: str, init_sha: str | None = None) -> dict | None:
    """The face's record when it is complete and still valid (same config, same LR input, same warm-start
    init, PNG intact)."""
    rp = _record_path(out_dir, crop_id)
    try:
        rec = json.loads(rp.read_text())
    except (OSError, ValueError):
        return None
    if rec.get("config_hash") != chash or rec.get("lr_sha256") != lr_sha or rec.get("init_sha256") != init_sha:
        return None
    png = out_dir / rec["hr_path"]
    if not png.is_file() or sha256_file(png) != rec.get("sha256"):
        return None
    return rec


def _source_of(row: dict) -> dict | None:
    if not row.get("source_path"):
        return None
    box = [row.get(k) for k in ("box_x", "box_y", "box_w", "box_h")]
    return {"path": row.get("source_path"), "sha256": row.get("source_sha256"),
            "frame_index": _plain(row.get("frame_index")), "time_s": _plain(row.get("time_s")),
            "box": [_plain(b) for b in box] if all(b is not None for b in box) else None}


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _load_lr(faces_dir: Path, row: dict) -> np.ndarray:
    p = Path(row["lr_path"])
    p = p if p.is_absolute() else faces_dir / p
    if not p.is_file():
        raise ValueError(f"{row['crop_id']}: LR crop {p} is missing")
    if row.get("sha256") and sha256_file(p) != row["sha256"]:
        raise ValueError(f"{row['crop_id']}: LR crop {p} does not match its sha256 in faces.parquet")
    return read_image(p)


# ------------------------------------------------------------------------------------------------------------
# Warm start: one init per manifest, trained once (one Ray task), stored under OUT/warm_start/, named by its
# SHA-256, reused by resumed runs. One task, not data-parallel: it is a few hundred steps of a 0.2M-parameter
# network on 32x32 pairs (a step on 8 faces is milliseconds on a GPU); a gradient all-reduce per step would cost
# more than the step, and one task keeps the init byte-for-byte reproducible.


def init_key(faces: pd.DataFrame, cfg: ZSSRStageConfig) -> str:
    """What decides the init: the model and warm-start configs and the set of LR inputs (not their order)."""
    return config_hash({"zssr": to_dict(cfg.zssr), "warm_start": to_dict(cfg.warm_start),
                        "inputs": sorted(faces["sha256"].astype(str))})


def _train_init_task(cfg: dict, faces_dir: str, rows: list[dict]) -> tuple[bytes, dict]:
    import torch

    from survsr.models.zssr_init import init_to_bytes, train_init

    c = from_dict(ZSSRStageConfig, cfg)
    torch.set_num_threads(max(1, int(c.pool.num_cpus)))
    images, skipped = [], []
    for row in rows:
        try:
            images.append(_load_lr(Path(faces_dir), row))
        except ValueError as exc:  # the face itself is reported by its worker; the init goes on without it
            skipped.append(str(exc))
    weights, info = train_init(images, c.zssr, c.warm_start)
    return init_to_bytes(weights), info | {"skipped": skipped}


def ensure_init(faces: pd.DataFrame, faces_dir: Path, out_dir: Path, cfg: ZSSRStageConfig) -> dict:
    """The manifest's warm-start init: reused from ``out_dir/warm_start`` when its file is there and intact
    (resume never retrains it), else trained by one Ray task. Returns {key, sha256, path, info, trained}."""
    from survsr.models.zssr_init import sha256_bytes

    key = init_key(faces, cfg)
    index = out_dir / "warm_start" / f"{key}.json"
    try:
        meta = json.loads(index.read_text())
        if sha256_file(out_dir / meta["path"]) == meta["sha256"]:
            log.info("zssr: warm-start init %s reused (%s)", meta["sha256"][:16], meta["path"])
            return meta | {"trained": False}
        log.warning("zssr: warm-start init %s does not match its SHA-256; training it again", meta["path"])
    except (OSError, ValueError, KeyError):
        pass
    import ray

    from survsr.ray_utils import init_ray

    init_ray()
    rows = faces[[c for c in REQUIRED_COLUMNS if c in faces.columns]].to_dict("records")
    task = ray.remote(_train_init_task).options(num_cpus=cfg.pool.num_cpus, num_gpus=min(1.0, _num_gpus(cfg.pool)))
    data, info = ray.get(task.remote(to_dict(cfg), str(faces_dir.resolve()), rows))
    sha = sha256_bytes(data)
    rel = f"warm_start/init-{sha[:16]}.safetensors"
    atomic_write(out_dir / rel, data)
    meta = {"key": key, "sha256": sha, "path": rel, "info": info}
    atomic_write_json(index, meta)
    log.info("zssr: warm-start init %s trained on %d faces (%s, %d face-iterations, %.1fs)", sha[:16],
             info["faces"], info["method"], info["face_iterations"], info["seconds"])
    return meta | {"trained": True}


class ZSSRWorker:
    """One Ray actor: one batched engine, reused for every batch the pool hands it."""

    def __init__(self, cfg: dict, faces_dir: str, out_dir: str, chash: str, init: list | None = None):
        import torch

        from survsr.models.zssr_batched import BatchedZSSR

        self.cfg = from_dict(ZSSRStageConfig, cfg)
        # Actors start with Python's default WARNING level: per-face progress lines would be dropped unless a
        # quiet job (survsr.console) asked for warnings only.
        logging.basicConfig(level=worker_log_level(), format=FORMAT)
        torch.set_num_threads(max(1, int(self.cfg.pool.num_cpus)))
        self.faces_dir, self.out_dir, self.chash = Path(faces_dir), Path(out_dir), chash
        # ``init``: [ObjectRef of the warm-start init's bytes, its SHA-256] (wrapped in a list so Ray hands the
        # reference over as is); every actor reads the same object from the store
        weights, self.init_sha = None, None
        if init is not None:
            import ray

            from survsr.models.zssr_init import init_from_bytes, sha256_bytes

            data = ray.get(init[0])
            if sha256_bytes(data) != init[1]:
                raise RuntimeError(f"warm-start init from the object store does not match its SHA-256 {init[1]}")
            weights, self.init_sha = init_from_bytes(data, self.cfg.zssr), init[1]
        self.engine = BatchedZSSR(self.cfg.zssr, slots=self.cfg.pool.slots, init=weights)
        self.single = BatchedZSSR(self.cfg.zssr, slots=1, device=self.engine.device, init=weights)

    def _load(self, row: dict) -> np.ndarray:
        return _load_lr(self.faces_dir, row)

    def _write(self, row: dict, seed: int, out: np.ndarray, info: dict) -> None:
        crop_id = row["crop_id"]
        prov = provenance(kind="zssr_hr", source=_source_of(row),
                          parents=[{"path": str(row["lr_path"]), "sha256": str(row["sha256"])}],
                          stages=[stage_record("zssr", self.chash, seed=seed, device=info["device"],
                                               **({"warm_start_init_sha256": self.init_sha} if self.init_sha else {}))],
                          model_output=True)
        rel = _hr_rel(crop_id)
        sha = write_png(self.out_dir / rel, out, text={PROVENANCE_KEY: prov})
        rec = {"crop_id": crop_id, "hr_path": rel, "sha256": sha, "iterations": int(info["iterations"]),
               "final_lr": float(info["final_lr"]), "final_loss": float(info["final_loss"]),
               "seconds": float(info["seconds"]), "config_hash": self.chash, "device": info["device"],
               "split": row.get("split"), "lr_path": str(row["lr_path"]), "seed": seed,
               "lr_sha256": str(row["sha256"]), "lr_changes": info.get("lr_changes", []),
               "init_sha256": self.init_sha, "residual_rms": float(info.get("residual_rms", float("nan")))}
        atomic_write_json(_record_path(self.out_dir, crop_id), rec)

    def _run(self, engine, rows: dict[str, dict], status: dict[str, dict]) -> None:
        items = []
        for cid, row in rows.items():
            seed = face_seed(cid, self.cfg.pool.seed)
            try:
                items.append((cid, self._load(row), seed))
            except ValueError as exc:
                status[cid] = {"status": "failed", "error": str(exc)}
        try:
            for cid, out, info in engine.run(items):
                if out is None:
                    status[cid] = {"status": "failed", "error": f"{cid}: {info}"}
                    continue
                try:
                    self._write(rows[cid], face_seed(cid, self.cfg.pool.seed), out, info)
                    status[cid] = {"status": "done", "error": ""}
                    telemetry.zssr_face_done(int(info["iterations"]), device=str(info["device"]))
                    log.info("zssr %s: %d iterations, final lr %.1e, %.1fs", cid, info["iterations"],
                             info["final_lr"], info["seconds"])
                except Exception as exc:  # noqa: BLE001 - a write failure must not lose the batch
                    status[cid] = {"status": "failed", "error": f"{cid}: writing output: {exc}"}
        except Exception as exc:  # noqa: BLE001 - engine crash (e.g. out of memory): retry faces alone
            log.warning("engine failed on a batch of %d faces (%s); retrying them one by one", len(items), exc)
            for cid, *_ in items:
                status.setdefault(cid, {"status": "failed", "error": f"{cid}: {type(exc).__name__}: {exc}"})

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        rows = {str(r["crop_id"]): r for r in batch.to_dict("records")}
        status: dict[str, dict] = {}
        todo = {}
        for cid, row in rows.items():
            if load_done(self.out_dir, cid, self.chash, str(row["sha256"]), self.init_sha) is not None:
                status[cid] = {"status": "done-before", "error": ""}  # another attempt already wrote it
            else:
                todo[cid] = row
        self._run(self.engine, todo, status)
        attempts = {cid: 1 for cid in todo}
        for _ in range(self.cfg.pool.retries):
            again = {cid: rows[cid] for cid, s in status.items() if s["status"] == "failed"}
            for cid, row in again.items():
                log.warning("retrying %s after: %s", cid, status[cid]["error"])
                del status[cid]
                self._run(self.single, {cid: row}, status)
                attempts[cid] += 1
        for s in status.values():
            if s["status"] == "failed":  # failed for good (after the retries)
                telemetry.zssr_face_done(None, device=str(self.engine.device), ok=False)
        return pd.DataFrame([{"crop_id": cid, "status": status[cid]["status"], "error": status[cid]["error"],
                              "attempts": attempts.get(cid, 0)} for cid in rows])


def read_faces(faces_dir: Path) -> pd.DataFrame:
    path = faces_dir / "faces.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: face manifest not found (run `survsr ingest ... --out {faces_dir}` first)")
    df = pd.read_parquet(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (see the faces.parquet contract)")
    if df.empty:
        raise ValueError(f"{path}: the manifest has no faces; nothing to super-resolve")
    dup = df["crop_id"][df["crop_id"].duplicated()].tolist()
    if dup:
        raise ValueError(f"{path}: duplicate crop_id(s): {dup[:5]}")
    return df


def _num_gpus(pool: PoolConfig) -> float:
    if pool.num_gpus is not None:
        return float(pool.num_gpus)
    import ray

    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


def run_zssr(faces_dir: str | os.PathLike, out_dir: str | os.PathLike, cfg: ZSSRStageConfig | None = None) -> dict:
    """Super-resolve every face in ``faces_dir/faces.parquet`` into ``out_dir`` (resumable). Returns the
    summary also written to ``out_dir/zssr_report.json``."""
    import ray

    from survsr.ray_utils import init_ray

    cfg = cfg or ZSSRStageConfig()
    from survsr.provenance import check_output_dir

    faces_dir, out_dir = Path(faces_dir), check_output_dir(out_dir, [faces_dir], "zssr")
    faces = read_faces(faces_dir)
    n_manifest, skipped_g = len(faces), 0
    if not cfg.select.generator_faces:
        from survsr.pipelines.roles import ROLE_G, roles_of

        roles = roles_of(faces, cfg.select.d_fraction, cfg.select.role_seed)
        skipped_g = int((roles == ROLE_G).sum())
        faces = faces[(roles != ROLE_G).to_numpy()].reset_index(drop=True)
        log.info("zssr: %d of %d faces are the generator's set (role G) and stay LR, as in the paper "
                 "(select.generator_faces=true runs them too)", skipped_g, n_manifest)
    out_dir.mkdir(parents=True, exist_ok=True)
    chash = stage_hash(cfg)
    t0 = time.perf_counter()
    init = ensure_init(faces, faces_dir, out_dir, cfg) if cfg.warm_start.enabled else None
    init_sha = init["sha256"] if init else None
    done_before = {cid for cid, sha in zip(faces["crop_id"].astype(str), faces["sha256"].astype(str))
                   if load_done(out_dir, cid, chash, sha, init_sha) is not None}
    todo = faces[~faces["crop_id"].astype(str).isin(done_before)]
    log.info("zssr: %d faces, %d already done, %d to run (config %s)", len(faces), len(done_before), len(todo), chash)
    results = pd.DataFrame(columns=["crop_id", "status", "error", "attempts"])
    device = None
    if len(todo):
        init_ray()
        num_gpus = _num_gpus(cfg.pool)
        cols = [c for c in todo.columns if c in set(REQUIRED_COLUMNS) | {
            "source_path", "source_sha256", "frame_index", "time_s", "box_x", "box_y", "box_w", "box_h"}]
        # One block per batch (a list of frames = a list of blocks): a single block would send every face
        # to one actor and leave the rest of the pool idle.
        rows = todo[cols].reset_index(drop=True)
        bs = cfg.pool.batch_size
        ds = ray.data.from_pandas([rows.iloc[i:i + bs] for i in range(0, len(rows), bs)])
        # the init goes into the object store once; every actor gets its reference (and checks the hash)
        init_arg = [ray.put((out_dir / init["path"]).read_bytes()), init_sha] if init else None
        ds = ds.map_batches(
            ZSSRWorker,
            fn_constructor_kwargs={"cfg": to_dict(cfg), "faces_dir": str(faces_dir.resolve()),
                                   "out_dir": str(out_dir.resolve()), "chash": chash, "init": init_arg},
            batch_size=cfg.pool.batch_size, batch_format="pandas",
            compute=ray.data.ActorPoolStrategy(size=cfg.pool.actors),
            num_gpus=num_gpus, num_cpus=cfg.pool.num_cpus,
        )
        results = ds.to_pandas()
    # The records on disk are the truth: rebuild the manifest from them (covers resumed faces too).
    recs, failures = [], []
    status = dict(zip(results["crop_id"].astype(str), results.to_dict("records")))
    for cid, sha in zip(faces["crop_id"].astype(str), faces["sha256"].astype(str)):
        rec = load_done(out_dir, cid, chash, sha, init_sha)
        if rec is not None:
            recs.append(rec)
        else:
            err = status.get(cid, {}).get("error") or f"{cid}: no output (worker lost?)"
            failures.append({"crop_id": cid, "error": err, "attempts": int(status.get(cid, {}).get("attempts", 0))})
    manifest = pd.DataFrame(recs, columns=MANIFEST_COLUMNS + ["lr_changes", "lr_sha256"])
    manifest = manifest[MANIFEST_COLUMNS].sort_values("crop_id").reset_index(drop=True)
    write_parquet_atomic(manifest, out_dir / "zssr.parquet")
    atomic_write_json(out_dir / "zssr_failures.json", failures)
    seconds = time.perf_counter() - t0
    ran = int((results["status"] == "done").sum()) if len(results) else 0
    devices = sorted(set(manifest["device"])) if len(manifest) else []
    dead = sorted(manifest.loc[manifest["residual_rms"].map(is_dead).astype(bool), "crop_id"].astype(str))
    summary = {"faces": len(faces), "generator_faces_skipped": skipped_g, "done": len(manifest), "ran": ran, "resumed": len(done_before),
               "failed": failures, "seconds": round(seconds, 3),
               "faces_per_s": round(ran / seconds, 3) if ran and seconds > 0 else None,
               "dead_networks": dead,
               "config_hash": chash, "device": devices[0] if len(devices) == 1 else devices or device,
               "manifest": str(out_dir / "zssr.parquet"),
               "warm_start": None if init is None else {
                   "sha256": init_sha, "path": init["path"], "trained": init["trained"],
                   "face_iterations": init["info"]["face_iterations"], "seconds": round(init["info"]["seconds"], 3),
                   "method": init["info"]["method"]}}
    atomic_write_json(out_dir / "zssr_report.json", summary)
    append_audit(out_dir, {"stage": "zssr", "command": "zssr", "config_hash": chash,
                           "arguments": {"faces_dir": str(faces_dir), "out_dir": str(out_dir)},
                           "inputs": {"faces.parquet": sha256_file(faces_dir / "faces.parquet")},
                           "outputs": {n: sha256_file(out_dir / n) for n in ("zssr.parquet", "zssr_report.json")},
                           "outcome": "ok" if not failures else f"partial: {len(failures)} face(s) failed",
                           "faces": len(faces), "ran": ran, "resumed": len(done_before),
                           "seconds": round(seconds, 3), "warm_start": summary["warm_start"]})
    for f in failures:
        log.error("zssr failed: %s", f["error"])
    if dead:
        log.warning("zssr: %d face(s) whose network died (HR = bicubic + back-projection): %s", len(dead),
                    ", ".join(dead[:10]) + (" ..." if len(dead) > 10 else ""))
    log.info("zssr: %d/%d faces done (%d run now, %d resumed, %d failed) in %.1fs", len(manifest), len(faces),
             ran, len(done_before), len(failures), seconds)
    return summary


def load_config(path: str | None = None, overrides=()) -> ZSSRStageConfig:
    return load(ZSSRStageConfig, path, overrides, default_name="zssr.yaml")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from survsr.config import add_config_args

    parser.add_argument("--faces", required=True, help="ingest output directory (holds faces.parquet)")
    parser.add_argument("--out", required=True, help="output directory (zssr.parquet, hr/*.png)")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: local / $RAY_ADDRESS)")
    parser.add_argument("overrides_pos", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides, e.g. zssr.max_iters=500 pool.actors=2")
    add_config_args(parser, "zssr.yaml")


def main(args: argparse.Namespace) -> int:
    from survsr.config import split_overrides

    split_overrides(args, "overrides_pos")
    if args.overrides_pos:
        raise ConfigError(f"not key=value overrides: {args.overrides_pos}")
    cfg = load_config(args.config, args.overrides)
    try:
        use_address(args.address)
        summary = run_zssr(args.faces, args.out, cfg)
    except (FileNotFoundError, ValueError) as exc:
        from survsr.provenance import OutputOverlapError

        if isinstance(exc, OutputOverlapError):  # a usage error: exit 2 (survsr.stage.run_command), nothing written
            raise
        print(f"survsr zssr: {exc}")
        return 1
    print(json.dumps({k: v for k, v in summary.items() if k != "failed"} | {"failed": len(summary["failed"])}))
    return batch_exit_code(int(summary.get("done", 0)) + int(summary.get("skipped", 0)), len(summary["failed"]))


STAGE = Stage(name="zssr", add_arguments=add_arguments, main=main, load_config=load_config, identity=stage_hash,
              run=run_zssr)
