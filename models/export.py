"""Generator export: weights in safetensors (never a pickle) plus the architecture and provenance as JSON
metadata inside the same file, so one file is everything a server needs and its SHA-256 names the model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from survsr.models.srgan import Generator, GeneratorConfig
from survsr.provenance import atomic_path, sha256_file


def save_generator(model: Generator, path: str | Path, metadata: dict[str, Any] | None = None) -> str:
    """Write ``model`` atomically; returns the file's SHA-256."""
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    meta = {
        "format": "survsr-generator-v1",
        "generator_config": json.dumps(dataclasses.asdict(model.cfg), sort_keys=True),
        "metadata": json.dumps(metadata or {}, sort_keys=True, default=str),
    }
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return sha256_file(path)


def read_metadata(path: str | Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != "survsr-generator-v1":
        raise ValueError(f"{path}: not a survsr generator export (format={meta.get('format')!r})")
    return {
        "generator_config": json.loads(meta["generator_config"]),
        "metadata": json.loads(meta.get("metadata", "{}")),
    }


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> Generator:
    """Rebuild the generator from its export, in eval mode."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: generator export not found")
    meta = read_metadata(path)
    model = Generator(GeneratorConfig(**meta["generator_config"]))
    model.load_state_dict(load_file(str(path)))
    return model.to(device).eval()
