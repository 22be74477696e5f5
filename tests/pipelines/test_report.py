"""The HTML report: self-contained, says what is missing, plots training curves, renders in a real browser."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from survsr.pipelines.report import training_curves_png, write_report
from survsr.provenance import encode_png

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "",
                             shutil.which("chromium-browser") or "") if p and Path(p).is_file()), None)


def _tile(v: int) -> bytes:
    img = np.zeros((64, 64, 3), np.uint8)
    img[16:48, 16:48] = v
    return encode_png(img)


def _result(paper_status="ok") -> tuple[dict, dict]:
    summary = [
        {"degradation": "bicubic", "method": "bicubic", "n": 2, "n_errors": 0, "n_identical": 0,
         "psnr_y_mean": 30.5, "psnr_y_std": 1.0, "ssim_y_mean": 0.91, "ssim_y_std": 0.01, "psnr_rgb_mean": 29.0,
         "psnr_rgb_std": 1.0, "ssim_rgb_mean": 0.90, "ssim_rgb_std": 0.01, "best": ["psnr_y", "psnr_rgb"]},
        {"degradation": "bicubic", "method": "zssr", "n": 2, "n_errors": 0, "n_identical": 0,
         "psnr_y_mean": 30.1, "psnr_y_std": 1.0, "ssim_y_mean": 0.93, "ssim_y_std": 0.01, "psnr_rgb_mean": 28.0,
         "psnr_rgb_std": 1.0, "ssim_rgb_mean": 0.92, "ssim_rgb_std": 0.01, "best": ["ssim_y", "ssim_rgb"]},
    ]
    rows = [{"degradation": "bicubic", "face_id": f"f{i}", "method": m, "source": "carphone <pristine>",
             "psnr_y": 30.0, "ssim_y": 0.9, "psnr_rgb": 29.0, "ssim_rgb": 0.9, "sharpness": 100.0,
             "seconds": 0.1, "error": None} for i in range(2) for m in ("bicubic", "zssr")]
    result = {
        "scale": 2,
        "protocols": {
            "paper": {"title": "Protocol 1", "status": paper_status,
                      "reason": "no ZSSR output given (--zssr DIR)", "notes": [], "summary": [], "rows": []},
            "ground_truth": {"title": "Protocol 2", "status": "ok", "notes": ["srgan: not available (x)"],
                             "summary": summary, "rows": rows,
                             "degradations": [{"name": "bicubic", "blur_sigma": 0.0, "noise_sigma": 0.0,
                                               "jpeg_quality": 0}]},
            "real_footage": {"title": "Protocol 3", "status": "empty", "reason": "no native LR face found",
                             "notes": [], "summary": [], "rows": []},
        },
        "methods": {"nearest": {"available": True}, "bicubic": {"available": True},
                    "zssr": {"available": True, "config_hash": "abc", "overrides": []},
                    "srgan": {"available": False, "reason": "no generator given"}},
        "train_meta": {"mediator": {"weights": "random-init (fallback)"}},
        "inputs": [{"role": "video", "path": "/x/carphone.mp4", "sha256": "ab" * 32}],
        "skipped": [{"input": "/x/broken.png", "reason": "unreadable image"}],
        "config": {"metrics": {"border": None}}, "config_hash": "0123456789abcdef",
        "provenance": {"code_version": "git:test"},
    }
    grids = {"ground_truth": [{"face_id": "f0", "degradation": "bicubic", "source": "carphone",
                               "tiles": [{"title": "HR (truth)", "png": _tile(200), "caption": ""},
                                         {"title": "bicubic", "png": _tile(150), "caption": "30.00 dB"},
                                         {"title": "SRGAN", "png": None, "caption": "not available"}]}]}
    return result, grids


def test_page_is_self_contained_marks_best_and_reports_missing_stages(tmp_path):
    result, grids = _result(paper_status="missing")
    page = write_report(tmp_path, result, grids, None).read_text()
    # no external resource of any kind: everything inline
    assert not re.search(r"""(src|href)=['"]?(https?:|//|file:)""", page)
    assert page.count("data:image/png;base64,") == 2
    assert "paper-missing" in page and "no ZSSR output given" in page
    assert "real_footage-missing" in page and "No training log" in page
    # best per column: bicubic wins PSNR-Y, ZSSR wins SSIM-Y
    table = re.search(r"<table id='ground_truth-summary'.*?</table>", page, re.S).group(0)
    bic = re.search(r"<tr><td class=l>bicubic</td><td class=l>bicubic</td>.*?</tr>", table).group(0)
    zs = re.search(r"<tr><td class=l>bicubic</td><td class=l>ZSSR</td>.*?</tr>", table).group(0)
    assert "<td class=best>30.50" in bic and "<td class=best>0.9300" in zs and "<td class=best>0.9100" not in bic
    assert "random-init (fallback)" in page and "class=warn" in page
    assert "carphone &lt;pristine&gt;" in page  # escaped
    assert "/x/broken.png" in page and ("ab" * 32) in page


def test_training_curves_from_a_log(tmp_path):
    log = tmp_path / "train_log.jsonl"
    log.write_text("".join(json.dumps({"epoch": e, "loss_g": 1 / (e + 1), "loss_d": 0.69, "d_real": 0.7,
                                       "d_fake": 0.3, "psnr_vs_zssr": 25 + e}) + "\n" for e in range(5))
                   + "not json\n")
    png = training_curves_png(log)
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.size[0] > 2 * img.size[1]  # three panels side by side
    assert np.asarray(img.convert("L")).std() > 5
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert training_curves_png(empty) is None
    assert training_curves_png(tmp_path / "missing.jsonl") is None


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120)


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    from survsr.pipelines.evaluate import run_evaluate

    # a real (small, in-process) evaluation: the astronaut and a carphone-sized face, no Ray, no ZSSR
    hr = tmp_path / "hr"
    hr.mkdir()
    from skimage import data

    Image.fromarray(data.astronaut()[200:330, 100:230]).save(hr / "patch.png")
    out = tmp_path / "report"
    run_evaluate(out, faces_hr=[hr], overrides=["pool.enabled=false", "zssr.enabled=false",
                                                "ground_truth.carphone=false", "real_footage.carphone=false"])
    url = (out / "index.html").resolve().as_uri()
    dom = _chromium(["--dump-dom", url], tmp_path / "profile1")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert "<table id=\"ground_truth-summary\"" in html or "<table id='ground_truth-summary'" in html \
        or 'id="ground_truth-summary"' in html
    assert 'id="paper-missing"' in html and 'id="methods"' in html and 'id="inputs"' in html
    assert html.count("<img") >= 2 * 5  # 2 faces x 2 degradations x (HR, LR, nearest, bicubic) at least
    shot = tmp_path / "page.png"
    r = _chromium([f"--screenshot={shot}", "--window-size=1200,2400", url], tmp_path / "profile2")
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB")).astype(float)
    assert img.shape[:2] == (2400, 1200)
    # the page is drawn: not blank, and the grid images' mid-tones are there (not only text on white)
    assert img.std() > 20
    assert ((img.mean(axis=2) > 60) & (img.mean(axis=2) < 200)).mean() > 0.02
