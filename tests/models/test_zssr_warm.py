"""ZSSR warm start (issue 14): the init sees only the inputs, 0 fine-tuning iterations = the init's output,
the batched engine fine-tunes exactly like the reference, the pool trains the init once and reuses it by hash."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from survsr.models import zssr_init
from survsr.models.zssr import ZSSR, ZSSRConfig, net_forward, residual_rms, to_uint8
from survsr.models.zssr_batched import BatchedZSSR
from survsr.models.zssr_init import WarmStartConfig, init_from_bytes, init_to_bytes, sha256_bytes, train_init

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

# a narrow/shallow net and a short schedule: the logic under test is the same as the paper's network
NET = dict(width=16, depth=4, device="cpu", back_projection_iters=2, max_iters=12, min_iters=4, run_test_every=2,
           learning_rate_policy_check_every=3, learning_rate_slope_range=10)
WS = WarmStartConfig(enabled=True, steps=6, faces_per_step=3)


@pytest.fixture(scope="module")
def faces():
    """Four real faces (LFW via scikit-image), 24x24 RGB."""
    from skimage.data import lfw_subset

    return [np.repeat(np.asarray(Image.fromarray((f * 255).astype(np.uint8)).resize((24, 24), Image.BICUBIC))
                      [:, :, None], 3, axis=2) for f in lfw_subset()[:4]]


def _bytes(weights) -> bytes:
    return init_to_bytes(weights)


@pytest.mark.parametrize("method", ["transfer", "reptile"])
def test_init_sees_only_the_inputs_and_is_deterministic(faces, monkeypatch, method):
    cfg = ZSSRConfig(**NET)
    ws = dataclasses.replace(WS, method=method, inner_steps=2)
    seen = []
    real = zssr_init.FatherSource

    def spy(image, *a, **k):
        seen.append(np.round(image[0].numpy().transpose(1, 2, 0) * 255).astype(np.uint8).tobytes())
        return real(image, *a, **k)

    monkeypatch.setattr(zssr_init, "FatherSource", spy)
    w1, info = train_init(faces[:3], cfg, ws)
    # every training pair comes from one of the given faces, and from nothing else
    assert sorted(seen) == sorted(f.tobytes() for f in faces[:3])
    assert info["faces"] == 3 and info["face_iterations"] == 6 * 3 * (2 if method == "reptile" else 1)
    assert [tuple(w.shape) for w in w1] == [(16, 3, 3, 3), (16, 16, 3, 3), (16, 16, 3, 3), (3, 16, 3, 3)]
    # same inputs (in any order) and seed: the same bytes; other faces or another seed: another init
    w2, _ = train_init([faces[2], faces[0], faces[1]], cfg, ws)
    assert _bytes(w1) == _bytes(w2)
    w3, _ = train_init([faces[3], faces[0], faces[1]], cfg, ws)
    w4, _ = train_init(faces[:3], cfg, dataclasses.replace(ws, seed=1))
    assert _bytes(w3) != _bytes(w1) and _bytes(w4) != _bytes(w1)
    assert _bytes(init_from_bytes(_bytes(w1), cfg)) == _bytes(w1)
    with pytest.raises(ValueError, match="does not fit"):
        init_from_bytes(_bytes(w1), dataclasses.replace(cfg, width=8))


@pytest.mark.parametrize("method", ["transfer", "reptile"])
def test_init_follows_zssr_adam_eps(faces, method):
    """The init is trained with ZSSR's Adam epsilon: from a start scaled so its gradients sit far below 1e-8
    (init_variance 4e-7: 0.002 of the official std per layer), the official eps leaves the init near zero and
    the opt-in 1e-16 trains it, as it does a face's network (tests/models/test_zssr.py)."""
    ws = dataclasses.replace(WS, method=method, inner_steps=2)
    img = ZSSR(ZSSRConfig(**NET))._tensor(faces[3].astype(np.float64) / 255.0).double()
    rms = {}
    for eps in (1e-8, 1e-16):
        cfg = ZSSRConfig(**NET, init_variance=4e-7, precision="fp64", adam_eps=eps)
        init, _ = train_init(faces[:3], cfg, ws)
        with torch.no_grad():
            rms[eps] = float(residual_rms(net_forward([w.double() for w in init], img), img)[0])
    assert rms[1e-8] < 1e-9 and rms[1e-16] > 1e3 * rms[1e-8], rms


def test_zero_iterations_reproduce_the_init_and_fine_tuning_matches_the_reference(faces):
    cfg = ZSSRConfig(**NET)
    init, _ = train_init(faces[:3], cfg, WS)
    eng = ZSSR(cfg)
    img = eng._tensor(faces[3].astype(np.float64) / 255.0)
    direct = to_uint8(eng.infer([w.float() for w in init], img), False)  # the init's own output
    zero = dataclasses.replace(cfg, max_iters=0)
    out0, info0 = ZSSR(zero).run(faces[3], seed=7, init=init)
    assert info0["iterations"] == 0 and np.array_equal(out0, direct)
    (_, b0, bi0), = BatchedZSSR(zero, slots=2, init=init).run([("f", faces[3], 7)])
    assert bi0["iterations"] == 0 and np.array_equal(b0, direct)
    # the random init's output at 0 iterations is something else (the init is not a no-op)
    rand0, _ = ZSSR(zero).run(faces[3], seed=7)
    assert not np.array_equal(rand0, direct)
    # fine-tuning moves away from the init; the batched engine fine-tunes each face exactly like the reference
    c64 = dataclasses.replace(cfg, precision="fp64")
    ref = [ZSSR(c64).run(f, seed=s, init=init) for f, s in zip(faces, (1, 2, 3, 4))]
    got = {k: (o, i) for k, o, i in BatchedZSSR(c64, slots=2, init=init).run(
        [(k, f, s) for k, (f, s) in enumerate(zip(faces, (1, 2, 3, 4)))])}
    assert not np.array_equal(ref[3][0], direct)
    for k, (o1, i1) in enumerate(ref):
        o2, i2 = got[k]
        assert i1["iterations"] == i2["iterations"] and i1["final_loss"] == pytest.approx(i2["final_loss"], rel=1e-9)
        assert np.abs(o1.astype(int) - o2).max() <= 1 and np.mean(o1 == o2) > 0.99


def test_configs_warm_start_off_by_default_on_in_fast():
    from survsr.pipelines.zssr_pool import load_config, stage_hash

    paper, fast = load_config("zssr.yaml"), load_config("zssr_fast.yaml")
    assert paper.warm_start == WarmStartConfig() and not paper.warm_start.enabled
    assert fast.warm_start.enabled and fast.zssr.max_iters < paper.zssr.max_iters
    assert fast.zssr.depth == paper.zssr.depth and fast.zssr.output_flip and fast.zssr.back_projection_iters == 10
    # off, the warm start's own settings do not touch the stage hash (nothing recomputes), on they do
    off_other = load_config("zssr.yaml", ["warm_start.steps=7", "warm_start.method=reptile"])
    assert stage_hash(off_other) == stage_hash(paper)
    assert stage_hash(load_config("zssr.yaml", ["warm_start.enabled=true"])) != stage_hash(paper)


TINY = ["zssr.max_iters=6", "zssr.min_iters=2", "zssr.run_test_every=2", "zssr.learning_rate_policy_check_every=3",
        "zssr.learning_rate_slope_range=10", "zssr.width=16", "zssr.depth=4", "zssr.back_projection_iters=2",
        "zssr.output_flip=false", "zssr.device=cpu", "pool.num_gpus=0", "pool.batch_size=2", "pool.slots=2",
        "warm_start.steps=5", "warm_start.faces_per_step=2"]


def test_pool_trains_the_init_once_records_its_hash_and_resume_reuses_it(tmp_path, ray_session, lfw_faces_dir):
    from survsr.images import read_image
    from survsr.pipelines.zssr_pool import load_config, run_zssr
    from survsr.provenance import PROVENANCE_KEY, read_png_text, sha256_file

    faces = lfw_faces_dir(tmp_path / "faces", 3)
    df = pd.read_parquet(faces / "faces.parquet")
    out = tmp_path / "zssr"
    cfg = load_config("zssr_fast.yaml", [*TINY, "select.generator_faces=true"])  # all 3 faces, whatever their role
    s1 = run_zssr(faces, out, cfg)
    ws = s1["warm_start"]
    assert (s1["done"], s1["ran"]) == (3, 3) and ws["trained"] is True and ws["face_iterations"] == 10
    init_file = out / ws["path"]
    assert sha256_file(init_file) == ws["sha256"]
    # the init is what train_init makes of the manifest's LR crops: nothing else went into it
    local, _ = train_init([read_image(faces / p) for p in df["lr_path"]], cfg.zssr, cfg.warm_start)
    assert sha256_bytes(init_to_bytes(local)) == ws["sha256"]
    man = pd.read_parquet(out / "zssr.parquet").set_index("crop_id")
    for cid, row in man.iterrows():
        prov = json.loads(read_png_text(out / row["hr_path"])[PROVENANCE_KEY])
        assert prov["stages"][0]["warm_start_init_sha256"] == ws["sha256"]
        assert json.loads((out / "records" / f"{cid}.json").read_text())["init_sha256"] == ws["sha256"]

    # resume: one face interrupted; the init is found by its hash, not trained again; same bytes out
    victim = man.index[1]
    (out / "records" / f"{victim}.json").unlink()
    mtime = init_file.stat().st_mtime_ns
    s2 = run_zssr(faces, out, cfg)
    assert (s2["done"], s2["ran"], s2["resumed"]) == (3, 1, 2)
    assert s2["warm_start"]["trained"] is False and s2["warm_start"]["sha256"] == ws["sha256"]
    assert init_file.stat().st_mtime_ns == mtime
    assert pd.read_parquet(out / "zssr.parquet").set_index("crop_id").loc[victim, "sha256"] == man.loc[victim, "sha256"]

    # a corrupted init file is not trusted: it is trained again (same inputs and seed: the same hash)
    init_file.write_bytes(b"corrupt")
    s3 = run_zssr(faces, out, cfg)
    assert s3["warm_start"]["trained"] is True and s3["warm_start"]["sha256"] == ws["sha256"] and s3["ran"] == 0


def test_upscale_warm_start_learns_from_the_given_images(tmp_path, faces):
    from survsr.cli import main
    from survsr.pipelines.zssr_pool import load_config
    from survsr.provenance import PROVENANCE_KEY, read_png_text

    src = tmp_path / "in"  # outputs never go into an input's directory
    src.mkdir()
    for k in range(2):
        Image.fromarray(faces[k]).save(src / f"cam{k}.png")
    (src / "junk.png").write_bytes(b"not a png")
    files = [str(src / n) for n in ("cam0.png", "junk.png", "cam1.png")]
    sets = [t for t in TINY if t.startswith(("zssr.", "warm_start."))]
    args = ["upscale", *files, "--config", "zssr_fast.yaml", "--method", "zssr", "--out", str(tmp_path / "o")]
    for t in sets:
        args += ["--set", t]
    assert main(args) == 3  # done with failures: junk.png is reported, the others are done
    cfg = load_config("zssr_fast.yaml", sets)
    init, _ = train_init(faces[:2], cfg.zssr, cfg.warm_start)
    sha = sha256_bytes(init_to_bytes(init))
    for k in range(2):
        prov = json.loads(read_png_text(tmp_path / "o" / f"cam{k}.png")[PROVENANCE_KEY])
        assert prov["stages"][0]["warm_start_init_sha256"] == sha
