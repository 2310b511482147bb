"""The face detectors behind ``datasets.faces``: OpenCV's Haar cascade and MTCNN.

MTCNN (Zhang et al. 2016) is a cascade of three small CNNs: P-Net proposes face windows over an image
pyramid, R-Net and O-Net re-score and refine them. Its weights are the three state dicts that the
``facenet-pytorch`` package (MIT licence) ships as ``facenet_pytorch/data/{pnet,rnet,onet}.pt`` (about 2 MB
in all). Only those files are read, located without importing the package (its releases after 2.5.3 pin
torch<2.3 and numpy<2, and its detection code predates numpy 2): the networks and the cascade are defined
here and load the state dicts by their keys.

Every detector takes an RGB uint8 image and a minimum face side in pixels, and returns (K, 4) float32
boxes x0, y0, x1, y1 in the image's pixels.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from emotion_llama.choices import FACE_DETECTORS
from emotion_llama.errors import UserError

HAAR_CASCADE = "haarcascade_frontalface_default.xml"
HAAR_SCALE_FACTOR = 1.1
HAAR_MIN_NEIGHBORS = 4  # 3 lets through blobs in textured backgrounds; 5 starts losing small faces

MTCNN_PACKAGE = "facenet-pytorch"
MTCNN_INSTALL = "pip install 'facenet-pytorch==2.5.3' --no-deps"
MTCNN_FILES = ("pnet", "rnet", "onet")
MTCNN_THRESHOLDS = (0.6, 0.7, 0.7)  # P-, R-, O-Net face scores, the published settings
MTCNN_PYRAMID_FACTOR = 0.709  # each pyramid level halves the area
# MTCNN boxes are taller than wide; they are returned as centred squares of this fraction of their longer side,
# which frames a face as Haar's squares do (median side over the true face side on the real close-ups of
# tools/bench_faces.py: Haar 0.93, MTCNN 0.96; on the drawn synthetic faces 1.11 and 1.01), so the crop margin
# of ``track_face`` takes about the same region whichever detector ran.
MTCNN_TO_HAAR_SIDE = 0.95


class FaceDetectorError(UserError):
    """A face detector that cannot run: its package or weight files are missing or unreadable."""


def check_detector(name: str) -> str:
    if name not in FACE_DETECTORS:
        raise FaceDetectorError(f"face_detector must be one of {', '.join(FACE_DETECTORS)}, got {name!r}")
    return name


def detect(name: str, image: np.ndarray, min_side: int) -> np.ndarray:
    """Faces in one RGB uint8 ``image`` of side >= ``min_side`` px -> (K, 4) float32 x0, y0, x1, y1."""
    check_detector(name)
    if name == "haar":
        return _haar(image, min_side)
    return mtcnn(image, min_side)


# ---------------------------------------------------------------------------------------------- Haar


@functools.cache
def _cascade() -> cv2.CascadeClassifier:
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + HAAR_CASCADE)
    if cascade.empty():
        raise FaceDetectorError(f"OpenCV could not load {HAAR_CASCADE}: reinstall opencv-python-headless")
    return cascade


def _haar(image: np.ndarray, min_side: int) -> np.ndarray:
    """No histogram equalisation: the cascade already normalises each window's variance, and equalising
    flat synthetic frames exaggerates their edges enough to halve the detection rate."""
    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    side = max(1, int(min_side))
    hits = _cascade().detectMultiScale(
        grey, scaleFactor=HAAR_SCALE_FACTOR, minNeighbors=HAAR_MIN_NEIGHBORS, minSize=(side, side)
    )
    boxes = np.asarray(hits, dtype=np.float32).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    return boxes


# ---------------------------------------------------------------------------------------------- MTCNN


class PNet(nn.Module):
    """Proposal net, fully convolutional: a 12x12 window per output cell (stride 2)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), self.conv4_1(x).softmax(dim=1)[:, 1]  # (B, 4, h, w), (B, h, w)


class RNet(nn.Module):
    """Refinement net on 24x24 crops."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        # The weights were converted from Caffe, whose images are transposed: flatten as (W, H, C).
        x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).flatten(1)))
        return self.dense5_2(x), self.dense5_1(x).softmax(dim=1)[:, 1]


class ONet(nn.Module):
    """Output net on 48x48 crops (its five landmarks are not used here)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu5(self.dense5(self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).flatten(1)))
        return self.dense6_2(x), self.dense6_1(x).softmax(dim=1)[:, 1]


def mtcnn_weights_dir() -> Path:
    """The folder holding facenet-pytorch's MTCNN weight files, found without importing the package."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FaceDetectorError(
            f"face_detector=mtcnn needs the MTCNN weights of the {MTCNN_PACKAGE} package: run {MTCNN_INSTALL} "
            "(or pip install -e .), or set face_detector=haar"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def load_mtcnn(weights_dir: str | Path | None = None) -> tuple[PNet, RNet, ONet]:
    """P-, R- and O-Net in eval mode with the state dicts ``{pnet,rnet,onet}.pt`` of ``weights_dir``
    (default: facenet-pytorch's); a missing, corrupt or mismatched file is a one-line FaceDetectorError."""
    folder = Path(weights_dir) if weights_dir is not None else mtcnn_weights_dir()
    nets = []
    for name, net in zip(MTCNN_FILES, (PNet(), RNet(), ONet()), strict=True):
        path = folder / f"{name}.pt"
        if not path.is_file():
            raise FaceDetectorError(f"MTCNN weights not found at {path}: run {MTCNN_INSTALL}")
        try:
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as err:  # a truncated, foreign or mismatched file
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise FaceDetectorError(
                f"MTCNN weights at {path} are unreadable ({reason[:160]}): reinstall them with {MTCNN_INSTALL} "
                "--force-reinstall"
            ) from None
        nets.append(net.eval().requires_grad_(False))
    return tuple(nets)


@functools.cache
def _mtcnn_nets() -> tuple[PNet, RNet, ONet]:
    return load_mtcnn()


def _nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, by_min: bool = False) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression (overlap by IoU, or by the smaller box's area)."""
    x0, y0, x1, y1 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = (x1 - x0 + 1) * (y1 - y0 + 1)
    order, keep = np.argsort(scores)[::-1], []
    while len(order):
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]) + 1)
        inter = w * h
        overlap = inter / (np.minimum(area[i], area[rest]) if by_min else area[i] + area[rest] - inter)
        order = rest[overlap <= threshold]
    return np.array(keep, dtype=np.int64)


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Boxes moved by the nets' offsets (fractions of the box's width and height)."""
    wh = boxes[:, 2:4] - boxes[:, 0:2] + 1
    return boxes[:, :4] + offsets * np.concatenate([wh, wh], axis=1)


def _square(boxes: np.ndarray) -> np.ndarray:
    centre = (boxes[:, 0:2] + boxes[:, 2:4]) / 2
    half = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])[:, None] / 2
    return np.concatenate([centre - half, centre + half], axis=1)


def _to_input(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 RGB -> (B, 3, H, W) float scaled to [-1, 1] as the nets were trained."""
    return (torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() - 127.5) * 0.0078125


def _crops(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Square crops of ``boxes`` resized to ``size``; the parts outside the image are black."""
    height, width = image.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), np.uint8)
    for k, (x0, y0, x1, y1) in enumerate(np.round(boxes[:, :4]).astype(np.int64)):
        w, h = max(int(x1 - x0), 1), max(int(y1 - y0), 1)
        patch = np.zeros((h, w, 3), np.uint8)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        if sx1 > sx0 and sy1 > sy0:
            patch[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA if min(w, h) > size else cv2.INTER_LINEAR)
    return out


def _propose(image: np.ndarray, pnet: PNet, min_side: float) -> np.ndarray:
    """P-Net over the image pyramid whose first level maps ``min_side`` faces onto its 12 px window."""
    height, width = image.shape[:2]
    scale = 12.0 / max(min_side, 12.0)
    found = []
    while min(height, width) * scale >= 12:
        h, w = int(np.ceil(height * scale)), int(np.ceil(width * scale))
        level = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        offsets, prob = pnet(_to_input(level[None]))
        ys, xs = np.nonzero(prob[0].numpy() >= MTCNN_THRESHOLDS[0])
        if len(ys):
            # Cell (y, x) sees the 12x12 window at (2x, 2y) of this level.
            start = np.stack([xs, ys], axis=1) * 2.0
            boxes = np.concatenate([start / scale, (start + 12) / scale], axis=1)
            scores = prob[0].numpy()[ys, xs]
            reg = offsets[0].numpy()[:, ys, xs].T
            keep = _nms(boxes, scores, 0.5)
            found.append(np.concatenate([boxes[keep], scores[keep, None], reg[keep]], axis=1))
        scale *= MTCNN_PYRAMID_FACTOR
    if not found:
        return np.zeros((0, 4), np.float64)
    cand = np.concatenate(found)
    cand = cand[_nms(cand[:, :4], cand[:, 4], 0.7)]
    return _square(_regress(cand[:, :4], cand[:, 5:9]))


def _refine(image: np.ndarray, boxes: np.ndarray, net: nn.Module, size: int, threshold: float,
            final: bool) -> np.ndarray:
    if not len(boxes):
        return boxes
    offsets, scores = net(_to_input(_crops(image, boxes, size)))
    scores, offsets = scores.numpy(), offsets.numpy()
    keep = scores > threshold
    boxes, scores, offsets = boxes[keep], scores[keep], offsets[keep]
    if final:  # O-Net: regress first, then suppress boxes mostly inside a better one
        boxes = _regress(boxes, offsets)
        return boxes[_nms(boxes, scores, 0.7, by_min=True)]
    keep = _nms(boxes, scores, 0.7)
    return _square(_regress(boxes[keep], offsets[keep]))


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """The nets are far too small to share out: more than one thread only adds waiting (tenfold when the
    cores are busy), so they run on one and the caller's setting is restored after."""
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if threads > 1:
            torch.set_num_threads(threads)


@torch.inference_mode()
def mtcnn(image: np.ndarray, min_side: int) -> np.ndarray:
    """MTCNN faces of side >= ``min_side`` px, as Haar-like squares (see MTCNN_TO_HAAR_SIDE)."""
    pnet, rnet, onet = _mtcnn_nets()
    image = np.ascontiguousarray(image)
    with _one_thread():
        boxes = _propose(image, pnet, min_side)
        boxes = _refine(image, boxes, rnet, 24, MTCNN_THRESHOLDS[1], final=False)
        boxes = _refine(image, boxes, onet, 48, MTCNN_THRESHOLDS[2], final=True)
    if not len(boxes):
        return np.zeros((0, 4), np.float32)
    centre = (boxes[:, 0:2] + boxes[:, 2:4]) / 2
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * MTCNN_TO_HAAR_SIDE
    boxes = np.concatenate([centre - side[:, None] / 2, centre + side[:, None] / 2], axis=1)
    return boxes[side >= min_side].astype(np.float32)
