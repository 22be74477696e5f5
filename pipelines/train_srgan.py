"""``survsr train``: unpaired SRGAN training on Ray Train (Moreira et al.: D sees ZSSR faces as "real").

Plain function: ``run_train(faces_dir, zssr_dir, out_dir, cfg) -> summary``. The train faces carry a role
by track (``survsr.pipelines.roles``, 70:30 as in the paper): the ZSSR outputs of the D faces are the
discriminator's "real" set, the LR crops of the G faces are the generator's inputs. In the paper's setting
(``loss.content_mode: unpaired``) G's faces never meet a ZSSR output of themselves: the mediator compares G's
batch with D's real batch. The distillation option (``pseudo_pair``) attaches each G face's own ZSSR output
as a target. Both sets are decoded and sha256-checked by Ray Data and streamed to the workers
(``ray.train.get_dataset_shard``).

Outputs in ``out_dir``: ``generator.safetensors`` (+ ``generator.json``), ``train_meta.json``,
``train_log.jsonl`` (per-step losses and D outputs, per-epoch held-out metrics), ``metrics.csv`` and the
Ray Train run under ``out_dir/ray/<name>`` (checkpoints; re-running the same command resumes from the
latest one).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from survsr.models.mediator import resolve_status
from survsr.models.srgan import GeneratorConfig
from survsr.config import ConfigError, to_dict
from survsr.ray_utils import use_address
from survsr.stage import Stage

from survsr.pipelines.srgan_config import TrainSRGANConfig, identity, load_config, resume_hash
from survsr.pipelines.srgan_data import build_datasets, decode_heldout, plan_data
from survsr.pipelines.srgan_loop import STATE_FILE, total_steps, train_loop_per_worker

log = logging.getLogger(__name__)

STAGE_NAME = "train_srgan"

# -------------------------------------------------------------------------------------------- driver
def _use_gpu(cfg: TrainSRGANConfig) -> bool:
    if cfg.scaling.use_gpu is not None:
        return cfg.scaling.use_gpu
    import ray

    return ray.cluster_resources().get("GPU", 0) >= 1


def _load_state(checkpoint) -> dict:
    import torch

    with checkpoint.as_directory() as d:
        return torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)


def run_train(faces_dir: str | Path, zssr_dir: str | Path, out_dir: str | Path,
              cfg: TrainSRGANConfig | None = None) -> dict[str, Any]:
    """Train (or resume) and export the generator; returns the summary also written as train_meta.json."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from survsr.models.export import save_generator
    from survsr.models.srgan import Generator
    from survsr.provenance import append_audit, atomic_write_json, code_version, library_versions
    from survsr.ray_utils import init_ray

    cfg = cfg or load_config()
    t0 = time.perf_counter()
    from survsr.provenance import check_output_dir

    out_dir = check_output_dir(out_dir, [faces_dir, zssr_dir], "train")
    med = resolve_status(cfg.mediator)  # fails here (before Ray starts) when weights are missing w/o fallback
    if med.warning:
        log.warning("mediator: %s", med.warning)

    plan = plan_data(faces_dir, zssr_dir, cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta_path = out_dir / "train_meta.json"
    gen_path = out_dir / "generator.safetensors"
    if meta_path.is_file() and gen_path.is_file():
        old = json.loads(meta_path.read_text())
        same_inputs = all(old.get("inputs", {}).get(k, {}).get("sha256") == v["sha256"]
                          for k, v in plan["manifests"].items())
        if (old.get("config_hash") == identity(cfg) and same_inputs
                and old.get("final_step") == old.get("total_steps")):
            log.info("%s: already trained (step %d) with this config and these manifests; nothing to do",
                     out_dir, old["final_step"])
            return old
    init_ray()
    use_gpu = _use_gpu(cfg)
    world = cfg.scaling.num_workers
    if cfg.train.batch_size % world:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} must be divisible by scaling.num_workers={world}")
    pwb = cfg.train.batch_size // world
    datasets, skipped = build_datasets(plan, cfg)
    n_hr, n_lr = datasets["hr"].count(), datasets["lr"].count()
    # streaming_split(equal=True) gives each worker n // world rows
    spe = {"D": n_hr // world // pwb, "G": n_lr // world // pwb}
    spe["both"] = min(spe.values())
    if spe["both"] < 1:
        raise ValueError(f"too few faces for one step: {n_hr} HR and {n_lr} LR faces over {world} worker(s) "
                         f"at train.batch_size={cfg.train.batch_size}; lower the batch size")
    total = total_steps(cfg.train, spe)
    rhash = resume_hash(cfg)

    storage = Path(cfg.scaling.storage_path).resolve() if cfg.scaling.storage_path else out_dir / "ray"
    held = decode_heldout(plan["heldout"], cfg)
    loop_cfg = {
        "cfg": to_dict(cfg), "out_dir": str(out_dir), "storage": str(storage / cfg.scaling.name),
        "per_worker_batch": pwb, "steps_per_epoch": spe, "total_steps": total, "resume_hash": rhash,
        "mediator_status": med.status, "heldout": held,
    }
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_cfg,
        scaling_config=ray.train.ScalingConfig(num_workers=world, use_gpu=use_gpu,
                                               resources_per_worker={"CPU": cfg.scaling.cpus_per_worker}),
        run_config=ray.train.RunConfig(
            name=cfg.scaling.name, storage_path=str(storage),
            failure_config=ray.train.FailureConfig(max_failures=cfg.scaling.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints),
        ),
        datasets=datasets,
    )
    log.info("training: %d HR (real) / %d LR faces, %d worker(s)%s, %d steps (per epoch %s, schedule %s), "
             "mediator %s", n_hr, n_lr, world, " on GPU" if use_gpu else "", total, spe, cfg.train.schedule,
             med.status)
    result = trainer.fit()
    checkpoint = result.checkpoint
    if checkpoint is None:
        # A re-run whose restored checkpoint was already final reports nothing new: use the latest on disk.
        done = sorted((storage / cfg.scaling.name).glob("step_*"))
        if not done:
            raise RuntimeError(f"{storage / cfg.scaling.name}: training finished without a checkpoint")
        checkpoint = ray.train.Checkpoint.from_directory(str(done[-1]))
    state = _load_state(checkpoint)
    G = Generator(GeneratorConfig(**state["generator_config"]))
    G.load_state_dict(state["G"])
    chash = identity(cfg)
    gen_meta = {"stage": STAGE_NAME, "config_hash": chash, "resume_hash": rhash, "step": int(state["step"]),
                "mediator": med.to_dict(), "manifests": plan["manifests"], "code_version": code_version()}
    gen_sha = save_generator(G, gen_path, gen_meta)
    atomic_write_json(out_dir / "generator.json", {"generator_config": state["generator_config"],
                                                   "sha256": gen_sha, "path": gen_path.name})
    final = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, (int, float))}
    summary = {
        "stage": STAGE_NAME, "config": to_dict(cfg), "config_hash": chash, "resume_hash": rhash,
        "inputs": {"faces_dir": str(Path(faces_dir).resolve()), "zssr_dir": str(Path(zssr_dir).resolve()),
                   **plan["manifests"]},
        "counts": {**plan["counts"], "hr_decoded": n_hr, "lr_decoded": n_lr, "skipped": len(skipped),
                   "heldout_decoded": int(len(held["lr"]))},
        "skipped": skipped,
        "mediator": med.to_dict(), "mediator_status": med.status,
        "world_size": world, "device": "cuda" if use_gpu else "cpu", "per_worker_batch": pwb,
        "steps_per_epoch": spe, "total_steps": total, "final_step": int(state["step"]),
        "final_metrics": final, "generator": {"path": gen_path.name, "sha256": gen_sha},
        "checkpoint": str(checkpoint.path), "storage": str(storage / cfg.scaling.name),
        "seconds": round(time.perf_counter() - t0, 2), "code_version": code_version(),
        "libraries": library_versions(),
    }
    atomic_write_json(meta_path, summary)
    append_audit(out_dir, {"stage": STAGE_NAME, "config_hash": chash, "generator_sha256": gen_sha,
                           "final_step": summary["final_step"], "mediator": med.status})
    log.info("generator %s (sha256 %s) after %d steps; mediator %s", gen_path, gen_sha[:12],
             summary["final_step"], med.status)
    return summary


# ------------------------------------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from survsr.config import add_config_args

    parser.add_argument("--faces", default=None, help="ingest output dir (faces.parquet)")
    parser.add_argument("--zssr", default=None, help="ZSSR output dir (zssr.parquet)")
    parser.add_argument("--out", default=None, help="run dir (re-running the same command resumes)")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS or local)")
    parser.add_argument("overrides_pos", nargs="*", metavar="KEY=VALUE", help="config overrides")
    add_config_args(parser, "srgan.yaml")


def main(args: argparse.Namespace) -> int:
    from survsr.config import split_overrides

    split_overrides(args, "overrides_pos")
    if args.overrides_pos:
        raise ConfigError(f"unexpected arguments {args.overrides_pos} (overrides look like key.sub=value)")
    cfg = load_config(args.config, args.overrides)
    faces = args.faces or cfg.inputs.faces
    zssr = args.zssr or cfg.inputs.zssr
    out = args.out or cfg.inputs.out
    if not (faces and zssr and out):
        raise ConfigError("need --faces, --zssr and --out (or inputs.faces/zssr/out in the config)")
    try:
        use_address(args.address)
        summary = run_train(faces, zssr, out, cfg)
    except (FileNotFoundError, ValueError) as exc:
        from survsr.provenance import OutputOverlapError

        if isinstance(exc, (ConfigError, OutputOverlapError)):  # usage errors: exit 2 (survsr.stage.run_command)
            raise
        print(f"survsr train: {exc}", flush=True)
        return 1
    print(json.dumps({k: summary[k] for k in ("final_step", "mediator_status", "generator", "seconds")},
                     default=str))
    return 0


STAGE = Stage(name="train", add_arguments=add_arguments, main=main, load_config=load_config, identity=identity,
              run=run_train)


if __name__ == "__main__":  # `ray job submit ... -- python -m survsr.pipelines.train_srgan --config ...`
    import sys

    from survsr.stage import run_command

    sys.exit(run_command(STAGE, sys.argv[1:]))

