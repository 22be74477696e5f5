"""Marking model output so that no one mistakes it for a photograph.

Two independent marks:

* a **visible label** ("AI-ENHANCED" by default) on an opaque, contrasting band at the top or bottom of the
  image or video frame. By default (``mode: extend``) the band is ADDED to the canvas, so every pixel of the
  picture stays as the model made it (on a 64x64 face an overlaid band would hide the mouth and chin).
  ``mode: overlay`` (opt-in) draws it over the picture instead and keeps the canvas size; video frames use
  the configured mode like everything else. It is on by default for exports and can be switched off
  (``MarkingConfig.enabled``);
* **metadata**, which is always written whatever the visible label says: the provenance document's
  ``model_output`` flag plus a ``marking`` record, and for PNGs a plain-language ``Description`` text chunk
  and ``survsr:model_output = true``.

The band's height depends only on the image width, and the band is opaque, so its pixels do not depend on
the picture under it: ``label_present`` re-renders the band and compares, which lets tests and
``survsr verify`` check the label exactly (or within a tolerance for lossy video).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

DEFAULT_LABEL = "AI-ENHANCED"
MODEL_OUTPUT_KEY = "survsr:model_output"
DESCRIPTION = ("AI-ENHANCED: the pixels of this image were produced by a super-resolution model (survsr); "
               "it is not a photograph. Its provenance is in the survsr:provenance text chunk.")


@dataclass
class MarkingConfig:
    """How the visible label is drawn. Nest it in a stage's config schema as ``marking:``."""

    enabled: bool = True
    text: str = DEFAULT_LABEL
    position: Literal["top", "bottom"] = "bottom"
    # extend: add the band above/below the picture (no picture pixel changes); overlay: draw it over the
    # picture (size unchanged; covers part of it).
    mode: Literal["overlay", "extend"] = "extend"
    band_color: tuple[int, ...] = (0, 0, 0)
    text_color: tuple[int, ...] = (255, 255, 255)
    band_frac: float = 0.07  # band height as a fraction of the image width
    min_band_px: int = 10

    def validate(self) -> None:
        if not self.text or not self.text.isascii() or not self.text.isprintable():
            raise ValueError(f"marking.text must be non-empty printable ASCII (OpenCV's fonts), got {self.text!r}")
        for name in ("band_color", "text_color"):
            c = getattr(self, name)
            if len(c) != 3 or any(not 0 <= int(v) <= 255 for v in c):
                raise ValueError(f"marking.{name} must be three integers 0..255 (RGB), got {list(c)}")
        if self.position not in ("top", "bottom"):
            raise ValueError(f"marking.position must be top or bottom, got {self.position!r}")
        if self.mode not in ("overlay", "extend"):
            raise ValueError(f"marking.mode must be overlay or extend, got {self.mode!r}")
        if not 0 < self.band_frac <= 0.5 or self.min_band_px < 4:
            raise ValueError("marking.band_frac must be in (0, 0.5] and marking.min_band_px >= 4")


def band_height(width: int, cfg: MarkingConfig) -> int:
    """Even (so 'extend' keeps yuv420 video dimensions even) and a function of the width only."""
    h = max(cfg.min_band_px, int(round(width * cfg.band_frac)))
    return h + (h % 2)


def render_band(width: int, cfg: MarkingConfig) -> np.ndarray:
    """The label band (uint8 RGB, band_height x width): text centred, scaled to fit both ways."""
    import cv2

    h = band_height(width, cfg)
    band = np.empty((h, width, 3), np.uint8)
    band[:] = np.asarray(cfg.band_color, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    thickness = 1 if h < 24 else max(1, h // 16)
    (tw, th), base = cv2.getTextSize(cfg.text, font, 1.0, thickness)
    pad = max(1, h // 8)
    scale = min((width - 2 * pad) / tw, (h - 2 * pad) / (th + base))
    scale = max(scale, 0.2)
    (tw, th), base = cv2.getTextSize(cfg.text, font, scale, thickness)
    x = max(0, (width - tw) // 2)
    y = (h + th) // 2  # baseline: glyphs sit centred in the band (descender-free label text)
    cv2.putText(band, cfg.text, (x, y), font, scale, tuple(int(v) for v in cfg.text_color), thickness,
                cv2.LINE_AA)
    return band


def mark_image(image: np.ndarray, cfg: MarkingConfig | None = None) -> np.ndarray:
    """A copy of ``image`` (uint8 RGB HxWx3) with the label band; unchanged copy when marking is off."""
    cfg = cfg or MarkingConfig()
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"mark_image expects uint8 HxWx3 RGB, got {image.dtype} {image.shape}")
    if not cfg.enabled:
        return image.copy()
    h, w = image.shape[:2]
    band = render_band(w, cfg)
    bh = band.shape[0]
    if cfg.mode == "extend":
        parts = [band, image] if cfg.position == "top" else [image, band]
        return np.ascontiguousarray(np.concatenate(parts, axis=0))
    if bh >= h:
        raise ValueError(f"image {w}x{h} is too small for a {bh}px label band; use marking.mode=extend")
    out = image.copy()
    if cfg.position == "top":
        out[:bh] = band
    else:
        out[h - bh:] = band
    return out


# Video frames are images: same band, same check, the configured mode (default: added below the picture, so no
# enhanced pixel is covered). The band's height depends on the width only and is even, so every frame of a video
# keeps one even size (the encoder needs that).
mark_frame = mark_image


def label_present(image: np.ndarray, cfg: MarkingConfig | None = None, *, tolerance: float = 0.0) -> bool:
    """True when ``image`` carries the band ``cfg`` describes. ``tolerance`` = allowed mean absolute
    difference per channel value (0 for PNG; a few units for lossy video frames)."""
    cfg = cfg or MarkingConfig()
    if image.ndim != 3 or image.shape[2] != 3:
        return False
    h, w = image.shape[:2]
    band = render_band(w, cfg)
    bh = band.shape[0]
    if bh >= h:
        return False
    region = image[:bh] if cfg.position == "top" else image[h - bh:]
    diff = np.abs(region.astype(np.int16) - band.astype(np.int16))
    return bool(diff.max() == 0) if tolerance <= 0 else bool(diff.mean() <= tolerance)


def marking_record(cfg: MarkingConfig | None = None) -> dict[str, Any]:
    """What goes into the provenance document's ``marking`` field (enough to re-render and check the band)."""
    cfg = cfg or MarkingConfig()
    rec = dataclasses.asdict(cfg)
    rec["visible_label"] = rec.pop("enabled")
    rec["band_color"] = list(cfg.band_color)
    rec["text_color"] = list(cfg.text_color)
    return rec


def config_from_record(rec: dict[str, Any]) -> MarkingConfig:
    fields = {f.name for f in dataclasses.fields(MarkingConfig)}
    kw = {k: v for k, v in rec.items() if k in fields}
    kw["enabled"] = bool(rec.get("visible_label", False))
    for name in ("band_color", "text_color"):
        if name in kw:
            kw[name] = tuple(int(v) for v in kw[name])
    return MarkingConfig(**kw)


def model_output_text() -> dict[str, str]:
    """PNG text chunks that state, for any viewer, that the image is model output."""
    return {MODEL_OUTPUT_KEY: "true", "Description": DESCRIPTION}


def mark_document(doc: dict[str, Any], cfg: MarkingConfig | None) -> dict[str, Any]:
    """The provenance document with ``model_output`` forced true and the ``marking`` record added."""
    out = dict(doc)
    out["model_output"] = True
    out["marking"] = marking_record(cfg or MarkingConfig())
    return out


def write_marked_png(path: str | os.PathLike, image: np.ndarray, doc: dict[str, Any],
                     cfg: MarkingConfig | None = None) -> str:
    """Export an enhanced image: label burned in (if enabled), provenance + model-output metadata in the
    text chunks. Returns the SHA-256 of the written file (for the manifest's ``sha256`` column)."""
    from survsr.provenance import PROVENANCE_KEY, write_png

    cfg = cfg or MarkingConfig()
    marked = mark_image(image, cfg)
    text = {PROVENANCE_KEY: mark_document(doc, cfg), **model_output_text()}
    return write_png(path, marked, text=text)
