"""Link per-frame face detections into tracks (one person in a clip = one track) and pick the best crops.

A greedy IoU tracker with a centroid fallback: surveillance faces are small and move by more than their own
size between sampled frames often enough that IoU alone splits tracks. Offline (all detections of a video at
once) because the ingest pipeline sees a whole video's detections together, in any order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from survsr.video.detect import iou


@dataclass
class TrackerConfig:
    iou_threshold: float = 0.3  # a detection continues a track when IoU with its last box is at least this
    max_center_shift: float = 0.6  # ... or when its centre moved less than this x the box side (fallback)
    max_size_ratio: float = 1.6  # the fallback also needs the box sides within this ratio
    max_gap_s: float = 2.0  # a track not seen for longer than this ends (faces turn away for a while)
    min_detections: int = 3  # shorter tracks are dropped (Haar false positives rarely persist)

    def validate(self) -> None:
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if self.max_center_shift < 0 or self.max_size_ratio < 1 or self.max_gap_s <= 0:
            raise ValueError("max_center_shift >= 0, max_size_ratio >= 1 and max_gap_s > 0 required")
        if self.min_detections < 1:
            raise ValueError(f"min_detections must be >= 1, got {self.min_detections}")


@dataclass
class SelectConfig:
    best_k: int = 20  # crops kept per track (0 = all)
    # face quality = sharpness_weight*log1p(sharpness) + size_weight*log2(side) + frontal_weight*frontalness
    # (frontalness in [0, 1] from the landmarks, 0 when the detector gives none)
    sharpness_weight: float = 1.0
    size_weight: float = 1.0
    frontal_weight: float = 2.0
    min_frame_gap: int = 0  # chosen crops of one track are at least this many frames apart (diversity)

    def validate(self) -> None:
        if self.best_k < 0 or self.min_frame_gap < 0:
            raise ValueError("best_k and min_frame_gap must be >= 0")
        if self.sharpness_weight < 0 or self.size_weight < 0 or self.frontal_weight < 0:
            raise ValueError("sharpness_weight, size_weight and frontal_weight must be >= 0")


_PART = -2


def _inside(small: Sequence[int], big: Sequence[int]) -> bool:
    """``small`` is clearly smaller than ``big`` and lies (70% of its area) inside it."""
    if max(small[2], small[3]) > 0.75 * max(big[2], big[3]):
        return False
    iw = max(0, min(small[0] + small[2], big[0] + big[2]) - max(small[0], big[0]))
    ih = max(0, min(small[1] + small[3], big[1] + big[3]) - max(small[1], big[1]))
    return iw * ih >= 0.7 * small[2] * small[3]


def _match_score(a: Sequence[int], b: Sequence[int], cfg: TrackerConfig) -> float | None:
    """Higher is better; IoU matches always beat centroid-fallback matches."""
    o = iou(tuple(a), tuple(b))
    if o >= cfg.iou_threshold:
        return 1.0 + o
    sa, sb = max(a[2], a[3]), max(b[2], b[3])
    if min(sa, sb) <= 0 or max(sa, sb) / min(sa, sb) > cfg.max_size_ratio:
        return None
    dx = (a[0] + a[2] / 2) - (b[0] + b[2] / 2)
    dy = (a[1] + a[3] / 2) - (b[1] + b[3] / 2)
    shift = math.hypot(dx, dy) / max(sa, sb)
    if shift <= cfg.max_center_shift:
        return 1.0 - shift / (cfg.max_center_shift + 1e-9)  # in [0, 1]
    return None


def link_tracks(items: Sequence[tuple[int, float, Sequence[int]]], cfg: TrackerConfig | None = None) -> list[int]:
    """``items``: (frame_index, time_s, box) per detection, any order. Returns a track number per item
    (numbered 0.. by first appearance) or -1 for detections in tracks shorter than ``min_detections``."""
    cfg = cfg or TrackerConfig()
    order = sorted(range(len(items)), key=lambda i: (items[i][0], tuple(items[i][2])))
    assign = [-1] * len(items)
    tracks: list[dict] = []  # {"box", "time", "frame"}
    i = 0
    while i < len(order):
        frame = items[order[i]][0]
        group = []
        while i < len(order) and items[order[i]][0] == frame:
            group.append(order[i])
            i += 1
        t = items[group[0]][1]
        live = [k for k, tr in enumerate(tracks) if t - tr["time"] <= cfg.max_gap_s and tr["frame"] < frame]
        pairs = []
        for d in group:
            for k in live:
                s = _match_score(tracks[k]["box"], items[d][2], cfg)
                if s is not None:
                    pairs.append((s, d, k))
        pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
        used_d: set[int] = set()
        used_k: set[int] = set()
        for _, d, k in pairs:
            if d in used_d or k in used_k:
                continue
            used_d.add(d)
            used_k.add(k)
            assign[d] = k
            tracks[k].update(box=items[d][2], time=t, frame=frame)
        for d in group:
            if d in used_d:
                continue
            box = items[d][2]
            if any(_inside(box, tracks[k]["box"]) for k in live):
                assign[d] = _PART  # a part of a tracked face (eye, half face), not another person
                continue
            assign[d] = len(tracks)
            tracks.append({"box": box, "time": t, "frame": frame})
    counts = [0] * len(tracks)
    for k in assign:
        if k >= 0:
            counts[k] += 1
    keep = [k for k in range(len(tracks)) if counts[k] >= cfg.min_detections]
    renumber = {k: n for n, k in enumerate(keep)}  # tracks are created in time order already
    return [renumber.get(k, -1) if k >= 0 else -1 for k in assign]


def quality(sharpness: float, side: int, cfg: SelectConfig, frontal: float | None = None) -> float:
    return (cfg.sharpness_weight * math.log1p(max(sharpness, 0.0)) + cfg.size_weight * math.log2(max(side, 1))
            + cfg.frontal_weight * (frontal or 0.0))


def select_best(items: Sequence[tuple], cfg: SelectConfig | None = None) -> list[int]:
    """``items``: (frame_index, sharpness, side[, frontalness]) of one track's detections. Returns the indices
    of the best ``best_k`` by quality (ties broken by frame), honouring ``min_frame_gap``, in frame order."""
    cfg = cfg or SelectConfig()
    q = [quality(it[1], it[2], cfg, it[3] if len(it) > 3 else None) for it in items]
    ranked = sorted(range(len(items)), key=lambda i: (-q[i], items[i][0]))
    chosen: list[int] = []
    for i in ranked:
        if cfg.best_k and len(chosen) >= cfg.best_k:
            break
        if cfg.min_frame_gap and any(abs(items[i][0] - items[j][0]) < cfg.min_frame_gap for j in chosen):
            continue
        chosen.append(i)
    return sorted(chosen, key=lambda i: items[i][0])


# ------------------------------------------------------------------------- track-level precision filters
@dataclass
class FilterConfig:
    """Filters applied to whole tracks after linking (each one off when set to 0 / false).

    Order: motion gating (per detection) -> minimum length (``tracker.min_detections``) -> minimum mean
    score -> steady size. A track is dropped by the first filter it fails; the report counts them per filter.
    """

    min_mean_score: float = 0.0  # mean detector score of the track's detections (MTCNN: O-Net probability)
    # steady size: the median change of the face side between consecutive detections, |log(side_t/side_t-1)|;
    # a face changes size smoothly, a false positive on texture jumps between sizes. 0 = off.
    max_size_jitter: float = 0.25

    def validate(self) -> None:
        if self.min_mean_score < 0 or self.max_size_jitter < 0:
            raise ValueError("filters: min_mean_score and max_size_jitter must be >= 0")


def size_jitter(sides: Sequence[float]) -> float:
    """Median |log ratio| of consecutive sides (0 for a track of one detection)."""
    ratios = [abs(math.log(max(b, 1) / max(a, 1))) for a, b in zip(sides, sides[1:])]
    if not ratios:
        return 0.0
    ratios.sort()
    mid = len(ratios) // 2
    return ratios[mid] if len(ratios) % 2 else 0.5 * (ratios[mid - 1] + ratios[mid])


def filter_track(frames: Sequence[int], scores: Sequence[float], sides: Sequence[float], min_length: int,
                 cfg: FilterConfig) -> tuple[str, str] | None:
    """(filter, reason) when the track (its detections in frame order) fails a filter, else None."""
    n = len(frames)
    if n < min_length:
        return "min_length", f"{n} detections < {min_length}"
    mean = sum(scores) / max(n, 1)
    if cfg.min_mean_score and mean < cfg.min_mean_score:
        return "min_mean_score", f"mean score {mean:.3f} < {cfg.min_mean_score}"
    if cfg.max_size_jitter:
        j = size_jitter(list(sides))
        if j > cfg.max_size_jitter:
            return "steady_size", f"size jitter {j:.3f} > {cfg.max_size_jitter}"
    return None


def frontalness(landmarks: Sequence[float] | None) -> float | None:
    """1 for a frontal face, towards 0 as it turns: the nose's offset from the eyes' midpoint, in half eye
    distances (MTCNN points: left eye, right eye, nose, ...). None without landmarks."""
    if not landmarks or len(landmarks) < 6:
        return None
    lx, ly, rx, ry, nx, _ = landmarks[:6]
    half = abs(rx - lx) / 2.0
    if half <= 0:
        return 0.0
    return float(min(1.0, max(0.0, 1.0 - abs(nx - (lx + rx) / 2.0) / half)))
