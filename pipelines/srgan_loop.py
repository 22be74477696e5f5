"""What each Ray Train worker runs: the schedule (epoch blocks of D and G, or per-batch alternation), one
SRGAN step (``SRGANStep``), the per-worker loop with checkpoints and held-out metrics, and its run log."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from survsr.models.losses import LossConfig
from survsr import telemetry
from survsr.config import from_dict
from survsr.pipelines.srgan_config import LoopConfig, TrainSRGANConfig

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"


# ------------------------------------------------------------------------------------- worker helpers
def _collect_shard(shard, keys: list[str]) -> dict[str, np.ndarray]:
    """The worker's whole shard in memory, sorted by crop_id (Ray Data's row order is not guaranteed, and
    the per-epoch permutations below must index the same rows after a restart)."""
    parts: dict[str, list] = {k: [] for k in ["crop_id", *keys]}
    for b in shard.iter_batches(batch_size=1024, batch_format="numpy"):
        for k in parts:
            parts[k].append(np.asarray(b[k]))
    out = {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in parts.items()}
    order = np.argsort(out.pop("crop_id").astype(str), kind="stable")
    return {k: v[order] for k, v in out.items()}


def _epoch_generator(seed: int, epoch: int, rank: int):
    import torch

    # Data order depends only on (seed, epoch, rank) and the (sorted) shard: a resumed run replays the
    # same batches as long as Ray Data hands each rank the same rows.
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_009 + rank)


def _to_float(x_uint8, flip_mask=None):
    x = x_uint8.permute(0, 3, 1, 2).float().div_(255.0)
    if flip_mask is not None and bool(flip_mask.any()):
        x = x.clone()
        x[flip_mask] = x[flip_mask].flip(-1)
    return x


def _ddp(module, device, **kwargs):
    """DDP without the per-forward BN buffer broadcast (see the BatchNorm note in the training loop)."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel as DDP

    if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters:  # newer torch renamed it
        kwargs["forward_sync_buffers"] = False
    else:
        kwargs["broadcast_buffers"] = False
    return DDP(module, device_ids=[device.index] if device.type == "cuda" else None, **kwargs)


def heldout_metrics(G, held: dict[str, np.ndarray], device, scale: int) -> dict[str, float]:
    """PSNR-Y/SSIM-Y of G and of bicubic vs the ZSSR output, and G's LR consistency, on held-out faces: the
    evaluation's own scoring (``survsr.pipelines.quality.score_pair``, default settings) on the pixels every
    other path delivers (``survsr.enhance.runner.to_uint8``), so these curves and the report agree."""
    import torch

    from survsr.enhance.runner import to_uint8
    from survsr.models.losses import bicubic_down, bicubic_up
    from survsr.pipelines.quality import score_pair

    if len(held["lr"]) == 0:
        return {}
    was_training = G.training
    G.eval()
    with torch.no_grad():
        lr = torch.from_numpy(np.array(held["lr"])).to(device).permute(0, 3, 1, 2).float() / 255
        sr = G(lr).float().clamp(0, 1)
        sr_u8, bic_u8 = to_uint8(sr), to_uint8(bicubic_up(lr, scale))
        lrc_u8 = to_uint8(bicubic_down(sr, scale))
    G.train(was_training)
    res: dict[str, list[float]] = {"psnr_g_vs_zssr": [], "psnr_bicubic_vs_zssr": [], "ssim_g_vs_zssr": [],
                                   "ssim_bicubic_vs_zssr": [], "psnr_lr_consistency": []}
    for i, hr in enumerate(held["hr"]):
        g, b = score_pair(hr, sr_u8[i], scale=scale), score_pair(hr, bic_u8[i], scale=scale)
        res["psnr_g_vs_zssr"].append(g["psnr_y"])
        res["psnr_bicubic_vs_zssr"].append(b["psnr_y"])
        res["ssim_g_vs_zssr"].append(g["ssim_y"])
        res["ssim_bicubic_vs_zssr"].append(b["ssim_y"])
        res["psnr_lr_consistency"].append(score_pair(held["lr"][i], lrc_u8[i], scale=scale)["psnr_y"])
    return {f"heldout_{k}": float(np.mean(np.minimum(v, 100.0))) for k, v in res.items()}


class _RunLog:
    """Rank 0's train_log.jsonl and metrics.csv (appended; a resumed run continues the same files)."""

    def __init__(self, out_dir: Path):
        self.jsonl = out_dir / "train_log.jsonl"
        self.csv = out_dir / "metrics.csv"

    def write(self, rec: dict) -> None:
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(rec, sort_keys=True) + "\n")
        if rec.get("kind") == "epoch":
            new = not self.csv.exists()
            keys = sorted(rec)
            with open(self.csv, "a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
                if new:
                    w.writeheader()
                w.writerow(rec)


# ---------------------------------------------------------------------------------------- worker loop
def phase(step: int, loop: LoopConfig, block: str | None = None) -> tuple[bool, bool, bool]:
    """(update D, update G, pretraining) for global step ``step`` (0-based).

    epoch_blocks (the paper's "DN for some epochs and then GN"): the epoch's ``block`` ("D" or "G", from
    ``epoch_plan``) decides. k_step (Goodfellow et al.'s k steps): D for k steps with G frozen, then G for k
    steps with D frozen. alternate: both on every batch. The first ``pretrain_steps`` train G alone."""
    if step < loop.pretrain_steps:
        return False, True, True
    if loop.schedule == "epoch_blocks":
        return block == "D", block == "G", False
    if loop.schedule == "alternate":
        return True, True, False
    d_turn = ((step - loop.pretrain_steps) // loop.k) % 2 == 0
    return d_turn, not d_turn, False


def epoch_plan(epoch: int, loop: LoopConfig, spe: dict[str, int]) -> tuple[int, str | None]:
    """(steps in this epoch, block) for 0-based ``epoch``. An epoch is one pass over the set being trained:
    D's real set in a D epoch (``spe["D"]`` steps), G's LR faces in a G epoch (``spe["G"]``); the other
    schedules use ``spe["both"]`` (the smaller set) for every epoch and no block."""
    if loop.schedule != "epoch_blocks":
        return spe["both"], None
    block = "D" if epoch % (loop.d_epochs + loop.g_epochs) < loop.d_epochs else "G"
    return spe[block], block


def locate(step: int, loop: LoopConfig, spe: dict[str, int]) -> tuple[int, int]:
    """(epoch, first step of that epoch) holding global step ``step``: where a resumed run picks up."""
    epoch, start = 0, 0
    while True:
        n, _ = epoch_plan(epoch, loop, spe)
        if step < start + n:
            return epoch, start
        epoch, start = epoch + 1, start + n


def total_steps(loop: LoopConfig, spe: dict[str, int]) -> int:
    if loop.max_steps > 0:
        return loop.max_steps
    return sum(epoch_plan(e, loop, spe)[0] for e in range(loop.epochs))


def _draw(n: int, need: int, gen):
    """``need`` indices into ``n`` rows: whole random permutations back to back (every row once per pass)."""
    import torch

    reps = -(-need // n)
    return torch.cat([torch.randperm(n, generator=gen) for _ in range(reps)])[:need]


class SRGANStep:
    """One optimizer step of D and/or G (shared by the Ray Train loop and benchmarks/srgan_train.py).

    ``G_run``/``D_run`` are the (possibly DDP-wrapped) modules used where gradients must be all-reduced;
    ``G``/``D`` the plain modules."""

    def __init__(self, G, D, G_run, D_run, opt_g, opt_d, mediator, loss_cfg: LossConfig, scale: int,
                 bf16: bool = False):
        self.G, self.D, self.G_run, self.D_run = G, D, G_run, D_run
        self.opt_g, self.opt_d, self.mediator = opt_g, opt_d, mediator
        self.loss_cfg, self.scale, self.bf16 = loss_cfg, scale, bf16

    def _autocast(self, device_type: str):
        import torch

        return torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=self.bf16)

    def __call__(self, real, lr, pair, has_pair, *, do_d: bool, do_g: bool, adversarial: bool = True) -> dict:
        import torch

        from survsr.models.losses import d_loss, g_losses

        dev = lr.device.type
        parts: dict[str, Any] = {}
        with self._autocast(dev), torch.set_grad_enabled(do_g):
            sr = self.G_run(lr)  # one G forward serves both the D step (detached) and the G step
        if do_d:
            with self._autocast(dev):
                real_logits = self.D_run(real)
                fake_logits = self.D_run(sr.detach())
                loss_d = d_loss(real_logits, fake_logits)
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()
            parts.update(d_loss=loss_d.detach(), d_real=torch.sigmoid(real_logits.detach().float()).mean(),
                         d_fake=torch.sigmoid(fake_logits.detach().float()).mean())
        if do_g:
            # D's plain module (not its DDP wrapper) scores the fakes: D is not being trained here, so its
            # gradients must be neither computed nor all-reduced.
            self.D.requires_grad_(False)
            try:
                with self._autocast(dev):
                    use_adv = adversarial and self.loss_cfg.adversarial > 0
                    g_fake = self.D(sr) if use_adv else None
                    # unpaired (paper): the mediator compares sr with D's real batch (other faces);
                    # pseudo_pair: with each face's own ZSSR output
                    loss_g, g_parts = g_losses(self.loss_cfg, sr, lr, g_fake, pair, has_pair, self.mediator,
                                               self.scale, real=real)
                self.opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                self.opt_g.step()
            finally:
                self.D.requires_grad_(True)
            parts.update(g_loss=loss_g.detach(), **g_parts)
            if g_fake is not None:
                parts["d_fake_g"] = torch.sigmoid(g_fake.detach().float()).mean()
        return parts


def train_loop_per_worker(config: dict) -> None:
    import ray.train
    import torch

    from survsr.models.mediator import build_mediator
    from survsr.models.srgan import Discriminator, Generator

    cfg = from_dict(TrainSRGANConfig, config["cfg"])
    out_dir = Path(config["out_dir"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(max(1, cfg.scaling.cpus_per_worker))
    torch.manual_seed(cfg.train.seed + rank)
    pwb = config["per_worker_batch"]
    spe, total = config["steps_per_epoch"], config["total_steps"]  # spe: {"D", "G", "both"}
    scale = cfg.generator.scale

    # ---- data: this worker's shard of both sets, decoded by Ray Data, kept on the device
    hr = _collect_shard(ray.train.get_dataset_shard("hr"), ["img"])["img"]
    lrs = _collect_shard(ray.train.get_dataset_shard("lr"), ["img", "pair", "has_pair"])
    if len(hr) < pwb or len(lrs["img"]) < pwb:
        raise RuntimeError(f"rank {rank}: shard has {len(hr)} HR / {len(lrs['img'])} LR faces, "
                           f"needs {pwb} of each for one step")
    hr_t = torch.from_numpy(hr).to(device)
    lr_t = torch.from_numpy(lrs["img"]).to(device)
    pair_t = torch.from_numpy(lrs["pair"]).to(device)
    has_t = torch.from_numpy(lrs["has_pair"].astype(bool)).to(device)

    # ---- models
    G = Generator(cfg.generator).to(device)
    D = Discriminator(cfg.discriminator).to(device)
    mediator, med_status = build_mediator(cfg.mediator, seed=cfg.train.seed)
    if med_status.status != config["mediator_status"]:
        raise RuntimeError(f"rank {rank}: mediator resolved to {med_status.status!r} on this node, but the driver "
                           f"recorded {config['mediator_status']!r}; weights must be the same everywhere")
    if mediator is not None:
        mediator = mediator.to(device)
    if world > 1 and cfg.scaling.sync_batchnorm and device.type == "cuda":
        G = torch.nn.SyncBatchNorm.convert_sync_batchnorm(G)
        D = torch.nn.SyncBatchNorm.convert_sync_batchnorm(D)
    betas = tuple(cfg.train.betas)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.train.lr_g, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.train.lr_d, betas=betas)

    start_step = 0
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
        if state["resume_hash"] != config["resume_hash"]:
            raise RuntimeError(f"checkpoint in {config['storage']} was trained with a different config "
                               f"(resume hash {state['resume_hash']} != {config['resume_hash']}); "
                               "use a new --out directory")
        G.load_state_dict(state["G"])
        D.load_state_dict(state["D"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        torch.set_rng_state(state["rng_cpu"])
        start_step = int(state["step"])
    # BatchNorm: G and D each run two forwards (real, fake / D-step, G-step) per optimizer step. DDP's
    # default buffer broadcast rewrites running stats in place between them, which breaks autograd; each
    # replica keeps its own BN statistics instead (or SyncBatchNorm on GPU, above).
    find_unused = cfg.generator.stochastic_depth > 0  # skipped blocks get no gradient that epoch
    G_run = _ddp(G, device, find_unused_parameters=find_unused) if world > 1 else G
    D_run = _ddp(D, device) if world > 1 else D

    runlog = _RunLog(out_dir) if rank == 0 else None
    if runlog:
        runlog.write({"kind": "start", "step": start_step, "resumed": ckpt is not None, "world_size": world,
                      "device": str(device), "total_steps": total, "steps_per_epoch": spe,
                      "mediator": med_status.status})
    stepper = SRGANStep(G, D, G_run, D_run, opt_g, opt_d, mediator, cfg.loss, scale,
                        bf16=cfg.train.bf16 and device.type == "cuda")
    fail_marker = out_dir / f".debug_failed_at_{cfg.debug.fail_at_step}"

    def save_and_report(step: int, epoch: int, metrics: dict, with_ckpt: bool) -> None:
        if not with_ckpt:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                torch.save({"G": G.state_dict(), "D": D.state_dict(), "opt_g": opt_g.state_dict(),
                            "opt_d": opt_d.state_dict(), "step": step, "epoch": epoch,
                            "rng_cpu": torch.get_rng_state(), "resume_hash": config["resume_hash"],
                            "generator_config": dataclasses.asdict(cfg.generator)}, Path(tmp) / STATE_FILE)
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=f"step_{step:09d}")

    step = start_step
    acc: dict[str, list[float]] = {}
    t_window, faces_window = time.perf_counter(), 0
    G.train()
    D.train()
    epoch, epoch_start = locate(step, cfg.train, spe)
    while step < total:
        n_steps, block = epoch_plan(epoch, cfg.train, spe)
        need = n_steps * pwb
        gen = _epoch_generator(cfg.train.seed, epoch, rank)
        perm_hr = _draw(len(hr_t), need, gen).to(device)
        perm_lr = _draw(len(lr_t), need, gen).to(device)
        flips = cfg.data.flips == "horizontal"
        flip_hr = (torch.rand(need, generator=gen) < 0.5).to(device) if flips else None
        flip_lr = (torch.rand(need, generator=gen) < 0.5).to(device) if flips else None
        if cfg.generator.stochastic_depth > 0:
            # Same mask on every rank (seeded by epoch only), re-drawn each epoch as in the paper.
            G.resample_depth(torch.Generator().manual_seed(cfg.train.seed * 7919 + epoch))
        for i in range(step - epoch_start, n_steps):
            if step >= total:
                break
            if step == cfg.debug.fail_at_step and rank == cfg.debug.fail_rank and not fail_marker.exists():
                fail_marker.touch()
                raise RuntimeError(f"debug.fail_at_step: injected worker failure at step {step} (rank {rank})")
            sl = slice(i * pwb, (i + 1) * pwb)
            real = _to_float(hr_t[perm_hr[sl]], flip_hr[sl] if flips else None)
            fl = flip_lr[sl] if flips else None
            lr = _to_float(lr_t[perm_lr[sl]], fl)
            pair = _to_float(pair_t[perm_lr[sl]], fl)
            has_pair = has_t[perm_lr[sl]]
            do_d, do_g, pretrain = phase(step, cfg.train, block)
            parts = stepper(real, lr, pair, has_pair, do_d=do_d, do_g=do_g, adversarial=not pretrain)
            step += 1
            faces_window += pwb * world
            for k, v in parts.items():
                acc.setdefault(k, []).append(v)  # tensors: no device sync per step
            if runlog and step % cfg.train.log_every == 0:
                dt = time.perf_counter() - t_window
                runlog.write({"kind": "step", "step": step, "epoch": epoch, "phase": "DG" if do_d and do_g else
                              ("D" if do_d else ("G-pretrain" if pretrain else "G")), **{k: float(v) for k, v in parts.items()},
                              "faces_per_s": faces_window / max(dt, 1e-9)})
                t_window, faces_window = time.perf_counter(), 0
                vals = {k: float(v) for k, v in parts.items()}
                telemetry.train_losses({k: v for k, v in vals.items() if not k.startswith("d_real")
                                      and not k.startswith("d_fake")}, epoch=epoch)
                telemetry.train_d_outputs(vals.get("d_real"), vals.get("d_fake"))
            end_epoch = step - epoch_start == n_steps
            want_ckpt = step % cfg.train.checkpoint_every == 0 or step == total
            if end_epoch or want_ckpt:
                metrics = {"step": step, "epoch": epoch + (1 if end_epoch else 0)}
                if block:
                    metrics["block"] = block
                if end_epoch:
                    metrics.update({k: float(torch.stack(v).float().mean()) for k, v in acc.items()})
                    acc = {}
                    if rank == 0 and (epoch + 1) % cfg.train.eval_every_epochs == 0:
                        metrics.update(heldout_metrics(G, config["heldout"], device, scale))
                    if runlog:
                        runlog.write({"kind": "epoch", **metrics})
                for k, v in parts.items():
                    metrics.setdefault(f"last_{k}", float(v))
                save_and_report(step, epoch + (1 if end_epoch else 0), metrics, want_ckpt)
        epoch, epoch_start = epoch + 1, epoch_start + n_steps
    if start_step >= total and rank == 0:
        log.info("checkpoint already at step %d of %d: nothing to train", start_step, total)


