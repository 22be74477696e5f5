"""What ingest keeps on disk between runs: each video's crops staged and committed atomically with a done
marker (resume skips finished videos, an interruption leaves nothing unlisted), then all videos' parts
assembled into ``faces.parquet`` with the split and the D/G roles assigned over the whole manifest."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Iterable

from survsr.provenance import atomic_write_json, write_parquet_atomic

from survsr.pipelines.ingest_config import (ASSIGNED_COLUMNS, IngestConfig, MANIFEST_COLUMNS, MANIFEST_NAME,
                                            SplitConfig, output_hash)

log = logging.getLogger("survsr.ingest")

def marker_path(out_dir: Path, video_id: str) -> Path:
    return out_dir / "parts" / f"{video_id}.done.json"


def staging_dir(out_dir: Path, video_id: str) -> Path:
    """Where a video's crops are written before its commit (hidden: verify and listings skip it)."""
    return Path(out_dir) / "crops" / f".{video_id}.tmp"


def clean_uncommitted(out_dir: Path) -> int:
    """Remove what an interrupted job left: staging directories, and crop directories of videos whose
    done marker was never written (killed between the rename and the marker). Returns how many."""
    crops = Path(out_dir) / "crops"
    n = 0
    if crops.is_dir():
        for d in crops.iterdir():
            if d.is_dir() and (d.name.startswith(".") or not marker_path(Path(out_dir), d.name).exists()):
                shutil.rmtree(d, ignore_errors=True)
                n += 1
    return n


def commit_video(out_dir: Path, summary: dict, rows: list[dict], cfg_hash: str) -> None:
    """Crops (staging dir renamed into place), then part, then marker (all atomic): a marker always points
    at a complete part whose crops are all there."""
    import pandas as pd

    vid = summary["video_id"]
    staging, final = staging_dir(out_dir, vid), Path(out_dir) / "crops" / vid
    if final.exists():
        shutil.rmtree(final)
    if staging.is_dir():
        os.replace(staging, final)
    part = out_dir / "parts" / f"{vid}.parquet"
    cols = [c for c in MANIFEST_COLUMNS if c not in ASSIGNED_COLUMNS]
    df = pd.DataFrame(sorted(rows, key=lambda r: r["crop_id"]), columns=cols)
    write_parquet_atomic(_typed(df), part)
    atomic_write_json(marker_path(out_dir, vid), {**summary, "config_hash": cfg_hash, "part": f"parts/{vid}.parquet"})


def done_marker(out_dir: Path, video_id: str, cfg_hash: str) -> dict | None:
    p = marker_path(out_dir, video_id)
    if not p.exists():
        return None
    try:
        m = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return m if m.get("config_hash") == cfg_hash and (out_dir / m.get("part", "")).exists() else None


_INT_COLS = ("frame_index", "box_x", "box_y", "box_w", "box_h", "native_w", "native_h", "lr_size")
_FLOAT_COLS = ("time_s", "score", "sharpness", "quality", "motion")


def _typed(df):
    for c in _INT_COLS:
        if c in df:
            df[c] = df[c].astype("int64")
    for c in _FLOAT_COLS:
        if c in df:
            df[c] = df[c].astype("float64")
    for c in df.columns:
        if c not in _INT_COLS and c not in _FLOAT_COLS:
            df[c] = df[c].astype(str) if len(df) else df[c].astype(object)
    return df


def assign_splits(track_ids: Iterable[str], cfg: SplitConfig) -> dict[str, str]:
    """Deterministic 70/30 split of tracks: order tracks by a seeded hash, the first round(f*n) are train.

    Depends only on the set of track ids and the seed (not on input order or timing); with two or more
    tracks each split gets at least one, so a test set always exists.
    """
    ids = sorted(set(track_ids), key=lambda t: hashlib.sha256(f"{cfg.seed}:{t}".encode()).hexdigest())
    n = len(ids)
    n_train = int(round(cfg.train_fraction * n))
    if n >= 2 and 0.0 < cfg.train_fraction < 1.0:
        n_train = min(max(n_train, 1), n - 1)
    return {t: ("train" if i < n_train else "test") for i, t in enumerate(ids)}


def assemble(out_dir: str | Path, cfg: IngestConfig):
    """Re-build ``faces.parquet`` from every per-video part done with the current settings."""
    import pandas as pd

    out_dir = Path(out_dir)
    h = output_hash(cfg)
    markers, frames = [], []
    for p in sorted((out_dir / "parts").glob("*.done.json")):
        m = done_marker(out_dir, p.name.split(".")[0], h)
        if m is None:
            log.warning("%s: done with other settings or incomplete; not in this manifest", p)
            continue
        markers.append(m)
        frames.append(pd.read_parquet(out_dir / m["part"]))
    cols = [c for c in MANIFEST_COLUMNS if c not in ASSIGNED_COLUMNS]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
    splits = assign_splits(df["track_id"].tolist(), cfg.split)
    df["split"] = df["track_id"].map(splits).astype(str) if len(df) else pd.Series(dtype=str)
    from survsr.pipelines.roles import assign_roles

    df["role"] = assign_roles(df, cfg.split.d_fraction, cfg.split.seed).astype(str) if len(df) else \
        pd.Series(dtype=str)
    df = _typed(df[MANIFEST_COLUMNS].sort_values("crop_id", kind="stable").reset_index(drop=True))
    write_parquet_atomic(df, out_dir / MANIFEST_NAME)
    return df, markers, splits
