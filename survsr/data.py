"""Real data that ships with installed packages (no downloads at run time)."""

from __future__ import annotations

from pathlib import Path


def carphone_paths() -> dict[str, Path]:
    """The "carphone" face clip (176x144, 120 frames), pristine and heavily compressed, frame-aligned,
    as shipped by the ``absolutely-not-scikit-video`` package."""
    try:
        import skvideo.datasets
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "the carphone clip comes from the 'absolutely-not-scikit-video' package: pip install 'survsr[test]'"
        ) from exc
    pristine, distorted = (Path(p) for p in skvideo.datasets.fullreferencepair())
    for p in (pristine, distorted):
        if not p.is_file():
            raise RuntimeError(f"{p}: carphone clip missing from the installed skvideo package")
    return {"pristine": pristine, "distorted": distorted}
