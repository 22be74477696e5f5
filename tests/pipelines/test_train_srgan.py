"""SRGAN training on Ray Train: 2 CPU workers, tiny models, tiny manifests built here to the shared contracts
(ingest's faces.parquet with 32x32 LR PNGs, ZSSR's zssr.parquet with 64x64 PNGs)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from survsr.models.export import load_generator, read_metadata
from survsr.models.srgan import Generator, GeneratorConfig
from survsr.pipelines.srgan_config import load_config, resume_hash
from survsr.pipelines.srgan_data import decode_rows, plan_data
from survsr.pipelines.train_srgan import run_train
from survsr.provenance import write_parquet_atomic, write_png

TINY = [  # the paper's config (configs/srgan.yaml), tiny: epoch blocks of 1 D epoch + 1 G epoch
    "generator.channels=8", "generator.n_blocks=2", "discriminator.channels=8", "discriminator.dense=16",
    "mediator.layer=VGG22", "mediator.allow_fallback=true", "mediator.fallback=random",
    "train.batch_size=4", "train.checkpoint_every=2", "train.log_every=1",
    "train.d_epochs=1", "train.g_epochs=1", "scaling.num_workers=2", "scaling.cpus_per_worker=1", "scaling.max_failures=1",
]
DISTILL = ["loss.content_mode=pseudo_pair", "loss.pixel=1.0", "loss.lr_consistency=1.0", "train.schedule=alternate"]


def make_manifests(root: Path, n_train: int = 24, n_test: int = 4) -> tuple[Path, Path]:
    """Real faces (skimage lfw_subset) as 64x64 'ZSSR' outputs and their 32x32 bicubic downscales as LR;
    two crops per track, ZSSR output for every face (what the distillation option needs)."""
    from skimage.data import lfw_subset

    faces_dir, zssr_dir = root / "faces", root / "zssr"
    rows, zrows = [], []
    for i, face in enumerate(lfw_subset()[: n_train + n_test]):
        tint = np.array([1.0, 0.9, 0.8])  # RGB, not grey: catches channel-order slips
        hr = np.asarray(Image.fromarray((face[..., None] * tint * 255).astype(np.uint8)).resize((64, 64), Image.BICUBIC))
        lr = np.asarray(Image.fromarray(hr).resize((32, 32), Image.BICUBIC))
        cid, split = f"toy{i:04d}-f000000-0", ("train" if i < n_train else "test")
        lr_rel, hr_rel = f"crops/lr/{cid}.png", f"hr/{cid}.png"
        rows.append({"crop_id": cid, "lr_path": lr_rel, "sha256": write_png(faces_dir / lr_rel, lr), "split": split,
                     "lr_size": 32, "track_id": f"toy-t{i // 2:03d}"})
        zrows.append({"crop_id": cid, "hr_path": hr_rel, "sha256": write_png(zssr_dir / hr_rel, hr), "split": split,
                      "lr_path": str(faces_dir / lr_rel), "iterations": 1})
    write_parquet_atomic(pd.DataFrame(rows), faces_dir / "faces.parquet")
    write_parquet_atomic(pd.DataFrame(zrows), zssr_dir / "zssr.parquet")
    return faces_dir, zssr_dir


@pytest.fixture(scope="module")
def manifests(tmp_path_factory):
    return make_manifests(tmp_path_factory.mktemp("srgan_data"))


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


def test_plan_g_and_d_sets_disjoint_by_track_70_30(manifests):
    cfg = load_config(None, TINY)
    plan = plan_data(*manifests, cfg)
    hr_ids = {r["crop_id"] for r in plan["hr"]}
    lr_ids = {r["crop_id"] for r in plan["lr"]}
    assert hr_ids and lr_ids and not hr_ids & lr_ids and len(hr_ids | lr_ids) == 24
    d_tracks = {r["track_id"] for r in plan["hr"]}
    g_tracks = {r["track_id"] for r in plan["lr"]}
    assert not d_tracks & g_tracks  # one person's faces never sit on both sides
    assert (len(d_tracks), len(g_tracks)) == (8, 4)  # 12 train tracks, 70:30 -> round(8.4) = 8 : 4
    assert not any(r["pair_path"] for r in plan["lr"])  # paper: G's faces carry no ZSSR output of themselves
    assert len(plan["heldout"]) == 4 and all(r["crop_id"].startswith("toy002") for r in plan["heldout"])
    again = plan_data(*manifests, cfg)
    assert [r["crop_id"] for r in again["hr"]] == sorted(hr_ids)  # deterministic
    other = plan_data(*manifests, load_config(None, [*TINY, "data.role_seed=1"]))
    assert {r["crop_id"] for r in other["hr"]} != hr_ids
    # the distillation option: same sets, each G face paired with its own ZSSR output
    distill = plan_data(*manifests, load_config(None, [*TINY, *DISTILL]))
    assert {r["crop_id"] for r in distill["hr"]} == hr_ids and {r["crop_id"] for r in distill["lr"]} == lr_ids
    assert all(Path(r["pair_path"]).stem == r["crop_id"] for r in distill["lr"])


def test_plan_uses_the_ingest_role_column(manifests, tmp_path):
    faces_dir, zssr_dir = manifests
    df = pd.read_parquet(faces_dir / "faces.parquet")
    df["role"] = ["D" if s == "train" and int(t[-3:]) < 3 else ("G" if s == "train" else "test")
                  for s, t in zip(df["split"], df["track_id"])]
    local = tmp_path / "faces"
    local.mkdir()
    (local / "crops").symlink_to(faces_dir / "crops")
    write_parquet_atomic(df, local / "faces.parquet")
    plan = plan_data(local, zssr_dir, load_config(None, TINY))
    assert {r["track_id"] for r in plan["hr"]} == {"toy-t000", "toy-t001", "toy-t002"}
    assert len(plan["lr"]) == 24 - 6


def test_mediator_never_sees_a_g_faces_own_zssr_output(manifests):
    """Paper mode, one real G step on the planned data: every image the mediator is shown is either a
    generator output or a D face's ZSSR output; none is the ZSSR output of a G face (checked by crop id)."""
    from survsr.models.losses import LossConfig
    from survsr.models.srgan import Discriminator, DiscriminatorConfig
    from survsr.pipelines.srgan_loop import SRGANStep, _to_float

    faces_dir, zssr_dir = manifests
    cfg = load_config(None, TINY)
    plan = plan_data(faces_dir, zssr_dir, cfg)

    def decode(rows, size):
        b = {k: np.array([r[k] for r in rows], dtype=object) for k in ("crop_id", "path", "sha256", "pair_path",
                                                                       "pair_sha256")}
        out = decode_rows(b, size, 64)
        assert not any(out["error"])
        return out

    hr, lr = decode(plan["hr"], 64), decode(plan["lr"], 32)
    zm = pd.read_parquet(zssr_dir / "zssr.parquet").set_index("crop_id")
    g_zssr = {cid: np.asarray(Image.open(zssr_dir / zm.loc[cid, "hr_path"]).convert("RGB")) for cid in lr["crop_id"]}
    d_zssr = {cid: img for cid, img in zip(hr["crop_id"], hr["img"])}

    seen: list[torch.Tensor] = []

    class Spy(torch.nn.Module):
        def forward(self, x):
            seen.append(x.detach().clone())
            return x.mean(1, keepdim=True)

    G = Generator(GeneratorConfig(channels=8, n_blocks=2))
    D = Discriminator(DiscriminatorConfig(channels=8, dense=16))
    step = SRGANStep(G, D, G, D, torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters()), Spy(),
                     LossConfig(), scale=2)
    real = _to_float(torch.from_numpy(hr["img"][:4]))
    x = _to_float(torch.from_numpy(lr["img"][:4]))
    pair = _to_float(torch.from_numpy(np.stack([g_zssr[c] for c in lr["crop_id"][:4]])))  # must be ignored
    parts = step(real, x, pair, torch.ones(4, dtype=torch.bool), do_d=False, do_g=True)
    assert "g_vgg" in parts and seen
    shown = [(im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for batch in seen for im in batch]
    d_hits = {cid for im in shown for cid, z in d_zssr.items() if np.array_equal(im, z)}
    g_hits = {cid for im in shown for cid, z in g_zssr.items() if np.array_equal(im, z)}
    assert d_hits == set(hr["crop_id"][:4]) and not g_hits


def test_training_lowers_heldout_content_loss_and_beats_its_init(manifests, one_torch_thread):
    """The learning signal, on a fixed seed: the paper's D and G steps (``SRGANStep``, what every Ray Train
    worker runs; adversarial + unpaired VGG mediator, random-init VGG as in every test here), in process: one
    D block of 4 steps, then a G block of 40. On the 4 held-out faces, G's content loss (the unpaired feature
    distance from the faces' ZSSR outputs) must fall and G's PSNR-Y against those outputs must rise.

    Margins from runs of this exact test on seeds 0-5 (2-core box): content loss after/before 0.79 on seed 0,
    0.50-0.88 over the six seeds; PSNR gain +0.89 dB on seed 0, +0.59..+1.62 dB over the six. The bounds
    (< 0.9x, > +0.3 dB) hold for every one of those seeds; a G that does not learn stays at 1.0x and +0 dB."""
    from survsr.models.losses import g_losses
    from survsr.models.mediator import build_mediator
    from survsr.models.srgan import Discriminator
    from survsr.pipelines.srgan_data import decode_heldout
    from survsr.pipelines.srgan_loop import SRGANStep, _to_float, heldout_metrics, phase

    cfg = load_config(None, TINY)
    plan = plan_data(*manifests, cfg)

    def decode(rows, size):
        b = {k: np.array([r[k] for r in rows], dtype=object) for k in ("crop_id", "path", "sha256", "pair_path",
                                                                       "pair_sha256")}
        return _to_float(torch.from_numpy(np.stack(decode_rows(b, size, 64)["img"])))

    hr, lr = decode(plan["hr"], 64), decode(plan["lr"], 32)
    held = decode_heldout(plan["heldout"], cfg)
    held_lr, held_hr = (_to_float(torch.from_numpy(held[k])) for k in ("lr", "hr"))
    assert len(held_lr) == 4 and not set(r["crop_id"] for r in plan["heldout"]) & {r["crop_id"] for r in plan["lr"]}

    seed = 0
    torch.manual_seed(seed)
    G, D = Generator(cfg.generator), Discriminator(cfg.discriminator)
    mediator, status = build_mediator(cfg.mediator, seed=seed)
    assert status.status == "random-init (fallback)"
    betas = tuple(cfg.train.betas)
    step = SRGANStep(G, D, G, D, torch.optim.Adam(G.parameters(), lr=cfg.train.lr_g, betas=betas),
                     torch.optim.Adam(D.parameters(), lr=cfg.train.lr_d, betas=betas), mediator, cfg.loss, scale=2)

    def heldout() -> tuple[float, float]:
        G.eval()
        with torch.no_grad():
            _, parts = g_losses(cfg.loss, G(held_lr).clamp(0, 1), held_lr, None, mediator=mediator, real=held_hr)
        psnr = heldout_metrics(G, held, torch.device("cpu"), 2)["heldout_psnr_g_vs_zssr"]
        G.train()
        return float(parts["g_vgg"]), psnr

    content0, psnr0 = heldout()
    draw = torch.Generator().manual_seed(seed)
    no_pair = torch.zeros(4, dtype=torch.bool)
    for n, block in ((4, "D"), (40, "G")):
        for _ in range(n):
            do_d, do_g, _ = phase(10**6, cfg.train, block)
            ih, il = torch.randint(len(hr), (4,), generator=draw), torch.randint(len(lr), (4,), generator=draw)
            parts = step(hr[ih], lr[il], lr[il], no_pair, do_d=do_d, do_g=do_g)
            assert all(math.isfinite(float(v)) for v in parts.values()), parts
    content1, psnr1 = heldout()
    assert content1 < 0.9 * content0, (content0, content1)
    assert psnr1 > psnr0 + 0.3, (psnr0, psnr1)


def test_decode_rows_reports_bad_files(manifests, tmp_path):
    faces_dir, _ = manifests
    good = sorted((faces_dir / "crops" / "lr").glob("*.png"))[0]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    batch = {k: np.array(v, dtype=object) for k, v in {
        "crop_id": ["a", "b", "c"], "path": [str(good), str(bad), str(good)], "sha256": ["", "", "0" * 64],
        "pair_path": ["", "", ""], "pair_sha256": ["", "", ""]}.items()}
    out = decode_rows(batch, 32, 64)
    assert out["error"][0] == "" and out["img"][0].shape == (32, 32, 3) and out["img"][0].any()
    assert str(bad) in out["error"][1]
    assert "sha256" in out["error"][2] and str(good) in out["error"][2]


def test_missing_vgg_weights_without_explicit_fallback_fails_before_training(manifests, tmp_path, monkeypatch,
                                                                             capsys):
    from survsr.cli import main
    from survsr.models.mediator import hub_cache_file

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty_hub"))
    rc = main(["train", "--faces", str(manifests[0]), "--zssr", str(manifests[1]), "--out", str(tmp_path / "r"),
               "scaling.num_workers=2"])
    out = capsys.readouterr().out
    assert rc == 1 and not (tmp_path / "r" / "train_meta.json").exists()
    # the one line says which file is missing, where it was looked for, and the two explicit ways on
    expected = hub_cache_file()
    assert expected.parent == tmp_path / "empty_hub" / "checkpoints" and expected.name.startswith("vgg19")
    assert out.startswith(f"survsr train: VGG-19 ImageNet weights not found at {expected}"), out
    assert "nothing is downloaded" in out and "mediator.allow_fallback=true" in out
    assert "mediator.weights=random|off" in out


def test_train_two_workers_recover_resume_export(ray_session, manifests, tmp_path):
    """One 2-worker run that crashes once at step 3 (recovered from the step-2 checkpoint), then a re-run of
    the same job with a longer schedule, which must continue from step 4, not 0."""
    faces_dir, zssr_dir = manifests
    run = tmp_path / "run"
    cfg = load_config(None, [*TINY, "train.max_steps=4", "debug.fail_at_step=3", "debug.fail_rank=1"])
    summary = run_train(faces_dir, zssr_dir, run, cfg)

    assert summary["final_step"] == 4 and summary["world_size"] == 2
    assert summary["mediator_status"] == "random-init (fallback)"
    meta = json.loads((run / "train_meta.json").read_text())
    assert meta["mediator"]["status"] == "random-init (fallback)" and "RANDOM-INIT" in meta["mediator"]["warning"]
    assert meta["counts"]["hr_decoded"] + meta["counts"]["lr_decoded"] == 24
    log = _log(run)
    starts = [r for r in log if r["kind"] == "start"]
    assert [(s["step"], s["resumed"]) for s in starts] == [(0, False), (2, True)]  # crash at 3 -> resumed at 2
    assert starts[0]["steps_per_epoch"] == {"D": 4, "G": 2, "both": 2}  # 16 D / 8 G faces, 2 workers x 2
    steps = [r for r in log if r["kind"] == "step"]
    assert [r["step"] for r in steps] == [1, 2, 3, 3, 4]  # step 3 ran before the crash and again after
    for r in steps:  # epoch 0 is a D block: D alone, G frozen
        assert r["phase"] == "D" and "g_loss" not in r
        for k in ("d_loss", "d_real", "d_fake"):
            assert math.isfinite(r[k]), (k, r)
        assert 0.0 < r["d_real"] < 1.0
    epochs = [r for r in log if r["kind"] == "epoch"]
    assert epochs and epochs[0]["block"] == "D" and epochs[0]["step"] == 4
    assert "heldout_psnr_bicubic_vs_zssr" in epochs[0] and math.isfinite(epochs[0]["heldout_psnr_g_vs_zssr"])
    assert (run / "metrics.csv").read_text().count("\n") == len(epochs) + 1

    # export: reloads without pickle, same output as the final checkpoint's generator
    gen = load_generator(run / "generator.safetensors")
    ckpts = sorted((run / "ray" / "srgan").glob("step_*"))
    assert ckpts[-1].name == "step_000000004"
    state = torch.load(ckpts[-1] / "state.pt", map_location="cpu", weights_only=True)
    ref = Generator(GeneratorConfig(**state["generator_config"]))
    ref.load_state_dict(state["G"])
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(gen(x), ref.eval()(x)) and not torch.equal(gen(x), Generator(gen.cfg).eval()(x))
    md = read_metadata(run / "generator.safetensors")["metadata"]
    assert md["mediator"]["status"] == "random-init (fallback)" and md["step"] == 4

    # same job, longer schedule: continues from the step-4 checkpoint
    cfg2 = load_config(None, [*TINY, "train.max_steps=6"])
    assert resume_hash(cfg2) == resume_hash(cfg)
    summary2 = run_train(faces_dir, zssr_dir, run, cfg2)
    assert summary2["final_step"] == 6
    log = _log(run)
    starts = [r for r in log if r["kind"] == "start"]
    assert (starts[-1]["step"], starts[-1]["resumed"]) == (4, True)
    g_steps = [r for r in log if r["kind"] == "step" and r["step"] > 4]
    assert [r["step"] for r in g_steps] == [5, 6]  # epoch 1 is a G block: G alone, D frozen, no extra losses
    for r in g_steps:
        assert r["phase"] == "G" and "d_loss" not in r and "g_lrc" not in r and "g_pix" not in r
        assert all(math.isfinite(r[k]) for k in ("g_loss", "g_adv", "g_vgg"))
    assert [r["step"] for r in _log(run) if r["kind"] == "step"][-2:] == [5, 6]
    # and once more: already complete, nothing is retrained
    assert run_train(faces_dir, zssr_dir, run, cfg2)["generator"] == summary2["generator"]
    assert len([r for r in _log(run) if r["kind"] == "start"]) == 3
