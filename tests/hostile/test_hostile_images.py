"""Issue 15 items 8 and 11: one image decoder, one policy, for the CLI and the service.

* a 16-bit grayscale PNG was answered 200 by the service with an all-white picture (Pillow clips I;16 to
  255 on RGB conversion): it is now refused (415) by the server and the CLI alike;
* a decompression-bomb PNG crashed ``survsr upscale`` with an uncaught ``DecompressionBombError`` and the
  good images after it were skipped: it is now reported per file, the batch goes on, exit 3 (partial)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from survsr.cli import main
from survsr.stage import EXIT_FAILED, EXIT_PARTIAL
from survsr.images import ImageError, decode_image, read_image
from survsr.serve.uploads import BadInput
from survsr.serve.uploads import decode_image as serve_decode


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(side: int = 30_000) -> bytes:
    """A valid-looking 8-bit grayscale PNG header declaring side x side pixels (900 Mpx at 30000), a few
    hundred bytes on disk: what a decompression bomb looks like before it is decoded."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (side + 1) * 4, 9)  # first rows only: never decoded anyway
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _png_bytes(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    (Image.fromarray(arr, mode) if mode else Image.fromarray(arr)).save(buf, format="PNG")
    return buf.getvalue()


def _tiff(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="TIFF")
    return buf.getvalue()


def hostile_images() -> dict[str, bytes]:
    ramp16 = (np.arange(32 * 32, dtype=np.uint32).reshape(32, 32) * 64).astype(np.uint16)  # 0..65472
    ok = _png_bytes(np.full((16, 16, 3), 77, np.uint8))
    return {
        "gray16.png": _png_bytes(ramp16),
        "int32.tif": _tiff(Image.fromarray(ramp16.astype(np.int32), "I")),
        "float.tif": _tiff(Image.fromarray(ramp16.astype(np.float32), "F")),
        "bomb.png": bomb_png(),
        "truncated.png": ok[: len(ok) // 2],
        "text.png": b"not an image at all",
        "empty.png": b"",
    }


@pytest.mark.parametrize("name", sorted(hostile_images()))
def test_cli_and_server_refuse_the_same_images(name, tmp_path):
    data = hostile_images()[name]
    (tmp_path / name).write_bytes(data)
    with pytest.raises(ImageError) as cli_err:
        read_image(tmp_path / name)
    with pytest.raises(BadInput) as srv_err:
        serve_decode(data, max_bytes=10_000_000, max_pixels=89_478_485, name="image")
    assert name in str(cli_err.value)
    assert srv_err.value.status == cli_err.value.status  # one policy: the same verdict, the same status
    assert srv_err.value.status in (400, 413, 415)


def test_sixteen_bit_gray_is_415_not_a_white_picture():
    ramp16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    with pytest.raises(BadInput) as e:
        serve_decode(_png_bytes(ramp16), max_bytes=1 << 20, max_pixels=1 << 20, name="image")
    assert e.value.status == 415 and "16-bit" in e.value.message


def test_eight_bit_images_decode_identically(tmp_path):
    rng = np.random.default_rng(1)
    rgb = (rng.random((12, 10, 3)) * 255).astype(np.uint8)
    gray = (rng.random((12, 10)) * 255).astype(np.uint8)
    for arr in (rgb, gray):
        data = _png_bytes(arr)
        (tmp_path / "x.png").write_bytes(data)
        cli = read_image(tmp_path / "x.png")
        srv = serve_decode(data, max_bytes=1 << 20, max_pixels=1 << 20, name="image")
        assert np.array_equal(cli, arr)
        assert np.array_equal(srv, arr if arr.ndim == 3 else np.repeat(arr[..., None], 3, axis=2))
    assert decode_image(_png_bytes(rgb), name="x", rgb=True).shape == (12, 10, 3)


def test_upscale_reports_a_bomb_and_goes_on(tmp_path, capsys):
    inp = tmp_path / "in"
    inp.mkdir()
    rng = np.random.default_rng(0)
    for n in ("a.png", "c.png"):
        Image.fromarray((rng.random((20, 18, 3)) * 255).astype(np.uint8)).save(inp / n)
    (inp / "b.png").write_bytes(bomb_png())
    files = [str(inp / n) for n in ("a.png", "b.png", "c.png")]
    rc = main(["upscale", *files, "--method", "bicubic", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert rc == EXIT_PARTIAL
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "c.png", "upscale.parquet"]
    assert "b.png" in out and "bomb" in out
    # every input bad: nothing done at all is exit 1, not 3
    assert main(["upscale", str(inp / "b.png"), "--method", "bicubic", "--out", str(tmp_path / "o2")]) == EXIT_FAILED
