"""Image checks and the pixel operations shared by the service, the archive job and the stream:
decoding untrusted uploads with limits, the visible AI-ENHANCED label, side-by-side review frames."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

LABEL_TEXT = "AI-ENHANCED"


class BadInput(ValueError):
    """Input a client sent that we refuse; ``status`` is the HTTP code to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class LabelConfig:
    enabled: bool = True  # burn a visible label into every exported enhanced image / frame
    text: str = LABEL_TEXT


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int, name: str = "upload") -> np.ndarray:
    """PNG/JPEG (anything Pillow reads) -> uint8 RGB HxWx3, refusing what we should not decode.

    The pixel limit is checked from the header before decoding, so a decompression bomb never expands.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise BadInput(400, f"{name}: empty body (send the image bytes as the request body)")
    if len(data) > max_bytes:
        raise BadInput(413, f"{name}: body is {len(data)} bytes, limit is {max_bytes}")
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise BadInput(413, f"{name}: image is {w}x{h} = {w * h} pixels, limit is {max_pixels}")
            if w < 1 or h < 1:
                raise BadInput(422, f"{name}: image has no pixels ({w}x{h})")
            im.load()
            rgb = im.convert("RGB")
    except BadInput:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BadInput(415, f"{name}: not a readable image (PNG or JPEG expected): {exc}") from None
    return np.asarray(rgb, dtype=np.uint8).copy()


def _put_label(img: np.ndarray, text: str, y0: int, scale: float, thickness: int) -> None:
    import cv2

    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(1, int(3 * scale))
    cv2.rectangle(img, (0, y0), (tw + 2 * pad, y0 + th + base + 2 * pad), (0, 0, 0), thickness=-1)
    cv2.putText(img, text, (pad, y0 + pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 0), thickness,
                cv2.LINE_AA)


def label_image(img: np.ndarray, text: str = LABEL_TEXT, *, keep_size: bool = False) -> np.ndarray:
    """Return a copy of ``img`` that visibly says it is model output.

    Frames wide enough get the label in the top-left corner; small images (face crops) get a strip added
    below instead, so the label never hides the face it describes. ``keep_size`` (video frames, whose size
    the encoder fixes) always overlays.
    """
    import cv2

    h, w = img.shape[:2]
    scale = max(0.3, min(1.0, w / 640.0))
    thickness = 1 if scale < 0.6 else 2
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    if keep_size or tw + 8 <= w // 2:
        out = np.ascontiguousarray(img).copy()
        _put_label(out, text, 0, scale, thickness)
        return out
    # strip below, text shrunk to the width
    scale = max(0.2, 0.3 * min(1.0, (w - 4) / max(1, tw)))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    strip_h = th + base + 4
    out = np.zeros((h + strip_h, w, 3), np.uint8)
    out[:h] = img
    cv2.putText(out, text, (1, h + 2 + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 0), 1, cv2.LINE_AA)
    return out


def upscale_bicubic(img: np.ndarray, scale: int) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    return cv2.resize(img, (w * scale, h * scale), interpolation=cv2.INTER_CUBIC)


def side_by_side(original: np.ndarray, enhanced: np.ndarray, *, label: LabelConfig | None = None) -> np.ndarray:
    """Original (bicubic-upscaled to the same size, labelled so) | enhanced, for reviewing footage."""
    h, w = enhanced.shape[:2]
    scale = max(1, h // original.shape[0])
    left = upscale_bicubic(original, scale)[:h, :w]
    if left.shape != enhanced.shape:  # odd sizes: pad rather than distort
        pad = np.zeros_like(enhanced)
        pad[: left.shape[0], : left.shape[1]] = left
        left = pad
    right = enhanced
    if label and label.enabled:
        right = label_image(enhanced, label.text, keep_size=True)
        left = label_image(left, f"ORIGINAL (bicubic x{scale})", keep_size=True)
    return np.concatenate([left, right], axis=1)
