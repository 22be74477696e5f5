"""Provenance sidecars: ``<file>.provenance.json`` beside an output that cannot hold its own record (a
video, a report): the provenance document plus the file's SHA-256. Written by the stages, read by verify."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from survsr.provenance import PROVENANCE_KEY, atomic_write_json, sha256_file

SIDECAR_SUFFIX = ".provenance.json"
SIDECAR_SCHEMA = "survsr-sidecar-v1"

def sidecar_path(path: str | os.PathLike) -> Path:
    """``clip.mp4`` -> ``clip.mp4.provenance.json`` (beside it, so the pair moves together)."""
    p = Path(path)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def write_sidecar(path: str | os.PathLike, doc: dict[str, Any]) -> Path:
    """Write the provenance sidecar of a finished output file (a video, a report): the document plus the
    file's SHA-256. Call it after the output is in place (atomically renamed)."""
    p = Path(path)
    side = sidecar_path(p)
    atomic_write_json(side, {"schema": SIDECAR_SCHEMA, "file": p.name, "sha256": sha256_file(p),
                             PROVENANCE_KEY: doc})
    return side


def read_sidecar(path: str | os.PathLike) -> dict[str, Any] | None:
    side = sidecar_path(path)
    if not side.is_file():
        return None
    return json.loads(side.read_text())
