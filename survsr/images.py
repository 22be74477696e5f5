"""The one still-image decoder and its policy, used by the CLI (``survsr upscale``, the ZSSR stage) and the
service (``survsr.serve.uploads.decode_image``), so a file is accepted or refused the same way everywhere.

Policy (``decode_image``):

* the size limits (bytes, pixels) are checked from the header before any pixel is decoded, so a
  decompression bomb never expands: it is refused by name (HTTP 413);
* 8-bit images only: 16-bit and 32-bit modes (``I;16*``, ``I``, ``F``) are refused (HTTP 415) rather than
  clipped: Pillow's RGB conversion of a 16-bit grayscale PNG turns it all white, a silent wrong answer;
* grayscale (``L``, ``1``) stays single-channel unless ``rgb=True``; every other mode becomes RGB;
* anything Pillow cannot read (truncated, not an image) is refused (HTTP 415) with Pillow's reason.

Every error is an ``ImageError`` whose message starts with the input's name and whose ``status`` is the
HTTP code the service answers with.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

# Same ceiling as Pillow's own bomb guard (~89.5 Mpx): no CLI input is ever decoded beyond it.
DEFAULT_MAX_PIXELS = 89_478_485
_DEEP_MODES = {"I;16": "16-bit", "I;16B": "16-bit", "I;16L": "16-bit", "I;16N": "16-bit", "I": "32-bit",
               "F": "32-bit float"}


class ImageError(ValueError):
    """An image that is refused; the message names it, ``status`` is the HTTP code for the service."""

    def __init__(self, message: str, status: int = 415):
        super().__init__(message)
        self.status = status
        self.message = message


def decode_image(data: bytes, *, name: str, max_bytes: int | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS, rgb: bool = False) -> np.ndarray:
    """Image bytes -> uint8 HxWx3 RGB (or HxW grayscale when ``rgb`` is False), under the policy above."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageError(f"{name}: empty (0 bytes)", 400)
    if max_bytes is not None and len(data) > max_bytes:
        raise ImageError(f"{name}: {len(data)} bytes, limit is {max_bytes}", 413)
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w < 1 or h < 1:
                raise ImageError(f"{name}: image has no pixels ({w}x{h})", 422)
            if w * h > max_pixels:
                raise ImageError(f"{name}: image is {w}x{h} = {w * h} pixels, limit is {max_pixels} "
                                 "(refused before decoding)", 413)
            if im.mode in _DEEP_MODES:
                raise ImageError(f"{name}: {im.mode} ({_DEEP_MODES[im.mode]}) image: only 8-bit images are "
                                 "supported, convert it to 8-bit first", 415)
            im.load()
            if im.mode in ("L", "1") and not rgb:
                return np.asarray(im.convert("L"), dtype=np.uint8).copy()
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow refuses > 2x its ceiling inside Image.open itself
        raise ImageError(f"{name}: decompression bomb refused before decoding ({exc})", 413) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            MemoryError) as exc:
        raise ImageError(f"{name}: not a readable image ({exc})", 415) from None


def read_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, rgb: bool = False) -> np.ndarray:
    """``decode_image`` of a file; a missing or unreadable file is an ``ImageError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file", 404)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})", 415) from None
    return decode_image(data, name=str(path), max_pixels=max_pixels, rgb=rgb)
