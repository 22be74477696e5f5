"""SRGAN training data: both manifests read and split into D's real set, G's inputs and the held-out faces
(``plan_data``), then decoded and sha256-checked by Ray Data (``build_datasets``) for the workers."""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from survsr.pipelines.srgan_config import TrainSRGANConfig

log = logging.getLogger(__name__)

def _abs(base: Path, p: str) -> str:
    q = Path(p)
    return str(q if q.is_absolute() else (base / q))


def plan_data(faces_dir: str | Path, zssr_dir: str | Path, cfg: TrainSRGANConfig) -> dict[str, Any]:
    """Read both manifests and assign rows: D's real set, G's input set, held-out set (no decoding here).

    D's real set: ZSSR outputs of the role-D faces. G's inputs: the LR crops of the role-G faces; they get
    their own ZSSR output as a pseudo-pair only in ``loss.content_mode: pseudo_pair``. The two sets are
    disjoint by track (and so by crop id)."""
    import pandas as pd

    from survsr.pipelines.roles import ROLE_D, ROLE_G, roles_of, track_ids

    faces_dir, zssr_dir = Path(faces_dir), Path(zssr_dir)
    fm, zm = faces_dir / "faces.parquet", zssr_dir / "zssr.parquet"
    for m, what in ((fm, "ingest"), (zm, "ZSSR")):
        if not m.is_file():
            raise FileNotFoundError(f"{m}: {what} manifest not found")
    faces = pd.read_parquet(fm)
    zssr = pd.read_parquet(zm)
    for df, m, cols in ((faces, fm, ("crop_id", "lr_path", "sha256", "split")), (zssr, zm, ("crop_id", "hr_path", "sha256"))):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise ValueError(f"{m}: missing columns {missing}")
    hr_of = {r.crop_id: (_abs(zssr_dir, r.hr_path), str(r.sha256)) for r in zssr.itertuples()}
    faces = faces.sort_values("crop_id").reset_index(drop=True)
    faces["plan_role"] = roles_of(faces, cfg.data.d_fraction, cfg.data.role_seed, cfg.data.train_split).to_numpy()
    faces["plan_track"] = track_ids(faces)
    paired = cfg.loss.content_mode == "pseudo_pair"
    hr_rows, lr_rows, held = [], [], []
    no_zssr = 0
    for r in faces.itertuples():
        pair = hr_of.get(r.crop_id)
        lr = {"crop_id": r.crop_id, "track_id": str(r.plan_track), "path": _abs(faces_dir, r.lr_path),
              "sha256": str(r.sha256), "pair_path": pair[0] if pair else "", "pair_sha256": pair[1] if pair else ""}
        if r.split == cfg.data.heldout_split:
            if len(held) < cfg.data.heldout_max:
                held.append(lr)
            continue
        if r.split != cfg.data.train_split:
            continue
        if r.plan_role == ROLE_D:
            if pair:
                hr_rows.append({"crop_id": r.crop_id, "track_id": str(r.plan_track), "path": pair[0], "sha256": pair[1],
                                "pair_path": "", "pair_sha256": ""})
            else:
                no_zssr += 1
        elif r.plan_role == ROLE_G:
            if not paired:  # the paper: G's faces never meet a ZSSR output of themselves
                lr = {**lr, "pair_path": "", "pair_sha256": ""}
            lr_rows.append(lr)
    if not hr_rows:
        raise ValueError(f"{zm}: no ZSSR outputs for the discriminator's (role D) {cfg.data.train_split!r} "
                         f"faces in {fm}")
    if not lr_rows:
        raise ValueError(f"{fm}: no role-G faces for the generator (the D:G split is by track: the train split "
                         f"needs at least two tracks)")
    n_pairs = sum(bool(r["pair_path"]) for r in lr_rows)
    if paired and cfg.loss.content + cfg.loss.pixel > 0 and not n_pairs:
        raise ValueError(f"{zm}: loss.content_mode=pseudo_pair but none of the {len(lr_rows)} generator faces has "
                         "a ZSSR output; run `survsr zssr` with select.generator_faces=true")
    return {
        "hr": hr_rows, "lr": lr_rows, "heldout": held,
        "manifests": {"faces": {"path": str(fm), "sha256": _sha(fm)}, "zssr": {"path": str(zm), "sha256": _sha(zm)}},
        "counts": {"faces_total": int(len(faces)), "zssr_total": int(len(zssr)), "hr_real": len(hr_rows),
                   "lr_inputs": len(lr_rows), "lr_with_pseudo_pair": n_pairs,
                   "d_tracks": len({r["track_id"] for r in hr_rows}), "g_tracks": len({r["track_id"] for r in lr_rows}),
                   "tracks_on_both_sides": len({r["track_id"] for r in hr_rows} & {r["track_id"] for r in lr_rows}),
                   "heldout": len(held), "d_faces_without_zssr": no_zssr},
    }


def _sha(p: Path) -> str:
    from survsr.provenance import sha256_file

    return sha256_file(p)


def read_face_png(path: str, sha256: str, size: int) -> np.ndarray:
    """uint8 RGB size x size; raises ValueError naming the file on a hash mismatch or a wrong size."""
    from PIL import Image

    data = Path(path).read_bytes()
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(f"{path}: sha256 does not match the manifest")
    with Image.open(io.BytesIO(data)) as im:
        img = np.asarray(im.convert("RGB"))
    if img.shape[:2] != (size, size):
        raise ValueError(f"{path}: expected {size}x{size}, got {img.shape[1]}x{img.shape[0]}")
    return img


def decode_rows(batch: dict[str, np.ndarray], size: int, pair_size: int) -> dict[str, np.ndarray]:
    """Ray Data map_batches body: decode + verify each face (and its pseudo-pair); errors become rows with
    ``error`` set so one bad file is skipped and reported instead of failing the run."""
    n = len(batch["path"])
    imgs = np.zeros((n, size, size, 3), np.uint8)
    pairs = np.zeros((n, pair_size, pair_size, 3), np.uint8)
    has = np.zeros(n, bool)
    errors = []
    for i in range(n):
        err = ""
        try:
            imgs[i] = read_face_png(str(batch["path"][i]), str(batch["sha256"][i]), size)
            if batch["pair_path"][i]:
                pairs[i] = read_face_png(str(batch["pair_path"][i]), str(batch["pair_sha256"][i]), pair_size)
                has[i] = True
        except Exception as exc:  # noqa: BLE001 - any unreadable face is skipped and reported
            err = str(exc) if str(batch["path"][i]) in str(exc) else f"{batch['path'][i]}: {exc}"
        errors.append(err)
    return {"crop_id": batch["crop_id"], "img": imgs, "pair": pairs, "has_pair": has,
            "error": np.array(errors, dtype=object)}


def build_datasets(plan: dict[str, Any], cfg: TrainSRGANConfig):
    """Ray datasets {"hr", "lr"} of decoded faces (bad rows dropped) and the list of skipped rows."""
    import ray
    from ray.data.expressions import col

    hr_size, lr_size = cfg.discriminator.input_size, cfg.lr_size
    out, skipped = {}, []
    for name, size in (("hr", hr_size), ("lr", lr_size)):
        ds = ray.data.from_items(plan[name]).map_batches(
            decode_rows, batch_size=cfg.data.decode_batch, batch_format="numpy",
            fn_kwargs={"size": size, "pair_size": hr_size},
        ).materialize()  # decoded once; every epoch re-reads the workers' in-memory copy
        for r in ds.select_columns(["crop_id", "error"]).take_all():
            if r["error"]:
                log.warning("skipping %s face %s: %s", name, r["crop_id"], r["error"])
                skipped.append({"set": name, "crop_id": r["crop_id"], "error": r["error"]})
        out[name] = ds.filter(expr=col("error") == "").drop_columns(["error"]).materialize()
    return out, skipped


def decode_heldout(rows: list[dict], cfg: TrainSRGANConfig) -> dict[str, np.ndarray]:
    """Held-out faces (small) decoded in the driver; rows whose file is bad are dropped."""
    good = [r for r in rows if r["pair_path"]]
    if not good:
        return {"lr": np.zeros((0, cfg.lr_size, cfg.lr_size, 3), np.uint8),
                "hr": np.zeros((0, cfg.discriminator.input_size,) * 2 + (3,), np.uint8)}
    batch = {k: np.array([r[k] for r in good], dtype=object) for k in good[0]}
    dec = decode_rows(batch, cfg.lr_size, cfg.discriminator.input_size)
    ok = np.array([not e for e in dec["error"]]) & dec["has_pair"]
    return {"lr": dec["img"][ok], "hr": dec["pair"][ok]}


