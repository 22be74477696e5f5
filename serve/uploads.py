"""Untrusted uploads to the service: decoded by the one image decoder (``survsr.images``) under the
service's limits, refusals turned into HTTP answers."""

from __future__ import annotations

import numpy as np


class BadInput(ValueError):
    """Input a client sent that we refuse; ``status`` is the HTTP code to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int, name: str = "upload") -> np.ndarray:
    """Upload bytes -> uint8 RGB HxWx3 through the one decoder the CLI uses too (``survsr.images``: limits
    checked from the header before decoding, 16/32-bit refused rather than clipped); its refusals become
    ``BadInput`` with the policy's HTTP status."""
    from survsr.images import ImageError
    from survsr.images import decode_image as _decode

    try:
        return _decode(data, name=name, max_bytes=max_bytes, max_pixels=max_pixels, rgb=True)
    except ImageError as exc:
        msg = exc.message
        if exc.status == 400:
            msg = f"{name}: empty body (send the image bytes as the request body)"
        elif exc.status == 415 and "8-bit" not in msg:
            msg = msg.replace("not a readable image", "not a readable image (PNG or JPEG expected)")
        raise BadInput(exc.status, msg) from None
