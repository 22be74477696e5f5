"""The checks that need the source video itself: each source is decoded once, as far as the highest frame
index any output records, and every recorded frame index, time, box and (with ``--pixels``) the crop's
pixels are compared with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from survsr.verify.results import MODIFIED, Problem, _Node


class _VideoProbe:
    """Decodes a source video once, as far as the highest frame index asked for."""

    def __init__(self, path: Path):
        self.path = path
        self.times: list[float] = []
        self.size: tuple[int, int] | None = None  # (width, height)
        self.frames: dict[int, Any] = {}
        self.error: str | None = None

    def run(self, max_index: int, keep: set[int]) -> None:
        import av

        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                tb = stream.time_base
                rate = stream.average_rate or stream.guessed_rate or 25
                # Same clock as survsr.video.decode: seconds from the stream's start (first pts if unknown).
                origin = stream.start_time
                for frame in container.decode(stream):
                    i = len(self.times)
                    if frame.pts is not None and tb is not None:
                        origin = frame.pts if origin is None else origin
                        t = float((frame.pts - origin) * tb)
                    else:
                        t = float(i / rate)
                    self.times.append(t)
                    self.size = (frame.width, frame.height)
                    if i in keep:
                        self.frames[i] = frame.to_ndarray(format="rgb24")
                    if i >= max_index:
                        break
        except Exception as exc:  # noqa: BLE001 - reported as a finding, not a crash
            self.error = f"{type(exc).__name__}: {exc}"


class FrameChecks:
    """Mixed into :class:`survsr.verify.verifier.Verifier`: uses its ``frame_checks`` (source -> [(node,
    source record)]) and ``pixels`` flag."""

    def run_frame_checks(self) -> None:
        """Decode each source once (up to the highest frame asked for) and check every recorded frame."""
        for src_path, checks in self.frame_checks.items():
            keep: set[int] = set()
            if self.pixels:
                keep = {int(s["frame_index"]) for _, s in checks}
            probe = _VideoProbe(src_path)
            probe.run(max(int(s["frame_index"]) for _, s in checks), keep)
            for n, src in checks:
                self._check_frame(n, src, probe)

    def _check_frame(self, n: _Node, src: dict[str, Any], probe: _VideoProbe) -> None:
        f, idx = str(n.path), int(src["frame_index"])
        if idx < 0 or idx >= len(probe.times):
            why = f"; decoding stopped: {probe.error}" if probe.error else ""
            n.own.append(Problem(MODIFIED, f, "source.frame_index",
                                 f"{probe.path.name} has only {len(probe.times)} frames{why}", idx,
                                 len(probe.times)))
            return
        t = src.get("time_s")
        if t is not None and len(probe.times) > 1:
            dt = abs(probe.times[1] - probe.times[0]) or 1e-3
            if abs(float(t) - probe.times[idx]) > 0.5 * dt + 1e-6:
                n.own.append(Problem(MODIFIED, f, "source.time_s", f"frame {idx} is at {probe.times[idx]:.6f}s",
                                     t, probe.times[idx]))
        box = src.get("box")
        if box is not None and probe.size is not None:
            W, H = probe.size
            try:
                x, y, w, h = (int(v) for v in box)
                inside = w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= W and y + h <= H
            except (TypeError, ValueError):
                inside = False
            if not inside:
                n.own.append(Problem(MODIFIED, f, "source.box", f"not inside the {W}x{H} frame", None, box))
                return
            if self.pixels and idx in probe.frames and not n.parents and n.path.suffix.lower() == ".png":
                self._check_pixels(n, probe.frames[idx], (x, y, w, h))

    def _check_pixels(self, n: _Node, frame, box) -> None:
        """A crop at native resolution (no parents, same size as its box) must equal the frame's pixels; an
        ingest LR crop must equal the frame's box resized the way its stage record says."""
        import numpy as np
        from PIL import Image

        x, y, w, h = box
        with Image.open(n.path) as im:
            img = np.asarray(im.convert("RGB"))
        crop = frame[y:y + h, x:x + w]
        how = "the source frame's box"
        if img.shape[:2] != (h, w):
            method = next((s.get("resize_method") for s in n.doc.get("stages") or []
                           if isinstance(s, dict) and s.get("resize_method")), None)
            if method is None or img.shape[0] != img.shape[1]:
                return  # a model output: its pixels are traced through its parents, not recomputed here
            from survsr.video.crops import make_lr

            crop, got = make_lr(np.ascontiguousarray(crop), img.shape[0])
            if got != method:
                n.own.append(Problem(MODIFIED, str(n.path), "stages.resize_method",
                                     "the box's size implies another resize method", got, method))
                return
            how = f"the source frame's box resized ({method})"
        if not np.array_equal(img, crop):
            diff = int(np.abs(img.astype(int) - crop.astype(int)).max())
            n.own.append(Problem(MODIFIED, str(n.path), "pixels", f"differ from {how}", 0, f"max abs diff {diff}"))
