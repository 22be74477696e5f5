"""Hashes, atomic writes and provenance records shared by every stage.

Every file a stage produces is written through ``atomic_write`` (temp file in the same directory, fsync,
rename) so an interrupted job never leaves a half-written output that a resume would mistake for done work.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

_CHUNK = 1 << 20
# Read once at import: os.umask can only be read by setting it, which races with other threads.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it is renamed over ``path``, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    # mkstemp creates 0600; outputs are shared artefacts, so give them the mode a plain open() would.
    os.chmod(tmp, 0o666 & ~_UMASK)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    if isinstance(data, str):
        data = data.encode()
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_parquet_atomic(table_or_df: Any, path: str | os.PathLike) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = table_or_df if isinstance(table_or_df, pa.Table) else pa.Table.from_pandas(
        table_or_df, preserve_index=False
    )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def encode_png(image: np.ndarray, text: dict[str, Any] | None = None) -> bytes:
    """PNG bytes of a uint8 HxW or HxWx3 (RGB) array; ``text`` goes into tEXt chunks (values JSON-encoded
    unless already strings), so provenance travels with the file itself."""
    from PIL import Image, PngImagePlugin

    if image.dtype != np.uint8:
        raise ValueError(f"encode_png expects uint8, got {image.dtype}")
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str))
    buf = io.BytesIO()
    # optimize=False and a fixed compress level keep the bytes identical across runs (reproducibility).
    Image.fromarray(image).save(buf, format="PNG", pnginfo=info, compress_level=6)
    return buf.getvalue()


def write_png(path: str | os.PathLike, image: np.ndarray, text: dict[str, Any] | None = None) -> str:
    """Atomically write a PNG and return the SHA-256 of the bytes written."""
    data = encode_png(image, text)
    atomic_write(path, data)
    return sha256_bytes(data)


def read_png_text(path: str | os.PathLike) -> dict[str, str]:
    from PIL import Image

    with Image.open(path) as im:
        return dict(getattr(im, "text", {}) or {})


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """``git describe`` of the checkout when there is one, else the installed package version.

    ``$SURVSR_CODE_VERSION`` wins when set: ``init_ray`` sets it from the driver so every Ray worker records
    the driver's version (workers may run from a copy without ``.git``, or start after a later commit)."""
    pinned = os.environ.get("SURVSR_CODE_VERSION")
    if pinned:
        return pinned
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=root, capture_output=True, text=True, timeout=5,
        )
        if out.returncode == 0 and out.stdout.strip():
            return f"git:{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        from importlib.metadata import version

        return f"survsr=={version('survsr')}"
    except Exception:  # noqa: BLE001 - not installed as a package
        return "unknown"


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("torch", "torchvision", "ray", "av", "opencv-python-headless", "numpy", "scikit-image", "pillow"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def append_audit(run_dir: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one JSON line to ``run_dir/audit.jsonl``; O_APPEND keeps concurrent writers' lines whole.

    Every line carries the audit fields (time, command, arguments, config_hash, inputs, outputs, outcome):
    ones the caller leaves out are filled (command from ``stage``, arguments from the process's argv) or
    null, meaning "not recorded". ``survsr.audit.audited`` records them all for a whole job."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    std = {"command": record.get("stage"), "arguments": sys.argv[1:], "config_hash": None, "inputs": None,
           "outputs": None, "outcome": None}
    line = json.dumps({"time": now_iso(), **std, **record}, sort_keys=True, default=str) + "\n"
    fd = os.open(run_dir / "audit.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


# Key of the PNG tEXt chunk (and of the video sidecar JSON field) that carries an output's provenance.
PROVENANCE_KEY = "survsr:provenance"


def stage_record(stage: str, config_hash: str, *, seed: int | None = None, model_sha256: str | None = None,
                 device: str | None = None, **extra: Any) -> dict[str, Any]:
    """One entry of an output's ``stages`` list: who touched it, with what code, config and weights."""
    rec = {
        "stage": stage,
        "config_hash": config_hash,
        "seed": seed,
        "model_sha256": model_sha256,
        "device": device,
        "code_version": code_version(),
        "libraries": library_versions(),
    }
    rec.update(extra)
    return rec


def provenance(kind: str, *, source: dict[str, Any] | None, parents: list[dict[str, str]],
               stages: list[dict[str, Any]], model_output: bool) -> dict[str, Any]:
    """The provenance document embedded in every output (PNG text chunk / video sidecar).

    ``source``: the original footage: {"path", "sha256", "frame_index", "time_s", "box": [x, y, w, h]}.
    ``parents``: the files this output was computed from: [{"path", "sha256"}], paths as written in the
    manifests (relative to the run directory where possible). ``stages``: ``stage_record`` entries, oldest
    first. ``model_output`` says whether any pixel was produced by a model (never mistaken for a photo).
    No timestamp: identical inputs, seed and config must give byte-identical files (times go to audit.jsonl).
    """
    return {
        "schema": "survsr-provenance-v1",
        "kind": kind,
        "model_output": model_output,
        "source": source,
        "parents": parents,
        "stages": stages,
    }


class OutputOverlapError(ValueError):
    """An output directory that is, lies inside, or contains an input: refused before anything is written."""


def check_output_dir(out_dir: str | os.PathLike, inputs: Any, command: str) -> Path:
    """Refuse an output directory that could write over or beside an input; returns it resolved.

    The rule (one for every command): ``out_dir`` may not be an input's directory (the directory given, or
    the one holding an input file), may not lie inside one, and may not contain an input. Paths are compared
    after resolving symlinks, so a link to the input directory is caught too. URLs are not files and are
    skipped. Call it before creating ``out_dir``: a refused command leaves no trace on disk."""
    out = Path(out_dir).expanduser().resolve()
    for item in inputs:
        s = os.fspath(item)
        if "://" in s:
            continue
        p = Path(s).expanduser()
        if not p.exists():
            continue  # reported by the stage (by name) as a missing input
        p = p.resolve()
        home = p if p.is_dir() else p.parent
        if out == home or home in out.parents:
            where = "is" if out == home else "lies inside"
            raise OutputOverlapError(
                f"survsr {command}: refusing output directory {out}: it {where} the directory of input {p} "
                "(no command writes into an input's directory; choose an --out elsewhere)")
        if out in p.parents:
            raise OutputOverlapError(
                f"survsr {command}: refusing output directory {out}: it contains input {p} "
                "(no command writes over or beside its inputs; choose an --out elsewhere)")
    return out
