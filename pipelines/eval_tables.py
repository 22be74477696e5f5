"""From per-face rows to what the report shows: means and spreads per protocol, degradation and method,
the best method marked, CSV/JSON output, and the image grids (LR | zoomed LR | each method)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from survsr.pipelines.eval_enhance import is_srgan, method_order
from survsr.pipelines.quality import decode_png, sharpness
from survsr.provenance import atomic_write, encode_png

from survsr.pipelines.eval_config import METRIC_COLUMNS, EvaluateConfig
from survsr.pipelines.eval_plan import Plan


def _finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))
            and math.isfinite(float(v))]


def summarize(rows: list[dict], group: tuple[str, ...]) -> list[dict]:
    """Mean and std (population) of each metric per group; infinite PSNR (identical images) is counted in
    ``n_identical`` and left out of the mean, which would otherwise be infinite."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[g] for g in group), []).append(r)
    def order(key: tuple) -> tuple:
        return tuple(method_order(v) if g == "method" else (99, str(v)) for g, v in zip(group, key))

    out = []
    for key in sorted(groups, key=order):
        rs = groups[key]
        ok = [r for r in rs if not r.get("error")]
        s: dict[str, Any] = dict(zip(group, key))
        s.update(n=len(ok), n_errors=len(rs) - len(ok), n_identical=sum(bool(r.get("identical")) for r in ok))
        for col in METRIC_COLUMNS + ("sharpness",):
            vals = _finite(r.get(col) for r in ok)
            s[f"{col}_mean"] = float(np.mean(vals)) if vals else None
            s[f"{col}_std"] = float(np.std(vals)) if vals else None
        out.append(s)
    return out


def mark_best(summary: list[dict], by: str | None) -> None:
    """Mark, within each ``by`` group (a degradation), the method with the highest mean per metric."""
    groups: dict[Any, list[dict]] = {}
    for s in summary:
        groups.setdefault(s.get(by) if by else None, []).append(s)
    for rows in groups.values():
        for r in rows:
            r.setdefault("best", [])
        for col in METRIC_COLUMNS:
            vals = [(r[f"{col}_mean"], r) for r in rows if r.get(f"{col}_mean") is not None]
            if len(vals) < 2:
                continue
            top = max(v for v, _ in vals)
            for v, r in vals:
                if math.isclose(v, top, rel_tol=0, abs_tol=1e-12):
                    r["best"].append(col)


def json_safe(v: Any) -> Any:
    if isinstance(v, float):
        return None if (math.isnan(v) or math.isinf(v)) else v
    if isinstance(v, (np.floating,)):
        return json_safe(float(v))
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    return v


ROW_FIELDS = ["protocol", "degradation", "face_id", "method", "source", "split", "input_sha256", "psnr_y",
              "ssim_y", "psnr_rgb", "ssim_rgb", "identical", "sharpness", "seconds", "error"]


def write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=ROW_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None or (isinstance(r.get(k), float) and math.isnan(r[k]))
                        else r.get(k)) for k in ROW_FIELDS})
    atomic_write(path, buf.getvalue())


def build_grids(plan: Plan, rows_by_key: dict[str, dict[str, dict]], cfg: EvaluateConfig) -> dict[str, list[dict]]:
    """Per protocol, up to ``report.grid_faces`` faces, each a list of (title, png, caption) tiles."""
    items = {it["key"]: it for it in plan.items}
    out: dict[str, list[dict]] = {}
    per_group: dict[tuple, int] = {}
    for key in sorted(items):
        it = items[key]
        proto = it["protocol"]
        gkey = (proto, it["degradation"])
        if per_group.get(gkey, 0) >= cfg.report.grid_faces:
            continue
        per_group[gkey] = per_group.get(gkey, 0) + 1
        methods = rows_by_key.get(key, {})
        tiles = []
        if proto == "ground_truth":
            tiles.append({"title": "HR (truth)", "png": it["ref_png"], "caption": plan.faces[key].get("native", "")
                          and f"native {plan.faces[key]['native']}"})
        lr = decode_png(it["lr_png"])
        tiles.append({"title": f"LR {lr.shape[1]}x{lr.shape[0]}", "png": it["lr_png"],
                      "caption": f"sharp {sharpness(lr):.0f} (LR size)" if proto == "real_footage" else
                      (it["degradation"] or "input")})
        order = ["nearest", "bicubic", "zssr", "srgan"]
        named_here = sorted({m for m in methods if m.startswith("srgan-")})
        if named_here:
            order = order[:3] + ([] if "srgan" not in methods else ["srgan"]) + named_here
        for m in order:
            r = methods.get(m)
            title = {"nearest": "nearest (zoomed LR)", "bicubic": "bicubic", "zssr": "ZSSR",
                     "srgan": "SRGAN"}.get(m) or "SRGAN-" + m[len("srgan-"):]
            if r is None:
                if proto == "paper" and m == "zssr":
                    continue
                if proto == "paper" and m == "nearest":
                    continue
                tiles.append({"title": title, "png": None, "caption": "not available"})
                continue
            if r.get("error"):
                tiles.append({"title": title, "png": None, "caption": "failed: " + str(r["error"])[:80]})
                continue
            if proto == "real_footage":
                cap = f"sharp {r['sharpness']:.0f}"
            else:
                cap = _fmt_psnr(r.get("psnr_y")) + f" dB / {r['ssim_y']:.3f}"
            png = r["sr_png"]
            if cfg.report.label and (m == "zssr" or is_srgan(m)) and png is not None:
                from survsr.marking import mark_image

                png = encode_png(mark_image(decode_png(png)))  # metrics used the unmarked pixels
            tiles.append({"title": title, "png": png, "caption": cap})
        if proto == "paper":
            ref = it["ref_png"]
            if cfg.report.label:  # the synthetic HR is ZSSR output too
                from survsr.marking import mark_image

                ref = encode_png(mark_image(decode_png(ref)))
            tiles.append({"title": "ZSSR (reference)", "png": ref, "caption": "synthetic HR"})
        out.setdefault(proto, []).append({"face_id": it["face_id"], "degradation": it["degradation"],
                                          "source": plan.faces[key].get("source", ""), "tiles": tiles})
    return out


def _fmt_psnr(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return "inf" if math.isinf(v) else f"{v:.2f}"
