"""Face detection behind a small interface: MTCNN (default; weights from the facenet-pytorch wheel, see
``video/mtcnn.py``) or OpenCV Haar cascades (no weights at all; far less precise on real camera footage).

Haar: surveillance faces are small. The frontal cascade's smallest window is 24 px, so to find faces down to
``min_face`` px the frame is upsampled by ``24 / min_face`` for detection (configurable) and boxes are mapped
back to source pixels. Every box then gets a margin, is kept square and is fitted into the frame.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Literal, Protocol

import numpy as np


@dataclass(frozen=True)
class Detection:
    box: tuple[int, int, int, int]  # x, y, w, h in source-frame pixels, after margin and fitting to the frame
    score: float  # detector confidence; for Haar: number of merged neighbour windows (higher = surer)
    detector: str  # e.g. "haar-frontal", "haar-profile"
    raw_box: tuple[int, int, int, int] | None = None  # the detector's own tight box, before margin
    # five facial points (left eye, right eye, nose, left and right mouth corner) as x0, y0, x1, y1, ... in
    # source-frame pixels, when the detector gives them (MTCNN does, Haar does not)
    landmarks: tuple[float, ...] | None = None


@dataclass
class DetectorConfig:
    kind: Literal["mtcnn", "haar"] = "mtcnn"
    # --- MTCNN (kind=mtcnn); facenet-pytorch's reference settings except the stricter last threshold
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.9)  # P-, R-, O-Net acceptance (O-Net's = the score)
    pyramid_factor: float = 0.709  # image pyramid step (scale multiplier per level)
    device: str = "auto"  # auto = cuda when the process sees a GPU (detector actor with num_gpus), else cpu
    torch_threads: int = 0  # intra-op threads for the CPU detector; 0 = leave torch's default
    # Reduced resolution for detection: a frame whose longer side exceeds this is area-downscaled before the
    # cascade (boxes are mapped back; crops are still cut from the full-resolution frame). Faces smaller than
    # min_face x (side / detect_max_side) source px are then missed. 0 = always full resolution.
    detect_max_side: int = 0
    # --- Haar (kind=haar)
    frontal_cascade: str = "haarcascade_frontalface_default.xml"  # file name in cv2.data.haarcascades, or path
    profile: bool = False  # also run the profile cascade (and on the mirrored frame for the other side)
    profile_cascade: str = "haarcascade_profileface.xml"
    min_face: int = 12  # smallest face side (source px) the detector should find
    max_face: int = 0  # largest face side (source px); 0 = no limit
    upsample: float = 0.0  # detection-time scale factor; 0 = auto (cascade window / min_face, at least 1)
    max_upsample: float = 4.0  # cap for the auto factor (cost grows with its square)
    scale_factor: float = 1.1  # image pyramid step of detectMultiScale
    min_neighbors: int = 4  # overlapping windows needed to accept a face (fewer = more recall, more junk)
    equalize: bool = True  # histogram-equalise the grey frame first (helps dark, low-contrast footage)
    margin: float = 0.25  # added on each side, as a fraction of the tight box side
    nms_iou: float = 0.3  # overlapping detections (frontal vs profile) above this IoU are merged
    min_score: float = 0.0  # drop detections whose score is below this
    # Detection stride (both kinds): in detect_sequence a full-frame scan every n-th frame; in between the
    # faces of the previous frame are followed (Haar: a region scan around them; MTCNN: O-Net re-scores and
    # re-regresses the previous box, so a face that left or was a fluke is dropped). A new face is found at
    # the next full scan, <= n-1 frames late. 1 = full scan on every frame. ``detect()`` always scans all.
    full_scan_every: int = 4

    def validate(self) -> None:
        if self.kind == "mtcnn" and self.min_face < 12:
            raise ValueError(f"min_face must be >= 12 for mtcnn (its smallest window), got {self.min_face}")
        if len(self.thresholds) != 3 or not all(0.0 <= t <= 1.0 for t in self.thresholds):
            raise ValueError(f"thresholds must be three values in [0, 1], got {self.thresholds}")
        if not 0.1 <= self.pyramid_factor < 1.0:
            raise ValueError(f"pyramid_factor must be in [0.1, 1), got {self.pyramid_factor}")
        if self.detect_max_side and self.detect_max_side < 48:
            raise ValueError(f"detect_max_side must be 0 or >= 48, got {self.detect_max_side}")
        if self.min_face < 4:
            raise ValueError(f"min_face must be >= 4, got {self.min_face}")
        if self.max_face and self.max_face < self.min_face:
            raise ValueError(f"max_face ({self.max_face}) must be 0 or >= min_face ({self.min_face})")
        if self.upsample < 0 or self.max_upsample < 1:
            raise ValueError("upsample must be >= 0 (0 = auto) and max_upsample >= 1")
        if self.scale_factor <= 1.0:
            raise ValueError(f"scale_factor must be > 1, got {self.scale_factor}")
        if self.full_scan_every < 1:
            raise ValueError(f"full_scan_every must be >= 1, got {self.full_scan_every}")
        if self.min_neighbors < 0 or not 0.0 <= self.margin <= 2.0:
            raise ValueError("min_neighbors must be >= 0 and margin in [0, 2]")


class Detector(Protocol):
    name: str

    def detect(self, image_rgb: np.ndarray) -> list[Detection]: ...


def detect_sequence(detector: Detector, images) -> list[list[Detection]]:
    """Per-frame detections for consecutive frames; uses the detector's own sequence mode when it has one."""
    fn = getattr(detector, "detect_sequence", None)
    return fn(images) if fn is not None else [detector.detect(img) for img in images]


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def expand_box(box: tuple[int, int, int, int], margin: float, frame_w: int, frame_h: int) -> tuple[int, int, int, int]:
    """Grow a box by ``margin`` x side on every side, make it square, and fit it into the frame.

    A box crossing the border is shifted inward first (so the crop stays square and the 32x32 LR is not
    stretched); only a box larger than the frame is clipped.
    """
    x, y, w, h = box
    cx, cy = x + w / 2.0, y + h / 2.0
    side = max(w, h) * (1.0 + 2.0 * margin)
    side_w = min(int(round(side)), frame_w)
    side_h = min(int(round(side)), frame_h)
    x0 = int(round(cx - side_w / 2.0))
    y0 = int(round(cy - side_h / 2.0))
    x0 = min(max(x0, 0), frame_w - side_w)
    y0 = min(max(y0, 0), frame_h - side_h)
    return x0, y0, side_w, side_h


@functools.lru_cache(maxsize=8)
def _cascade(name: str):
    import os

    import cv2

    path = name if os.path.isabs(name) or os.path.exists(name) else os.path.join(cv2.data.haarcascades, name)
    clf = cv2.CascadeClassifier(path)
    if clf.empty():
        raise ValueError(f"cannot load Haar cascade {path!r}")
    return clf


def _window(clf) -> int:
    # The cascade's own training window (24 for frontalface_default, 20 for alt/alt2/profile).
    try:
        w, h = clf.getOriginalWindowSize()
        return int(max(w, h))
    except Exception:  # noqa: BLE001 - older OpenCV
        return 24


class HaarDetector:
    """Haar cascade detector (frontal, optionally profile both ways).

    ``detect`` scans a whole frame. ``detect_sequence`` scans consecutive frames of one video and, between
    full scans every ``full_scan_every`` frames, only looks around the faces found in the previous frame at
    sizes close to theirs (much cheaper: a few small pyramid levels instead of the whole upsampled frame).
    A face entering the scene is therefore found at the next full scan, at most ``full_scan_every - 1``
    frames late; faces lost between full scans are looked for again at the next one.
    """

    def __init__(self, cfg: DetectorConfig | None = None):
        self.cfg = cfg or DetectorConfig()
        self.frontal = _cascade(self.cfg.frontal_cascade)
        self.profile = _cascade(self.cfg.profile_cascade) if self.cfg.profile else None
        self.win = max(_window(self.frontal), _window(self.profile) if self.profile is not None else 0)
        self.scale = self._upsample_for(self.cfg.min_face)
        self.name = "haar"

    def _upsample_for(self, min_face: float) -> float:
        return self.cfg.upsample or min(max(1.0, self.win / min_face), self.cfg.max_upsample)

    def _scan(self, gray: np.ndarray, scale: float, min_face: float, max_face: float,
              offset: tuple[int, int] = (0, 0)) -> list[tuple]:
        """Run the cascades on a (prepared) grey region upsampled by ``scale``; boxes come back in frame px."""
        import cv2

        cfg = self.cfg
        h, w = gray.shape[:2]
        if scale != 1.0:
            gray = cv2.resize(gray, (int(round(w * scale)), int(round(h * scale))), interpolation=cv2.INTER_LINEAR)
        runs = [(self.frontal, "haar-frontal", False)]
        if self.profile is not None:
            runs += [(self.profile, "haar-profile", False), (self.profile, "haar-profile", True)]
        out = []
        for clf, label, mirrored in runs:
            img = np.ascontiguousarray(gray[:, ::-1]) if mirrored else gray
            min_px = max(_window(clf), int(math.floor(min_face * scale)))
            kw = {"minSize": (min_px, min_px)}
            if max_face:
                max_px = int(math.ceil(max_face * scale))
                if max_px < min_px:
                    continue
                kw["maxSize"] = (max_px, max_px)
            if img.shape[0] < min_px or img.shape[1] < min_px:
                continue
            boxes, counts = clf.detectMultiScale2(img, scaleFactor=cfg.scale_factor, minNeighbors=cfg.min_neighbors,
                                                  **kw)
            gw = img.shape[1]
            for (x, y, bw, bh), n in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(counts).reshape(-1)):
                if mirrored:
                    x = gw - x - bw
                out.append(((x / scale + offset[0], y / scale + offset[1], bw / scale, bh / scale), float(n), label))
        return out

    @staticmethod
    def _check(image_rgb: np.ndarray) -> None:
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise ValueError(f"detect expects uint8 HxWx3 RGB, got {image_rgb.dtype} {image_rgb.shape}")

    def _gray(self, image_rgb: np.ndarray) -> np.ndarray:
        """Grey frame, histogram-equalised over the WHOLE frame (so a region scan sees the same pixels)."""
        import cv2

        self._check(image_rgb)
        gray = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)
        return cv2.equalizeHist(gray) if self.cfg.equalize else gray

    def detect(self, image_rgb: np.ndarray) -> list[Detection]:
        fh, fw = image_rgb.shape[:2]
        gray = self._gray(image_rgb)
        found = self._scan(gray, self.scale, self.cfg.min_face, self.cfg.max_face)
        return self._finish(found, fw, fh)

    def detect_near(self, image_rgb: np.ndarray, previous: list[Detection]) -> list[Detection]:
        """Look only around ``previous`` faces (same person one frame later), at 1/ratio..ratio their size.

        Same upsampling as a full scan: Haar's neighbour counts (our score) depend on it."""
        fh, fw = image_rgb.shape[:2]
        gray = self._gray(image_rgb)
        ratio = 1.5
        found = []
        for d in previous:
            x, y, w, h = d.raw_box or d.box
            side = max(w, h)
            cx, cy = x + w / 2, y + h / 2
            half = side * 1.5  # the region is 3 face sides wide: room for motion between frames
            x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
            x1, y1 = min(fw, int(math.ceil(cx + half))), min(fh, int(math.ceil(cy + half)))
            lo = max(self.cfg.min_face, side / ratio)
            hi = side * ratio if not self.cfg.max_face else min(self.cfg.max_face, side * ratio)
            found += self._scan(gray[y0:y1, x0:x1], self.scale, lo, hi, (x0, y0))
        return self._finish(found, fw, fh)

    def detect_sequence(self, images) -> list[list[Detection]]:
        """Detections for consecutive frames of one video (see the class docstring)."""
        every = max(1, self.cfg.full_scan_every)
        out: list[list[Detection]] = []
        prev: list[Detection] = []
        for i, img in enumerate(images):
            if i % every == 0:
                dets = self.detect(img)
            else:
                dets = self.detect_near(img, prev) if prev else []
            out.append(dets)
            prev = dets
        return out

    def _finish(self, found: list[tuple], fw: int, fh: int) -> list[Detection]:
        # Greedy NMS by score: frontal and profile (and neighbouring regions) often fire on the same face.
        found.sort(key=lambda t: (-t[1], t[0][0], t[0][1]))
        kept: list[Detection] = []
        for (x, y, w, h), score, label in found:
            if score < self.cfg.min_score:
                continue
            raw = _clip((int(round(x)), int(round(y)), int(round(w)), int(round(h))), fw, fh)
            if raw[2] <= 0 or raw[3] <= 0:
                continue
            if any(iou(raw, k.raw_box) > self.cfg.nms_iou for k in kept):
                continue
            kept.append(Detection(box=expand_box(raw, self.cfg.margin, fw, fh), score=score, detector=label,
                                  raw_box=raw))
        # Haar also fires on parts of a face (an eye region, half a face): drop a box lying mostly inside a
        # clearly bigger one, whatever the scores.
        kept = [d for d in kept if not any(_is_part(d.raw_box, o.raw_box) for o in kept if o is not d)]
        # Stable order (left to right, top to bottom) so crop ids are reproducible.
        kept.sort(key=lambda d: (d.raw_box[0], d.raw_box[1]))
        return kept


def _is_part(small: tuple[int, int, int, int], big: tuple[int, int, int, int]) -> bool:
    """``small`` is at most 3/4 of ``big``'s side and at least 70% of its area lies inside ``big``."""
    if max(small[2], small[3]) > 0.75 * max(big[2], big[3]):
        return False
    inter = iou_area(small, big)
    return inter >= 0.7 * small[2] * small[3]


def iou_area(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> int:
    iw = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return iw * ih


def _clip(box: tuple[int, int, int, int], fw: int, fh: int) -> tuple[int, int, int, int]:
    x, y, w, h = box
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(fw, x + w), min(fh, y + h)
    return x0, y0, x1 - x0, y1 - y0


class MTCNNDetector:
    """MTCNN cascade (video/mtcnn.py) batched over the frames of a chunk.

    ``detect_sequence`` runs the full cascade on every ``full_scan_every``-th frame (all of them in one batch)
    and, in between, only O-Net on the previous frame's faces: the tracker's carried box is re-scored and
    re-regressed, so it follows the face and is dropped when the face is gone.
    """

    def __init__(self, cfg: DetectorConfig | None = None):
        import torch

        from survsr.video.mtcnn import MTCNN

        self.cfg = cfg or DetectorConfig(kind="mtcnn")
        device = self.cfg.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.cfg.torch_threads and device == "cpu":
            torch.set_num_threads(self.cfg.torch_threads)
        self.device = device
        self.name = "mtcnn"
        self._nets: dict[float, MTCNN] = {}
        self._mtcnn = MTCNN
        self._net(1.0)  # load the weights now: a missing wheel fails at construction, naming the fix

    def _net(self, scale: float):
        # min_face is in source px; on a downscaled frame the same face is ``scale`` times smaller.
        key = round(scale, 6)
        if key not in self._nets:
            self._nets[key] = self._mtcnn(min_face=max(12.0, self.cfg.min_face * scale),
                                          thresholds=self.cfg.thresholds, factor=self.cfg.pyramid_factor,
                                          device=self.device)
        return self._nets[key]

    def _prepare(self, images) -> tuple[np.ndarray, float]:
        import cv2

        for img in images:
            HaarDetector._check(img)
        h, w = images[0].shape[:2]
        side = max(h, w)
        if not self.cfg.detect_max_side or side <= self.cfg.detect_max_side:
            return np.stack(images), 1.0
        s = self.cfg.detect_max_side / side
        size = (max(1, int(round(w * s))), max(1, int(round(h * s))))
        return np.stack([cv2.resize(img, size, interpolation=cv2.INTER_AREA) for img in images]), s

    def _to_dets(self, boxes: np.ndarray, points: np.ndarray, scale: float, fw: int, fh: int) -> list[Detection]:
        out = []
        for b, p in zip(boxes, points):
            x1, y1, x2, y2 = (float(v) / scale for v in b[:4])
            score = float(b[4])
            if score < self.cfg.min_score:
                continue
            raw = _clip((int(round(x1)), int(round(y1)), int(round(x2 - x1)), int(round(y2 - y1))), fw, fh)
            side = max(raw[2], raw[3])
            if raw[2] <= 0 or raw[3] <= 0 or side < self.cfg.min_face * 0.75:
                continue
            if self.cfg.max_face and side > self.cfg.max_face:
                continue
            lm = tuple(round(float(v) / scale, 2) for v in np.asarray(p).reshape(-1))
            out.append(Detection(box=expand_box(raw, self.cfg.margin, fw, fh), score=score, detector="mtcnn",
                                 raw_box=raw, landmarks=lm))
        out.sort(key=lambda d: (d.raw_box[0], d.raw_box[1]))
        return out

    def detect_batch(self, images) -> list[list[Detection]]:
        if not len(images):
            return []
        arr, s = self._prepare(images)
        fh, fw = images[0].shape[:2]
        boxes, points = self._net(s).detect(arr)
        return [self._to_dets(b, p, s, fw, fh) for b, p in zip(boxes, points)]

    def detect(self, image_rgb: np.ndarray) -> list[Detection]:
        return self.detect_batch([image_rgb])[0]

    def detect_sequence(self, images) -> list[list[Detection]]:
        images = list(images)
        if not images:
            return []
        every = max(1, self.cfg.full_scan_every)
        full_idx = list(range(0, len(images), every))
        full = dict(zip(full_idx, self.detect_batch([images[i] for i in full_idx])))
        fh, fw = images[0].shape[:2]
        out: list[list[Detection]] = []
        prev: list[Detection] = []
        for i, img in enumerate(images):
            if i in full:
                dets = full[i]
            elif prev:
                arr, s = self._prepare([img])
                b = np.array([[d.raw_box[0] * s, d.raw_box[1] * s, (d.raw_box[0] + d.raw_box[2]) * s,
                               (d.raw_box[1] + d.raw_box[3]) * s, d.score] for d in prev], np.float32)
                boxes, points = self._net(s).refine(arr, [b])
                dets = self._to_dets(boxes[0], points[0], s, fw, fh)
            else:
                dets = []
            out.append(dets)
            prev = dets
        return out


DETECTORS: dict[str, Callable[[DetectorConfig], Detector]] = {"mtcnn": MTCNNDetector, "haar": HaarDetector}


def make_detector(cfg: DetectorConfig | None = None) -> Detector:
    """Build the detector named by ``cfg.kind`` (register new kinds in ``DETECTORS``)."""
    cfg = cfg or DetectorConfig()
    cfg.validate()
    try:
        factory = DETECTORS[cfg.kind]
    except KeyError:
        raise ValueError(f"unknown detector kind {cfg.kind!r} (known: {', '.join(sorted(DETECTORS))})") from None
    return factory(cfg)
