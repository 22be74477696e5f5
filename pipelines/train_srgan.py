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
import csv
import dataclasses
import hashlib
import io
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from survsr.models.losses import LossConfig
from survsr.models.mediator import MediatorConfig, resolve_status
from survsr.models.srgan import DiscriminatorConfig, GeneratorConfig
from survsr import telemetry
from survsr.config import ConfigError, config_hash, from_dict, load, to_dict
from survsr.ray_utils import use_address
from survsr.stage import Stage

log = logging.getLogger(__name__)

STAGE_NAME = "train_srgan"
STATE_FILE = "state.pt"


# ---------------------------------------------------------------------------------------------- config
@dataclass
class InputsConfig:
    # Only needed for `python -m survsr.pipelines.train_srgan --config ...` (ray job submit); CLI flags win.
    faces: str = ""
    zssr: str = ""
    out: str = ""


@dataclass
class DataConfig:
    train_split: str = "train"
    heldout_split: str = "test"
    # D:G roles come from faces.parquet's `role` column (ingest, by track); these two only assign them, the
    # same way, for a manifest without one. Paper: 14,000 D : 6,000 G = 70:30.
    d_fraction: float = 0.7
    role_seed: int = 0
    flips: str = "horizontal"  # horizontal | none (vertical flips would give upside-down faces)
    heldout_max: int = 64
    decode_batch: int = 256

    def validate(self) -> None:
        if not 0.0 < self.d_fraction < 1.0:
            raise ValueError(f"d_fraction must be in (0, 1), got {self.d_fraction}")
        if self.flips not in ("horizontal", "none"):
            raise ValueError(f"flips must be horizontal or none, got {self.flips!r}")


@dataclass
class LoopConfig:
    batch_size: int = 50  # global; each of the N workers takes batch_size // N
    epochs: int = 2000
    max_steps: int = 0  # > 0: stop after this many optimizer steps (overrides epochs)
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    # epoch_blocks (paper: "DN for some epochs and then GN"): d_epochs epochs of D alone (G frozen), then
    # g_epochs epochs of G alone (D frozen), repeated. k_step: D for k steps then G for k steps.
    # alternate: D and G on every batch.
    schedule: str = "epoch_blocks"
    d_epochs: int = 5
    g_epochs: int = 5
    k: int = 1
    pretrain_steps: int = 0  # G-only steps first (no adversarial term), like Ledig's SRResNet initialisation
    checkpoint_every: int = 500  # steps
    keep_checkpoints: int = 2
    log_every: int = 10  # steps
    eval_every_epochs: int = 1
    bf16: bool = True  # autocast on GPU only (CPU bf16 autocast is slower than fp32 here)
    seed: int = 0

    def validate(self) -> None:
        if self.schedule not in ("epoch_blocks", "k_step", "alternate"):
            raise ValueError(f"schedule must be epoch_blocks, k_step or alternate, got {self.schedule!r}")
        for name in ("batch_size", "epochs", "k", "d_epochs", "g_epochs", "checkpoint_every", "log_every",
                     "eval_every_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if len(self.betas) != 2:
            raise ValueError("betas must be two numbers")


@dataclass
class ScalingConfig:
    """Ray Train's worker layout (where Ray runs is the job's ``ray:`` / ``--address``, not this)."""

    num_workers: int = 1
    use_gpu: Optional[bool] = None  # null = use GPUs when the cluster has them
    cpus_per_worker: int = 1
    max_failures: int = 2
    name: str = "srgan"
    storage_path: str = ""  # default: <out>/ray (must be shared storage on a multi-node cluster)
    sync_batchnorm: bool = False  # GPU + >1 worker: SyncBatchNorm instead of per-replica BN statistics


@dataclass
class DebugConfig:
    fail_at_step: int = -1  # raise once (per run dir) in rank `fail_rank` when reaching this step
    fail_rank: int = 0


@dataclass
class TrainSRGANConfig:
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    mediator: MediatorConfig = field(default_factory=MediatorConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: LoopConfig = field(default_factory=LoopConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    inputs: InputsConfig = field(default_factory=InputsConfig)

    def validate(self) -> None:
        if self.discriminator.input_size % self.generator.scale:
            raise ValueError("discriminator.input_size must be a multiple of generator.scale")

    @property
    def lr_size(self) -> int:
        return self.discriminator.input_size // self.generator.scale


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> TrainSRGANConfig:
    return load(TrainSRGANConfig, path, overrides, default_name="srgan.yaml")


def _shaping(cfg: TrainSRGANConfig) -> dict:
    """The settings that shape the generator: not I/O, fault injection, or where checkpoints are kept. The
    worker count stays: it sets the per-worker batch and so the BatchNorm statistics."""
    d = to_dict(cfg)
    for key in ("debug", "inputs"):
        d.pop(key)
    for key in ("cpus_per_worker", "max_failures", "name", "storage_path"):
        d["scaling"].pop(key)
    return d


def identity(cfg: TrainSRGANConfig) -> str:
    """The stage's identity: keys the pipeline's train marker and the "already trained" check."""
    return config_hash(_shaping(cfg))


def resume_hash(cfg: TrainSRGANConfig) -> str:
    """What a checkpoint must agree on to be continued: the identity less run length and worker layout, so a
    longer schedule or another worker count continues the same run."""
    d = _shaping(cfg)
    for key in ("epochs", "max_steps", "checkpoint_every", "keep_checkpoints", "log_every", "eval_every_epochs"):
        d["train"].pop(key)
    d.pop("scaling")
    return config_hash(d)


# ------------------------------------------------------------------------------------------ manifests
def _abs(base: Path, p: str) -> str:
    q = Path(p)
    return str(q if q.is_absolute() else (base / q))


def plan_data(faces_dir: str | Path, zssr_dir: str | Path, cfg: TrainSRGANConfig) -> dict[str, Any]:
    """Read both manifests and assign rows: D's real set, G's input set, held-out set (no decoding here).

    D's real set: ZSSR outputs of the role-D faces. G's inputs: the LR crops of the role-G faces; they get
    their own ZSSR output as a pseudo-pair only in ``loss.content_mode: pseudo_pair``. The two sets are
    disjoint by track (and so by crop id)."""
    import pandas as pd

    from survsr.pipelines.roles import ROLE_D, ROLE_G, roles_of, track_ids

    faces_dir, zssr_dir = Path(faces_dir), Path(zssr_dir)
    fm, zm = faces_dir / "faces.parquet", zssr_dir / "zssr.parquet"
    for m, what in ((fm, "ingest"), (zm, "ZSSR")):
        if not m.is_file():
            raise FileNotFoundError(f"{m}: {what} manifest not found")
    faces = pd.read_parquet(fm)
    zssr = pd.read_parquet(zm)
    for df, m, cols in ((faces, fm, ("crop_id", "lr_path", "sha256", "split")), (zssr, zm, ("crop_id", "hr_path", "sha256"))):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise ValueError(f"{m}: missing columns {missing}")
    hr_of = {r.crop_id: (_abs(zssr_dir, r.hr_path), str(r.sha256)) for r in zssr.itertuples()}
    faces = faces.sort_values("crop_id").reset_index(drop=True)
    faces["plan_role"] = roles_of(faces, cfg.data.d_fraction, cfg.data.role_seed, cfg.data.train_split).to_numpy()
    faces["plan_track"] = track_ids(faces)
    paired = cfg.loss.content_mode == "pseudo_pair"
    hr_rows, lr_rows, held = [], [], []
    no_zssr = 0
    for r in faces.itertuples():
        pair = hr_of.get(r.crop_id)
        lr = {"crop_id": r.crop_id, "track_id": str(r.plan_track), "path": _abs(faces_dir, r.lr_path),
              "sha256": str(r.sha256), "pair_path": pair[0] if pair else "", "pair_sha256": pair[1] if pair else ""}
        if r.split == cfg.data.heldout_split:
            if len(held) < cfg.data.heldout_max:
                held.append(lr)
            continue
        if r.split != cfg.data.train_split:
            continue
        if r.plan_role == ROLE_D:
            if pair:
                hr_rows.append({"crop_id": r.crop_id, "track_id": str(r.plan_track), "path": pair[0], "sha256": pair[1],
                                "pair_path": "", "pair_sha256": ""})
            else:
                no_zssr += 1
        elif r.plan_role == ROLE_G:
            if not paired:  # the paper: G's faces never meet a ZSSR output of themselves
                lr = {**lr, "pair_path": "", "pair_sha256": ""}
            lr_rows.append(lr)
    if not hr_rows:
        raise ValueError(f"{zm}: no ZSSR outputs for the discriminator's (role D) {cfg.data.train_split!r} "
                         f"faces in {fm}")
    if not lr_rows:
        raise ValueError(f"{fm}: no role-G faces for the generator (the D:G split is by track: the train split "
                         f"needs at least two tracks)")
    n_pairs = sum(bool(r["pair_path"]) for r in lr_rows)
    if paired and cfg.loss.content + cfg.loss.pixel > 0 and not n_pairs:
        raise ValueError(f"{zm}: loss.content_mode=pseudo_pair but none of the {len(lr_rows)} generator faces has "
                         "a ZSSR output; run `survsr zssr` with select.generator_faces=true")
    return {
        "hr": hr_rows, "lr": lr_rows, "heldout": held,
        "manifests": {"faces": {"path": str(fm), "sha256": _sha(fm)}, "zssr": {"path": str(zm), "sha256": _sha(zm)}},
        "counts": {"faces_total": int(len(faces)), "zssr_total": int(len(zssr)), "hr_real": len(hr_rows),
                   "lr_inputs": len(lr_rows), "lr_with_pseudo_pair": n_pairs,
                   "d_tracks": len({r["track_id"] for r in hr_rows}), "g_tracks": len({r["track_id"] for r in lr_rows}),
                   "tracks_on_both_sides": len({r["track_id"] for r in hr_rows} & {r["track_id"] for r in lr_rows}),
                   "heldout": len(held), "d_faces_without_zssr": no_zssr},
    }


def _sha(p: Path) -> str:
    from survsr.provenance import sha256_file

    return sha256_file(p)


def read_face_png(path: str, sha256: str, size: int) -> np.ndarray:
    """uint8 RGB size x size; raises ValueError naming the file on a hash mismatch or a wrong size."""
    from PIL import Image

    data = Path(path).read_bytes()
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(f"{path}: sha256 does not match the manifest")
    with Image.open(io.BytesIO(data)) as im:
        img = np.asarray(im.convert("RGB"))
    if img.shape[:2] != (size, size):
        raise ValueError(f"{path}: expected {size}x{size}, got {img.shape[1]}x{img.shape[0]}")
    return img


def decode_rows(batch: dict[str, np.ndarray], size: int, pair_size: int) -> dict[str, np.ndarray]:
    """Ray Data map_batches body: decode + verify each face (and its pseudo-pair); errors become rows with
    ``error`` set so one bad file is skipped and reported instead of failing the run."""
    n = len(batch["path"])
    imgs = np.zeros((n, size, size, 3), np.uint8)
    pairs = np.zeros((n, pair_size, pair_size, 3), np.uint8)
    has = np.zeros(n, bool)
    errors = []
    for i in range(n):
        err = ""
        try:
            imgs[i] = read_face_png(str(batch["path"][i]), str(batch["sha256"][i]), size)
            if batch["pair_path"][i]:
                pairs[i] = read_face_png(str(batch["pair_path"][i]), str(batch["pair_sha256"][i]), pair_size)
                has[i] = True
        except Exception as exc:  # noqa: BLE001 - any unreadable face is skipped and reported
            err = str(exc) if str(batch["path"][i]) in str(exc) else f"{batch['path'][i]}: {exc}"
        errors.append(err)
    return {"crop_id": batch["crop_id"], "img": imgs, "pair": pairs, "has_pair": has,
            "error": np.array(errors, dtype=object)}


def build_datasets(plan: dict[str, Any], cfg: TrainSRGANConfig):
    """Ray datasets {"hr", "lr"} of decoded faces (bad rows dropped) and the list of skipped rows."""
    import ray
    from ray.data.expressions import col

    hr_size, lr_size = cfg.discriminator.input_size, cfg.lr_size
    out, skipped = {}, []
    for name, size in (("hr", hr_size), ("lr", lr_size)):
        ds = ray.data.from_items(plan[name]).map_batches(
            decode_rows, batch_size=cfg.data.decode_batch, batch_format="numpy",
            fn_kwargs={"size": size, "pair_size": hr_size},
        ).materialize()  # decoded once; every epoch re-reads the workers' in-memory copy
        for r in ds.select_columns(["crop_id", "error"]).take_all():
            if r["error"]:
                log.warning("skipping %s face %s: %s", name, r["crop_id"], r["error"])
                skipped.append({"set": name, "crop_id": r["crop_id"], "error": r["error"]})
        out[name] = ds.filter(expr=col("error") == "").drop_columns(["error"]).materialize()
    return out, skipped


def decode_heldout(rows: list[dict], cfg: TrainSRGANConfig) -> dict[str, np.ndarray]:
    """Held-out faces (small) decoded in the driver; rows whose file is bad are dropped."""
    good = [r for r in rows if r["pair_path"]]
    if not good:
        return {"lr": np.zeros((0, cfg.lr_size, cfg.lr_size, 3), np.uint8),
                "hr": np.zeros((0, cfg.discriminator.input_size,) * 2 + (3,), np.uint8)}
    batch = {k: np.array([r[k] for r in good], dtype=object) for k in good[0]}
    dec = decode_rows(batch, cfg.lr_size, cfg.discriminator.input_size)
    ok = np.array([not e for e in dec["error"]]) & dec["has_pair"]
    return {"lr": dec["img"][ok], "hr": dec["pair"][ok]}


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
    """PSNR/SSIM of G and of bicubic vs the ZSSR output, and G's LR consistency, on held-out faces."""
    import torch
    from skimage.metrics import peak_signal_noise_ratio as psnr
    from skimage.metrics import structural_similarity as ssim

    from survsr.models.losses import bicubic_down, bicubic_up

    if len(held["lr"]) == 0:
        return {}
    was_training = G.training
    G.eval()
    with torch.no_grad():
        lr = torch.from_numpy(np.array(held["lr"])).to(device).permute(0, 3, 1, 2).float() / 255
        sr = G(lr).float().clamp(0, 1)
        bic = bicubic_up(lr, scale)
        lrc = bicubic_down(sr, scale)
    G.train(was_training)
    to_u8 = lambda t: (t.permute(0, 2, 3, 1).cpu().numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)  # noqa: E731
    sr_u8, bic_u8, lrc_u8 = to_u8(sr), to_u8(bic), to_u8(lrc)
    res = {"psnr_g_vs_zssr": [], "psnr_bicubic_vs_zssr": [], "ssim_g_vs_zssr": [], "ssim_bicubic_vs_zssr": [],
           "psnr_lr_consistency": []}
    for i, hr in enumerate(held["hr"]):
        res["psnr_g_vs_zssr"].append(psnr(hr, sr_u8[i], data_range=255))
        res["psnr_bicubic_vs_zssr"].append(psnr(hr, bic_u8[i], data_range=255))
        res["ssim_g_vs_zssr"].append(ssim(hr, sr_u8[i], channel_axis=2, data_range=255))
        res["ssim_bicubic_vs_zssr"].append(ssim(hr, bic_u8[i], channel_axis=2, data_range=255))
        res["psnr_lr_consistency"].append(psnr(held["lr"][i], lrc_u8[i], data_range=255))
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
