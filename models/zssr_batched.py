"""Many ZSSR networks trained at once: one set of kernels for N faces' independent networks.

Training a 32x32 face alone launches a handful of microsecond kernels per step and leaves a GPU idle. Here the
N networks' weights are stacked ([N, out, in, 3, 3] per layer) and every layer is ONE grouped convolution
(groups = N), so each step costs the same number of launches whatever N is. Each face keeps everything the
one-at-a-time path (``survsr.models.zssr.ZSSR``) keeps: its own random draws (counter-based, keyed by its seed), its
own Adam state and step count, its own learning-rate schedule and stopping iteration. A face that has finished
leaves its slot (its output is computed by the batched self-ensemble) and the next waiting face takes it.

Faces' fathers differ in size from step to step (random scale), so they sit at the top-left of a shared
canvas and every layer's output is multiplied by the face's mask: outside the face the activations stay zero,
which is exactly the zero padding of a convolution on the face alone. Losses are per-face means summed over
faces, so each face's gradient is its own. The test ``tests/models/test_zssr.py`` checks, in float64 on CPU, that
outputs and iteration counts equal the one-at-a-time path.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from survsr.models.zssr import (
    ADAM_BETAS, DEAD_NET_WARNING, FatherSource, LRState, ZSSRConfig, aug_draws, autocast, check_image,
    decode_draws, dihedral, downscale, finish_ensemble, init_weights_t, is_dead, layer_shapes, load_kernel, lr_policy,
    n_transforms, out_size, pick_device, pick_precision, resize, residual_rms, smallest_father, son_size, to_uint8,
    undo_dihedral,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass
class _Face:
    key: Any
    seed: int
    image: torch.Tensor       # [1, 3, H, W]
    gray: bool
    src: FatherSource
    lr: LRState
    t0: float
    it: int = 0               # next iteration to run


def grouped_forward(weights: Sequence[torch.Tensor], x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Residual CNN of G faces at once. ``weights[l]``: [G, out, in, 3, 3]; ``x``: [B, G, 3, H, W];
    ``mask``: [G, 1, H, W] or None (all faces fill the canvas). Returns [B, G, 3, H, W]."""
    b, g, c, h, w = x.shape
    act = x.reshape(b, g * c, h, w)
    for i, wt in enumerate(weights):
        out_ch = wt.shape[1]
        act = F.conv2d(act, wt.reshape(g * out_ch, *wt.shape[2:]).to(act.dtype), padding=1, groups=g)
        if mask is not None:
            act = (act.view(b, g, out_ch, h, w) * mask.to(act.dtype)).view(b, g * out_ch, h, w)
        if i < len(weights) - 1:
            act = F.relu(act)
    return x + act.view(b, g, c, h, w).to(x.dtype)


class BatchedZSSR:
    """Train and super-resolve many images, ``slots`` networks at a time.

    ``run(items)`` takes (key, uint8 image, seed) triples and yields (key, uint8 output, info) as faces finish,
    or (key, None, exception) for an image that cannot be used (named in the message). Any image size works;
    faces of similar size batch best (the canvas is the largest father in the batch).
    """

    def __init__(self, cfg: ZSSRConfig, slots: int = 256, device: torch.device | str | None = None,
                 init: Sequence[torch.Tensor] | None = None):
        """``init``: every face starts from these weights (warm start, ``survsr.models.zssr_init``) instead of
        its seed's random network; its seed still drives its augmentation draws."""
        cfg.validate()
        if cfg.augmentation != "dihedral" or cfg.resampler != "torch":
            # the batched bank holds the dihedral fathers made with torch's resampler; the official-code variants
            # measured in docs/benchmarks.md ("ZSSR against the official code") exist on the reference path only
            raise ValueError(f"the batched ZSSR engine supports augmentation=dihedral and resampler=torch only "
                             f"(got {cfg.augmentation}, {cfg.resampler}): use the one-at-a-time engine (ZSSR)")
        self.cfg = cfg
        self.slots = max(1, int(slots))
        self.device = pick_device(cfg.device) if device is None else torch.device(device)
        self.dtype, self.amp = pick_precision(cfg.precision, self.device)
        self.kernel = load_kernel(cfg.kernel)
        self.shapes = layer_shapes(cfg)
        if init is not None and [tuple(w.shape) for w in init] != self.shapes:
            raise ValueError(f"warm-start init does not fit the network (depth {cfg.depth}, width {cfg.width})")
        self.init = None if init is None else [w.detach().to(self.device, self.dtype) for w in init]
        self.steps_run = 0
        self.fast: tuple[int, int] | None = None  # (h, w) when the bank fast path is on
        self.bank: dict[str, torch.Tensor] | None = None

    # -- slot state ------------------------------------------------------------------------------------
    def _alloc(self, n: int) -> None:
        z = lambda s: torch.zeros((n, *s), device=self.device, dtype=self.dtype)  # noqa: E731
        self.W = [z(s).requires_grad_() for s in self.shapes]
        self.m = [z(s) for s in self.shapes]
        self.v = [z(s) for s in self.shapes]
        self.faces: list[_Face | None] = [None] * n
        self.bank = None
        if self.fast is not None:
            h, w = self.fast
            c = max(h, w)
            nb = (h - self.fmin + 1) * 8
            self.bank = {"father": torch.zeros((n, nb, 3, c, c), device=self.device, dtype=self.dtype),
                         "input": torch.zeros((n, nb, 3, c, c), device=self.device, dtype=self.dtype)}
            self.mask_bank = torch.zeros((nb, 1, c, c), device=self.device, dtype=self.dtype)
            self.count_bank = torch.ones(nb, device=self.device, dtype=self.dtype)
            for level in range(h - self.fmin + 1):
                fh, fw = self._father_hw(level)
                for k in range(8):
                    dh, dw = (fw, fh) if k % 2 else (fh, fw)
                    self.mask_bank[level * 8 + k, :, :dh, :dw] = 1
                    self.count_bank[level * 8 + k] = 3.0 * dh * dw

    def _father_hw(self, level: int) -> tuple[int, int]:
        """The father size of bank level ``level`` (same formula as ``decode_draws``)."""
        h, w = self.fast
        fh = self.fmin + level
        fw = int(min(w, max(smallest_father(self.cfg), np.round(w * np.int64(fh) / h))))
        return fh, fw

    @torch.no_grad()
    def _init_slots(self, slots: list[int]) -> None:
        """Fresh networks and Adam state for newly admitted faces, generated on the device in chunks."""
        for start in range(0, len(slots), 256):
            chunk = slots[start:start + 256]
            ti = torch.as_tensor(chunk, device=self.device)
            seeds = [self.faces[i].seed for i in chunk]
            start = (init_weights_t(seeds, self.cfg, self.device) if self.init is None
                     else [w.unsqueeze(0).expand(len(chunk), *w.shape) for w in self.init])
            for layer, w0 in enumerate(start):
                self.W[layer][ti] = w0.to(self.dtype)
                self.m[layer][ti] = 0
                self.v[layer][ti] = 0

    @torch.no_grad()
    def _fill_bank(self, slots: list[int]) -> None:
        """Every (father, upscaled son) a noise-free small face can draw, for the newly admitted ``slots`` at
        once: the same operations as ``FatherSource.clean_pair``, batched over faces."""
        if self.bank is None or not slots:
            return
        ti = torch.as_tensor(slots, device=self.device)
        imgs = torch.cat([self.faces[i].image for i in slots])
        for level in range(self.fast[0] - self.fmin + 1):
            fh, fw = self._father_hw(level)
            scaled = resize(imgs, (fh, fw)).clamp(0, 1)
            for k in range(8):
                father = dihedral(scaled, k).contiguous()
                dh, dw = father.shape[-2:]
                son = downscale(father, son_size(dh, dw, self.cfg.scale), self.kernel).clamp(0, 1)
                b = level * 8 + k
                self.bank["father"][ti, b, :, :dh, :dw] = father
                self.bank["input"][ti, b, :, :dh, :dw] = resize(son, (dh, dw))

    def _admit(self, slot: int, key: Any, img: np.ndarray, seed: int) -> None:
        a, gray = check_image(img, str(key))
        image = torch.from_numpy(a.transpose(2, 0, 1)[None].copy()).to(self.device, self.dtype)
        self.faces[slot] = _Face(key, int(seed), image, gray, FatherSource(image, self.cfg, self.kernel),
                                 LRState(lr=self.cfg.learning_rate), time.perf_counter())

    def _compact(self) -> None:
        """When most slots are empty (the tail of a run), move the live faces to a smaller stack so the
        grouped convolutions stop paying for empty groups."""
        live = [i for i, f in enumerate(self.faces) if f is not None]
        n = len(self.faces)
        if not live or len(live) > n // 2 or n <= 8:
            return
        new_n = max(8, 1 << (len(live) - 1).bit_length())
        if new_n >= n:
            return
        idx = torch.as_tensor(live, device=self.device)
        with torch.no_grad():
            self.W = [torch.cat([w[idx], w.new_zeros((new_n - len(live), *w.shape[1:]))]).requires_grad_()
                      for w in self.W]
            self.m = [torch.cat([t[idx], t.new_zeros((new_n - len(live), *t.shape[1:]))]) for t in self.m]
            self.v = [torch.cat([t[idx], t.new_zeros((new_n - len(live), *t.shape[1:]))]) for t in self.v]
            if self.bank is not None:
                self.bank = {k: torch.cat([t[idx], t.new_zeros((new_n - len(live), *t.shape[1:]))])
                             for k, t in self.bank.items()}
        self.faces = [self.faces[i] for i in live] + [None] * (new_n - len(live))

    # -- one training step for every live face ------------------------------------------------------------
    def _step(self) -> None:
        if self.bank is not None:
            return self._step_fast()
        n = len(self.faces)
        live = [i for i, f in enumerate(self.faces) if f is not None]
        draws = aug_draws([self.faces[i].seed for i in live], [self.faces[i].it for i in live])
        pairs = {}
        for row, i in enumerate(live):
            f = self.faces[i]
            pairs[i] = f.src.pair(draws[row], f.seed, f.it)
        hc = max(p[0].shape[-2] for p in pairs.values())
        wc = max(p[0].shape[-1] for p in pairs.values())
        father = torch.zeros((n, 3, hc, wc), device=self.device, dtype=self.dtype)
        inp = torch.zeros_like(father)
        mask = torch.zeros((n, 1, hc, wc), device=self.device, dtype=self.dtype)
        count = torch.ones(n, device=self.device, dtype=self.dtype)
        by_shape: dict[tuple[int, int], list[int]] = {}
        for i, (fa, _) in pairs.items():
            by_shape.setdefault(tuple(fa.shape[-2:]), []).append(i)
        for (h, w), idx in by_shape.items():
            ti = torch.as_tensor(idx, device=self.device)
            father[ti, :, :h, :w] = torch.cat([pairs[i][0] for i in idx])
            inp[ti, :, :h, :w] = torch.cat([pairs[i][1] for i in idx])
            mask[ti, :, :h, :w] = 1
            count[ti] = 3.0 * h * w
        self._train(live, father, inp, mask, count)

    def _step_fast(self) -> None:
        """Noise-free faces of one size: every face's pair is one gather from the bank (no per-face work)."""
        n = len(self.faces)
        live = [i for i, f in enumerate(self.faces) if f is not None]
        seeds = np.zeros(n, np.int64)
        its = np.zeros(n, np.int64)
        for i in live:
            seeds[i], its[i] = self.faces[i].seed, self.faces[i].it
        d = decode_draws(aug_draws(seeds, its), self.fast[0], self.fast[1], self.cfg)
        b = self._to_dev((d["fh"] - self.fmin) * 8 + d["k"])
        alive_np = np.zeros(n)
        alive_np[live] = 1
        alive = self._to_dev(alive_np).to(self.dtype)
        ar = torch.arange(n, device=self.device)
        self._train(live, self.bank["father"][ar, b], self.bank["input"][ar, b],
                    self.mask_bank[b] * alive.view(n, 1, 1, 1), self.count_bank[b])

    def _train(self, live: list[int], father: torch.Tensor, inp: torch.Tensor, mask: torch.Tensor,
               count: torch.Tensor) -> None:
        with autocast(self.device, self.amp):
            out = grouped_forward(self.W, inp[None], mask)[0]
        per_face = ((out.to(self.dtype) - father).abs() * mask).sum(dim=(1, 2, 3)) / count
        for w in self.W:
            w.grad = None
        per_face.sum().backward()
        self._adam(live)
        self._last_loss = per_face.detach()  # read at a face's finish only (no per-step host sync)
        self.steps_run += 1

    def _to_dev(self, a: np.ndarray) -> torch.Tensor:
        """Host array -> device without a host/device sync (pinned, non-blocking), so the CPU can prepare
        the next step while the GPU runs this one."""
        t = torch.from_numpy(np.ascontiguousarray(a))
        if self.device.type != "cuda":
            return t
        return t.pin_memory().to(self.device, non_blocking=True)

    def _adam(self, live: list[int]) -> None:
        """torch.optim.Adam's (single-tensor) update, with a learning rate and step count per face."""
        n = len(self.faces)
        b1, b2 = ADAM_BETAS
        lr = np.zeros(n)
        step = np.ones(n)
        for i in live:
            lr[i] = self.faces[i].lr.lr
            step[i] = self.faces[i].it + 1
        step_size = self._to_dev(lr / (1 - b1 ** step)).to(self.dtype)
        bc2_sqrt = self._to_dev(np.sqrt(1 - b2 ** step)).to(self.dtype)
        with torch.no_grad():
            for w, m, v in zip(self.W, self.m, self.v):
                g = w.grad
                shape = (n,) + (1,) * (w.dim() - 1)
                m.lerp_(g, 1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (v.sqrt() / bc2_sqrt.view(shape)).add_(self.cfg.adam_eps)
                w.sub_(step_size.view(shape) * m / denom)

    # -- reconstruction error, learning-rate policy, stopping ---------------------------------------------
    def _quick_tests(self, idx: list[int]) -> None:
        for group in _group_by_size(self.faces, idx):
            ti = torch.as_tensor(group, device=self.device)
            x = torch.cat([self.faces[i].src.test_input(self.faces[i].seed, len(self.faces[i].lr.errors))
                           for i in group])
            imgs = torch.cat([self.faces[i].image for i in group])
            with torch.no_grad(), autocast(self.device, self.amp):
                rec = grouped_forward([w[ti] for w in self.W], x[None])[0].to(self.dtype).clamp(0, 1)
            errs = ((imgs - rec) ** 2).mean(dim=(1, 2, 3)).tolist()
            for i, e in zip(group, errs):
                f = self.faces[i]
                f.lr.errors.append(float(e))
                f.lr.steps.append(f.it)

    def _after_step(self) -> list[int]:
        cfg = self.cfg
        live = [i for i, f in enumerate(self.faces) if f is not None]
        self._quick_tests([i for i in live if self.faces[i].it % cfg.run_test_every == 0])
        finished = []
        for i in live:
            f = self.faces[i]
            lr_policy(f.it, f.lr, cfg)
            f.it += 1
            if f.lr.lr < cfg.min_learning_rate or f.it >= cfg.max_iters:
                finished.append(i)
        return finished

    # -- inference ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def _infer(self, idx: list[int]) -> list[tuple[int, torch.Tensor, float]]:
        """(slot, output, residual RMS) per finished face."""
        out = []
        for group in _group_by_size(self.faces, idx):
            ti = torch.as_tensor(group, device=self.device)
            ws = [w[ti] for w in self.W]
            imgs = torch.cat([self.faces[i].image for i in group])           # [G, 3, H, W]
            per_k = []
            rms = None
            for k in range(n_transforms(self.cfg)):
                x = dihedral(imgs, k)
                up = resize(x, out_size(x.shape[-2], x.shape[-1], self.cfg.scale))
                with autocast(self.device, self.amp):
                    y = grouped_forward(ws, up[None])[0].to(self.dtype)
                if k == 0:
                    rms = residual_rms(y, up).tolist()
                per_k.append(undo_dihedral(y.clamp(0, 1), k))
            res = finish_ensemble(torch.stack(per_k), imgs, self.cfg, self.kernel)
            out.extend((i, res[j:j + 1], rms[j]) for j, i in enumerate(group))
        return out

    # -- driver ------------------------------------------------------------------------------------------
    def run(self, items: Sequence[tuple[Any, np.ndarray, int]]) -> Iterator[tuple[Any, np.ndarray | None, Any]]:
        items = list(items)
        if not items:
            return
        # Bank fast path: no noise on the sons (so pairs repeat) and one face size no larger than the crop.
        shapes = {tuple(getattr(im, "shape", (0, 0))[:2]) for _, im, _ in items}
        self.fast = None
        if self.cfg.noise_std == 0 and len(shapes) == 1:
            h, w = next(iter(shapes))
            if min(h, w) >= 8 and max(h, w) <= self.cfg.crop_size:
                self.fast = (h, w)
                self.fmin = min(smallest_father(self.cfg), h)
        self._alloc(min(self.slots, len(items)))
        pending = iter(items)
        exhausted = False
        while True:
            admitted = []
            for slot, f in enumerate(self.faces):
                while f is None and not exhausted:
                    nxt = next(pending, None)
                    if nxt is None:
                        exhausted = True
                        break
                    key, img, seed = nxt
                    try:
                        self._admit(slot, key, img, seed)
                        f = self.faces[slot]
                        admitted.append(slot)
                    except (ValueError, TypeError) as exc:
                        yield key, None, exc
            if all(f is None for f in self.faces):
                break
            if admitted:
                self._init_slots(admitted)
                self._fill_bank(admitted)
            if self.cfg.max_iters == 0:  # no fine-tuning: every admitted face is done as it is
                finished = [i for i, f in enumerate(self.faces) if f is not None]
                losses = [float("nan")] * len(self.faces)
            else:
                self._step()
                finished = self._after_step()
                losses = self._last_loss.tolist() if finished else []
            if finished:
                for i, res, rms in self._infer(finished):
                    f = self.faces[i]
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    info = {"iterations": f.it, "final_lr": f.lr.lr, "final_loss": losses[i],
                            "final_rec_mse": f.lr.errors[-1] if f.lr.errors else float("nan"),
                            "lr_changes": list(f.lr.changes), "seconds": time.perf_counter() - f.t0,
                            "device": str(self.device), "residual_rms": rms}
                    if is_dead(rms):
                        log.warning(DEAD_NET_WARNING, f.key)
                    self.faces[i] = None
                    yield f.key, to_uint8(res, f.gray), info
                if exhausted:
                    self._compact()


def _group_by_size(faces: list[_Face | None], idx: list[int]) -> list[list[int]]:
    groups: dict[tuple[int, int], list[int]] = {}
    for i in idx:
        groups.setdefault(tuple(faces[i].image.shape[-2:]), []).append(i)
    return list(groups.values())


def super_resolve_many(images: Sequence[np.ndarray], cfg: ZSSRConfig, seeds: Sequence[int] | None = None,
                       slots: int = 256) -> list[tuple[np.ndarray | None, Any]]:
    """Batched counterpart of ``survsr.models.zssr.super_resolve``: results in input order; a bad image gives
    (None, exception) in its place."""
    seeds = list(seeds) if seeds is not None else [0] * len(images)
    res: dict[int, tuple] = {}
    for key, out, info in BatchedZSSR(cfg, slots=slots).run([(i, im, s) for i, (im, s) in enumerate(zip(images, seeds))]):
        res[key] = (out, info)
    return [res[i] for i in range(len(images))]
