"""Where the evaluation's faces come from, and how HR faces are degraded to LR.

Three kinds of input feed the three protocols:
- an ingest output (``faces.parquet``): native crops (HR for the ground-truth protocol) and 32x32 LR crops
  (the real-footage protocol); a ZSSR output (``zssr.parquet``): the synthetic HR (the paper protocol);
- folders of face images given by the user (HR faces, or native LR faces);
- bundled real data when no manifest is given: the carphone clip (faces found by ``survsr.video.detect``) and the
  astronaut photo in scikit-image.
Every face carries its id, a source label and the SHA-256 of the file it came from, for the report.
"""

from __future__ import annotations

import fnmatch
import io
import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from survsr.pipelines.quality import IMAGE_SUFFIXES, MetricError, read_rgb
from survsr.provenance import sha256_bytes, sha256_file

log = logging.getLogger(__name__)

# The astronaut's face in skimage.data.astronaut() (512x512): a Haar detection (177, 66, 95, 95) with margin.
ASTRONAUT_FACE_BOX = (155, 40, 140, 140)


class EvaluateError(ValueError):
    """The evaluation cannot run on these inputs; the message names the input and the reason."""


@dataclass
class Face:
    face_id: str
    source: str  # human label: "carphone pristine (ingest)", "user folder faces/", ...
    image: np.ndarray  # uint8 RGB: HR for the ground-truth protocol, native LR for the real-footage one
    sha256: str  # of the file the image was read from (or of the source video / array for bundled data)
    path: str = ""
    split: str = ""
    extra: dict = field(default_factory=dict)


@dataclass
class DegradationConfig:
    """How an HR face becomes the LR face the methods see. Order: blur (optics, motion), downscale,
    noise (sensor), JPEG (the recorder's codec)."""

    name: str = "bicubic"
    blur_sigma: float = 0.0  # Gaussian blur at HR before downscaling, in HR pixels; 0 = none
    noise_sigma: float = 0.0  # Gaussian noise std in 0-255 levels, added to the LR; 0 = none
    jpeg_quality: int = 0  # re-encode the LR as JPEG at this quality; 0 = no JPEG

    def validate(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"degradation name must be a plain word, got {self.name!r}")
        if self.blur_sigma < 0 or self.noise_sigma < 0:
            raise ValueError("blur_sigma and noise_sigma must be >= 0")
        if not 0 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be 0 (off) or 1..100, got {self.jpeg_quality}")


def stable_seed(seed: int, key: str) -> int:
    """Per-face seed that does not depend on the order faces are processed in (or on PYTHONHASHSEED)."""
    return (seed * 1_000_003 + zlib.crc32(key.encode())) % (2**32)


def resize(img: np.ndarray, size: tuple[int, int], method: str = "bicubic") -> np.ndarray:
    """PIL resize to (w, h): PIL's bicubic is antialiased when shrinking, the convention of SR benchmarks."""
    from PIL import Image

    resample = {"bicubic": Image.BICUBIC, "nearest": Image.NEAREST, "area": Image.BOX,
                "lanczos": Image.LANCZOS}[method]
    return np.asarray(Image.fromarray(img).resize(size, resample), dtype=np.uint8)


def square_hr(img: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize to ``size`` (carphone's ~60 px crops become 64x64)."""
    h, w = img.shape[:2]
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    sq = img[y:y + s, x:x + s]
    return sq if s == size else resize(sq, (size, size), "bicubic")


def degrade(hr: np.ndarray, scale: int, cfg: DegradationConfig, seed: int) -> np.ndarray:
    import cv2
    from PIL import Image

    img = hr
    if cfg.blur_sigma > 0:
        img = cv2.GaussianBlur(img, (0, 0), sigmaX=cfg.blur_sigma, borderType=cv2.BORDER_REFLECT)
    h, w = img.shape[:2]
    if h % scale or w % scale:
        raise EvaluateError(f"HR size {w}x{h} is not a multiple of the scale {scale}")
    lr = resize(img, (w // scale, h // scale), "bicubic")
    if cfg.noise_sigma > 0:
        rng = np.random.default_rng(seed)
        noisy = lr.astype(np.float64) + rng.normal(0.0, cfg.noise_sigma, lr.shape)
        lr = np.clip(np.round(noisy), 0, 255).astype(np.uint8)
    if cfg.jpeg_quality > 0:
        buf = io.BytesIO()
        Image.fromarray(lr).save(buf, format="JPEG", quality=cfg.jpeg_quality)
        buf.seek(0)
        lr = np.asarray(Image.open(buf).convert("RGB"), dtype=np.uint8)
    return lr


# ---------------------------------------------------------------- manifests


def read_manifest(path: Path, what: str):
    import pandas as pd

    if not path.is_file():
        raise EvaluateError(f"{path}: {what} manifest not found")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a bad file
        raise EvaluateError(f"{path}: unreadable {what} manifest ({exc})") from None
    return df


def resolve(base: Path, p: str) -> Path:
    q = Path(p)
    return q if q.is_absolute() else base / q


def _match(name: str, include: list[str], exclude: list[str]) -> bool:
    base = Path(name).name
    ok = any(fnmatch.fnmatch(base, pat) or fnmatch.fnmatch(name, pat) for pat in include)
    return ok and not any(fnmatch.fnmatch(base, pat) or fnmatch.fnmatch(name, pat) for pat in exclude)


def select_split(df, split: str, fallback_to_all: bool, what: str, notes: list[str]):
    """Rows of ``split`` ("test", "train" or "all"); when that split is empty, optionally all rows, said in
    ``notes`` because the generator has then seen these faces (or their LR versions) in training."""
    if split == "all" or "split" not in df.columns:
        return df
    sel = df[df["split"] == split]
    if len(sel) == 0 and len(df) and fallback_to_all:
        notes.append(f"{what}: no '{split}'-split faces in the manifest; using all {len(df)} faces "
                     f"(the generator may have trained on them)")
        return df
    return sel


def spread(items: list, k: int) -> list:
    """At most ``k`` items, evenly spaced (keeps variety across a clip instead of its first seconds)."""
    if k <= 0 or len(items) <= k:
        return list(items)
    idx = np.linspace(0, len(items) - 1, k).round().astype(int)
    return [items[i] for i in sorted(set(idx.tolist()))]


def manifest_faces(faces_dir: Path, *, column: str, split: str, fallback_to_all: bool, include: list[str],
                   exclude: list[str], max_faces: int, min_side: int, label: str, notes: list[str],
                   skipped: list[dict]) -> list[Face]:
    """Faces of an ingest output: ``column`` is "native_path" (HR) or "lr_path" (native LR)."""
    manifest = faces_dir / "faces.parquet"
    df = read_manifest(manifest, "ingest")
    need = {"crop_id", "source_path", column}
    missing = need - set(df.columns)
    if missing:
        raise EvaluateError(f"{manifest}: missing columns {sorted(missing)}")
    df = df[[_match(str(s), include, exclude) for s in df["source_path"]]]
    df = select_split(df, split, fallback_to_all, f"{label} ({manifest})", notes)
    df = df.sort_values("crop_id")
    out: list[Face] = []
    for row in df.to_dict("records"):
        path = resolve(faces_dir, str(row[column]))
        try:
            img = read_rgb(path)
        except MetricError as exc:
            skipped.append({"input": str(path), "reason": str(exc)})
            continue
        if min(img.shape[:2]) < min_side:
            skipped.append({"input": str(path), "reason": f"{img.shape[1]}x{img.shape[0]} is smaller than "
                                                          f"{min_side} px (too small for an HR face)"})
            continue
        sha_col = "native_sha256" if column == "native_path" else "sha256"
        src_name = Path(str(row["source_path"])).stem
        out.append(Face(face_id=str(row["crop_id"]), source=f"{src_name} ({label})", image=img,
                        sha256=str(row.get(sha_col) or sha256_file(path)), path=str(path),
                        split=str(row.get("split", "")),
                        extra={"frame_index": row.get("frame_index"), "source_path": str(row["source_path"])}))
    by_source: dict[str, list[Face]] = {}
    for f in out:
        by_source.setdefault(f.extra["source_path"], []).append(f)
    # at most max_faces per source video, so one long clip does not crowd out the others
    return [f for src in sorted(by_source) for f in spread(by_source[src], max_faces)]


def folder_faces(folder: Path, *, label: str, max_faces: int, skipped: list[dict]) -> list[Face]:
    """Every image in a user's folder. An empty folder is an error; an unreadable file is skipped and
    reported, and the others are used."""
    if not folder.exists():
        raise EvaluateError(f"{folder}: face folder not found")
    if not folder.is_dir():
        raise EvaluateError(f"{folder}: not a directory (give a folder of face images)")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    for p in files:
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append({"input": str(p), "reason": "not an image file (suffix)"})
    if not images:
        raise EvaluateError(f"{folder}: no face images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    out = []
    for p in images:
        try:
            img = read_rgb(p)
        except MetricError as exc:
            skipped.append({"input": str(p), "reason": str(exc)})
            log.warning("skipping %s", exc)
            continue
        out.append(Face(face_id=f"{folder.name}/{p.stem}", source=f"{label} {folder.name}/", image=img,
                        sha256=sha256_file(p), path=str(p)))
    if not out:
        raise EvaluateError(f"{folder}: none of its {len(images)} image(s) could be read (see skipped inputs)")
    return spread(out, max_faces)


def astronaut_face() -> Face:
    from skimage import data

    img = data.astronaut()
    x, y, w, h = ASTRONAUT_FACE_BOX
    crop = np.ascontiguousarray(img[y:y + h, x:x + w])
    # name the installed file it is read from, so the report's inputs can be verified like any other file
    file = Path(data.__file__).parent / "astronaut.png"
    if file.is_file():
        return Face(face_id="astronaut", source="skimage.data.astronaut()", image=crop, sha256=sha256_file(file),
                    path=str(file))
    return Face(face_id="astronaut", source="skimage.data.astronaut()", image=crop,
                sha256=sha256_bytes(img.tobytes()), path="skimage.data.astronaut()")


def detect_video_faces(video: Path, *, label: str, stride: int, max_faces: int, notes: list[str]) -> list[Face]:
    """Largest face per sampled frame, through the video module's decoder and detector (the detector's
    box already has ingest's margin), squared."""
    from survsr.video.decode import iter_frames
    from survsr.video.detect import DetectorConfig, make_detector

    detector = make_detector(DetectorConfig())
    video_sha = sha256_file(video)
    found = []
    for frame in iter_frames(str(video), stride=stride):
        dets = detector.detect(frame.image)
        if not dets:
            continue
        x, y, w, h = max(dets, key=lambda d: d.box[2] * d.box[3]).box
        s = max(w, h)
        cx, cy = x + w / 2, y + h / 2
        H, W = frame.image.shape[:2]
        s = min(s, H, W)
        x0 = int(np.clip(round(cx - s / 2), 0, W - s))
        y0 = int(np.clip(round(cy - s / 2), 0, H - s))
        crop = np.ascontiguousarray(frame.image[y0:y0 + s, x0:x0 + s])
        found.append(Face(face_id=f"{video.stem}-f{frame.index:06d}", source=f"{video.stem} (detected)",
                          image=crop, sha256=video_sha, path=str(video),
                          extra={"frame_index": frame.index, "box": [x0, y0, s, s]}))
    if not found:
        notes.append(f"{label}: no face detected in {video}")
    return spread(found, max_faces)


def carphone(which: str) -> Path | None:
    try:
        from survsr.data import carphone_paths

        return carphone_paths()[which]
    except Exception as exc:  # noqa: BLE001 - the test extra may not be installed
        log.warning("carphone clip not available: %s", exc)
        return None
