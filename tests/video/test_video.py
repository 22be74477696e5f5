"""video/: decoding (formats, sampling, bad inputs), Haar detection on real faces, tracking, crops.

MTCNN (the default detector) has its own tests in test_mtcnn.py; here the Haar detector is named explicitly."""

from __future__ import annotations

import numpy as np
import pytest

from survsr.video.crops import make_lr, sharpness
from survsr.video.decode import VideoError, expand_inputs, iter_frames, probe
from survsr.video.detect import DetectorConfig, Detection, expand_box, iou, make_detector
from survsr.video.synth import background, moving_face_frames, write_clip
from survsr.video.track import SelectConfig, TrackerConfig, link_tracks, select_best


@pytest.fixture(scope="module")
def detector():
    return make_detector(DetectorConfig(kind="haar"))


@pytest.fixture(scope="module")
def carphone_detections(carphone, detector):
    out = {}
    for name in ("pristine", "distorted"):
        out[name] = [(f.index, f.time_s, detector.detect(f.image)) for f in iter_frames(carphone[name])]
    return out


@pytest.fixture(scope="module")
def astronaut_clip(tmp_path_factory):
    frames, boxes = moving_face_frames(n=24, width=224, height=168, sizes=(40, 20))
    path = write_clip(tmp_path_factory.mktemp("clips") / "astronaut.mp4", frames, fps=25)
    return path, boxes


# ------------------------------------------------------------------------------------------ decoding
def test_carphone_decodes_with_index_and_time(carphone):
    frames = list(iter_frames(carphone["pristine"]))
    assert len(frames) == 120
    assert [f.index for f in frames] == list(range(120))
    assert frames[0].image.shape == (144, 176, 3) and frames[0].image.dtype == np.uint8
    # 29.97 fps: frame 30 is at 30 * 1001 / 30000 s
    assert frames[30].time_s == pytest.approx(30 * 1001 / 30000, abs=1e-6)
    assert probe(carphone["pristine"])["frames"] == 120


def test_sampling_options(carphone):
    p = carphone["pristine"]
    assert [f.index for f in iter_frames(p, stride=7, max_frames=4)] == [0, 7, 14, 21]
    assert [f.index for f in iter_frames(p, fps=10)][:5] == [0, 3, 6, 9, 12]
    assert len(list(iter_frames(p, fps=10))) == 40
    window = list(iter_frames(p, start_s=1.0, end_s=1.5))
    assert window[0].index == 30 and all(1.0 <= f.time_s < 1.5 for f in window) and len(window) == 15


@pytest.mark.parametrize("ext,codec", [(".mkv", "libx264"), (".avi", "mpeg4"), (".mov", "mjpeg"), (".ts", "mpeg2video"),
                                       (".webm", "libvpx")])
def test_containers_and_codecs(tmp_path, ext, codec):
    bg = background(96, 64)
    frames = [np.roll(bg, 3 * i, axis=1) for i in range(10)]
    path = write_clip(tmp_path / f"clip{ext}", frames, fps=10, codec=codec)
    got = list(iter_frames(path))
    assert len(got) == 10 and got[0].image.shape == (64, 96, 3)
    assert got[5].time_s == pytest.approx(0.5, abs=0.02)
    # lossy codecs: still close to what was encoded
    assert np.abs(got[5].image.astype(int) - frames[5].astype(int)).mean() < 12


def test_expand_inputs_dir_glob_missing(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("a/x.mp4", "a/y.MKV", "a/notes.txt", "z.avi"):
        (tmp_path / name).write_bytes(b"0")
    (tmp_path / "empty_dir").mkdir()
    got = expand_inputs([tmp_path / "a", str(tmp_path / "*.avi"), "rtsp://127.0.0.1/cam", "/nope/missing.mp4",
                         tmp_path / "empty_dir"])
    assert got == [str(tmp_path / "a/x.mp4"), str(tmp_path / "a/y.MKV"), str(tmp_path / "z.avi"),
                   "rtsp://127.0.0.1/cam", "/nope/missing.mp4", str(tmp_path / "empty_dir")]
    with pytest.raises(VideoError, match="is a directory"):
        list(iter_frames(tmp_path / "empty_dir"))


def _bad_inputs(tmp_path, carphone):
    data = carphone["pristine"].read_bytes()
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("this is not a video\n")
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])  # moov atom at the end: lost
    return data


def test_bad_inputs_name_the_file(tmp_path, carphone):
    _bad_inputs(tmp_path, carphone)
    cases = {"empty.mp4": "empty file (0 bytes)", "text.mp4": "not a readable video",
             "truncated.mp4": "not a readable video", "missing.mp4": "no such file"}
    for name, reason in cases.items():
        path = tmp_path / name
        with pytest.raises(VideoError) as err:
            list(iter_frames(path))
        assert str(err.value).startswith(str(path)) and reason in str(err.value), str(err.value)


def test_truncated_faststart_keeps_frames_then_raises(tmp_path):
    frames = [np.roll(background(128, 96), 5 * i, axis=1) for i in range(40)]
    full = write_clip(tmp_path / "full.mp4", frames, fps=25, container_options={"movflags": "faststart"})
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    got = []
    with pytest.raises(VideoError) as err:
        for f in iter_frames(cut):
            got.append(f.index)
    assert 5 <= len(got) < 40 and got == list(range(len(got)))
    assert str(err.value).startswith(str(cut)) and "truncated" in str(err.value)
    assert err.value.frames_decoded == len(got)


def _patch_avi_frame_count(data: bytes, factor: int) -> bytes:
    """Multiply the frame counts an AVI header declares (avih dwTotalFrames, strh dwLength)."""
    import struct

    b = bytearray(data)
    for tag, off in ((b"avih", 8 + 16), (b"strh", 8 + 32)):
        i = b.find(tag)
        assert i >= 0, tag
        (n,) = struct.unpack_from("<I", b, i + off)
        struct.pack_into("<I", b, i + off, n * factor)
    return bytes(b)


def test_overdeclared_avi_header_is_a_warning_not_a_failure(tmp_path):
    frames = [np.roll(background(128, 96), 5 * i, axis=1) for i in range(30)]
    avi = write_clip(tmp_path / "clip.avi", frames, fps=25)
    lying = tmp_path / "lying.avi"
    lying.write_bytes(_patch_avi_frame_count(avi.read_bytes(), 2))
    assert probe(lying)["frames"] == 60
    warnings: list[str] = []
    got = [f.index for f in iter_frames(lying, warnings=warnings)]  # no VideoError
    assert got == list(range(30))
    assert len(warnings) == 1 and "declares 60" in warnings[0] and warnings[0].startswith(str(lying))


# ----------------------------------------------------------------------------------------- detection
def test_carphone_pristine_face_in_most_frames_one_track(carphone_detections):
    dets = carphone_detections["pristine"]
    with_face = sum(1 for _, _, d in dets if d)
    assert with_face >= 60, with_face
    items = [(i, t, d.raw_box) for i, t, ds in dets for d in ds]
    tracks = link_tracks(items, TrackerConfig())
    assert set(tracks) - {-1} == {0}
    assert tracks.count(0) >= 60
    # boxes: square after margin, inside the frame, detector label and score set
    for _, _, ds in dets:
        for d in ds:
            x, y, w, h = d.box
            assert x >= 0 and y >= 0 and x + w <= 176 and y + h <= 144 and w == h
            assert d.detector == "haar-frontal" and d.score > 0


def test_carphone_distorted_still_detected(carphone_detections):
    with_face = sum(1 for _, _, d in carphone_detections["distorted"] if d)
    assert with_face >= 10, with_face


def test_astronaut_small_moving_face(astronaut_clip, detector):
    path, truth = astronaut_clip
    items, hits = [], 0
    for f in iter_frames(path):
        ds = detector.detect(f.image)
        for d in ds:
            items.append((f.index, f.time_s, d.raw_box))
        best = max((iou(d.raw_box, truth[f.index]) for d in ds), default=0.0)
        hits += best >= 0.5
    assert hits >= 0.7 * len(truth), hits
    tracks = link_tracks(items, TrackerConfig())
    kept = [(it, t) for it, t in zip(items, tracks) if t >= 0]
    assert {t for _, t in kept} == {0}
    assert all(iou(it[2], truth[it[0]]) >= 0.5 for it, _ in kept)
    # the smallest faces (20-26 px) are found too: the detector upsamples for them
    assert any(truth[it[0]][2] <= 26 for it, _ in kept)


def test_no_face_in_background(detector):
    assert detector.detect(background(224, 168, seed=5)) == []


def test_detector_config_validation():
    with pytest.raises(ValueError):
        make_detector(DetectorConfig(kind="haar", min_face=2))
    with pytest.raises(ValueError, match="unknown detector kind"):
        make_detector(DetectorConfig(kind="yolo"))  # type: ignore[arg-type]


def test_expand_box_square_and_inside():
    assert expand_box((10, 10, 20, 20), 0.25, 100, 100) == (5, 5, 30, 30)
    assert expand_box((0, 0, 20, 20), 0.5, 100, 100) == (0, 0, 40, 40)  # shifted inward, still square
    assert expand_box((90, 50, 20, 20), 0.0, 100, 80) == (80, 50, 20, 20)
    assert expand_box((0, 0, 60, 60), 0.5, 100, 50) == (0, 0, 100, 50)  # larger than the frame: clipped


# ------------------------------------------------------------------------------------ tracking, crops
def test_tracker_two_people_and_gap():
    a = [(i, i / 25, (10 + i, 10, 30, 30)) for i in range(20)]
    b = [(i, i / 25, (150 - i, 60, 28, 28)) for i in range(5, 20)]
    late = [(i, i / 25, (30, 10, 30, 30)) for i in range(200, 205)]  # 7 s later: a new track
    blip = [(3, 3 / 25, (100, 100, 20, 20))]  # single false positive
    tracks = link_tracks(a + b + late + blip, TrackerConfig(max_gap_s=2.0, min_detections=3))
    assert tracks[:20] == [0] * 20 and tracks[20:35] == [1] * 15 and tracks[35:40] == [2] * 5
    assert tracks[40] == -1


def test_select_best_prefers_sharp_and_large():
    items = [(0, 10.0, 40), (1, 500.0, 40), (2, 500.0, 80), (3, 5.0, 20), (4, 499.0, 80)]
    assert select_best(items, SelectConfig(best_k=2)) == [2, 4]
    assert select_best(items, SelectConfig(best_k=3, min_frame_gap=2)) == [0, 2, 4]
    assert select_best(items, SelectConfig(best_k=3, min_frame_gap=3)) == [2]
    assert select_best(items, SelectConfig(best_k=0)) == [0, 1, 2, 3, 4]


def test_lr_never_silently_upscaled():
    big = np.random.default_rng(0).integers(0, 255, (70, 70, 3), dtype=np.uint8)
    lr, method = make_lr(big, 32)
    assert lr.shape == (32, 32, 3) and method == "area"
    small, method = make_lr(big[:20, :20], 32)
    assert small.shape == (32, 32, 3) and method == "bicubic-upscale"
    same, method = make_lr(big[:32, :32], 32)
    assert method == "none" and np.array_equal(same, big[:32, :32])
    blurred = np.full((64, 64, 3), 128, np.uint8)
    assert sharpness(big) > 100 * (sharpness(blurred) + 1e-3)


@pytest.mark.parametrize("kind", ["haar", "mtcnn"])
def test_detection_contract(carphone, kind):
    """What every detector hands the tracker and the cropper (video/detect.py's ``Detection``), checked on its
    real output: plain-int square boxes inside the frame that are the tight box grown by the configured margin
    (shifted inward at a border), a float score in the detector's range, its label, landmarks only where the
    detector has them, and left-to-right order. Frames: carphone, two people side by side (the frame and its
    mirror image), and the face cut by the left border."""
    cfg = DetectorConfig(kind=kind)
    det = make_detector(cfg)
    a, b = (f.image for f in iter_frames(carphone["pristine"], max_frames=2, stride=20))
    pair = np.ascontiguousarray(np.concatenate([b, b[:, ::-1]], axis=1))
    images = [a, pair, np.ascontiguousarray(a[:, 50:])]
    per_frame = [det.detect(img) for img in images]
    assert [len(d) for d in per_frame] == [1, 2, 1], per_frame
    for img, dets in zip(images, per_frame):
        fh, fw = img.shape[:2]
        for d in dets:
            assert isinstance(d, Detection)
            for box in (d.box, d.raw_box):
                assert type(box) is tuple and len(box) == 4 and all(type(v) is int for v in box), box
                x, y, w, h = box
                assert 0 <= x and 0 <= y and x + w <= fw and y + h <= fh and w > 0 and h > 0, box
            assert d.box == expand_box(d.raw_box, cfg.margin, fw, fh)
            assert d.box[2] == d.box[3] and d.box[2] > max(d.raw_box[2:])  # square, with its margin
            assert type(d.score) is float
            if kind == "haar":
                assert d.detector == "haar-frontal" and d.landmarks is None and d.score >= 1.0
            else:
                assert d.detector == "mtcnn" and cfg.thresholds[2] <= d.score <= 1.0
                assert len(d.landmarks) == 10 and all(type(v) is float for v in d.landmarks)
        assert [d.raw_box[:2] for d in dets] == sorted(d.raw_box[:2] for d in dets)
    assert per_frame[2][0].box[0] == 0  # the margin crossed the border: the square box was shifted inward
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        det.detect(a.astype(np.float32))


def test_http_url_source(tmp_path):
    """A network source (http on 127.0.0.1 only): frames, times, and a clear error for a bad URL."""
    import functools
    import http.server
    import threading

    frames = [np.roll(background(96, 64), 4 * i, axis=1) for i in range(12)]
    write_clip(tmp_path / "cam.mp4", frames, fps=12, container_options={"movflags": "faststart"})
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/cam.mp4"
        got = list(iter_frames(url, max_frames=8, timeout_s=5))
        assert [f.index for f in got] == list(range(8)) and got[4].time_s == pytest.approx(4 / 12, abs=0.01)
        with pytest.raises(VideoError) as err:
            list(iter_frames(url.replace("cam.mp4", "nope.mp4"), timeout_s=5))
        assert str(err.value).startswith(url.replace("cam.mp4", "nope.mp4"))
    finally:
        server.shutdown()
        server.server_close()


def test_profile_cascade_and_sequence_mode(carphone):
    frames = [f.image for f in iter_frames(carphone["pristine"], max_frames=16)]
    both = make_detector(DetectorConfig(kind="haar", profile=True))
    dets = both.detect(frames[0])
    assert len(dets) == 1 and dets[0].detector in ("haar-frontal", "haar-profile")
    # sequence mode: region scans between full scans find the same face, close to the full-scan boxes
    full = make_detector(DetectorConfig(kind="haar", full_scan_every=1)).detect_sequence(frames)
    seq = make_detector(DetectorConfig(kind="haar", full_scan_every=4)).detect_sequence(frames)
    assert sum(bool(d) for d in seq) >= 14
    for a, b in zip(full, seq):
        if a and b:
            assert iou(a[0].raw_box, b[0].raw_box) >= 0.6
