"""Evaluation: metric values against independent/analytic values, the three protocols on small real inputs,
missing stages reported, bad inputs rejected with clear messages."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from survsr.pipelines.eval_faces import DegradationConfig, EvaluateError, degrade, folder_faces
from survsr.pipelines.quality import MetricError, MetricsConfig, read_rgb, score_pair, sharpness, ssim

REPO = Path(__file__).resolve().parents[2]
SR_BENCH = REPO.parent / "shared" / "data" / "sr-benchmarks"
Y_GAIN = (65.481 + 128.553 + 24.966) / 255.0  # BT.601: a grey step of d levels moves Y by 219/255 * d


def _texture(shape=(64, 64, 3), lo=40, hi=200, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(lo, hi, size=shape).astype(np.uint8)


# ---------------------------------------------------------------- metric values


def test_psnr_exact_for_a_known_error():
    ref = _texture()
    d = 3
    checker = np.where((np.indices(ref.shape[:2]).sum(0) % 2) == 0, d, -d)[..., None]
    test = (ref.astype(int) + checker).astype(np.uint8)  # every pixel, every channel off by exactly d
    m = score_pair(ref, test, scale=2)
    assert m["psnr_rgb"] == pytest.approx(10 * math.log10(255**2 / d**2), abs=1e-9)
    # all three channels move together, so Y moves by 219/255 * d
    assert m["psnr_y"] == pytest.approx(10 * math.log10(255**2 / (Y_GAIN * d) ** 2), abs=1e-6)
    assert not m["identical"]


def test_psnr_of_gaussian_noise_matches_its_variance():
    ref = _texture((256, 256, 3), 60, 190, seed=1)  # far from 0/255: no clipping of the noise
    sigma = 4.0
    noisy = np.round(ref + np.random.default_rng(2).normal(0, sigma, ref.shape)).astype(np.uint8)
    m = score_pair(ref, noisy, scale=2)
    # rounding to integers adds the variance of a uniform error on [-0.5, 0.5]: 1/12
    expected = 10 * math.log10(255**2 / (sigma**2 + 1 / 12))
    assert m["psnr_rgb"] == pytest.approx(expected, abs=0.05)


def test_psnr_of_a_shifted_image_and_the_border_crop():
    ref = _texture((48, 40, 3), seed=3)
    shifted = np.roll(ref, 1, axis=1)
    for border in (0, 2, 5):
        m = score_pair(ref, shifted, scale=2, cfg=MetricsConfig(border=border))
        r = ref[border:48 - border, border:40 - border].astype(float)
        s = shifted[border:48 - border, border:40 - border].astype(float)
        mse = np.mean((r - s) ** 2)  # computed here, independently of scikit-image
        assert m["psnr_rgb"] == pytest.approx(10 * np.log10(255**2 / mse), abs=1e-9)
    # border None means "the scale"
    assert score_pair(ref, shifted, scale=5)["psnr_rgb"] == pytest.approx(
        score_pair(ref, shifted, scale=2, cfg=MetricsConfig(border=5))["psnr_rgb"])


def test_ssim_of_constant_images_is_the_luminance_term():
    a, b = 100, 120
    ref = np.full((32, 32, 3), a, np.uint8)
    test = np.full((32, 32, 3), b, np.uint8)
    c1 = (0.01 * 255) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)  # Wang et al. eq. with zero variance
    m = score_pair(ref, test, scale=2)
    assert m["ssim_rgb"] == pytest.approx(expected, abs=1e-9)
    ya, yb = 16 + Y_GAIN * a, 16 + Y_GAIN * b
    assert m["ssim_y"] == pytest.approx((2 * ya * yb + c1) / (ya * ya + yb * yb + c1), abs=1e-6)


def test_identical_images_give_infinite_psnr_and_ssim_one():
    ref = _texture()
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("error")  # no divide-by-zero warning leaks out
        m = score_pair(ref, ref.copy(), scale=2)
    assert math.isinf(m["psnr_rgb"]) and math.isinf(m["psnr_y"])
    assert m["ssim_rgb"] == pytest.approx(1.0) and m["identical"] is True


def test_size_mismatch_and_bad_arrays_are_clear_errors():
    with pytest.raises(MetricError, match=r"size mismatch: hr.png is 64x64x3 but sr.png is 62x64x3"):
        score_pair(_texture(), _texture((64, 62, 3)), ref_name="hr.png", test_name="sr.png")
    with pytest.raises(MetricError, match="expected uint8"):
        score_pair(_texture().astype(np.float32), _texture().astype(np.float32))
    with pytest.raises(MetricError, match="smaller than the 11x11 SSIM window"):
        ssim(np.zeros((8, 8)), np.zeros((8, 8)))
    with pytest.raises(MetricError, match="too small for a 4-pixel border"):
        score_pair(_texture((8, 8, 3)), _texture((8, 8, 3)), scale=4)


@pytest.mark.skipif(not (SR_BENCH / "Set5").is_dir(), reason=f"{SR_BENCH}/Set5 not present")
def test_bicubic_on_set5_reproduces_the_published_33_67_db():
    vals = []
    for f in sorted((SR_BENCH / "Set5").glob("*.png")):
        hr = Image.open(f).convert("RGB")
        w, h = hr.size[0] // 2 * 2, hr.size[1] // 2 * 2
        hr = hr.crop((0, 0, w, h))
        sr = hr.resize((w // 2, h // 2), Image.BICUBIC).resize((w, h), Image.BICUBIC)
        vals.append(score_pair(np.asarray(hr), np.asarray(sr), scale=2)["psnr_y"])
    assert np.mean(vals) == pytest.approx(33.67, abs=0.01)


def test_sharpness_falls_with_blur():
    import cv2

    img = _texture((64, 64, 3), 0, 255, seed=4)
    blurred = cv2.GaussianBlur(img, (0, 0), 1.5)
    assert sharpness(img) > 5 * sharpness(blurred) > 0
    assert sharpness(np.full((16, 16, 3), 7, np.uint8)) == 0.0


# ---------------------------------------------------------------- inputs


def test_unreadable_and_missing_images_name_the_file(tmp_path):
    bad = tmp_path / "face.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(MetricError, match=r"face.png: unreadable image"):
        read_rgb(bad)
    with pytest.raises(MetricError, match=r"nope.png: image file not found"):
        read_rgb(tmp_path / "nope.png")


def test_16bit_and_grey_images_read_as_rgb(tmp_path):
    arr16 = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(arr16).save(tmp_path / "deep.png")
    img = read_rgb(tmp_path / "deep.png")
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8 and img.max() == 255


def test_face_folder_skips_unreadable_files_and_rejects_empty_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EvaluateError, match=r"empty: no face images found"):
        folder_faces(empty, label="HR folder", max_faces=5, skipped=[])
    with pytest.raises(EvaluateError, match="face folder not found"):
        folder_faces(tmp_path / "missing", label="HR folder", max_faces=5, skipped=[])
    d = tmp_path / "faces"
    d.mkdir()
    Image.fromarray(_texture()).save(d / "good.png")
    (d / "broken.jpg").write_bytes(b"\xff\xd8garbage")
    skipped: list[dict] = []
    faces = folder_faces(d, label="HR folder", max_faces=5, skipped=skipped)
    assert [f.face_id for f in faces] == ["faces/good"]
    assert len(skipped) == 1 and "broken.jpg" in skipped[0]["input"] and "unreadable" in skipped[0]["reason"]
    (d / "good.png").unlink()
    with pytest.raises(EvaluateError, match="none of its 1 image"):
        folder_faces(d, label="HR folder", max_faces=5, skipped=[])


def test_degradations_are_deterministic_and_differ():
    hr = _texture((64, 64, 3), 0, 255, seed=5)
    plain = degrade(hr, 2, DegradationConfig(name="bicubic"), seed=1)
    assert plain.shape == (32, 32, 3)
    surv = DegradationConfig(name="surveillance", blur_sigma=0.8, noise_sigma=4.0, jpeg_quality=40)
    a, b, c = degrade(hr, 2, surv, 1), degrade(hr, 2, surv, 1), degrade(hr, 2, surv, 2)
    assert np.array_equal(a, b) and not np.array_equal(a, c) and not np.array_equal(a, plain)


# ---------------------------------------------------------------- protocols on real inputs

CARPHONE_FACE = (45, 20, 90, 90)  # x, y, w, h: the face (Haar box with margin) in carphone frames


def _frames(path: Path, indices: list[int]) -> dict[int, np.ndarray]:
    import av

    out = {}
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i in indices:
                out[i] = f.to_ndarray(format="rgb24")
            if i >= max(indices):
                break
    return out


@pytest.fixture(scope="module")
def stages(tmp_path_factory, carphone, make_generator):
    """An ingest dir (carphone pristine + distorted crops), a ZSSR dir and a training run, built from real
    frames by hand so these tests do not depend on the other stages' code."""
    import pandas as pd

    from survsr.provenance import sha256_file, write_png, write_parquet_atomic

    root = tmp_path_factory.mktemp("stages")
    ing, zs, run = root / "ingest", root / "zssr", root / "run"
    x, y, w, h = CARPHONE_FACE
    rows, zrows = [], []
    for kind, indices in (("pristine", [0, 40, 80]), ("distorted", [10, 50])):
        video = carphone[kind]
        vsha = sha256_file(video)
        for k, (i, frame) in enumerate(sorted(_frames(video, indices).items())):
            crop = np.ascontiguousarray(frame[y:y + h, x:x + w])
            cid = f"{vsha[:12]}-f{i:06d}-0"
            native_rel, lr_rel = f"crops/{cid}_native.png", f"crops/{cid}_lr.png"
            lr = np.asarray(Image.fromarray(crop).resize((32, 32), Image.BICUBIC))
            nsha = write_png(ing / native_rel, crop)
            lsha = write_png(ing / lr_rel, lr)
            split = "test" if k != 1 else "train"
            rows.append(dict(crop_id=cid, source_path=str(video), source_sha256=vsha, frame_index=i,
                             time_s=i / 30, box_x=x, box_y=y, box_w=w, box_h=h, detector="haar", score=9.0,
                             track_id=f"{kind}-0", split=split, native_path=native_rel, native_w=w, native_h=h,
                             lr_path=lr_rel, lr_size=32, resize_method="bicubic", sharpness=1.0, sha256=lsha,
                             native_sha256=nsha, config_hash="test"))
            # stand-in for the ZSSR output: these tests are about the evaluation, not ZSSR's quality
            hr = np.asarray(Image.fromarray(crop).resize((64, 64), Image.LANCZOS))
            hsha = write_png(zs / f"hr/{cid}.png", hr)
            zrows.append(dict(crop_id=cid, hr_path=f"hr/{cid}.png", sha256=hsha, iterations=1, final_lr=1e-3,
                              final_loss=0.1, seconds=0.1, config_hash="test", device="cpu", split=split,
                              lr_path=lr_rel))
    write_parquet_atomic(pd.DataFrame(rows), ing / "faces.parquet")
    write_parquet_atomic(pd.DataFrame(zrows), zs / "zssr.parquet")
    make_generator(run / "generator.safetensors", channels=8, n_blocks=1, note="test")
    (run / "train_meta.json").write_text(json.dumps({"mediator": {"status": "random-init (fallback)"}}))
    (run / "train_log.jsonl").write_text("".join(
        json.dumps({"step": s, "loss_g": 1.0 / (s + 1), "loss_d": 0.7, "d_real": 0.6, "d_fake": 0.4}) + "\n"
        for s in range(6)))
    return {"faces": ing, "zssr": zs, "generator": run / "generator.safetensors", "rows": rows}


TINY_ZSSR = "zssr.set=[max_iters=3,min_iters=1,back_projection_iters=0,output_flip=false]"


def test_three_protocols_on_real_faces_with_ray(stages, tmp_path, ray_session):
    from survsr.pipelines.evaluate import run_evaluate

    out = tmp_path / "report"
    res = run_evaluate(out, faces=stages["faces"], zssr=stages["zssr"], generator=stages["generator"],
                       overrides=[TINY_ZSSR, "ground_truth.astronaut=true", "ground_truth.max_faces=2",
                                  "real_footage.max_faces=2"])
    P = res["protocols"]
    assert {k: P[k]["status"] for k in P} == {"paper": "ok", "ground_truth": "ok", "real_footage": "ok"}

    # Protocol 1: the test-split faces (2 pristine + 1 distorted), SRGAN and the bicubic baseline
    paper = P["paper"]
    assert paper["n_faces"] == 3
    assert sorted({r["method"] for r in paper["rows"]}) == ["bicubic", "srgan"]
    # the bicubic-vs-ZSSR figure, recomputed here from the files with PIL and scikit-image directly
    from skimage.color import rgb2ycbcr
    from skimage.metrics import peak_signal_noise_ratio

    row = next(r for r in paper["rows"] if r["method"] == "bicubic")
    crop = next(r for r in stages["rows"] if r["crop_id"] == row["face_id"])
    lr = Image.open(stages["faces"] / crop["lr_path"]).convert("RGB")
    sr = np.asarray(lr.resize((64, 64), Image.BICUBIC))
    hr = np.asarray(Image.open(stages["zssr"] / f"hr/{row['face_id']}.png").convert("RGB"))
    want = peak_signal_noise_ratio(rgb2ycbcr(hr)[2:-2, 2:-2, 0], rgb2ycbcr(sr)[2:-2, 2:-2, 0], data_range=255)
    assert row["psnr_y"] == pytest.approx(want, abs=1e-9)

    # Protocol 2: distorted crops excluded; 2 pristine (spread) + astronaut, x 2 degradations x 4 methods
    gt = P["ground_truth"]
    assert gt["n_faces"] == 3
    assert len(gt["rows"]) == 3 * 2 * 4 and not any(r["error"] for r in gt["rows"])
    assert not any("distorted" in r["source"] for r in gt["rows"])
    by = {(s["degradation"], s["method"]): s for s in gt["summary"]}
    # with no degradation but the bicubic downscale, bicubic upscaling beats pixel replication
    assert by[("bicubic", "bicubic")]["psnr_y_mean"] > by[("bicubic", "nearest")]["psnr_y_mean"] + 1.0
    assert 20 < by[("bicubic", "bicubic")]["psnr_y_mean"] < 45
    assert by[("surveillance", "bicubic")]["psnr_y_mean"] < by[("bicubic", "bicubic")]["psnr_y_mean"]
    for deg in ("bicubic", "surveillance"):
        best = [s["method"] for s in gt["summary"] if s["degradation"] == deg and "psnr_y" in s["best"]]
        top = max((s for s in gt["summary"] if s["degradation"] == deg), key=lambda s: s["psnr_y_mean"])
        assert best == [top["method"]]

    # per source: the training clip's crops and the unseen astronaut, each degradation x method
    assert {s["source"] for s in gt["summary_by_source"]} == {"carphone_pristine (ingest)", "skimage.data.astronaut()"}
    assert len(gt["summary_by_source"]) == 2 * 2 * 4

    # Protocol 3: per source at most 2 faces, ZSSR reused from zssr.parquet, sharpness for every column
    real = P["real_footage"]
    assert real["n_faces"] == 3  # test split: 2 pristine, 1 distorted
    assert any("reuse the ZSSR stage's output" in n for n in real["notes"])
    assert all(r["sharpness"] is not None and r["sharpness"] > 0 for r in real["rows"])
    assert all(r["psnr_y"] is None for r in real["rows"])

    # files: metrics.json (strict JSON), metrics.csv (one line per row), the page, the audit line
    data = json.loads((out / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert data["methods"]["srgan"]["sha256"] == res["methods"]["srgan"]["sha256"]
    n_rows = sum(len(p["rows"]) for p in P.values())
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == n_rows + 1
    page = (out / "index.html").read_text()
    assert "random-init (fallback)" in page and "id=curves" in page and page.count("<img") > 20
    assert "agreement with ZSSR, not fidelity" in page and "ground_truth-by-source" in page
    assert json.loads((out / "audit.jsonl").read_text().splitlines()[-1])["outcome"] == "ok"
    # ZSSR outputs computed here are cached (resume) and, like every PNG output, say they are model output
    from survsr.provenance import PROVENANCE_KEY, read_png_text

    cached = sorted((out / "cache" / "zssr").glob("*.png"))
    assert len(cached) == 3 * 2
    doc = json.loads(read_png_text(cached[0])[PROVENANCE_KEY])
    assert doc["model_output"] is True and doc["stages"][0]["stage"] == "evaluate-zssr"


def test_ray_and_in_process_give_the_same_numbers(stages, tmp_path, ray_session):
    from survsr.pipelines.evaluate import run_evaluate

    args = dict(faces=stages["faces"], generator=stages["generator"])
    sets = ["zssr.enabled=false", "real_footage.enabled=false", "ground_truth.astronaut=false"]
    a = run_evaluate(tmp_path / "ray", overrides=sets, **args)
    b = run_evaluate(tmp_path / "local", overrides=sets + ["pool.enabled=false"], **args)
    ra, rb = a["protocols"]["ground_truth"]["rows"], b["protocols"]["ground_truth"]["rows"]
    assert len(ra) == len(rb) == 2 * 2 * 3
    key = lambda r: (r["degradation"], r["face_id"], r["method"])  # noqa: E731
    for x, y in zip(sorted(ra, key=key), sorted(rb, key=key)):
        assert key(x) == key(y) and x["psnr_y"] == y["psnr_y"] and x["ssim_rgb"] == y["ssim_rgb"]


def test_missing_stages_are_reported_not_crashed(tmp_path, monkeypatch):
    from survsr.pipelines.evaluate import run_evaluate

    hr_dir, lr_dir = tmp_path / "hr", tmp_path / "lr"
    hr_dir.mkdir()
    lr_dir.mkdir()
    from skimage import data

    Image.fromarray(data.astronaut()[40:180, 155:295]).save(hr_dir / "astro.png")
    Image.fromarray(np.asarray(Image.fromarray(data.astronaut()[40:180, 155:295]).resize((32, 32)))).save(
        lr_dir / "astro_lr.png")
    Image.fromarray(data.astronaut()[:20, :20]).save(hr_dir / "tiny.png")  # too small to be an HR face
    res = run_evaluate(tmp_path / "out", faces_hr=[hr_dir], faces_lr=[lr_dir],
                       overrides=["pool.enabled=false", "zssr.enabled=false", "ground_truth.carphone=false",
                                  "ground_truth.astronaut=false", "real_footage.carphone=false"])
    P = res["protocols"]
    assert P["paper"]["status"] == "missing" and "--zssr" in P["paper"]["reason"]
    assert P["ground_truth"]["status"] == "ok" and P["real_footage"]["status"] == "ok"
    assert res["methods"]["zssr"]["available"] is False and "zssr.enabled: false" in res["methods"]["zssr"]["reason"]
    assert res["methods"]["srgan"]["available"] is False
    assert {r["method"] for r in P["ground_truth"]["rows"]} == {"nearest", "bicubic"}
    assert P["ground_truth"]["n_faces"] == 1
    assert any("tiny.png" in s["input"] and "min_native" in s["reason"] for s in res["skipped"])
    page = (tmp_path / "out" / "index.html").read_text()
    assert "paper-missing" in page and "not available" in page and "No training log" in page

    # nothing at all to evaluate: still a page that says so
    res = run_evaluate(tmp_path / "none", overrides=["pool.enabled=false", "ground_truth.carphone=false",
                                                     "ground_truth.astronaut=false", "real_footage.carphone=false"])
    assert res["protocols"]["ground_truth"]["status"] == "empty"
    assert "ground_truth-missing" in (tmp_path / "none" / "index.html").read_text()


def test_identical_output_reported_as_inf_not_crash(stages, tmp_path):
    """A 'ZSSR output' that is exactly the bicubic upscale: PSNR infinite, reported as identical."""
    import pandas as pd

    from survsr.pipelines.evaluate import run_evaluate
    from survsr.provenance import write_png, write_parquet_atomic

    zs = tmp_path / "zssr"
    rows = []
    for r in stages["rows"][:2]:
        lr = Image.open(stages["faces"] / r["lr_path"]).convert("RGB")
        write_png(zs / f"{r['crop_id']}.png", np.asarray(lr.resize((64, 64), Image.BICUBIC)))
        rows.append({"crop_id": r["crop_id"], "hr_path": f"{r['crop_id']}.png", "split": "test",
                     "lr_path": r["lr_path"]})
    write_parquet_atomic(pd.DataFrame(rows), zs / "zssr.parquet")
    res = run_evaluate(tmp_path / "out", faces=stages["faces"], zssr=zs,
                       overrides=["pool.enabled=false", "ground_truth.enabled=false", "real_footage.enabled=false"])
    s = res["protocols"]["paper"]["summary"]
    assert s[0]["method"] == "bicubic" and s[0]["n_identical"] == 2 and s[0]["psnr_y_mean"] is None
    assert s[0]["ssim_y_mean"] == pytest.approx(1.0)
    csv_rows = [ln.split(",") for ln in (tmp_path / "out" / "metrics.csv").read_text().splitlines()]
    col = csv_rows[0].index("psnr_y")
    assert [r[col] for r in csv_rows[1:] if "bicubic" in r] == ["inf", "inf"]


def _cli(*args, timeout=120):
    return subprocess.run([str(REPO / ".venv" / "bin" / "survsr"), "evaluate", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


def test_cli_bad_inputs_exit_2_with_the_reason(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _cli("--faces", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "nope: --faces directory not found" in r.stderr
    r = _cli("--faces", str(empty), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "faces.parquet: ingest manifest not found" in r.stderr
    r = _cli("--faces-hr", str(empty), "--out", str(tmp_path / "o"), "--no-ray",
             "ground_truth.carphone=false", "real_footage.enabled=false")
    assert r.returncode == 2 and "empty: no face images found" in r.stderr
    r = _cli("--out", str(tmp_path / "o"), "ground_truth.degradatons=[]")
    assert r.returncode == 2 and "ground_truth.degradatons: unknown key" in r.stderr
    r = _cli("--out", str(tmp_path / "o"), "ground_truth.methods=[srgan,lanczos]")
    assert r.returncode == 2 and "unknown methods ['lanczos']" in r.stderr
    r = _cli("--out", str(tmp_path / "o"), "zssr.set=[max_iter=3]")
    assert r.returncode == 2 and "zssr.max_iter: unknown key" in r.stderr


def test_faces_detected_in_carphone_when_no_manifest_is_given(carphone):
    """Without --faces the ground-truth protocol finds its HR faces with the video module's detector."""
    from survsr.pipelines.eval_faces import detect_video_faces

    notes: list[str] = []
    faces = detect_video_faces(carphone["pristine"], label="carphone pristine", stride=40, max_faces=3, notes=notes)
    assert 1 <= len(faces) <= 3, notes
    for f in faces:
        h, w = f.image.shape[:2]
        assert h == w >= 60 and f.face_id.startswith("carphone_pristine-f")
        x, y, s, _ = f.extra["box"]
        assert 20 <= x + s / 2 <= 150 and 10 <= y + s / 2 <= 130  # the caller's face, not a frame corner


def test_named_generators_side_by_side_and_the_paper_table1_convention(stages, tmp_path):
    """SRGAN-paper and SRGAN-distill as rows of the same tables (one evaluation, the same faces), and the
    paper's Table I convention: scikit-image PSNR/SSIM on the full RGB image."""
    import torch
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from survsr.models.export import save_generator
    from survsr.models.srgan import Generator, GeneratorConfig
    from survsr.pipelines.evaluate import run_evaluate
    from survsr.pipelines.quality import MetricsConfig, score_pair

    gens = {}
    for i, name in enumerate(("paper", "distill")):
        torch.manual_seed(i)
        gens[name] = tmp_path / name / "generator.safetensors"
        save_generator(Generator(GeneratorConfig(channels=8, n_blocks=1, global_skip="bicubic" if i else "none")),
                       gens[name])
    sets = ["pool.enabled=false", "zssr.enabled=false", "ground_truth.astronaut=false", "ground_truth.max_faces=2",
            "real_footage.max_faces=1", "paper.max_faces=2", "metrics.convention=paper_table1"]
    res = run_evaluate(tmp_path / "rep", faces=stages["faces"], zssr=stages["zssr"], generators=gens,
                       overrides=sets)
    gt = {(s["degradation"], s["method"]): s for s in res["protocols"]["ground_truth"]["summary"]}
    for deg in ("bicubic", "surveillance"):
        assert {"bicubic", "srgan-paper", "srgan-distill"} <= {m for d, m in gt if d == deg}
        assert gt[(deg, "srgan-paper")]["psnr_rgb_mean"] != gt[(deg, "srgan-distill")]["psnr_rgb_mean"]
    assert [s["method"] for s in res["protocols"]["paper"]["summary"]] == ["bicubic", "srgan-distill", "srgan-paper"]
    assert res["methods"]["srgan-paper"]["available"] and res["methods"]["srgan-distill"]["available"]
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "SRGAN-paper" in page and "SRGAN-distill" in page and "paper_table1" in page
    # the convention itself: no border crop, scikit-image's default SSIM, on the full RGB image
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-9, 10, a.shape), 0, 255).astype(np.uint8)
    s = score_pair(a, b, scale=2, cfg=MetricsConfig(convention="paper_table1"))
    assert s["psnr_rgb"] == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255))
    assert s["ssim_rgb"] == pytest.approx(structural_similarity(a, b, channel_axis=2, data_range=255))
    assert score_pair(a, b, scale=2)["psnr_rgb"] != pytest.approx(s["psnr_rgb"])  # default: border crop
