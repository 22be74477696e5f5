"""MTCNN detector (our modules + the facenet-pytorch wheel's weights), motion map, track filters."""

from __future__ import annotations

import numpy as np
import pytest

import torch

from survsr.video.decode import iter_frames
from survsr.video.detect import DetectorConfig, iou, make_detector
from survsr.video.motion import MotionConfig, MotionMap
from survsr.video.track import FilterConfig, filter_track, frontalness, size_jitter


@pytest.fixture(scope="module")
def carphone_frames(carphone):
    return [f.image for f in iter_frames(carphone["pristine"], max_frames=12)]


def test_missing_weights_error_names_the_install_command(tmp_path, monkeypatch):
    from survsr.video import mtcnn

    monkeypatch.setenv("SURVSR_MTCNN_DIR", str(tmp_path))
    mtcnn.load_nets.cache_clear()
    with pytest.raises(RuntimeError, match=r"pip install --no-deps facenet-pytorch==2\.6\.0"):
        mtcnn.load_nets("cpu")
    mtcnn.load_nets.cache_clear()


def test_carphone_one_face_with_landmarks_inside(carphone_frames):
    det = make_detector(DetectorConfig(kind="mtcnn"))
    per_frame = det.detect_batch(carphone_frames)
    assert [len(d) for d in per_frame] == [1] * len(carphone_frames)
    for (d,) in per_frame:
        assert d.score > 0.99 and d.detector == "mtcnn"
        x, y, w, h = d.raw_box
        assert 40 <= w <= 110 and 40 <= h <= 110  # the carphone face is ~60-80 px in a 176x144 frame
        pts = np.array(d.landmarks).reshape(5, 2)
        assert ((pts[:, 0] >= x) & (pts[:, 0] <= x + w) & (pts[:, 1] >= y) & (pts[:, 1] <= y + h)).all()
        assert pts[0, 0] < pts[1, 0] and pts[3, 1] > pts[0, 1]  # left eye left of right eye, mouth below eyes
        assert frontalness(d.landmarks) > 0.3


def test_matches_facenet_pytorch_reference(carphone_frames):
    """Same weights, same cascade: boxes agree with facenet-pytorch's own detect_face (when importable)."""
    import importlib.util

    from survsr.video.mtcnn import MTCNN, weights_dir

    # load the reference cascade's file alone (the package's __init__ pulls in training helpers and tqdm)
    spec = importlib.util.spec_from_file_location(
        "fnp_detect_face", weights_dir().parent / "models" / "utils" / "detect_face.py")
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)

    ours = MTCNN(min_face=12, thresholds=(0.6, 0.7, 0.9))
    frames = np.stack(carphone_frames[:4])
    with torch.no_grad():  # as facenet-pytorch's MTCNN.detect calls it
        rb, rp = ref.detect_face(frames, 12, ours.pnet, ours.rnet, ours.onet, [0.6, 0.7, 0.9], 0.709, "cpu")
    ob, op = ours.detect(frames)
    for r, o, rpt, opt in zip(rb, ob, rp, op):
        assert len(r) == len(o) == 1
        assert iou(_xywh(r[0]), _xywh(o[0])) > 0.85
        assert abs(float(r[0][4]) - float(o[0][4])) < 0.02
        assert np.abs(np.asarray(rpt[0], float) - opt[0]).max() < 3.0  # landmarks within 3 px


def _xywh(b):
    return (int(b[0]), int(b[1]), int(b[2] - b[0]), int(b[3] - b[1]))


def test_detection_stride_follows_the_face(carphone_frames):
    full = make_detector(DetectorConfig(kind="mtcnn", full_scan_every=1)).detect_sequence(carphone_frames)
    strided = make_detector(DetectorConfig(kind="mtcnn", full_scan_every=4)).detect_sequence(carphone_frames)
    for a, b in zip(full, strided):
        assert len(a) == len(b) == 1
        assert iou(a[0].raw_box, b[0].raw_box) > 0.6


def test_no_face_in_noise_and_reduced_resolution(carphone_frames):
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 255, (144, 176, 3), dtype=np.uint8) for _ in range(4)]
    det = make_detector(DetectorConfig(kind="mtcnn"))
    assert sum(len(d) for d in det.detect_batch(noise)) == 0
    # detection on a half-size copy: same face, boxes mapped back to full-resolution pixels
    small = make_detector(DetectorConfig(kind="mtcnn", detect_max_side=88))
    for img in carphone_frames[:3]:
        (a,), (b,) = det.detect(img), small.detect(img)
        assert iou(a.raw_box, b.raw_box) > 0.6


def test_motion_map_separates_still_from_moving():
    frames = []
    rng = np.random.default_rng(1)
    base = rng.integers(0, 255, (90, 160, 3), dtype=np.uint8)
    for i in range(20):
        f = base.copy()
        f[30:60, 10 + 4 * i:40 + 4 * i] = 255 if i % 2 else 0  # a blob moving right
        frames.append(f)
    m = MotionMap(MotionConfig())
    for f in frames:
        m.update(f)
    assert m.box_motion((20, 30, 60, 30)) > 0.5  # where the blob went
    assert m.box_motion((120, 0, 40, 20)) == 0.0  # a corner nothing crossed
    again = MotionMap.from_dict(m.to_dict())
    assert np.array_equal(again.counts, m.counts)


def test_track_filters_and_quality_parts():
    ok = FilterConfig(min_mean_score=0.95, max_size_jitter=0.2)
    frames = list(range(10))
    assert filter_track(frames, [0.99] * 10, [40 + i for i in range(10)], 3, ok) is None
    assert filter_track(frames[:2], [0.99] * 2, [40, 41], 3, ok)[0] == "min_length"
    assert filter_track(frames, [0.9] * 10, [40] * 10, 3, ok)[0] == "min_mean_score"
    jumpy = [40, 60, 35, 70, 30, 65, 40, 80, 30, 60]
    assert size_jitter(jumpy) > 0.4
    assert filter_track(frames, [0.99] * 10, jumpy, 3, ok)[0] == "steady_size"
    assert filter_track(frames, [0.99] * 10, jumpy, 3, FilterConfig(max_size_jitter=0)) is None  # off
    frontal = (10, 10, 30, 10, 20, 20, 12, 30, 28, 30)
    turned = (10, 10, 30, 10, 29, 20, 12, 30, 28, 30)
    assert frontalness(frontal) == 1.0 and frontalness(turned) < 0.2 and frontalness(None) is None
