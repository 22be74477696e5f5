"""Warm start for ZSSR: one initial network learnt from the batch's own internal pairs (opt-in).

Zero-shot stays zero-shot: the init sees only the LR faces being processed, through the same internal
"HR father / LR son" pairs ZSSR makes from each face (``FatherSource``: the face and its downscaled copies,
the 8 rotations/mirrors, sons = fathers downscaled by the scale). No external HR image is ever read. Each
face then fine-tunes from the init with ZSSR's own lr policy and stopping rule (MZSR, Soh et al. 2020, minus
the external pre-training).

Two ways to learn the init (``warm_start.method``):
- ``transfer``: one network trained with Adam on the pooled pairs, ``faces_per_step`` faces per step
  (each face's father on its own zero-padded canvas, so a face's loss is what it is on the face alone);
- ``reptile``: first-order meta-learning (Nichol et al. 2018): per meta step, ``faces_per_step`` faces each
  take ``inner_steps`` Adam steps from the init at the fine-tuning lr (fresh Adam state, like the fine-tuning
  itself), and the init moves ``meta_step_size`` of the way towards the mean of the adapted networks.
Both use ZSSR's Adam settings, ``zssr.adam_eps`` included: the init starts from the same near-zero residual
as a face's network, so the epsilon trap of a flat face (see ``survsr.models.zssr``) applies to it as well.

Determinism: the faces are ordered by the SHA-256 of their pixels (the init does not depend on the order of
the manifest), and every random choice comes from the counter-based generator of ``survsr.models.zssr``
keyed by ``warm_start.seed``; on CPU the same inputs and seed give the same init, byte for byte.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from survsr.models.zssr import (
    ADAM_BETAS, FatherSource, ZSSRConfig, aug_draws, autocast, check_image, init_weights, layer_shapes,
    load_kernel, pick_device, pick_precision, uniforms,
)

STREAM_PICK = 40  # which face each step trains on (distinct from the per-face streams of zssr.py)
METHODS = ("transfer", "reptile")


@dataclasses.dataclass
class WarmStartConfig:
    enabled: bool = False                 # off = the paper: every face starts from a random network
    method: str = "transfer"              # transfer | reptile
    steps: int = 400                      # optimiser steps (transfer) or meta steps (reptile)
    faces_per_step: int = 8               # transfer: minibatch of faces; reptile: tasks per meta step
    learning_rate: float = 1e-3           # transfer: Adam lr (reptile's inner lr = zssr.learning_rate)
    final_decay: float = 0.25             # transfer: last fraction of the steps at learning_rate / 10
    inner_steps: int = 5                  # reptile only
    meta_step_size: float = 1.0           # reptile only: epsilon, linearly annealed to 0 over the steps
    seed: int = 0

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method: one of {', '.join(METHODS)}; got {self.method!r}")
        if self.steps < 0 or self.faces_per_step < 1 or self.inner_steps < 1:
            raise ValueError("steps >= 0, faces_per_step >= 1, inner_steps >= 1 required")
        if self.learning_rate <= 0 or not 0 < self.meta_step_size <= 1 or not 0 <= self.final_decay <= 1:
            raise ValueError("learning_rate > 0, 0 < meta_step_size <= 1, 0 <= final_decay <= 1 required")

    def face_iterations(self) -> int:
        """Network updates of one face-sized pair the training costs (comparable to ZSSR's iterations)."""
        per = self.faces_per_step * (self.inner_steps if self.method == "reptile" else 1)
        return self.steps * per


def _masked_forward(weights: Sequence[torch.Tensor], x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """ZSSR's residual CNN, one shared network over B faces each on a zero-padded canvas: the activations
    outside a face stay zero, which is exactly the zero padding of a convolution on the face alone."""
    h = x
    for i, w in enumerate(weights):
        h = F.conv2d(h, w.to(h.dtype), padding=1) * mask.to(h.dtype)
        if i < len(weights) - 1:
            h = F.relu(h)
    return x + h.to(x.dtype)


def _grouped_forward(weights: Sequence[torch.Tensor], x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """G networks (``weights[l]``: [G, out, in, 3, 3]) on G faces ([G, 3, H, W]) in one grouped conv each."""
    g, c, hh, ww = x.shape
    act = x.reshape(1, g * c, hh, ww)
    for i, wt in enumerate(weights):
        oc = wt.shape[1]
        act = F.conv2d(act, wt.reshape(g * oc, *wt.shape[2:]).to(act.dtype), padding=1, groups=g)
        act = (act.view(g, oc, hh, ww) * mask.to(act.dtype)).view(1, g * oc, hh, ww)
        if i < len(weights) - 1:
            act = F.relu(act)
    return x + act.view(g, c, hh, ww).to(x.dtype)


class _Pool:
    """The faces' internal pairs, drawn exactly as ZSSR draws them for one face."""

    def __init__(self, images: Sequence[np.ndarray], cfg: ZSSRConfig, device, dtype):
        arrays = []
        for k, img in enumerate(images):
            a, _ = check_image(img, f"warm-start input {k}")
            arrays.append(a)
        # order by content, so the manifest's order (or a resumed subset's) cannot change the init
        arrays.sort(key=lambda a: hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest())
        kernel = load_kernel(cfg.kernel)
        self.device, self.dtype = device, dtype
        self.sources = [FatherSource(torch.from_numpy(a.transpose(2, 0, 1)[None].copy()).to(device, dtype), cfg,
                                     kernel) for a in arrays]

    def batch(self, seed: int, counters: np.ndarray, tasks: np.ndarray | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(fathers, inputs, masks, pixel counts) for the draws ``counters``, on one zero-padded canvas. The
        face of draw j is picked by ``tasks[j]`` (default: ``counters[j]``), so a task can keep its face."""
        n = len(self.sources)
        tasks = counters if tasks is None else tasks
        pick = np.minimum(n - 1, (uniforms(seed, STREAM_PICK, tasks) * n).astype(np.int64))
        draws = aug_draws(np.full(len(counters), seed), counters)
        pairs = [self.sources[p].pair(u, seed, int(c)) for p, u, c in zip(pick, draws, counters)]
        hc = max(f.shape[-2] for f, _ in pairs)
        wc = max(f.shape[-1] for f, _ in pairs)
        b = len(pairs)
        father = torch.zeros((b, 3, hc, wc), device=self.device, dtype=self.dtype)
        inp = torch.zeros_like(father)
        mask = torch.zeros((b, 1, hc, wc), device=self.device, dtype=self.dtype)
        count = torch.ones(b, device=self.device, dtype=self.dtype)
        for j, (fa, x) in enumerate(pairs):
            h, w = fa.shape[-2:]
            father[j, :, :h, :w] = fa[0]
            inp[j, :, :h, :w] = x[0]
            mask[j, :, :h, :w] = 1
            count[j] = 3.0 * h * w
        return father, inp, mask, count


def train_init(images: Sequence[np.ndarray], cfg: ZSSRConfig, ws: WarmStartConfig,
               device: torch.device | str | None = None) -> tuple[list[torch.Tensor], dict]:
    """Learn the initial network from ``images`` (uint8 LR faces, the only data it sees). Returns (weights:
    float32 CPU tensors shaped like ZSSR's layers, info = {method, steps, face_iterations, seconds,
    cpu_seconds, faces})."""
    ws.validate()
    if not len(images):
        raise ValueError("warm start: no input images to learn the init from")
    dev = pick_device(cfg.device) if device is None else torch.device(device)
    dtype, amp = pick_precision(cfg.precision, dev)
    t0, c0 = time.perf_counter(), time.process_time()
    pool = _Pool(images, cfg, dev, dtype)
    seed = int(ws.seed)
    # the same N(0, init_variance / fan_in) start as a face's network, keyed by the warm-start seed
    w0 = [w.to(dev, dtype) for w in init_weights(seed ^ 0x5EED, cfg)]
    if ws.method == "transfer":
        weights = _transfer(pool, w0, cfg, ws, dev, amp)
    else:
        weights = _reptile(pool, w0, cfg, ws, dev, amp)
    info = {"method": ws.method, "steps": ws.steps, "face_iterations": ws.face_iterations(),
            "faces": len(pool.sources), "seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time() - c0, "device": str(dev)}
    return [w.detach().to("cpu", torch.float32).contiguous() for w in weights], info


def _transfer(pool: _Pool, w0, cfg: ZSSRConfig, ws: WarmStartConfig, dev, amp) -> list[torch.Tensor]:
    weights = [w.clone().requires_grad_() for w in w0]
    opt = torch.optim.Adam(weights, lr=ws.learning_rate, betas=ADAM_BETAS, eps=cfg.adam_eps, foreach=False,
                           fused=False)
    decay_at = int(round(ws.steps * (1 - ws.final_decay)))
    b = ws.faces_per_step
    for step in range(ws.steps):
        if step == decay_at:
            for g in opt.param_groups:
                g["lr"] = ws.learning_rate / 10
        father, inp, mask, count = pool.batch(ws.seed, step * b + np.arange(b, dtype=np.int64))
        with autocast(dev, amp):
            out = _masked_forward(weights, inp, mask)
        loss = (((out.to(father.dtype) - father).abs() * mask).sum(dim=(1, 2, 3)) / count).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return weights


def _reptile(pool: _Pool, w0, cfg: ZSSRConfig, ws: WarmStartConfig, dev, amp) -> list[torch.Tensor]:
    """First-order meta-learning; the G tasks of a meta step adapt at once (grouped convolutions)."""
    theta = [w.clone() for w in w0]
    g = ws.faces_per_step
    b1, b2 = ADAM_BETAS
    for step in range(ws.steps):
        phi = [t.unsqueeze(0).repeat(g, *([1] * t.dim())).requires_grad_() for t in theta]
        m = [torch.zeros_like(p) for p in phi]
        v = [torch.zeros_like(p) for p in phi]
        # every task of this meta step is one face: its draws continue that face's counter stream
        base = (step * g + np.arange(g, dtype=np.int64)) * ws.inner_steps
        for k in range(ws.inner_steps):
            ctr = base + k
            father, inp, mask, count = pool.batch(ws.seed, ctr, tasks=base)
            with autocast(dev, amp):
                out = _grouped_forward(phi, inp, mask)
            per_task = ((out.to(father.dtype) - father).abs() * mask).sum(dim=(1, 2, 3)) / count
            for p in phi:
                p.grad = None
            per_task.sum().backward()  # each task's gradient is its own
            with torch.no_grad():
                step_size = cfg.learning_rate / (1 - b1 ** (k + 1))
                bc2 = (1 - b2 ** (k + 1)) ** 0.5
                for p, mm, vv in zip(phi, m, v):
                    mm.lerp_(p.grad, 1 - b1)
                    vv.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                    p.sub_(step_size * mm / (vv.sqrt() / bc2 + cfg.adam_eps))
        eps = ws.meta_step_size * (1 - step / max(1, ws.steps))
        with torch.no_grad():
            theta = [t + eps * (p.mean(dim=0) - t) for t, p in zip(theta, phi)]
    return theta


# ------------------------------------------------------------------------------------------------------------
# Serialisation: the init travels as safetensors bytes (object store, disk); its SHA-256 names it everywhere.


def init_to_bytes(weights: Sequence[torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save({f"layer{i:02d}": w.detach().to("cpu", torch.float32).contiguous() for i, w in enumerate(weights)})


def init_from_bytes(data: bytes, cfg: ZSSRConfig) -> list[torch.Tensor]:
    from safetensors.torch import load

    t = load(data)
    shapes = layer_shapes(cfg)
    weights = [t.get(f"layer{i:02d}") for i in range(len(shapes))]
    if len(t) != len(shapes) or any(w is None or tuple(w.shape) != s for w, s in zip(weights, shapes)):
        raise ValueError(f"warm-start init does not fit the network (depth {cfg.depth}, width {cfg.width})")
    return weights


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
