"""SRGAN models, VGG-19 mediator, losses and export (CPU, no Ray)."""

from __future__ import annotations

import pytest
import torch

from survsr.models.export import load_generator, read_metadata, save_generator
from survsr.models.losses import LossConfig, bicubic_down, d_loss, g_losses
from survsr.models.mediator import (STATUS_IMAGENET, STATUS_OFF, STATUS_RANDOM, STATUS_RANDOM_FALLBACK, MediatorConfig,
                             build_mediator, feature_index, hub_cache_file, resolve_status)
from survsr.models.srgan import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig


def _tiny_g(**kw) -> Generator:
    torch.manual_seed(0)
    return Generator(GeneratorConfig(channels=8, n_blocks=4, **kw))


@pytest.mark.parametrize("upsample", ["pixelshuffle", "nearest"])
def test_generator_shapes(upsample):
    g = _tiny_g(upsample=upsample).eval()
    assert g(torch.rand(2, 3, 32, 32)).shape == (2, 3, 64, 64)
    g4 = Generator(GeneratorConfig(channels=8, n_blocks=1, scale=4, upsample=upsample))
    assert g4(torch.rand(1, 3, 16, 16)).shape == (1, 3, 64, 64)
    assert len(g4.upsample) == 2  # log2(scale) blocks


def test_generator_paper_layout():
    g = Generator()
    assert len(g.blocks) == 16 and g.head[0].kernel_size == (9, 9) and g.tail.kernel_size == (9, 9)
    assert isinstance(g.trunk_tail[1], torch.nn.BatchNorm2d)


@pytest.mark.parametrize("size", [64, 96])
def test_discriminator_logits_any_size(size):
    d = Discriminator(DiscriminatorConfig(channels=8, dense=16, input_size=size))
    convs = [m for m in d.features if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 8 and [c.stride[0] for c in convs] == [1, 2] * 4
    assert [c.out_channels for c in convs] == [8, 8, 16, 16, 32, 32, 64, 64]
    assert d(torch.rand(3, 3, size, size)).shape == (3,)
    full = Discriminator()
    assert [c.out_channels for c in full.features if isinstance(c, torch.nn.Conv2d)][-1] == 512


def test_stochastic_depth_skips_in_training_only():
    g = _tiny_g(stochastic_depth=0.5)
    mask = g.resample_depth(torch.Generator().manual_seed(0))
    assert any(mask) and not all(mask)
    calls = []
    for b in g.blocks:
        b.register_forward_hook(lambda m, i, o: calls.append(m))
    x = torch.rand(2, 3, 32, 32)
    g.train()
    g(x)
    assert len(calls) == len(mask) - sum(mask)  # skipped blocks never ran
    calls.clear()
    g.eval()
    y1 = g(x)
    assert len(calls) == len(g.blocks)  # inference: every block, whatever the last mask was
    g.resample_depth(torch.Generator().manual_seed(99))
    assert torch.equal(g(x), y1)  # eval output does not depend on the drawn mask
    # same mask on every worker when drawn from the same seed
    assert _tiny_g(stochastic_depth=0.5).resample_depth(torch.Generator().manual_seed(0)) == mask


def test_stochastic_depth_eval_scales_residuals():
    torch.manual_seed(1)
    g0 = Generator(GeneratorConfig(channels=8, n_blocks=2, stochastic_depth=0.0))
    g1 = Generator(GeneratorConfig(channels=8, n_blocks=2, stochastic_depth=0.5))
    g1.load_state_dict(g0.state_dict())
    x = torch.rand(1, 3, 32, 32)
    assert not torch.allclose(g0.eval()(x), g1.eval()(x))  # residuals weighted by survival prob 0.5
    g1.cfg.stochastic_depth = 0.0
    assert torch.equal(g0(x), g1(x))


def test_mediator_layers():
    assert feature_index("VGG54") == 35 and feature_index("conv5_4", after_activation=False) == 34
    assert feature_index("VGG22") == 8 and feature_index("relu1_1") == 1
    with pytest.raises(ValueError):
        feature_index("VGG25")


def test_mediator_missing_weights_is_an_error_unless_fallback_is_explicit(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match="allow_fallback"):
        resolve_status(MediatorConfig())
    st = resolve_status(MediatorConfig(allow_fallback=True))
    assert st.status == STATUS_RANDOM_FALLBACK and "RANDOM-INIT" in st.warning and str(tmp_path) in st.warning
    off = resolve_status(MediatorConfig(allow_fallback=True, fallback="off"))
    assert off.status == STATUS_OFF and not off.enabled
    assert resolve_status(MediatorConfig(weights="random")).status == STATUS_RANDOM
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        resolve_status(MediatorConfig(weights="file", file=str(tmp_path / "nope.pth")))
    # present in the hub cache -> ImageNet, found by looking only (the file is never fetched)
    cached = hub_cache_file()
    assert str(cached).startswith(str(tmp_path))
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    st = resolve_status(MediatorConfig())
    assert st.status == STATUS_IMAGENET and st.source == str(cached) and st.feature_index == 35


def test_mediator_frozen_eval_and_deterministic():
    m, st = build_mediator(MediatorConfig(weights="random", layer="VGG22"), seed=5)
    assert st.status == STATUS_RANDOM and len(m.features) == 9
    assert not any(p.requires_grad for p in m.parameters())
    m.train()
    assert not m.training
    m2, _ = build_mediator(MediatorConfig(weights="random", layer="VGG22"), seed=5)
    x = torch.rand(2, 3, 64, 64)
    assert torch.equal(m(x), m2(x))  # every worker builds the same random VGG
    assert build_mediator(MediatorConfig(weights="off"))[0] is None


def test_losses():
    hi = torch.full((4,), 20.0)
    assert float(d_loss(hi, -hi)) < 1e-6 and float(d_loss(-hi, hi)) > 30
    torch.manual_seed(0)
    lr = torch.rand(2, 3, 32, 32)
    sr = torch.rand(2, 3, 64, 64, requires_grad=True)
    pair = sr.detach().clone()
    pair[1] = 1 - pair[1]  # sample 1 would have a large pixel error, but it has no pseudo-pair
    has = torch.tensor([True, False])
    cfg = LossConfig(adversarial=1.0, content=1.0, pixel=1.0, lr_consistency=1.0, content_mode="pseudo_pair")
    med, _ = build_mediator(MediatorConfig(weights="random", layer="VGG22"))
    total, parts = g_losses(cfg, sr, lr, torch.zeros(2), pair, has, med, scale=2)
    assert float(parts["g_pix"]) == 0.0 and float(parts["g_vgg"]) == 0.0  # masked to the paired sample
    assert abs(float(parts["g_adv"]) - 0.6931) < 1e-3
    expect_lrc = float((bicubic_down(sr.detach(), 2) - lr).abs().mean())
    assert abs(float(parts["g_lrc"]) - expect_lrc) < 1e-6
    total.backward()
    assert torch.isfinite(sr.grad).all()
    _, parts = g_losses(cfg, sr, lr, None, pair, torch.tensor([False, False]), med)
    assert set(parts) == {"g_lrc"}  # no pseudo-pair -> content and pixel terms are off
    # LR consistency is ~0 for an image whose downscale is the input
    _, parts = g_losses(LossConfig(adversarial=0, content=0, lr_consistency=1.0), pair, bicubic_down(pair, 2), None)
    assert float(parts["g_lrc"]) < 1e-6


def test_export_roundtrip_identical_output(tmp_path):
    g = _tiny_g(stochastic_depth=0.25)
    g.train()
    g(torch.rand(4, 3, 32, 32))  # move BN running stats off their init
    g.eval()
    sha = save_generator(g, tmp_path / "g.safetensors", {"note": "test"})
    back = load_generator(tmp_path / "g.safetensors")
    x = torch.rand(3, 3, 32, 32)
    assert torch.equal(g(x), back(x)) and not back.training
    meta = read_metadata(tmp_path / "g.safetensors")
    assert meta["generator_config"]["stochastic_depth"] == 0.25 and meta["metadata"]["note"] == "test"
    assert len(sha) == 64


def test_update_schedules():
    from survsr.pipelines.srgan_config import LoopConfig
    from survsr.pipelines.srgan_loop import phase

    k3 = LoopConfig(schedule="k_step", k=3, pretrain_steps=2)
    assert [phase(s, k3)[:2] for s in range(10)] == [(False, True)] * 2 + [(True, False)] * 3 + \
        [(False, True)] * 3 + [(True, False)] * 2
    assert [phase(s, k3)[2] for s in range(4)] == [True, True, False, False]
    assert all(phase(s, LoopConfig(schedule="alternate"))[:2] == (True, True) for s in range(5))


def test_step_updates_only_the_scheduled_network():
    from survsr.models.mediator import MediatorConfig, build_mediator
    from survsr.pipelines.srgan_loop import SRGANStep

    torch.manual_seed(0)
    G = Generator(GeneratorConfig(channels=8, n_blocks=2))
    D = Discriminator(DiscriminatorConfig(channels=8, dense=16))
    med, _ = build_mediator(MediatorConfig(weights="random", layer="VGG22"))
    step = SRGANStep(G, D, G, D, torch.optim.Adam(G.parameters(), 1e-3), torch.optim.Adam(D.parameters(), 1e-3),
                     med, LossConfig(pixel=1.0, lr_consistency=1.0, content_mode="pseudo_pair"), 2)
    real, lr, pair = torch.rand(4, 3, 64, 64), torch.rand(4, 3, 32, 32), torch.rand(4, 3, 64, 64)
    has = torch.tensor([True, True, False, True])
    snap = lambda m: [p.detach().clone() for p in m.parameters()]  # noqa: E731
    changed = lambda m, old: any(not torch.equal(p, q) for p, q in zip(m.parameters(), old))  # noqa: E731
    g0, d0 = snap(G), snap(D)
    parts = step(real, lr, pair, has, do_d=False, do_g=True)
    assert changed(G, g0) and not changed(D, d0)  # D frozen while G trains (its grads never computed)
    assert all(p.grad is None for p in D.parameters()) and all(p.requires_grad for p in D.parameters())
    assert {"g_loss", "g_adv", "g_lrc", "g_pix", "g_vgg", "d_fake_g"} <= set(parts)
    g0, d0 = snap(G), snap(D)
    parts = step(real, lr, pair, has, do_d=True, do_g=False)
    assert changed(D, d0) and not changed(G, g0) and set(parts) == {"d_loss", "d_real", "d_fake"}
    parts = step(real, lr, pair, has, do_d=True, do_g=True, adversarial=False)
    assert "g_adv" not in parts and all(torch.isfinite(v) for v in parts.values())


def test_global_bicubic_skip_starts_at_bicubic_and_learns():
    import torch.nn.functional as F

    from survsr.models.srgan import Generator, GeneratorConfig

    torch.manual_seed(0)
    g = Generator(GeneratorConfig(n_blocks=2, channels=16, global_skip="bicubic"))
    x = torch.rand(4, 3, 32, 32)
    bic = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
    assert torch.equal(g.eval()(x), bic)
    # one optimiser step towards a target away from bicubic moves the output: the skip does not freeze it
    g.train()
    opt = torch.optim.Adam(g.parameters(), 1e-3)
    loss = (g(x) - (bic + 0.1)).abs().mean()
    loss.backward()
    opt.step()
    assert not torch.equal(g.eval()(x), bic)
    with pytest.raises(ValueError, match="global_skip"):
        GeneratorConfig(global_skip="nearest").validate()


def test_paper_generator_defaults_and_nearest_layer_order():
    g = Generator()
    assert g.cfg.stochastic_depth == 0.5 and g.cfg.global_skip == "none"
    body = Generator(GeneratorConfig(channels=8, n_blocks=1, upsample="nearest")).upsample[0].body
    assert [type(m).__name__ for m in body] == ["Conv2d", "Upsample", "PReLU"]  # conv + UpSampling2D + PReLU


def test_block_skipping_redrawn_each_epoch_and_all_blocks_at_inference():
    """The training loop draws the mask from seed*7919 + epoch: which blocks run changes from one epoch to
    the next (same on every worker), and eval mode runs every block."""
    g = Generator(GeneratorConfig(channels=8, n_blocks=16, stochastic_depth=0.5))
    masks = [tuple(g.resample_depth(torch.Generator().manual_seed(0 * 7919 + epoch))) for epoch in range(6)]
    assert len(set(masks)) == 6  # a new draw every epoch
    assert all(0 < sum(m) < 16 for m in masks)
    ran: list = []
    for b in g.blocks:
        b.register_forward_hook(lambda m, i, o: ran.append(m))
    x = torch.rand(2, 3, 32, 32)
    per_epoch = []
    g.train()
    for epoch in range(3):
        mask = g.resample_depth(torch.Generator().manual_seed(epoch))
        ran.clear()
        g(x)
        per_epoch.append({i for i, b in enumerate(g.blocks) if b in ran})
        assert per_epoch[-1] == {i for i, skip in enumerate(mask) if not skip}
    assert len({frozenset(s) for s in per_epoch}) == 3
    g.eval()
    ran.clear()
    g(x)
    assert len(ran) == 16


def test_epoch_block_schedule():
    from survsr.pipelines.srgan_config import LoopConfig
    from survsr.pipelines.srgan_loop import epoch_plan, locate, phase, total_steps

    loop = LoopConfig(schedule="epoch_blocks", d_epochs=2, g_epochs=1, epochs=6)
    spe = {"D": 7, "G": 3, "both": 3}
    assert [epoch_plan(e, loop, spe) for e in range(6)] == [(7, "D"), (7, "D"), (3, "G")] * 2
    assert total_steps(loop, spe) == 2 * (7 + 7 + 3)
    assert locate(0, loop, spe) == (0, 0) and locate(13, loop, spe) == (1, 7) and locate(14, loop, spe) == (2, 14)
    assert phase(0, loop, "D")[:2] == (True, False) and phase(15, loop, "G")[:2] == (False, True)
    alt = LoopConfig(schedule="alternate", epochs=4)
    assert epoch_plan(3, alt, spe) == (3, None) and total_steps(alt, spe) == 12


def test_unpaired_mediator_loss():
    from survsr.models.losses import unpaired_feature_loss

    torch.manual_seed(0)
    a = torch.randn(8, 16, 4, 4)
    perm = a[torch.randperm(8)]  # the same faces in another order: same distribution, no pairing needed
    assert float(unpaired_feature_loss(a, perm)) < 1e-10
    assert float(unpaired_feature_loss(a, perm, "gram")) < 1e-10
    shifted = a + 0.5
    assert float(unpaired_feature_loss(a, shifted)) > 0.2
    # in the paper's mode the mediator compares G's batch with D's real batch; a pseudo-pair is ignored
    med, _ = build_mediator(MediatorConfig(weights="random", layer="VGG22"))
    sr = torch.rand(4, 3, 64, 64, requires_grad=True)
    real = torch.rand(4, 3, 64, 64)
    total, parts = g_losses(LossConfig(), sr, torch.rand(4, 3, 32, 32), torch.zeros(4), pair=torch.rand(4, 3, 64, 64),
                            has_pair=torch.ones(4, dtype=torch.bool), mediator=med, real=real)
    assert set(parts) == {"g_adv", "g_vgg"}  # no pixel, no LR-consistency: the paper has no extra losses
    total.backward()
    assert torch.isfinite(sr.grad).all() and sr.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="pseudo_pair"):
        LossConfig(pixel=1.0).validate()
