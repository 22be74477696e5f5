"""Who a face is for: the discriminator's set (role ``D``: goes through ZSSR, its output is D's "real"
HR), the generator's set (role ``G``: LR faces G learns on; in the paper they never go through ZSSR), or
the test split (role ``test``).

Moreira et al. split their 20,000 faces 14,000 (ZSSR -> D) : 6,000 (G), i.e. 70:30. The split is made here
by **track**, like the train/test split, so one person's face never sits on both sides (a G input and the
ZSSR output of the same person in D's real set would make the "non-paired" losses quietly paired). The
role depends only on the track id and a seed, so ingest (which writes it into faces.parquet), ZSSR (which
runs only on D + test) and training (which reads it) agree without talking to each other.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Iterable

log = logging.getLogger(__name__)

ROLE_D, ROLE_G, ROLE_TEST = "D", "G", "test"
D_FRACTION = 0.7  # paper: 14,000 D : 6,000 G faces
ROLE_SEED = 0


def assign_track_roles(track_ids: Iterable[str], d_fraction: float = D_FRACTION, seed: int = ROLE_SEED
                       ) -> dict[str, str]:
    """Train-split tracks -> ``D`` or ``G``: tracks ordered by a seeded hash, the first round(f*n) are D.
    With two or more tracks each side gets at least one (else G or D would be empty); one track -> D."""
    if not 0.0 < d_fraction < 1.0:
        raise ValueError(f"d_fraction must be in (0, 1), got {d_fraction}")
    ids = sorted(set(map(str, track_ids)), key=lambda t: hashlib.sha256(f"role:{seed}:{t}".encode()).hexdigest())
    n = len(ids)
    n_d = int(round(d_fraction * n))
    if n >= 2:
        n_d = min(max(n_d, 1), n - 1)
    return {t: (ROLE_D if i < n_d else ROLE_G) for i, t in enumerate(ids)}


def track_ids(df) -> "list[str]":
    """The manifest's track ids; a manifest without them (hand-made) treats each crop as its own track."""
    if "track_id" in df.columns:
        return df["track_id"].astype(str).tolist()
    log.warning("faces manifest has no track_id column: each crop is treated as its own track for the D/G split")
    return df["crop_id"].astype(str).tolist()


def assign_roles(df, d_fraction: float = D_FRACTION, seed: int = ROLE_SEED, train_split: str = "train"):
    """A ``role`` value per manifest row (pandas Series): D / G for the train split by track, test otherwise."""
    import pandas as pd

    tracks = pd.Series(track_ids(df), index=df.index)
    train = df["split"].astype(str) == train_split
    if tracks[train].nunique() == 1 and train.sum() >= 2:
        # One person in the whole train split (e.g. the one-face carphone demo): no by-track split exists.
        # Split that track's crops instead, and say so: D and G then hold the same person's faces.
        log.warning("the %r split has a single track (%s): D/G roles split its CROPS %d:%d, not tracks; "
                    "G and D hold the same person", train_split, tracks[train].iloc[0],
                    round(d_fraction * 100), round((1 - d_fraction) * 100))
        crops = df["crop_id"].astype(str)
        roles = assign_track_roles(crops[train], d_fraction, seed)
        return pd.Series([roles[c] if tr else ROLE_TEST for c, tr in zip(crops, train)], index=df.index,
                         dtype=object)
    roles = assign_track_roles(tracks[train], d_fraction, seed)
    return pd.Series([roles[t] if tr else ROLE_TEST for t, tr in zip(tracks, train)], index=df.index, dtype=object)


def roles_of(df, d_fraction: float = D_FRACTION, seed: int = ROLE_SEED, train_split: str = "train"):
    """The manifest's own ``role`` column (written by ingest) when present, else the same assignment."""
    if "role" in df.columns and df["role"].notna().all() and (df["role"].astype(str) != "").all():
        return df["role"].astype(str)
    log.info("faces manifest has no role column: assigning D/G roles by track (d_fraction=%s)", d_fraction)
    return assign_roles(df, d_fraction, seed, train_split)
