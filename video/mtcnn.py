"""MTCNN (Zhang et al. 2016) face detector: our own P/R/O-Net modules and cascade, batched over frames.

The trained weights are the state dicts shipped inside the facenet-pytorch 2.6.0 wheel
(``facenet_pytorch/data/{pnet,rnet,onet}.pt``, about 2 MB). Only those files are read: the package itself is
never imported (its metadata pins torch<2.3 and numpy<2, so it is installed with ``pip install --no-deps``).
Nothing is downloaded at run time.

The cascade follows facenet-pytorch's ``detect_face`` (thresholds, pyramid factor 0.709, NMS 0.5/0.7/0.7,
"Min"-NMS after O-Net, box regression, squaring) with two differences: the P-Net pyramid is run on the
whole batch of frames at once per scale, and the R-/O-Net crops are resampled with one ``roi_align`` call
instead of a Python loop (bilinear instead of area; scores differ by ~1e-3, see tests/video/test_mtcnn.py).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

INSTALL_HINT = "pip install --no-deps facenet-pytorch==2.6.0"


class PNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, 3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, 3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, 3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), F.softmax(self.conv4_1(x), dim=1)


class RNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, 3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, 3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, 2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        # The weights were converted from Caffe/TF: the dense layer expects (w, h, c) order.
        x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
        return self.dense5_2(x), F.softmax(self.dense5_1(x), dim=1)


class ONet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, 3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, 2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
        return self.dense6_2(x), self.dense6_3(x), F.softmax(self.dense6_1(x), dim=1)


def weights_dir() -> Path:
    """Folder holding pnet.pt/rnet.pt/onet.pt (from the installed facenet-pytorch wheel, or $SURVSR_MTCNN_DIR)."""
    env = os.environ.get("SURVSR_MTCNN_DIR")
    if env:
        d = Path(env)
    else:
        spec = importlib.util.find_spec("facenet_pytorch")  # locates the package without importing it
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("MTCNN weights not found: the detector 'mtcnn' reads the weights shipped in the "
                               f"facenet-pytorch 2.6.0 wheel. Install them with `{INSTALL_HINT}` (--no-deps: its "
                               "metadata pins an old torch), set SURVSR_MTCNN_DIR to a folder holding "
                               "pnet.pt/rnet.pt/onet.pt, or use detector.kind=haar.")
        d = Path(list(spec.submodule_search_locations)[0]) / "data"
    missing = [n for n in ("pnet.pt", "rnet.pt", "onet.pt") if not (d / n).is_file()]
    if missing:
        raise RuntimeError(f"MTCNN weights incomplete in {d}: missing {', '.join(missing)} ({INSTALL_HINT})")
    return d


@functools.lru_cache(maxsize=4)
def load_nets(device: str = "cpu") -> tuple[PNet, RNet, ONet]:
    d = weights_dir()
    nets = []
    for cls, name in ((PNet, "pnet.pt"), (RNet, "rnet.pt"), (ONet, "onet.pt")):
        net = cls()
        state = torch.load(d / name, map_location="cpu", weights_only=True)
        net.load_state_dict(state)  # strict: a wrong file fails here, loudly
        # channels_last: oneDNN's convolutions and pooling run about twice as fast on CPU in this layout.
        nets.append(net.eval().to(device).to(memory_format=torch.channels_last))
    return tuple(nets)  # type: ignore[return-value]


def _rerec(b: torch.Tensor) -> torch.Tensor:
    """Make boxes (x1, y1, x2, y2, ...) square around their centre (side = the longer side)."""
    b = b.clone()
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    side = torch.maximum(w, h)
    b[:, 0] = b[:, 0] + w * 0.5 - side * 0.5
    b[:, 1] = b[:, 1] + h * 0.5 - side * 0.5
    b[:, 2] = b[:, 0] + side
    b[:, 3] = b[:, 1] + side
    return b


def _bbreg(b: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    b = b.clone()
    w = b[:, 2] - b[:, 0] + 1
    h = b[:, 3] - b[:, 1] + 1
    b[:, 0] += reg[:, 0] * w
    b[:, 1] += reg[:, 1] * h
    b[:, 2] += reg[:, 2] * w
    b[:, 3] += reg[:, 3] * h
    return b


def _nms_min(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, thr: float) -> torch.Tensor:
    """NMS with overlap = intersection / smaller area (MTCNN's last step: drops a box inside a bigger face)."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long)
    b = boxes.detach().cpu().double().numpy()
    s = scores.detach().cpu().numpy()
    ids = idxs.detach().cpu().numpy()
    area = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    order = np.argsort(-s, kind="stable")
    keep = []
    suppressed = np.zeros(len(s), bool)
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        xx1 = np.maximum(b[i, 0], b[:, 0])
        yy1 = np.maximum(b[i, 1], b[:, 1])
        xx2 = np.minimum(b[i, 2], b[:, 2])
        yy2 = np.minimum(b[i, 3], b[:, 3])
        inter = np.maximum(0, xx2 - xx1 + 1) * np.maximum(0, yy2 - yy1 + 1)
        o = inter / np.minimum(area[i], area)
        suppressed |= (o > thr) & (ids == ids[i])
    return torch.as_tensor(np.asarray(keep, dtype=np.int64))


class MTCNN:
    """Three-stage cascade on a batch of same-size RGB frames.

    ``detect(frames)`` -> per frame an array (n, 5) of x1, y1, x2, y2, score and an array (n, 5, 2) of
    landmarks (left eye, right eye, nose, mouth left, mouth right), in frame pixels.
    ``refine(frames, boxes)`` runs only O-Net on given boxes (one list per frame): the cheap step a tracker
    uses to follow known faces between full detections.
    """

    def __init__(self, min_face: float = 12.0, thresholds=(0.6, 0.7, 0.9), factor: float = 0.709,
                 device: str = "cpu"):
        self.min_face = float(min_face)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = float(factor)
        self.device = torch.device(device)
        self.pnet, self.rnet, self.onet = load_nets(str(self.device))
        self._warm_up()

    @torch.inference_mode()
    def _warm_up(self) -> None:
        """Pay the one-off costs (torchvision's import, oneDNN kernel set-up) at construction, once per actor,
        not on the first chunk of a video."""
        import torchvision.ops  # noqa: F401

        for net, side in ((self.pnet, 12), (self.rnet, 24), (self.onet, 48)):
            net(torch.zeros(1, 3, side, side, device=self.device).contiguous(memory_format=torch.channels_last))

    def _tensor(self, frames) -> torch.Tensor:
        arr = np.ascontiguousarray(np.stack(list(frames)) if not isinstance(frames, np.ndarray) else frames)
        return torch.from_numpy(arr).to(self.device).permute(0, 3, 1, 2).float()

    def scales(self, h: int, w: int) -> list[float]:
        m = 12.0 / self.min_face
        minl = min(h, w) * m
        out, s = [], m
        while minl >= 12:
            out.append(s)
            s *= self.factor
            minl *= self.factor
        return out

    @staticmethod
    def _norm(x: torch.Tensor) -> torch.Tensor:
        return (x - 127.5) * 0.0078125

    def _crops(self, imgs: torch.Tensor, boxes: torch.Tensor, inds: torch.Tensor, size: int) -> torch.Tensor:
        from torchvision.ops import roi_align

        # facenet-pytorch crops pixels [x1-1, x2) of the clipped window and area-resizes them; roi_align with
        # adaptive sampling (about one sample per source pixel) is the batched equivalent.
        rois = torch.cat([inds.to(boxes.dtype).unsqueeze(1), boxes[:, :4]], dim=1)
        rois[:, 1:3] -= 1.0
        out = roi_align(imgs, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=0, aligned=False)
        return self._norm(out).contiguous(memory_format=torch.channels_last)

    def pyramid(self, frames: np.ndarray):
        """Yield (scale, normalised NCHW tensor) per pyramid level; resampling with OpenCV's INTER_AREA on
        uint8 frames (the reference's ``interpolate(mode="area")`` is the same filter, and ~10x slower)."""
        import cv2

        n, h, w = frames.shape[:3]
        for s in self.scales(h, w):
            size = (int(w * s + 1), int(h * s + 1))
            if size == (w, h):
                level = frames
            else:
                level = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
            # NHWC uint8 -> NCHW view in channels_last memory: no copy before the float conversion
            yield s, self._norm(torch.from_numpy(level).to(self.device).permute(0, 3, 1, 2).float()
                                .contiguous(memory_format=torch.channels_last))

    @torch.inference_mode()
    def detect(self, frames) -> tuple[list[np.ndarray], list[np.ndarray]]:
        from torchvision.ops import batched_nms

        frames = np.ascontiguousarray(np.stack(list(frames)) if not isinstance(frames, np.ndarray) else frames)
        imgs = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2).float()
        n, _, h, w = imgs.shape
        t1, t2, t3 = self.thresholds
        boxes_l, inds_l = [], []
        for s, im in self.pyramid(frames):
            reg, prob = self.pnet(im)
            p = prob[:, 1]
            mask = p >= t1
            if not mask.any():
                continue
            ij = mask.nonzero()
            score = p[mask]
            r = reg.permute(0, 2, 3, 1)[mask]
            yx = ij[:, 1:].to(imgs.dtype)
            q1 = ((2 * yx.flip(1) + 1) / s).floor()
            q2 = ((2 * yx.flip(1) + 12) / s).floor()
            b = torch.cat([q1, q2, score.unsqueeze(1), r], dim=1)
            keep = batched_nms(b[:, :4], b[:, 4], ij[:, 0], 0.5)
            boxes_l.append(b[keep])
            inds_l.append(ij[keep, 0])
        empty = ([np.zeros((0, 5), np.float32) for _ in range(n)], [np.zeros((0, 5, 2), np.float32) for _ in range(n)])
        if not boxes_l:
            return empty
        b = torch.cat(boxes_l)
        inds = torch.cat(inds_l)
        keep = batched_nms(b[:, :4], b[:, 4], inds, 0.7)
        b, inds = b[keep], inds[keep]
        bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        b = torch.stack([b[:, 0] + b[:, 5] * bw, b[:, 1] + b[:, 6] * bh, b[:, 2] + b[:, 7] * bw,
                         b[:, 3] + b[:, 8] * bh, b[:, 4]], dim=1)
        b = _rerec(b)
        # R-Net
        reg, prob = self.rnet(self._crops(imgs, self._clip_int(b, w, h), inds, 24))
        score = prob[:, 1]
        ok = score > t2
        b = torch.cat([b[ok, :4], score[ok].unsqueeze(1)], dim=1)
        inds, reg = inds[ok], reg[ok]
        if len(b) == 0:
            return empty
        keep = batched_nms(b[:, :4], b[:, 4], inds, 0.7)
        b = _rerec(_bbreg(b[keep], reg[keep]))
        inds = inds[keep]
        return self._onet(imgs, b, inds, n, w, h, t3)

    @staticmethod
    def _clip_int(b: torch.Tensor, w: int, h: int) -> torch.Tensor:
        """The crop window of each box, as facenet-pytorch's pad(): truncated to int, x1/y1 >= 1, x2/y2 <= size.

        Crops use this window; the cascade goes on with the unclipped box (as the reference does)."""
        c = b[:, :4].trunc()
        c[:, 0].clamp_(min=1)
        c[:, 1].clamp_(min=1)
        c[:, 2].clamp_(max=w)
        c[:, 3].clamp_(max=h)
        c[:, 2] = torch.maximum(c[:, 2], c[:, 0])  # degenerate boxes (fully outside) sample one pixel
        c[:, 3] = torch.maximum(c[:, 3], c[:, 1])
        return c

    def _onet(self, imgs, b, inds, n, w, h, thr):
        reg, lm, prob = self.onet(self._crops(imgs, self._clip_int(b, w, h), inds, 48))
        score = prob[:, 1]
        ok = score > thr
        b = torch.cat([b[ok, :4], score[ok].unsqueeze(1)], dim=1)
        inds, reg, lm = inds[ok], reg[ok], lm[ok]
        bw = b[:, 2] - b[:, 0] + 1
        bh = b[:, 3] - b[:, 1] + 1
        px = bw.unsqueeze(1) * lm[:, :5] + b[:, 0:1] - 1
        py = bh.unsqueeze(1) * lm[:, 5:] + b[:, 1:2] - 1
        pts = torch.stack([px, py], dim=2)
        b = _bbreg(b, reg)
        keep = _nms_min(b[:, :4], b[:, 4], inds, 0.7)
        b, inds, pts = b[keep].cpu().numpy(), inds[keep].cpu().numpy(), pts[keep].cpu().numpy()
        return ([b[inds == i] for i in range(n)], [pts[inds == i] for i in range(n)])

    @torch.inference_mode()
    def refine(self, frames, boxes: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """O-Net only, on the given (x1, y1, x2, y2[, ...]) boxes of each frame (squared first)."""
        imgs = self._tensor(frames)
        n, _, h, w = imgs.shape
        rows = [(i, bb[:4]) for i, bs in enumerate(boxes) for bb in np.asarray(bs, np.float32).reshape(-1, 5)]
        if not rows:
            return [np.zeros((0, 5), np.float32) for _ in range(n)], [np.zeros((0, 5, 2), np.float32) for _ in range(n)]
        b = torch.tensor(np.array([np.r_[r, 1.0] for _, r in rows]), dtype=torch.float32, device=self.device)
        inds = torch.tensor([i for i, _ in rows], device=self.device)
        return self._onet(imgs, _rerec(b), inds, n, w, h, self.thresholds[2])
