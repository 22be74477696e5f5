"""Live footage through the generator: read a stream with PyAV, enhance in batches, write segmented MP4.

Sources: rtsp:// / http(s):// / any FFmpeg URL (live: the timeline continues across reconnects), a file
(read once; ``realtime`` paces it like a camera), or a growing file (``growing_file``: at EOF wait for
more, resume after the last frame seen; use MPEG-TS or fragmented MP4, a plain MP4 is unreadable while
it is written).

Overload policy: the reader never waits for the model. Frames go into a bounded queue; when it is full
the OLDEST frame is dropped (live footage should stay live) and counted, so memory is bounded by
``queue_size + batch_size`` frames whatever the input rate. At the end
``frames_read == frames_written + frames_dropped``.

Output: ``seg_00000.mp4``, ``seg_00001.mp4``... each ``segment_seconds`` long, each renamed into place
only when complete, timestamps = source presentation times (gaps where frames were dropped), plus
``segments.jsonl`` (one line per finished segment) and a provenance sidecar per segment. With ``hls``
the segments are MPEG-TS and ``index.m3u8`` (an HLS event playlist, closed with ENDLIST at the end) lets
any HLS player follow the enhanced stream live.

``StreamProcessor`` is the plain class (any ``enhance_fn``); ``StreamActor`` is the Ray actor that sends
batches to the Serve model deployment.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
import re
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from survsr.enhance.worker import OutputConfig
from survsr import telemetry
from survsr.marking import MarkingConfig, mark_document, mark_frame
from survsr.provenance import PROVENANCE_KEY, atomic_write_json, provenance, sha256_file, stage_record

log = logging.getLogger(__name__)

EnhanceFn = Callable[[Sequence[np.ndarray]], list[np.ndarray]]
URL_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
OUT_TIME_BASE = Fraction(1, 90000)  # the MPEG clock: exact for 25, 30000/1001 fps and friends


@dataclass
class ReconnectConfig:
    max_retries: int = 10  # consecutive failed attempts before giving up
    initial_s: float = 0.5
    max_s: float = 15.0
    factor: float = 2.0


@dataclass
class StreamConfig:
    source: str = ""
    out_dir: str = "stream_out"
    segment_seconds: float = 4.0
    hls: bool = False  # MPEG-TS segments + index.m3u8 instead of MP4 segments
    queue_size: int = 32  # frames waiting for the model; when full the oldest is dropped
    batch_size: int = 8
    batch_wait_s: float = 0.05  # how long a partial batch waits for more frames
    realtime: bool = False  # pace a file source at its own frame rate (a file acting as a camera)
    growing_file: bool = False  # a file still being written: at EOF wait for more data
    idle_timeout_s: float = 10.0  # growing file / live source: end after this long without a new frame
    on_eof: str = "auto"  # stop | reconnect | auto (stop for files, reconnect for URLs and growing files)
    open_timeout_s: float = 10.0
    max_frames: int | None = None
    label: MarkingConfig = field(default_factory=MarkingConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    reconnect: ReconnectConfig = field(default_factory=ReconnectConfig)

    def validate(self) -> None:
        if self.queue_size < 1 or self.batch_size < 1 or self.segment_seconds <= 0:
            raise ValueError("queue_size and batch_size must be >= 1, segment_seconds > 0")
        if self.on_eof not in ("auto", "stop", "reconnect"):
            raise ValueError(f"on_eof must be auto, stop or reconnect, got {self.on_eof!r}")


@dataclass
class StreamStats:
    state: str = "starting"  # starting | running | reconnecting | finished | failed | stopped
    frames_read: int = 0
    frames_written: int = 0
    frames_dropped: int = 0
    frames_in_flight: int = 0
    reconnects: int = 0
    segments: int = 0
    queue_high_water: int = 0
    errors: list[str] = field(default_factory=list)
    enhance_seconds: float = 0.0
    rss_mb: float = 0.0  # resident memory of the reading process now: stays flat under overload

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def is_url(source: str) -> bool:
    return source.lower().startswith(URL_PREFIXES)


_DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "rtmp": 1935, "http": 80, "https": 443, "udp": None, "srt": None}


class SourceNotAllowed(ValueError):
    """A stream source outside ``streams.allowed_prefixes``."""


def _url_parts(url: str, entry: bool = False) -> tuple[str, str, int | str | None, str]:
    """(scheme, host, port, path) of a URL; userinfo, a missing host or a bad port are refused, since each
    one lets a string that *starts with* an allowed prefix point somewhere else."""
    from urllib.parse import urlsplit

    if any(c.isspace() or ord(c) < 32 or c == "\\" for c in url):
        raise SourceNotAllowed("URL contains whitespace, control characters or backslashes")
    u = urlsplit(url)
    any_port = entry and (u.netloc.endswith(":") or u.netloc.endswith(":*"))
    if any_port:  # an allow-list entry "scheme://host:" or "scheme://host:*" admits every port of that host
        u = u._replace(netloc=u.netloc.rstrip("*").rstrip(":"))
    if "@" in u.netloc or u.username is not None or u.password is not None:
        raise SourceNotAllowed("URL carries user info (user:password@): not accepted")
    if not u.hostname:
        raise SourceNotAllowed("URL has no host")
    try:
        port = u.port
    except ValueError:
        raise SourceNotAllowed("URL has an invalid port") from None
    scheme = u.scheme.lower()
    path = u.path or "/"
    if any(seg in (".", "..") for seg in path.split("/")):
        raise SourceNotAllowed("URL path has . or .. segments")
    if any_port:
        return scheme, u.hostname.lower(), "*", path
    return scheme, u.hostname.lower(), port if port is not None else _DEFAULT_PORTS.get(scheme), path


def check_source_allowed(source: str, allowed: list[str]) -> str:
    """The canonical form of ``source`` when an entry of ``allowed`` admits it; else ``SourceNotAllowed``.

    Entries are compared by meaning, not as string prefixes (issue 15: ``allowed/../secret/x.mp4`` and
    ``http://127.0.0.1:8099@127.0.0.1:8098/`` both passed a prefix match):

    * a URL entry admits URLs with the same scheme, host and port (the scheme's default port when none is
      written; ``host:`` or ``host:*`` for any port of that host) whose path lies under the entry's path, compared segment by segment; URLs with user info,
      ``.``/``..`` segments, whitespace or backslashes are refused;
    * a path entry is a directory (or one file): it admits a local file whose real path (symlinks resolved,
      ``..`` collapsed) lies inside the entry's real path (``os.path.commonpath``). The returned source is
      that real path, so what is opened is what was checked.
    """
    if "://" in source:
        scheme, host, port, path = _url_parts(source)
        for entry in allowed:
            if "://" not in entry:
                continue
            try:
                e_scheme, e_host, e_port, e_path = _url_parts(entry, entry=True)
            except SourceNotAllowed:
                continue  # a malformed entry admits nothing
            under = path == e_path or e_path.endswith("/") and path.startswith(e_path) or \
                path.startswith(e_path.rstrip("/") + "/")
            if (scheme, host) == (e_scheme, e_host) and e_port in ("*", port) and under:
                return source
        raise SourceNotAllowed("not allowed by streams.allowed_prefixes")
    real = os.path.realpath(source)
    for entry in allowed:
        if "://" in entry:
            continue
        root = os.path.realpath(entry)
        if real == root or os.path.commonpath([real, root]) == root:
            return real
    raise SourceNotAllowed("not allowed by streams.allowed_prefixes")


class DropOldestQueue:
    """A bounded FIFO that never blocks the producer: a put on a full queue evicts the oldest item."""

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._q: collections.deque = collections.deque()
        self._cv = threading.Condition()
        self.dropped = 0
        self.high_water = 0

    def put(self, item) -> None:
        with self._cv:
            if len(self._q) >= self.maxsize:
                self._q.popleft()
                self.dropped += 1
            self._q.append(item)
            self.high_water = max(self.high_water, len(self._q))
            self._cv.notify()

    def take(self, n: int, wait_s: float) -> list:
        """Up to ``n`` items: waits for the first, then at most ``wait_s`` more to fill the batch."""
        with self._cv:
            if not self._q:
                self._cv.wait(timeout=wait_s)
            deadline = time.monotonic() + wait_s
            while len(self._q) < n:
                left = deadline - time.monotonic()
                if left <= 0 or not self._cv.wait(timeout=left):
                    break
            out = [self._q.popleft() for _ in range(min(n, len(self._q)))]
            return out

    def __len__(self) -> int:
        with self._cv:
            return len(self._q)


class SegmentWriter:
    """Rotating MP4 segments with source timestamps; a segment appears under its name only when closed."""

    def __init__(self, out_dir: Path, cfg: StreamConfig, rate: Fraction | None, on_segment: Callable[[dict], None]):
        self.out_dir = out_dir
        self.cfg = cfg
        self.rate = rate
        self.on_segment = on_segment
        self.index = 0
        self._writer = None
        self._tmp: Path | None = None
        self._start_t = 0.0
        self._last_t = 0.0
        self._frames = 0
        self._shape: tuple[int, ...] | None = None
        self.ext = "ts" if cfg.hls else "mp4"
        self.playlist: list[tuple[str, float]] = []

    def write(self, img: np.ndarray, t: float) -> None:
        if (self._writer is None or t - self._start_t >= self.cfg.segment_seconds or img.shape != self._shape):
            self._rotate(t, img.shape)
        self._writer.write(img, int(round(t / OUT_TIME_BASE)))
        self._last_t = t
        self._frames += 1

    def _rotate(self, t: float, shape: tuple[int, ...]) -> None:
        from survsr.enhance.videoio import VideoWriter

        self.close()
        name = f"seg_{self.index:05d}.{self.ext}"
        self._tmp = self.out_dir / f".{name}.tmp"
        o = self.cfg.output
        self._writer = VideoWriter(self._tmp, width=shape[1], height=shape[0], rate=self.rate,
                                   time_base=OUT_TIME_BASE, codec=o.codec, crf=o.crf, preset=o.preset,
                                   format="mpegts" if self.cfg.hls else "mp4", low_latency=True)
        self._start_t, self._frames, self._shape = t, 0, shape

    def close(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        name = f"seg_{self.index:05d}.{self.ext}"
        final = self.out_dir / name
        with open(self._tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(self._tmp, final)
        rec = {"index": self.index, "path": name, "start_s": round(self._start_t, 6), "end_s": round(self._last_t, 6),
               "frames": self._frames, "sha256": sha256_file(final)}
        self.index += 1
        self._writer = None
        if self.cfg.hls:
            frame_s = 1.0 / float(self.rate) if self.rate else 0.04
            self.playlist.append((name, self._last_t - self._start_t + frame_s))
            self.write_playlist(ended=False)
        self.on_segment(rec)

    def write_playlist(self, *, ended: bool) -> None:
        """HLS event playlist of the finished segments (rewritten atomically after each one)."""
        import math

        from survsr.provenance import atomic_write

        target = max([d for _, d in self.playlist] + [self.cfg.segment_seconds])
        lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{math.ceil(target)}",
                 "#EXT-X-MEDIA-SEQUENCE:0", "#EXT-X-PLAYLIST-TYPE:EVENT"]
        for name, dur in self.playlist:
            lines += [f"#EXTINF:{dur:.3f},", name]
        if ended:
            lines.append("#EXT-X-ENDLIST")
        atomic_write(self.out_dir / "index.m3u8", "\n".join(lines) + "\n")


class StreamProcessor:
    """Reader thread -> bounded drop-oldest queue -> batches through ``enhance_fn`` -> segment writer."""

    def __init__(self, cfg: StreamConfig, enhance_fn: EnhanceFn, *, model_sha256: str = "", device: str = ""):
        if not cfg.source:
            raise ValueError("stream source is empty")
        self.cfg = cfg
        self.enhance_fn = enhance_fn
        self.model_sha256 = model_sha256
        self.device = device
        self.out_dir = Path(cfg.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.queue = DropOldestQueue(cfg.queue_size)
        self.stats = StreamStats()
        self._stop = threading.Event()
        self._reader_done = threading.Event()
        self._rate: Fraction | None = None
        self._lock = threading.Lock()

    # -- public
    def stop(self) -> None:
        self._stop.set()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            self.stats.rss_mb = _rss_mb()
            self.stats.frames_dropped = self.queue.dropped
            self.stats.queue_high_water = self.queue.high_water
            return self.stats.as_dict()

    def run(self) -> dict[str, Any]:
        """Process until the source ends (or ``stop()``); returns the final stats."""
        reader = threading.Thread(target=self._read_loop, name="stream-reader", daemon=True)
        reader.start()
        self.stats.state = "running"
        segs = SegmentWriter(self.out_dir, self.cfg, None, self._segment_done)
        try:
            while True:
                batch = self.queue.take(self.cfg.batch_size, self.cfg.batch_wait_s)
                if not batch:
                    if self._reader_done.is_set() and len(self.queue) == 0:
                        break
                    continue
                with self._lock:
                    self.stats.frames_in_flight = len(batch)
                t0 = time.monotonic()
                outs = self.enhance_fn([img for _, img in batch])
                if segs.rate is None:
                    segs.rate = self._rate
                for (t, _), out in zip(batch, outs):
                    segs.write(mark_frame(out, self.cfg.label), t)
                with self._lock:
                    self.stats.enhance_seconds += time.monotonic() - t0
                    self.stats.frames_written += len(batch)
                    self.stats.frames_in_flight = 0
                self._report_metrics(len(batch))
        except BaseException:
            self._stop.set()
            raise
        finally:
            segs.close()
            if self.cfg.hls:
                segs.write_playlist(ended=True)
            reader.join(timeout=self.cfg.open_timeout_s + 5)
        with self._lock:
            if self.stats.state not in ("failed",):
                self.stats.state = "stopped" if self._stop.is_set() else "finished"
        snap = self.snapshot()
        atomic_write_json(self.out_dir / "stream_report.json", {"source": self.cfg.source, **snap})
        log.info("stream %s: %s", self.cfg.source, {k: snap[k] for k in ("state", "frames_read", "frames_written",
                                                                      "frames_dropped", "reconnects", "segments")})
        return snap

    def _report_metrics(self, written: int) -> None:
        # The stream tag never carries credentials (rtsp://user:pass@host/...).
        tag = re.sub(r"//[^/@]*@", "//", str(self.cfg.source))
        dropped = self.queue.dropped - getattr(self, "_dropped_reported", 0)
        self._dropped_reported = self.queue.dropped
        telemetry.stream_frames_enhanced(written, stream=tag)
        telemetry.stream_frames_dropped(dropped, stream=tag)

    # -- reader side
    def _eof_reconnects(self) -> bool:
        if self.cfg.on_eof != "auto":
            return self.cfg.on_eof == "reconnect"
        return is_url(self.cfg.source) or self.cfg.growing_file

    def _open(self):
        import av

        opts = {}
        if self.cfg.source.lower().startswith(("rtsp://", "rtsps://")):
            opts["rtsp_transport"] = "tcp"
        return av.open(self.cfg.source, options=opts, timeout=self.cfg.open_timeout_s)

    def _read_loop(self) -> None:
        cfg = self.cfg
        live = is_url(cfg.source)
        last_t: float | None = None  # last source time handed on (files: resume point after a reopen)
        offset = 0.0  # live sources: shift so the timeline continues across reconnects
        attempt = 0
        seek_ok = True
        last_new = time.monotonic()
        try:
            while not self._stop.is_set():
                try:
                    container = self._open()
                except Exception as exc:  # noqa: BLE001 - every open failure is retried the same way
                    if not self._backoff(attempt, f"open {cfg.source}: {exc}"):
                        return
                    attempt += 1
                    continue
                got_new = seeked = False
                try:
                    vs = container.streams.video[0]
                    rate = vs.average_rate or vs.guessed_rate or Fraction(25)
                    self._rate = self._rate or rate
                    tb = vs.time_base or Fraction(1, 90000)
                    if live and last_t is not None:
                        offset = None  # set from the first frame after the reconnect
                    elif last_t is not None and vs.time_base and seek_ok:
                        try:  # jump close to where we were instead of decoding from the start again
                            container.seek(int(last_t / tb), stream=vs, backward=True)
                            seeked = True
                        except Exception:  # noqa: BLE001 - not seekable: decode from the start and skip
                            seek_ok = False
                    wall0 = time.monotonic()
                    t_first: float | None = None
                    decoded = 0
                    for i, frame in enumerate(container.decode(vs)):
                        decoded += 1
                        if self._stop.is_set():
                            break
                        t = float(frame.pts * tb) if frame.pts is not None else i / float(rate)
                        if live:
                            if offset is None:
                                offset = (last_t + 1.0 / float(rate)) - t
                            t = t + offset
                        elif last_t is not None and t <= last_t + 1e-9:
                            continue  # seen before the reopen
                        if cfg.realtime:
                            t_first = t if t_first is None else t_first
                            delay = wall0 + (t - t_first) - time.monotonic()
                            if delay > 0 and self._stop.wait(delay):
                                break
                        img = frame.to_ndarray(format="rgb24")
                        self.queue.put((t, img))
                        with self._lock:
                            self.stats.frames_read += 1
                        last_t, got_new, attempt = t, True, 0
                        last_new = time.monotonic()
                        if cfg.max_frames is not None and self.stats.frames_read >= cfg.max_frames:
                            return
                    reason = "end of stream"
                    if seeked and not decoded:
                        # some demuxers (MPEG-TS with one keyframe) seek past everything: from now on
                        # reopen from the start and skip what was seen
                        seek_ok = False
                        continue  # (the finally below closes the container)
                except Exception as exc:  # noqa: BLE001 - a broken stream is reconnected, not fatal
                    reason = f"{type(exc).__name__}: {exc}"
                    self._error(f"{cfg.source}: {reason}")
                finally:
                    container.close()
                if self._stop.is_set():
                    return
                if reason == "end of stream" and not self._eof_reconnects():
                    return
                if not got_new and time.monotonic() - last_new > cfg.idle_timeout_s:
                    self._error(f"{cfg.source}: no new frames for {cfg.idle_timeout_s}s, giving up")
                    return
                if cfg.growing_file and reason == "end of stream":
                    self._stop.wait(min(1.0, cfg.reconnect.initial_s))  # poll for growth, no backoff
                    continue
                if not self._backoff(attempt, f"{cfg.source}: {reason}"):
                    return
                attempt += 1
        finally:
            self._reader_done.set()

    def _error(self, msg: str) -> None:
        log.warning(msg)
        with self._lock:
            self.stats.errors = (self.stats.errors + [msg])[-20:]

    def _backoff(self, attempt: int, why: str) -> bool:
        """Sleep before reconnect ``attempt`` (0-based); False when retries are exhausted or stopped."""
        r = self.cfg.reconnect
        if attempt >= r.max_retries:
            self._error(f"{why}; giving up after {attempt} reconnect attempts")
            with self._lock:
                self.stats.state = "failed"
            return False
        delay = min(r.max_s, r.initial_s * r.factor ** attempt)
        with self._lock:
            if not self.stats.errors or self.stats.errors[-1] != why:
                self.stats.errors = (self.stats.errors + [why])[-20:]
            self.stats.reconnects += 1
            self.stats.state = "reconnecting"
        log.info("%s; reconnecting in %.1fs (attempt %d/%d)", why, delay, attempt + 1, r.max_retries)
        stopped = self._stop.wait(delay)
        with self._lock:
            if self.stats.state == "reconnecting":
                self.stats.state = "running"
        return not stopped

    # -- outputs
    def _segment_done(self, rec: dict) -> None:
        cfg_hash = _hash(self.cfg)
        marking = self.cfg.label
        doc = mark_document(provenance(
            "enhanced_stream_segment",
            source={"path": self.cfg.source, "sha256": None, "frame_index": None, "time_s": rec["start_s"],
                    "box": None},
            parents=[], model_output=True,
            stages=[stage_record("stream", cfg_hash, model_sha256=self.model_sha256 or None,
                                 device=self.device or None, start_s=rec["start_s"], end_s=rec["end_s"])]),
            marking)
        atomic_write_json(self.out_dir / f"seg_{rec['index']:05d}.json",
                          {"kind": "enhanced_stream_segment", **rec, "model_output": True, PROVENANCE_KEY: doc})
        line = json.dumps(rec, sort_keys=True) + "\n"
        fd = os.open(self.out_dir / "segments.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        with self._lock:
            self.stats.segments += 1


def _rss_mb() -> float:
    try:  # Linux: resident pages from /proc, no dependency
        with open("/proc/self/statm") as f:
            return round(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return 0.0


def _hash(cfg: StreamConfig) -> str:
    from survsr.config import config_hash

    return config_hash(cfg)


# ---------------------------------------------------------------- Ray actor

def _stream_actor_cls():
    import ray

    @ray.remote(max_concurrency=4)  # run() blocks one thread; stats()/stop() stay callable
    class StreamActor:
        def __init__(self, cfg_dict: dict, app_name: str):
            from ray import serve

            from survsr.serve.schema import MODEL_DEPLOYMENT
            from survsr.config import from_dict

            cfg = from_dict(StreamConfig, cfg_dict)
            handle = serve.get_deployment_handle(MODEL_DEPLOYMENT, app_name=app_name)
            info = handle.info.remote().result()

            def enhance_fn(frames):
                return handle.enhance_many.remote(list(frames)).result()

            self.proc = StreamProcessor(cfg, enhance_fn, model_sha256=info["model_sha256"], device=info["device"])

        def run(self) -> dict:
            return self.proc.run()

        def stats(self) -> dict:
            return self.proc.snapshot()

        def stop(self) -> None:
            self.proc.stop()

    return StreamActor


def start_stream(cfg: StreamConfig, app_name: str = "survsr", *, num_cpus: float = 0.5):
    """Start a StreamActor on the running Serve app's model; returns (actor, ObjectRef of the final stats)."""
    from survsr.config import to_dict

    actor = _stream_actor_cls().options(num_cpus=num_cpus).remote(to_dict(cfg), app_name)
    return actor, actor.run.remote()
