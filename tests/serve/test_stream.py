"""Live-stream processing without Ray: bounded queue accounting under overload, timestamps, segments,
and reconnection with backoff against a flaky HTTP source on 127.0.0.1."""

from __future__ import annotations

import http.server
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from survsr.serve.stream import DropOldestQueue, ReconnectConfig, StreamConfig, StreamProcessor
from survsr.serve.synthetic import make_clip
from survsr.enhance.videoio import read_frame_times
from survsr.marking import MarkingConfig


def _x2(frames):
    return [np.repeat(np.repeat(f, 2, 0), 2, 1) for f in frames]


def _segments(out: Path) -> tuple[list[dict], list[float]]:
    recs = [json.loads(line) for line in (out / "segments.jsonl").read_text().splitlines()]
    times: list[float] = []
    for r in recs:
        times += read_frame_times(out / r["path"])
    return recs, times


def test_drop_oldest_queue_is_bounded():
    q = DropOldestQueue(3)
    for i in range(10):
        q.put(i)
    assert q.dropped == 7 and q.high_water == 3
    assert q.take(5, 0.01) == [7, 8, 9]


def test_overload_drops_are_counted_and_timestamps_kept(tmp_path):
    clip = make_clip(tmp_path / "cam.mp4", n=60, size=(64, 48), fps=25)
    src_times = read_frame_times(clip)

    def slow(frames):
        time.sleep(0.05)  # the "model" is far slower than the decoder: overload
        return _x2(frames)

    cfg = StreamConfig(source=str(clip), out_dir=str(tmp_path / "out"), queue_size=4, batch_size=2,
                       batch_wait_s=0.01, segment_seconds=0.5, label=MarkingConfig(enabled=False))
    stats = StreamProcessor(cfg, slow).run()
    assert stats["state"] == "finished"
    assert stats["frames_read"] == 60
    assert stats["frames_dropped"] > 0
    assert stats["frames_written"] + stats["frames_dropped"] == stats["frames_read"]
    assert stats["queue_high_water"] <= 4  # memory bounded by the queue, whatever the input rate
    recs, times = _segments(tmp_path / "out")
    assert sum(r["frames"] for r in recs) == stats["frames_written"] == len(times)
    assert stats["segments"] == len(recs) >= 1
    # every written frame keeps its source time; dropped ones leave gaps
    assert all(b > a for a, b in zip(times, times[1:]))
    assert all(min(abs(t - s) for s in src_times) < 1e-3 for t in times)
    report = json.loads((tmp_path / "out" / "stream_report.json").read_text())
    assert report["frames_dropped"] == stats["frames_dropped"]


def test_no_overload_no_drops_segments_cover_the_clip(tmp_path):
    clip = make_clip(tmp_path / "cam.mp4", n=50, size=(64, 48), fps=25)
    cfg = StreamConfig(source=str(clip), out_dir=str(tmp_path / "out"), queue_size=64, batch_size=8,
                       segment_seconds=0.8, realtime=True)
    t0 = time.monotonic()
    stats = StreamProcessor(cfg, _x2).run()
    assert time.monotonic() - t0 >= 1.5  # paced like a camera: 50 frames at 25 fps
    assert stats["frames_dropped"] == 0 and stats["frames_written"] == 50
    recs, times = _segments(tmp_path / "out")
    assert len(recs) >= 2  # 2 s of footage in 0.8 s segments
    assert times == pytest.approx(read_frame_times(clip), abs=1e-3)
    from survsr.marking import band_height, label_present

    import av

    with av.open(str(tmp_path / "out" / recs[0]["path"])) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert frame.shape == (96 + band_height(128, MarkingConfig()), 128, 3)  # band added below the 128x96 picture
    assert label_present(frame, tolerance=12)  # lossy H.264: the band survives within a few levels
    side = json.loads((tmp_path / "out" / "seg_00000.json").read_text())
    assert side["survsr:provenance"]["model_output"] is True


class _FlakyHandler(http.server.SimpleHTTPRequestHandler):
    fail_first = 2
    calls = 0

    def do_GET(self):  # noqa: N802 - http.server's naming
        type(self).calls += 1
        if type(self).calls <= type(self).fail_first:
            self.send_error(503, "camera warming up")
            return
        super().do_GET()

    def log_message(self, *args):
        pass


def serve_dir(directory: Path, fail_first: int = 0):
    handler = type("H", (_FlakyHandler,), {"fail_first": fail_first, "calls": 0})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                          lambda *a, **k: handler(*a, directory=str(directory), **k))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, handler


def test_http_source_reconnects_with_backoff(tmp_path):
    make_clip(tmp_path / "cam.ts", n=30, size=(64, 48), fps=25, format="mpegts")
    srv, handler = serve_dir(tmp_path, fail_first=2)
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/cam.ts"
        cfg = StreamConfig(source=url, out_dir=str(tmp_path / "out"), on_eof="stop", queue_size=64,
                           reconnect=ReconnectConfig(max_retries=5, initial_s=0.1, max_s=1.0))
        t0 = time.monotonic()
        stats = StreamProcessor(cfg, _x2).run()
    finally:
        srv.shutdown()
    assert stats["reconnects"] == 2 and handler.calls >= 3
    assert time.monotonic() - t0 >= 0.1 + 0.2  # exponential backoff: 0.1 s then 0.2 s
    assert stats["frames_read"] == 30 and stats["frames_written"] == 30
    assert any("503" in e or "HTTP" in e or "Server" in e for e in stats["errors"]), stats["errors"]


def test_source_that_never_comes_up_gives_up(tmp_path):
    cfg = StreamConfig(source="http://127.0.0.1:9/nothing.ts", out_dir=str(tmp_path / "out"), open_timeout_s=1,
                       reconnect=ReconnectConfig(max_retries=2, initial_s=0.05, max_s=0.1))
    stats = StreamProcessor(cfg, _x2).run()
    assert stats["state"] == "failed" and stats["frames_read"] == 0 and stats["reconnects"] == 2
    assert "giving up" in stats["errors"][-1]


def test_growing_file_is_followed_until_idle(tmp_path):
    """A recorder still writing an MPEG-TS file: the reader follows it across EOFs without duplicating
    or losing frames, and ends after idle_timeout_s without growth."""
    full = make_clip(tmp_path / "full.ts", n=40, size=(64, 48), fps=25, format="mpegts").read_bytes()
    growing = tmp_path / "growing.ts"
    chunk = 188 * (len(full) // 188 // 4 + 1)  # whole TS packets, four appends
    growing.write_bytes(full[:chunk])

    def recorder():
        for off in range(chunk, len(full), chunk):
            time.sleep(0.4)
            with open(growing, "ab") as f:
                f.write(full[off:off + chunk])

    t = threading.Thread(target=recorder)
    t.start()
    cfg = StreamConfig(source=str(growing), out_dir=str(tmp_path / "out"), growing_file=True, idle_timeout_s=1.5,
                       queue_size=64, reconnect=ReconnectConfig(initial_s=0.2))
    stats = StreamProcessor(cfg, _x2).run()
    t.join()
    src = read_frame_times(tmp_path / "full.ts")
    _, times = _segments(tmp_path / "out")
    assert stats["frames_read"] == len(src) == 40 and stats["frames_dropped"] == 0
    assert times == pytest.approx(src, abs=1e-3)


def test_hls_output_plays_back_as_one_stream(tmp_path):
    import av

    clip = make_clip(tmp_path / "cam.mp4", n=50, size=(64, 48), fps=25)
    cfg = StreamConfig(source=str(clip), out_dir=str(tmp_path / "out"), hls=True, segment_seconds=0.6,
                       queue_size=64)
    stats = StreamProcessor(cfg, _x2).run()
    playlist = (tmp_path / "out" / "index.m3u8").read_text().splitlines()
    segs = [x for x in playlist if x.endswith(".ts")]
    assert playlist[0] == "#EXTM3U" and playlist[-1] == "#EXT-X-ENDLIST" and len(segs) == stats["segments"] >= 3
    total = sum(float(x.split(":")[1].rstrip(",")) for x in playlist if x.startswith("#EXTINF"))
    assert total == pytest.approx(50 / 25, abs=0.05)
    with av.open(str(tmp_path / "out" / "index.m3u8")) as c:  # FFmpeg's HLS demuxer reads it as one stream
        times = [float(f.pts * c.streams.video[0].time_base) for f in c.decode(video=0)]
    assert len(times) == stats["frames_written"] == 50
    src = read_frame_times(clip)
    assert [t - times[0] for t in times] == pytest.approx([t - src[0] for t in src], abs=1e-3)
