"""The official-code variants of ZSSR measured in issue 17 (docs/benchmarks.md, "ZSSR against the official
code"): MATLAB-style resampling, the official affine augmentation, numpy < 1.16's line-fit variance, and
gradual SR, each checked against what the official code does, not against this code's own output; and the
paper's size-weighted father sampling, checked against the density it reads the paper as."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from survsr.models.zssr import (
    ZSSR, FatherSource, LRState, ZSSRConfig, aug_draws, decode_draws, lr_policy, matlab_weights, official_mode,
    official_transform, resize,
)
from survsr.models.zssr_batched import BatchedZSSR
from survsr.models.zssr_gradual import GRADUAL_X2, GradualZSSR, scaled_size


def test_matlab_resampler_is_bicubic_inside_and_mirrors_at_the_borders():
    x = torch.rand(1, 3, 40, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for size, scale in (((20, 20), 0.5), ((80, 80), 2.0)):
        ours, pil_like = resize(x, size, "matlab", scale), resize(x, size)
        # away from the borders both are the a=-0.5 cubic (stretched by 1/scale when shrinking)
        assert (ours - pil_like)[..., 4:-4, 4:-4].abs().max() < 1e-12
        # at the borders the official code mirrors the image instead of renormalising a truncated kernel
        assert (ours - pil_like).abs().max() > 1e-3
    w = matlab_weights(8, 4, 0.5)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    # output pixel 1 of a x0.5 shrink sits at input 1.5 (1-based); the stretched kernel (half-width 4) reaches
    # 0-based inputs -3..4, and the taps left of the image land mirrored on inputs 2, 1, 0
    taps = np.arange(-4, 6)
    d = taps + 1 - 1.5  # distances from the centre
    k = np.abs(d) * 0.5
    cubic = np.where(k <= 1, 1.5 * k ** 3 - 2.5 * k ** 2 + 1,
                     np.where(k <= 2, -0.5 * k ** 3 + 2.5 * k ** 2 - 4 * k + 2, 0.0)) * 0.5
    cubic /= cubic.sum()
    expect = np.zeros(8)
    for tap, c in zip(taps, cubic):
        expect[-tap - 1 if tap < 0 else tap] += c
    np.testing.assert_allclose(w[0], expect, atol=1e-12)


def test_matlab_resampler_takes_antialiasing_from_the_vertical_factor():
    """imresize sets ``antialiasing *= (scale_factor[0] < 1)`` for every axis: gradual's first son (1.0 x 1/1.5)
    is shrunk horizontally with the plain cubic, its second (1/1.5 x 1.0) vertically with the stretched one."""
    x = torch.rand(1, 3, 30, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    plain = torch.from_numpy(matlab_weights(30, 20, 1 / 1.5, False))
    stretched = torch.from_numpy(matlab_weights(30, 20, 1 / 1.5))
    assert (plain - stretched).abs().max() > 0.05
    wide = resize(x, (30, 20), "matlab", (1.0, 1 / 1.5))
    torch.testing.assert_close(wide, x @ plain.T, rtol=0, atol=1e-12)
    tall = resize(x, (20, 30), "matlab", (1 / 1.5, 1.0))
    torch.testing.assert_close(tall, stretched @ x, rtol=0, atol=1e-12)
    # an isotropic shrink antialiases both axes, as before
    torch.testing.assert_close(resize(x, (20, 20), "matlab", 1 / 1.5), stretched @ x @ stretched.T, rtol=0, atol=1e-12)


def test_legacy_line_fit_triples_the_slope_variance_and_lowers_the_lr_sooner():
    cfg = ZSSRConfig(min_iters=0, learning_rate_policy_check_every=1, learning_rate_slope_range=250,
                     run_test_every=50)
    steps = [0, 50, 100, 150, 200]
    # a slowly falling, noisy error: numpy >= 1.16 calls the fall real, numpy < 1.16 (official) calls it noise
    errors = [1.03, 0.96, 0.98, 0.94, 0.99]  # slope -2e-4 plus a zero-slope wobble: 1.5|slope|/std = 1.37
    (slope, _), cov = np.polyfit(steps, errors, 1, cov=True)
    std_now, std_legacy = math.sqrt(cov[0, 0]), math.sqrt(cov[0, 0] * 3)
    assert std_now < -cfg.learning_rate_change_ratio * slope < std_legacy
    for mode, drops in (("numpy", False), ("legacy", True)):
        st = LRState(lr=1e-3, steps=list(steps), errors=list(errors))
        assert lr_policy(200, st, ZSSRConfig(**{**cfg.__dict__, "lr_fit_cov": mode})) is drops
        assert st.lr == (1e-4 if drops else 1e-3)
    # numpy < 1.16 refused the fit below 5 points: such a schedule is a config error, not an lr that never drops
    short = dict(learning_rate_slope_range=20, run_test_every=5, device="cpu")
    with pytest.raises(ValueError, match=r"legacy needs .* >= 5 points.* = 4"):
        ZSSR(ZSSRConfig(**short))
    ZSSRConfig(**short, lr_fit_cov="numpy").validate()
    assert ZSSRConfig().lr_fit_cov == "legacy"  # the official code's behaviour is the default


def test_official_transform_modes():
    cfg = ZSSRConfig(crop_size=8)
    h = w = 12
    img = np.random.default_rng(0).random((h, w, 3))
    src = torch.from_numpy(img.transpose(2, 0, 1)[None].copy())
    fs = FatherSource(src, ZSSRConfig(crop_size=8, augmentation="affine"), None)

    def warp(mode, scale, uu, nn=np.zeros(3)):
        from survsr.models.zssr import warp_father
        return warp_father(img, official_transform(mode, scale, 1.0, np.asarray(uu), nn, h, w, cfg), cfg, src)[0]

    # leave as is: a crop_size window at an integer shift of the draw, no mirror
    out = warp("leave", 1.0, [0.9, 0.5, 0.25, 0.0, 0.0])
    torch.testing.assert_close(out, src[0, :, 1:9, 2:10])
    # lossless: a quarter turn about (w/2, h/2), the official centre, which is half a pixel off the image's
    # (w-1)/2: the turned picture lands one row low and the canvas's first row stays black
    out = warp("lossless", 1.0, [0.9, 0.0, 0.0, 0.0, 0.3])
    rot = torch.from_numpy(np.rot90(img, k=1).transpose(2, 0, 1).copy())
    torch.testing.assert_close(out[:, 1:, :], rot[:, :7, :8])
    assert out[:, 0, :].abs().max() == 0
    # affine at scale 0.5: the official centring quirk leaves part of the canvas black even though the image
    # (12 px) is larger than the crop (8 px)
    out = warp("affine", 0.5, [0.9, 0.0, 0.0, 0.0, 0.0])
    assert (out.abs().sum(0) == 0).float().mean() > 0.2
    # the mode split follows the configured probabilities (5% / 45% / 50%)
    modes = [official_mode(u, cfg)[0] for u in aug_draws(np.zeros(4000, np.int64), np.arange(4000))]
    frac = {m: modes.count(m) / len(modes) for m in ("leave", "lossless", "affine")}
    assert abs(frac["leave"] - 0.05) < 0.02 and abs(frac["lossless"] - 0.45) < 0.03
    father, net_in = fs.pair(aug_draws([3], [7])[0], 3, 7)
    assert father.shape[-2:] == (8, 8) and net_in.shape == father.shape


def test_batched_engine_refuses_the_reference_only_variants():
    for field, value in (("augmentation", "affine"), ("resampler", "matlab")):
        with pytest.raises(ValueError, match="batched ZSSR engine"):
            BatchedZSSR(ZSSRConfig(device="cpu", **{field: value}), slots=2)
    with pytest.raises(ValueError, match="augmentation"):
        ZSSRConfig(augmentation="shear").validate()


def test_gradual_runs_every_official_factor_and_grows_the_fathers():
    cfg = ZSSRConfig(device="cpu", crop_size=16, max_iters=4, min_iters=2, run_test_every=2,
                     learning_rate_policy_check_every=2, learning_rate_slope_range=10, augmentation="affine")
    lr = (np.random.default_rng(1).random((12, 14, 3)) * 255).astype(np.uint8)
    eng = GradualZSSR(cfg)
    seen = []
    orig = eng._father

    def spy(sources, bases, seed, it):
        seen.append((len(sources), bases[-1]))
        return orig(sources, bases, seed, it)

    eng._father = spy
    out, info = eng.run(lr)
    assert out.shape == (24, 28, 3)
    assert [s["factor"] for s in info["stages"]] == [list(f) for f in GRADUAL_X2]
    assert info["iterations"] == 6 * 4
    # the stage n trains with n+1 sources; from the 4th stage fathers may come from the 1.5x1.5 output
    assert sorted(set(seen)) == [(1, 1.0), (2, 1.0), (3, 1.0), (4, 1.5), (5, 1.5), (6, 1.5)]
    assert scaled_size(12, 14, (1.5, 2.0)) == (18, 28)
    assert (eng.cfg.augmentation, eng.cfg.resampler) == ("affine", "matlab")  # official, whatever was asked


def test_only_the_official_resampler_keeps_a_non_integer_factor():
    """Why gradual ZSSR always uses the official imresize: a 128 px father's son at x1/1.5 is ceil(85.3) = 86
    px. imresize places son pixel i at input position (i + 0.5) * 1.5 - 0.5, the factor itself; torch can only
    use the size ratio 128/86, so the son (and the network's whole training pair) is at another factor."""
    ramp = torch.arange(128, dtype=torch.float64).repeat(128, 1)[None, None]  # value = x coordinate
    size, f = (86, 86), 1 / 1.5
    want = (np.arange(86) + 0.5) / f - 0.5
    official = resize(ramp, size, "matlab", f)[0, 0, 43].numpy()
    torch_ = resize(ramp, size, "torch", f)[0, 0, 43].numpy()
    inner = slice(3, 80)  # away from the borders, where both handle the kernel's edge in their own way
    assert np.abs(official[inner] - want[inner]).max() < 0.05
    assert np.abs(torch_[inner] - want[inner]).max() > 0.5  # drifts 1.5 - 128 / 86 = 0.012 px per pixel


@pytest.mark.parametrize("fresh", [False, True])
def test_gradual_carries_the_network_over_unless_asked_for_a_fresh_one(fresh):
    """X2_GRADUAL_IDEAL_CONF carries the network and Adam over (init_net_for_each_sf = False); the opt-in
    restarts every stage from the seed's random network."""
    from survsr.models.zssr import init_weights

    cfg = ZSSRConfig(device="cpu", crop_size=16, max_iters=3, min_iters=2, run_test_every=2, width=8, depth=3,
                     learning_rate_policy_check_every=2, learning_rate_slope_range=10, back_projection_iters=1)
    eng = GradualZSSR(cfg, fresh_net_per_stage=fresh)
    start, orig = init_weights(0, eng.cfg), eng._train_stage
    at_entry = []

    def spy(weights, opt, *a, **k):
        at_entry.append((torch.equal(weights[0].detach(), start[0].to(weights[0].dtype)), len(opt.state)))
        return orig(weights, opt, *a, **k)

    eng._train_stage = spy
    eng.run((np.random.default_rng(2).random((12, 12, 3)) * 255).astype(np.uint8), seed=0)
    assert at_entry[0] == (True, 0)
    assert all(e == ((True, 0) if fresh else (False, len(start))) for e in at_entry[1:])


@pytest.mark.parametrize("restart", [False, True])
def test_a_dead_network_stays_dead_through_the_stages_unless_restarted(restart, caplog):
    """A carried network that died (here: started dead) passes its zero residual to every later stage, each
    reported; the opt-in ``restart_dead`` trains the stage again from the seed's random network instead."""
    import logging

    from survsr.models.zssr import init_weights

    cfg = ZSSRConfig(device="cpu", crop_size=16, max_iters=4, min_iters=2, run_test_every=2, width=8, depth=3,
                     learning_rate_policy_check_every=2, learning_rate_slope_range=10, back_projection_iters=1)
    eng = GradualZSSR(cfg, restart_dead=restart)
    dead = init_weights(0, eng.cfg)
    dead[-2] = torch.zeros_like(dead[-2])
    img = (np.random.default_rng(3).random((12, 14, 3)) * 255).astype(np.uint8)
    with caplog.at_level(logging.WARNING):
        _, info = eng.run(img, seed=0, name="still", init=dead)
    rms = [st["residual_rms"] for st in info["stages"]]
    assert "still (gradual stage 1, x1x1.5): the ZSSR network is dead" in caplog.text
    if restart:
        assert all(r > 0 for r in rms) and info["stages"][0]["restarted_after"] == 4
        assert info["stages"][0]["iterations"] == 8 and "stage 2, x1.5x1" not in caplog.text
    else:
        assert rms == [0] * 6 and info["residual_rms"] == 0 and "stage 6, x2x2): the ZSSR" in caplog.text


@pytest.fixture
def seed_0_starts_dead(monkeypatch):
    """Every network drawn from seed 0 starts dead (last hidden layer's weights zero), other seeds' live."""
    import survsr.models.zssr_gradual as zg
    from survsr.models.zssr import init_weights

    def dead_for_seed_0(seed, cfg):
        w = init_weights(seed, cfg)
        if seed == 0:
            w[-2] = torch.zeros_like(w[-2])
        return w

    monkeypatch.setattr(zg, "init_weights", dead_for_seed_0)


def test_a_stage_that_died_from_the_seeds_own_network_restarts_from_another(seed_0_starts_dead, caplog):
    """Set14 ppt3 (seed 0) died in stage 1, which began from the seed's random network. Restarting from that
    network would replay the same death (same weights, same draws), so the restart takes seed + 1's."""
    import logging

    import survsr.models.zssr_gradual as zg

    cfg = ZSSRConfig(device="cpu", crop_size=16, max_iters=4, min_iters=2, run_test_every=2, width=8, depth=3,
                     learning_rate_policy_check_every=2, learning_rate_slope_range=10, back_projection_iters=1)
    img = (np.random.default_rng(3).random((12, 14, 3)) * 255).astype(np.uint8)
    with caplog.at_level(logging.WARNING):
        _, info = zg.GradualZSSR(cfg, restart_dead=True).run(img, seed=0, name="still")
    first = info["stages"][0]
    assert "still (gradual stage 1, x1x1.5): the ZSSR network is dead" in caplog.text
    assert first["restart_seed"] == 1 and first["restarted_after"] == 4
    assert all(st["residual_rms"] > 1e-4 for st in info["stages"]) and "stage 2, x1.5x1" not in caplog.text


def test_a_negligible_residual_counts_as_dead():
    """ppt3's collapsed network (seed 0, stage 1) added 3.1e-11 RMS, not 0: dead in effect. The smallest live
    RMS seen (faces after 300 iterations) is 4e-4; NaN (older records) is unknown, not dead."""
    from survsr.models.zssr import is_dead

    assert is_dead(0.0) and is_dead(3.1e-11) and is_dead(1.25e-12)
    assert not is_dead(4e-4) and not is_dead(5e-3) and not is_dead(float("nan"))


def test_fresh_gradual_skips_only_stages_nothing_draws_and_gives_the_same_result():
    """With a fresh network per stage a stage matters only as a father source, and random_augment takes the
    first source of a scale: only the 1.5x1.5 stage feeds the x2 one. Skipping the rest changes no byte."""
    cfg = ZSSRConfig(device="cpu", crop_size=16, max_iters=4, min_iters=2, run_test_every=2, width=8, depth=3,
                     learning_rate_policy_check_every=2, learning_rate_slope_range=10, back_projection_iters=1)
    img = (np.random.default_rng(3).random((12, 14, 3)) * 255).astype(np.uint8)
    lazy, full = GradualZSSR(cfg, fresh_net_per_stage=True), GradualZSSR(cfg, fresh_net_per_stage=True,
                                                                          skip_unused=False)
    assert lazy.stages_to_run(0) == [2, 5] and full.stages_to_run(0) == list(range(6))
    assert GradualZSSR(cfg).stages_to_run(0) == list(range(6))  # a carried network needs every stage
    out_lazy, info_lazy = lazy.run(img, seed=0)
    out_full, info_full = full.run(img, seed=0)
    np.testing.assert_array_equal(out_lazy, out_full)
    assert [s["stage"] for s in info_lazy["stages"]] == [2, 5] and info_lazy["skipped_stages"] == [0, 1, 3, 4]
    assert info_lazy["iterations"] < info_full["iterations"]


# a few iterations of a tiny network: the CLI tests check plumbing and records, not quality
TINY_ZSSR = ["zssr.max_iters=3", "zssr.min_iters=2", "zssr.run_test_every=2", "zssr.width=8", "zssr.depth=3",
             "zssr.crop_size=16", "zssr.learning_rate_policy_check_every=2", "zssr.learning_rate_slope_range=10",
             "zssr.back_projection_iters=1", "zssr.device=cpu"]


def test_upscale_cli_runs_gradual_zssr_records_it_and_refuses_what_it_cannot_do(tmp_path, capsys):
    """``survsr upscale --method zssr-gradual``: the official gradual x2 on a still, marked, traceable (its
    config hash is that of what ran: the official fathers and resampler), x2 only, no warm start."""
    import pandas as pd
    from PIL import Image

    from survsr import verify as V
    from survsr.cli import main
    from survsr.config import config_hash
    from survsr.marking import MarkingConfig, band_height
    from survsr.provenance import PROVENANCE_KEY, read_png_text

    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray((np.random.default_rng(4).random((14, 12, 3)) * 255).astype(np.uint8)).save(src / "cam.png")
    small = TINY_ZSSR
    out = tmp_path / "out"
    assert main(["upscale", str(src / "cam.png"), *small, "--method", "zssr-gradual", "--out", str(out)]) == 0
    img = np.asarray(Image.open(out / "cam.png"))
    assert img.shape == (28 + band_height(24, MarkingConfig()), 24, 3)  # x2 picture, the label band below it
    assert '"kind": "zssr-gradual_upscale"' in read_png_text(out / "cam.png")[PROVENANCE_KEY]
    row = pd.read_parquet(out / "upscale.parquet").iloc[0]
    assert row["method"] == "zssr-gradual"
    import dataclasses

    from survsr.pipelines.zssr_pool import load_config

    asked = dataclasses.replace(load_config(None, small).zssr, scale=2.0)
    ran = dataclasses.replace(asked, augmentation="affine", resampler="matlab")
    assert asked.augmentation != "affine"  # the yaml default: the record must not claim it
    expect = config_hash({"method": "zssr-gradual", "zssr": dataclasses.asdict(ran), "scale": 2.0,
                          "generator_sha256": None})
    assert row["config_hash"] == expect
    assert all(r.status == V.VERIFIED for r in V.verify_paths([out]))
    capsys.readouterr()
    assert main(["upscale", str(src / "cam.png"), *small, "--method", "zssr-gradual", "--scale", "3",
                 "--out", str(tmp_path / "x3")]) == 1
    assert main(["upscale", str(src / "cam.png"), *small, "warm_start.enabled=true", "--method", "zssr-gradual",
                 "--out", str(tmp_path / "warm")]) == 1
    text = capsys.readouterr().out
    assert "x2 only" in text and "--scale 3" in text and "no warm start" in text


def test_upscale_cli_gradual_restart_dead_retrains_a_dead_stage_and_records_it(tmp_path, seed_0_starts_dead,
                                                                                 capsys):
    """``--gradual-restart-dead`` reaches ``GradualZSSR``: a network that dies (here: every seed-0 network starts
    dead) is trained again, the output's record lists the restarted stage, and the flag is in the config hash
    (the test above pins the hash without it). Any other method refuses the flag before writing anything."""
    import json

    import pandas as pd
    from PIL import Image

    from survsr.cli import main
    from survsr.provenance import PROVENANCE_KEY, read_png_text

    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray((np.random.default_rng(4).random((14, 12, 3)) * 255).astype(np.uint8)).save(src / "cam.png")
    small = [*TINY_ZSSR, "--method", "zssr-gradual", "--no-label"]
    runs = {}
    for name, flag in (("plain", []), ("restart", ["--gradual-restart-dead"])):
        assert main(["upscale", str(src / "cam.png"), *small, *flag, "--out", str(tmp_path / name)]) == 0
        stage = json.loads(read_png_text(tmp_path / name / "cam.png")[PROVENANCE_KEY])["stages"][-1]
        runs[name] = (pd.read_parquet(tmp_path / name / "upscale.parquet").iloc[0]["config_hash"], stage,
                      np.asarray(Image.open(tmp_path / name / "cam.png")).astype(float))
    assert runs["plain"][0] != runs["restart"][0]
    assert "restarted_stages" not in runs["plain"][1] and runs["restart"][1]["restarted_stages"] == [1]
    assert runs["plain"][2].shape == runs["restart"][2].shape == (28, 24, 3)
    assert not np.array_equal(runs["plain"][2], runs["restart"][2])  # the retrained network adds a residual
    capsys.readouterr()
    assert main(["upscale", str(src / "cam.png"), "--method", "bicubic", "--gradual-restart-dead",
                 "--out", str(tmp_path / "bic")]) == 1
    assert "--gradual-restart-dead: only with --method zssr-gradual, not --method bicubic" in capsys.readouterr().out
    assert not (tmp_path / "bic").exists()


def test_size_weighted_father_sampling():
    """``father_sampling: size`` draws a scaled father's scale with density ~ s^2 on [min_scale, max_scale];
    ``uniform`` (the official code) is unchanged. Same uniforms, so a draw only moves to a larger father."""
    u = aug_draws(np.zeros(20000, np.int64), np.arange(20000))
    uni, size = ZSSRConfig(), ZSSRConfig(father_sampling="size")
    size.validate()
    with pytest.raises(ValueError, match="father_sampling"):
        ZSSRConfig(father_sampling="area").validate()
    # official_mode: the mode split is untouched; the scale of the scaled draws follows each density
    for max_scale in (1.0, 1.5):
        m_u = [official_mode(x, uni, max_scale) for x in u]
        m_s = [official_mode(x, size, max_scale) for x in u]
        assert [m for m, _ in m_u] == [m for m, _ in m_s]
        s_u = np.array([s for m, s in m_u if m != "leave"])
        s_s = np.array([s for m, s in m_s if m != "leave"])
        assert np.all(s_s >= s_u - 1e-12) and s_s.min() >= 0.5 and s_s.max() <= max_scale
        a, b = 0.5, max_scale
        assert s_u.mean() == pytest.approx((a + b) / 2, abs=0.01)
        assert s_s.mean() == pytest.approx(0.75 * (b ** 4 - a ** 4) / (b ** 3 - a ** 3), abs=0.01)
        # P(s < midpoint): uniform 1/2; ~ s^2: (m^3 - a^3) / (b^3 - a^3)
        mid = (a + b) / 2
        assert np.mean(s_s < mid) == pytest.approx((mid ** 3 - a ** 3) / (b ** 3 - a ** 3), abs=0.015)
    # decode_draws (the dihedral path both engines share): only scaled draws change, towards larger fathers
    d_u, d_s = decode_draws(u, 64, 48, uni), decode_draws(u, 64, 48, size)
    assert np.all(d_s["fh"] >= d_u["fh"]) and np.all(d_s["k"] == d_u["k"])
    scaled = d_u["fh"] < 64
    assert d_s["fh"][scaled].mean() > d_u["fh"][scaled].mean() + 1.5
