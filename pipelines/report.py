"""The evaluation report: one self-contained HTML page (no external file, script or font; images inline as
base64 PNG) that opens anywhere, including an air-gapped analyst workstation."""

from __future__ import annotations

import base64
import html
import json
import logging
import math
from pathlib import Path
from typing import Any

from survsr.provenance import atomic_write

log = logging.getLogger(__name__)

METRIC_LABELS = {"psnr_y": "PSNR-Y (dB)", "ssim_y": "SSIM-Y", "psnr_rgb": "PSNR-RGB (dB)", "ssim_rgb": "SSIM-RGB"}
METHOD_LABELS = {"nearest": "nearest", "bicubic": "bicubic", "zssr": "ZSSR", "srgan": "SRGAN",
                 "srgan-paper": "SRGAN-paper", "srgan-distill": "SRGAN-distill"}

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1200px;color:#1d1d1f;
 padding:0 16px;line-height:1.4}
h1{font-size:1.6em}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:2em}
table{border-collapse:collapse;margin:8px 0 16px}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}td.best{background:#d8f5d0;font-weight:bold}
.missing{background:#fff4e0;border-left:4px solid #f0a000;padding:8px 12px;margin:8px 0}
.note{color:#555;font-size:.92em}.warn{background:#ffecec;border-left:4px solid #d00;padding:8px 12px}
.grid{border:none}.grid td{border:none;text-align:center;vertical-align:top;font-size:.8em;padding:2px 4px}
.grid img{image-rendering:pixelated;image-rendering:crisp-edges;display:block;margin:auto;background:#eee}
.tile-missing{display:flex;align-items:center;justify-content:center;background:#eee;color:#888}
pre{background:#f7f7f7;padding:8px;overflow:auto;max-height:400px;font-size:.8em}
details{margin:6px 0}code{font-size:.9em}
"""

PROTOCOL_TEXT = {
    "paper": (
        "The paper's Table I protocol: each test-split face's SRGAN output is compared with the ZSSR output "
        "of the same face. <b>This measures agreement with ZSSR, not fidelity to the real face</b>: "
        "the ZSSR image is itself an estimate, so a generator that copies ZSSR's mistakes scores high. "
        "The bicubic row shows how much agreement a plain interpolation gets for free. "
        "{convention}"),
    "ground_truth": (
        "Real HR faces are degraded to LR (bicubic downscale; and a surveillance-like chain: blur, "
        "downscale, sensor noise, JPEG), super-resolved by each method and scored against the real HR. "
        "This is the protocol that measures fidelity. Best mean per column and degradation in green."),
    "real_footage": (
        "The paper's Table II setting: faces as the camera recorded them, with no HR to compare with. "
        "Each row shows the LR face, the LR zoomed without interpolation, and each method's output. "
        "<i>Sharpness</i> is the variance of the Laplacian (OpenCV): higher means more edge energy, "
        "which includes noise and artefacts, so it says which output is crisper, not which is right."),
}


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _b64(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _fmt(v: Any, col: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    if col.startswith("psnr") or col.startswith("sharp"):
        return f"{v:.2f}" if col.startswith("psnr") else f"{v:.1f}"
    if col.startswith("ssim"):
        return f"{v:.4f}"
    if col == "seconds":
        return f"{v:.2f}"
    return _e(v)


def _summary_table(p: dict, name: str) -> str:
    summary = p.get("summary") or []
    if not summary:
        return ""
    has_deg = name == "ground_truth"
    cols = ["sharpness"] if name == "real_footage" else list(METRIC_LABELS)
    head = ("<th class=l>degradation</th>" if has_deg else "") + "<th class=l>method</th><th>n</th>"
    for c in cols:
        head += f"<th>{_e(METRIC_LABELS.get(c, 'sharpness (var. of Laplacian, 64x64)'))}</th>"
    head += "<th>identical</th><th>errors</th>"
    body = []
    for s in summary:
        tds = (f"<td class=l>{_e(s.get('degradation'))}</td>" if has_deg else "")
        tds += f"<td class=l>{_e(METHOD_LABELS.get(s['method'], s['method']))}</td><td>{s['n']}</td>"
        for c in cols:
            mean, std = s.get(f"{c}_mean"), s.get(f"{c}_std")
            best = c in (s.get("best") or [])
            txt = "-" if mean is None else f"{_fmt(mean, c)} &plusmn; {_fmt(std, c)}"
            tds += f"<td class=best>{txt} &#9733;</td>" if best else f"<td>{txt}</td>"
        tds += f"<td>{s.get('n_identical', 0)}</td><td>{s.get('n_errors', 0)}</td>"
        body.append(f"<tr>{tds}</tr>")
    return (f"<table id='{name}-summary' class=summary><caption>mean &plusmn; std over faces</caption>"
            f"<tr>{head}</tr>{''.join(body)}</table>")


def _by_source_table(summary: list[dict]) -> str:
    rows = "".join(
        f"<tr><td class=l>{_e(s['degradation'])}</td><td class=l>{_e(s['source'])}</td>"
        f"<td class=l>{_e(METHOD_LABELS.get(s['method'], s['method']))}</td><td>{s['n']}</td>"
        + "".join(f"<td>{_fmt(s.get(c + '_mean'), c)}</td>" for c in ("psnr_y", "ssim_y")) + "</tr>"
        for s in summary)
    return ("<details><summary>by source (training clip vs unseen faces)</summary>"
            "<table id='ground_truth-by-source'><tr><th class=l>degradation</th><th class=l>source</th>"
            "<th class=l>method</th><th>n</th><th>PSNR-Y (dB)</th><th>SSIM-Y</th></tr>"
            f"{rows}</table></details>")


def _rows_table(p: dict, name: str) -> str:
    rows = p.get("rows") or []
    if not rows:
        return ""
    cols = ["degradation", "face_id", "method", "source", "psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb",
            "sharpness", "seconds", "error"]
    if name != "ground_truth":
        cols.remove("degradation")
    if name == "real_footage":
        cols = [c for c in cols if c not in METRIC_LABELS]
    head = "".join(f"<th class=l>{_e(c)}</th>" for c in cols)
    body = []
    for r in rows:
        tds = []
        for c in cols:
            v = r.get(c)
            if c in METRIC_LABELS and v is None and not r.get("error") and r.get("identical"):
                v = math.inf  # identical to the reference (inf PSNR is null in JSON)
            cls = " class=l" if c in ("degradation", "face_id", "method", "source", "error") else ""
            tds.append(f"<td{cls}>{_fmt(v, c)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return (f"<details><summary>per-image rows ({len(rows)})</summary><table id='{name}-rows'>"
            f"<tr>{head}</tr>{''.join(body)}</table></details>")


def _grid(faces: list[dict], px: int, name: str) -> str:
    if not faces:
        return ""
    out = [f"<table class=grid id='{name}-grid'>"]
    for f in faces:
        label = f"{f['face_id']}" + (f" [{f['degradation']}]" if f.get("degradation") else "")
        out.append(f"<tr><td class=l colspan={len(f['tiles'])} style='text-align:left'><b>{_e(label)}</b> "
                   f"<span class=note>{_e(f.get('source'))}</span></td></tr><tr>")
        for t in f["tiles"]:
            if t.get("png"):
                img = f"<img src='{_b64(t['png'])}' width={px} alt='{_e(t['title'])}'>"  # height: aspect kept
            else:
                img = f"<div class=tile-missing style='width:{px}px;height:{px}px'>n/a</div>"
            out.append(f"<td>{_e(t['title'])}<br>{img}<span class=note>{_e(t.get('caption'))}</span></td>")
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def _find_key(obj: Any, needle: str, path: str = "", inside: bool = False) -> list[tuple[str, Any]]:
    """(dotted key, value) of every scalar whose key, or an enclosing key, contains ``needle``
    (train_meta's layout is the trainer's: ``mediator_status`` and a ``mediator`` section today)."""
    found = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            kp = f"{path}.{k}" if path else str(k)
            hit = inside or needle in str(k).lower()
            if hit and not isinstance(v, (dict, list)):
                found.append((kp, v))
            found += _find_key(v, needle, kp, hit)
    return found


def training_curves_png(log_path: Path) -> bytes | None:
    """Loss, discriminator-output and metric curves from ``train_log.jsonl`` (any numeric fields, grouped
    by name), or None when the log has no numeric series."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = []
    try:
        for line in log_path.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict):
                    records.append(rec)
    except OSError as exc:
        log.warning("cannot read %s: %s", log_path, exc)
        return None
    if not records:
        return None
    xkey = next((k for k in ("global_step", "step", "iteration", "epoch") if any(k in r for r in records)), None)
    skip = {"global_step", "step", "iteration", "epoch", "time", "timestamp", "seconds", "elapsed_s", "rank",
            "worker", "lr_g", "lr_d", "world_size", "total_steps", "steps_per_epoch"}
    series: dict[str, list[tuple[float, float]]] = {}
    for i, r in enumerate(records):
        if r.get("kind") == "start":  # run settings (world size, totals), not a curve
            continue
        x = r.get(xkey, i) if xkey else i
        for k, v in r.items():
            if k in skip or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                continue
            series.setdefault(k, []).append((float(x), float(v)))
    if not series:
        return None
    panels = {"losses": [], "discriminator outputs": [], "metrics": []}
    for k in sorted(series):
        kl = k.lower()
        if kl.startswith("last_"):  # the trainer's copy of the latest value of another series
            continue
        if "loss" in kl or kl.startswith("g_"):  # g_adv, g_pix, ...: the generator's loss terms
            panels["losses"].append(k)
        elif kl.startswith("d_") or "d(" in kl or "real" in kl or "fake" in kl:
            panels["discriminator outputs"].append(k)
        else:
            panels["metrics"].append(k)
    panels = {t: ks for t, ks in panels.items() if ks}
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.4), squeeze=False)
    for ax, (title, keys) in zip(axes[0], panels.items()):
        for k in keys:
            xs, ys = zip(*series[k])
            ax.plot(xs, ys, label=k, marker="." if len(xs) < 30 else None)
        ax.set_title(title)
        ax.set_xlabel(xkey or "record")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def render(result: dict, grids: dict[str, list[dict]], curves: bytes | None, title: str,
           display_px: int = 128) -> str:
    parts = [f"<!DOCTYPE html><html lang=en><head><meta charset='utf-8'><title>{_e(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{_e(title)}</h1>"]
    parts.append("<p class=note>Every enhanced image on this page is model output, not a photograph. "
                 f"Scale x{_e(result.get('scale'))}; {_e(_metrics_text(result))}.</p>")

    # methods
    parts.append("<h2>Methods</h2><table id=methods><tr><th class=l>method</th><th class=l>status</th>"
                 "<th class=l>detail</th></tr>")
    for m, st in (result.get("methods") or {}).items():
        ok = st.get("available")
        if m.startswith("srgan") and ok:
            detail = f"{st.get('path')} sha256 {st.get('sha256')}"
        elif m == "zssr" and ok:
            detail = f"config hash {st.get('config_hash')}, overrides {st.get('overrides')}"
        else:
            detail = st.get("reason") or st.get("note") or ""
        parts.append(f"<tr><td class=l>{_e(METHOD_LABELS.get(m, m))}</td><td class=l>"
                     f"{'available' if ok else '<b>not available</b>'}</td><td class=l>{_e(detail)}</td></tr>")
    parts.append("</table>")

    meta = result.get("train_meta")
    if meta:
        med = _find_key(meta, "mediator")
        # the status and any warning say it all; the full mediator section is in train_meta.json below
        short = [(k, v) for k, v in med if k.endswith("status") or k.endswith("warning")]
        med = short or med
        txt = "; ".join(f"{k} = {v}" for k, v in med) if med else "not recorded in train_meta.json"
        cls = "warn" if any(w in str(v).lower() for _, v in med for w in ("fallback", "random")) or any(
            str(v) == "off" for _, v in med) else "note"
        parts.append(f"<p class={cls} id=mediator><b>VGG-19 mediator:</b> {_e(txt)}</p>")
    elif result.get("methods", {}).get("srgan", {}).get("available"):
        parts.append("<p class=missing id=mediator>No train_meta.json beside the generator: mediator weights "
                     "unknown.</p>")

    for name in ("paper", "ground_truth", "real_footage"):
        p = (result.get("protocols") or {}).get(name)
        if p is None:
            continue
        text = PROTOCOL_TEXT[name].replace("{convention}", _paper_convention_text(result))
        parts.append(f"<h2 id='{name}'>{_e(p.get('title', name))}</h2><p>{text}</p>")
        status = p.get("status")
        if status != "ok":
            parts.append(f"<div class=missing id='{name}-missing'><b>{_e(status)}:</b> {_e(p.get('reason'))}</div>")
        for n in p.get("notes") or []:
            parts.append(f"<p class=note>{_e(n)}</p>")
        if name == "ground_truth" and p.get("degradations"):
            degs = "; ".join(f"<b>{_e(d['name'])}</b>: blur sigma {d['blur_sigma']}, noise sigma "
                             f"{d['noise_sigma']}, " + (f"JPEG quality {d['jpeg_quality']}" if d["jpeg_quality"] else "no JPEG")
                             for d in p["degradations"])
            parts.append(f"<p class=note>Degradations: {degs}.</p>")
        parts.append(_summary_table(p, name))
        if name == "ground_truth" and len({s.get("source") for s in p.get("summary_by_source") or []}) > 1:
            parts.append(_by_source_table(p["summary_by_source"]))
        parts.append(_grid(grids.get(name, []), display_px, name))
        parts.append(_rows_table(p, name))

    parts.append("<h2 id=training>Training curves</h2>")
    if curves:
        parts.append(f"<img id=curves src='{_b64(curves)}' alt='training curves' style='max-width:100%'>")
    else:
        parts.append("<div class=missing>No training log (train_log.jsonl beside the generator) to plot.</div>")

    skipped = result.get("skipped") or []
    parts.append(f"<h2 id=skipped>Skipped inputs ({len(skipped)})</h2>")
    if skipped:
        parts.append("<table><tr><th class=l>input</th><th class=l>reason</th></tr>" + "".join(
            f"<tr><td class=l>{_e(s['input'])}</td><td class=l>{_e(s['reason'])}</td></tr>" for s in skipped)
            + "</table>")

    parts.append("<h2 id=provenance>Provenance</h2><table id=inputs><tr><th class=l>role</th>"
                 "<th class=l>path</th><th class=l>sha256</th></tr>")
    for i in result.get("inputs") or []:
        parts.append(f"<tr><td class=l>{_e(i['role'])}</td><td class=l>{_e(i['path'])}</td>"
                     f"<td class=l><code>{_e(i['sha256'])}</code></td></tr>")
    parts.append("</table>")
    prov = result.get("provenance") or {}
    parts.append(f"<p>Evaluation config hash <code>{_e(result.get('config_hash'))}</code>, code "
                 f"<code>{_e(prov.get('code_version'))}</code>.</p>")
    parts.append("<details><summary>evaluation config</summary><pre>"
                 + _e(json.dumps(result.get("config"), indent=2, sort_keys=True)) + "</pre></details>")
    parts.append("<details><summary>stage record (libraries, seeds)</summary><pre>"
                 + _e(json.dumps(prov, indent=2, sort_keys=True)) + "</pre></details>")
    if meta:
        parts.append("<details><summary>train_meta.json</summary><pre>"
                     + _e(json.dumps(meta, indent=2, sort_keys=True, default=str)) + "</pre></details>")
    zs = (result.get("methods") or {}).get("zssr") or {}
    if zs.get("config"):
        parts.append("<details><summary>ZSSR config</summary><pre>"
                     + _e(json.dumps(zs["config"], indent=2, sort_keys=True)) + "</pre></details>")
    parts.append("</body></html>\n")
    return "".join(parts)


def _metrics_cfg(result: dict):
    from survsr.config import from_dict
    from survsr.pipelines.quality import MetricsConfig

    try:
        return from_dict(MetricsConfig, dict((result.get("config") or {}).get("metrics") or {}))
    except Exception:  # noqa: BLE001 - an older metrics.json: its defaults
        return MetricsConfig()


def _metrics_text(result: dict) -> str:
    from survsr.pipelines.quality import describe

    return describe(_metrics_cfg(result), int(result.get("scale") or 2))


def _paper_convention_text(result: dict) -> str:
    """What the paper's figures can be compared with on this page (and what not)."""
    base = ("The paper reports SSIM 0.86-0.95 and PSNR 31-39 dB, computed with scikit-image's PSNR and SSIM on "
            "the full images (no border crop, default 7x7 SSIM window). ")
    if _metrics_cfg(result).convention == "paper_table1":
        return base + "This page uses that convention (metrics.convention: paper_table1): compare them with the RGB columns."
    return base + ("This page does NOT: it scores on Y (BT.601) after a border crop with a Gaussian-window SSIM "
                   "(the SR-benchmark convention), so its numbers are not on the paper's scale; "
                   "metrics.convention=paper_table1 gives the paper's.")


def _border(result: dict) -> Any:
    b = ((result.get("config") or {}).get("metrics") or {}).get("border")
    return result.get("scale") if b is None else b


def write_report(out_dir: Path, result: dict, grids: dict[str, list[dict]], curves: bytes | None,
                 report_cfg: Any = None) -> Path:
    title = getattr(report_cfg, "title", "survsr evaluation report")
    px = getattr(report_cfg, "display_px", 128)
    path = Path(out_dir) / "index.html"
    atomic_write(path, render(result, grids, curves, title, px))
    return path
