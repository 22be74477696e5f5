"""Gradual ZSSR: the official code's ``X2_GRADUAL_IDEAL_CONF``, reference engine only (an ablation of issue 17).

The official README says gradual SR gives "~0.3dB better results, 6x Runtime" than one jump, and the gap between
the one-jump figures measured here and the paper's Set5/Set14 table is of that size. Measured (docs/benchmarks.md,
"the official code run here"): with the shipped setting (network carried over) bird scores 42.21 here and 42.16
with the official code itself (a minimal Python 3 / tf.compat.v1 port, same LR image), stage by stage within
0.17 dB, against one jump's 41.6. An earlier carried run here (38.67) predates the fix of imresize's antialiasing
quirk (below) and is void. On all of Set5 the carried setting scores 37.41, the paper's 37.37 (one jump: 37.04), at
5.4x the iterations. On Set14 it scores 32.82 (one jump 32.77, paper 33.00): the 13 images whose network lived gain
0.26 dB on average, but on ppt3 the network dies in stage 1 at every start tried (29.35 against one jump's 32.00).
The cause is Adam's epsilon (1e-8, official): L1 on the flat slide drives the residual to ~1e-8 and its gradients
below eps, where the steps vanish; with the opt-in ``adam_eps: 1.0e-16`` ppt3 lives (32.25) and so does foreman at
seed 0 (37.44), but coastguard's stage 2 then dies for real (RMS 0) unless ``restart_dead`` (30.58; 30.60 at
1e-8), see docs/benchmarks.md "2026-12-06". With that pair (``adam_eps: 1.0e-16`` + ``restart_dead``) all
14 Set14 images score 33.03 (the paper: 33.00) and all of Set5 37.38 (the paper: 37.37); on the 17 images whose
network lived at 1e-8 it moves them -0.07 to +0.05 (14 down). Foreman at seed 0 (eps 1e-8) scores 1.71 dB below one jump because its
network died in stage 2 (``residual_rms`` 0; opt-in ``restart_dead``). At seed 1 it scores 37.24, and the official
code at seed 0 scores 37.38 (one jump: 36.99). With a fresh network per stage (opt-in ``fresh_net_per_stage``) Set5
scores 37.14 and Set14 32.85, against one jump's 37.04 / 32.77. Read from ZSSR.py/utils.py:
- the x2 is reached through the factors ``GRADUAL_X2`` (vertical, horizontal), each a full training run with the
  lr policy and stopping rule, followed by the self-ensemble (180-degree steps when the factor is anisotropic)
  with that stage's back-projection count (``GRADUAL_X2_BP``);
- the network and its Adam moments carry over from stage to stage (``init_net_for_each_sf = False`` re-runs
  no initialiser); the learning rate and the lr-policy history restart;
- every stage's output joins the father sources; ``random_augment`` draws a scale up to the smaller factor of
  the newest source and takes the first source whose (smaller) factor reaches it, so in practice the fathers
  come from the input and, from the fourth stage on, from the 1.5x1.5 output;
- fathers always come from the official warp (``augmentation: affine`` whatever the config says: the
  source/scale logic exists only there); sons are ceil(size / factor), as ``imresize`` sizes them;
- resampling is always the official ``imresize`` (``resampler: matlab`` whatever the config says): it maps
  coordinates by the factor itself, while torch's ``interpolate`` can only map by the size ratio, and a ceil'd
  size makes that another factor (a 128 px father's 86 px son is x0.672, not x1/1.5), so the network would learn
  one factor and be applied at another. Measured on Set5 ``head``: 35.55 dB with torch's resampler, 35.90 with
  the official one (docs/benchmarks.md, "ZSSR against the official code"). imresize's quirk comes with it: it
  decides antialiasing for both axes from the vertical factor alone, so the first stage's sons (1.0 x 1/1.5)
  are shrunk horizontally with the plain, aliasing cubic (``resize`` follows it since 2026-12-03).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time

import numpy as np
import torch

from survsr.models.zssr import (
    ADAM_BETAS, DEAD_NET_WARNING, STREAM_NOISE, ZSSR, LRState, ZSSRConfig, affine_draws, aug_draws, autocast,
    back_project, check_image, dihedral, init_weights, l1_step, lr_policy, median8, net_forward, noise_tensor,
    is_dead, official_mode, official_transform, residual_rms, resize, to_uint8, undo_dihedral, warp_father,
)

GRADUAL_X2 = ((1.0, 1.5), (1.5, 1.0), (1.5, 1.5), (1.5, 2.0), (2.0, 1.5), (2.0, 2.0))
GRADUAL_X2_BP = (6, 6, 8, 10, 10, 12)

Factor = tuple[float, float]
log = logging.getLogger(__name__)


def source_index(bases: list[float], scale: float) -> int:
    """``random_augment``'s pick: the first father source whose (smaller) factor reaches the drawn scale."""
    return next(i for i, b in enumerate(bases) if b > scale - 1e-6)


def scaled_size(h: int, w: int, f: Factor) -> tuple[int, int]:
    """imresize's output size for a factor: ceil(size * factor), per axis."""
    return int(math.ceil(h * f[0] - 1e-9)), int(math.ceil(w * f[1] - 1e-9))


class GradualZSSR(ZSSR):
    """``run`` super-resolves by ``factors[-1]`` through every factor in turn (reference path, one image)."""

    def __init__(self, cfg: ZSSRConfig, factors=GRADUAL_X2, bp_iters=GRADUAL_X2_BP, device=None,
                 fresh_net_per_stage: bool = False, skip_unused: bool = True, restart_dead: bool = False):
        """``fresh_net_per_stage``: the official ``init_net_for_each_sf = True`` (default False, as in
        ``X2_GRADUAL_IDEAL_CONF``): every stage starts from the seed's random network and new Adam moments.
        ``skip_unused`` (fresh networks only): a stage then reaches the result only as a father source, and
        ``random_augment`` takes the *first* source of a scale, so with ``GRADUAL_X2`` only the 1.5x1.5 stage
        feeds the last one; stages that no needed stage can draw (over all its ``max_iters`` draws) are not run.
        The result is bit-identical (a test checks it) at about a third of the compute.
        ``restart_dead`` (opt-in, not in the official code): a stage whose network died (residual RMS 0 or
        below ``DEAD_RMS``, see ``survsr.models.zssr.residual_rms``) is trained again from the seed's random
        network (seed + 1's where the stage had begun from the seed's) and new Adam moments, which later stages
        then carry over; its iterations count in the total."""
        # what runs is what the config (and so every record of it) says: the official fathers and resampler
        super().__init__(dataclasses.replace(cfg, augmentation="affine", resampler="matlab"), device)
        if len(factors) != len(bp_iters):
            raise ValueError("one back-projection count per gradual factor")
        self.factors = [tuple(float(v) for v in f) for f in factors]
        self.bp_iters = list(bp_iters)
        self.fresh_net_per_stage = fresh_net_per_stage
        self.skip_unused = skip_unused
        self.restart_dead = restart_dead

    def _bases(self) -> list[float]:
        """Each father source's factor: the input, then every stage's output (its smaller factor)."""
        return [1.0] + [min(f) for f in self.factors]

    def _drawable(self, n: int, seed: int) -> set[int]:
        """The father sources stage ``n`` can draw in any of its ``max_iters`` iterations (``_father``'s draws)."""
        bases, cfg = self._bases()[: n + 1], self.cfg
        its = n * cfg.max_iters + np.arange(cfg.max_iters)
        out = set()
        for u in aug_draws(np.full(len(its), seed), its):
            out.add(source_index(bases, official_mode(u, cfg, max_scale=bases[-1])[1]))
        return out

    def stages_to_run(self, seed: int) -> list[int]:
        """Every stage, unless fresh networks make some unused (see ``skip_unused``)."""
        last = len(self.factors) - 1
        if not (self.fresh_net_per_stage and self.skip_unused):
            return list(range(last + 1))
        needed, todo = {last}, [last]
        while todo:
            for src in self._drawable(todo.pop(), seed) - {0}:  # source i >= 1 is stage i - 1's output
                if src - 1 not in needed:
                    needed.add(src - 1)
                    todo.append(src - 1)
        return sorted(needed)

    # -- resampling between the input and a factor's grid (imresize: both the factor and the output size)
    def _down(self, x: torch.Tensor, f: Factor) -> torch.Tensor:
        size = scaled_size(x.shape[-2], x.shape[-1], (1.0 / f[0], 1.0 / f[1]))
        return resize(x, size, self.cfg.resampler, (1.0 / f[0], 1.0 / f[1])).clamp(0, 1)

    def _up(self, x: torch.Tensor, f: Factor, size: tuple[int, int] | None = None) -> torch.Tensor:
        return resize(x, size or scaled_size(x.shape[-2], x.shape[-1], f), self.cfg.resampler, f)

    def _father(self, sources, bases, seed: int, it: int) -> torch.Tensor:
        mode, scale = official_mode(aug_draws([seed], [it])[0], self.cfg, max_scale=bases[-1])
        ind = source_index(bases, scale)
        src = sources[ind]
        if src is None:  # stages_to_run promised every drawable source
            raise RuntimeError(f"gradual ZSSR: father source {ind} was skipped but drawn")
        mat = official_transform(mode, scale, bases[ind], *affine_draws(seed, it), src.shape[0], src.shape[1],
                                 self.cfg)
        return warp_father(src, mat, self.cfg, self.image)

    def _train_stage(self, weights, opt, sources, bases, f: Factor, seed: int, offset: int) -> dict:
        cfg, image = self.cfg, self.image
        st = LRState(lr=cfg.learning_rate)
        for g in opt.param_groups:
            g["lr"] = st.lr
        it = -1
        for it in range(cfg.max_iters):
            father = self._father(sources, bases, seed, offset + it)
            son = self._down(father, f)
            if cfg.noise_std > 0:
                son = (son + noise_tensor(seed, STREAM_NOISE, offset + it, tuple(son.shape), cfg, son)).clamp(0, 1)
            l1_step(weights, opt, self._up(son, f, tuple(father.shape[-2:])), father, self.device, self.amp)
            if it % cfg.run_test_every == 0:
                with torch.no_grad(), autocast(self.device, self.amp):
                    son = self._down(image, f)
                    rec = net_forward(weights, self._up(son, f, tuple(image.shape[-2:]))).to(image.dtype).clamp(0, 1)
                st.errors.append(float(((image - rec) ** 2).mean()))
                st.steps.append(it)
            if lr_policy(it, st, cfg):
                for g in opt.param_groups:
                    g["lr"] = st.lr
            if st.lr < cfg.min_learning_rate:
                break
        # the reconstruction-error curve the lr policy fitted: why a stage stopped where it did
        return {"factor": list(f), "iterations": it + 1, "lr_changes": list(st.changes),
                "rec_mse": [[s, e] for s, e in zip(st.steps, st.errors)]}

    @torch.no_grad()
    def _final_test(self, weights, f: Factor, bp: int) -> tuple[torch.Tensor, float]:
        """The stage's output and its network's residual RMS on the input (0: a dead network)."""
        image, method = self.image, self.cfg.resampler
        outs = []
        rms = float("nan")
        step = 1 if f[0] == f[1] else 2  # anisotropic: only the transforms that keep the axes
        for k in range(0, 8 if self.cfg.output_flip else 1, step):
            x = dihedral(image, k)
            up = self._up(x, f)
            with autocast(self.device, self.amp):
                y = net_forward(weights, up).to(image.dtype)
            if k == 0:
                rms = float(residual_rms(y, up)[0])
            y = undo_dihedral(y.clamp(0, 1), k)
            for _ in range(bp):
                y = back_project(y, image, None, method, f)
            outs.append(y)
        y = median8(torch.stack(outs))
        for _ in range(bp):
            y = back_project(y, image, None, method, f)
        return y, rms

    def run(self, img_uint8: np.ndarray, seed: int = 0, name: str = "image", init=None,
            on_stage=None) -> tuple[np.ndarray, dict]:
        """``on_stage(n, factor, output)``: called with each stage's post-processed output (uint8), e.g. to
        score it against the ground truth resized to that factor, as the official code's ``gt_per_sf`` does."""
        if self.kernel is not None:
            raise ValueError("gradual ZSSR: bicubic sons only (no kernel)")
        a, gray = check_image(img_uint8, name)
        t0 = time.perf_counter()
        self.image = image = self._tensor(a)
        start = init if init is not None else init_weights(seed, self.cfg)

        def new_net(src=start):
            w = [x.detach().to(self.device, self.dtype).clone().requires_grad_() for x in src]
            return w, torch.optim.Adam(w, lr=self.cfg.learning_rate, betas=ADAM_BETAS, eps=self.cfg.adam_eps,
                                       foreach=False, fused=False)

        weights = opt = None
        bases = self._bases()
        sources: list[np.ndarray | None] = [a] + [None] * len(self.factors)  # None: a stage not run
        run = self.stages_to_run(seed)
        stages = []
        out = image
        for n, (f, bp) in enumerate(zip(self.factors, self.bp_iters)):
            if n not in run:
                continue
            new_stage_net = weights is None or self.fresh_net_per_stage
            if new_stage_net:
                weights, opt = new_net()
            st = self._train_stage(weights, opt, sources[: n + 1], bases[: n + 1], f, seed, n * self.cfg.max_iters)
            out, rms = self._final_test(weights, f, bp)
            if is_dead(rms):
                log.warning(DEAD_NET_WARNING, f"{name} (gradual stage {n + 1}, x{f[0]:g}x{f[1]:g})")
                if self.restart_dead:
                    log.warning("gradual ZSSR %s: stage %d trained again from a fresh network", name, n + 1)
                    dead_its = st["iterations"]
                    # not ``init``: it may be what died. Nor the seed's network where the stage began from it:
                    # the same weights and draws replay the same death (Set14 ppt3, seed 0, died in stage 1)
                    restart_seed = seed + 1 if new_stage_net and init is None else seed
                    weights, opt = new_net(init_weights(restart_seed, self.cfg))
                    st = self._train_stage(weights, opt, sources[: n + 1], bases[: n + 1], f, seed,
                                           n * self.cfg.max_iters)
                    st = st | {"iterations": st["iterations"] + dead_its, "restarted_after": dead_its,
                               "restart_seed": restart_seed}
                    out, rms = self._final_test(weights, f, bp)
            stages.append({"stage": n} | st | {"residual_rms": rms})
            # a still takes minutes per stage on a CPU: say where the run is
            log.info("gradual ZSSR %s: stage %d/%d (x%gx%g) done, %d iterations, residual RMS %.2e, %.0fs so far",
                     name, n + 1, len(self.factors), f[0], f[1], st["iterations"], rms, time.perf_counter() - t0)
            if on_stage is not None:
                on_stage(n, f, to_uint8(out, gray))
            sources[n + 1] = np.ascontiguousarray(out[0].cpu().numpy().transpose(1, 2, 0))
        info = {"iterations": sum(s["iterations"] for s in stages), "stages": stages,
                "skipped_stages": [n for n in range(len(self.factors)) if n not in run],
                "seconds": time.perf_counter() - t0, "device": str(self.device),
                "residual_rms": stages[-1]["residual_rms"] if stages else float("nan")}
        return to_uint8(out, gray), info
