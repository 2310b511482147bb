"""Face boxes tracked over a clip, square face crops, and the clip's peak frame.

Faces are found by one of FACE_DETECTORS (the ``detector`` argument of detect_faces and track_face): ``mtcnn``,
the default (a CNN cascade whose weights come with the ``facenet-pytorch`` dependency, see ``face_detectors``),
or ``haar``, OpenCV's frontal-face cascade. MTCNN keeps the faces that Haar's frontal cascade loses (heads
tilted by 20-30 degrees, faces turned away, near profiles) at about Haar's cost on real frames and up to twice
it on small ones; BENCHMARKS.md ("Face detectors") has the figures.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from emotion_llama.choices import DEFAULT_FACE_DETECTOR, FACE_DETECTORS
from emotion_llama.datasets.face_detectors import FaceDetectorError, check_detector, detect

__all__ = [
    "DEFAULT_FACE_DETECTOR", "FACE_DETECTORS", "FaceDetectorError", "FaceTrack", "centre_boxes", "crop_faces",
    "detect_faces", "select_peak_frame", "track_face",
]

MIN_FACE_FRACTION = 0.2  # of the shorter frame side: emotion clips are close-ups, tiny hits are noise
DETECT_SIDE = 240  # frames are shrunk to this shorter side first: faces >= 20 % of it still have 48 px
PEAK_SIZE = 32  # side of the grey thumbnails compared by select_peak_frame


@dataclass(frozen=True)
class FaceTrack:
    boxes: np.ndarray  # (N, 4) float32 x0, y0, x1, y1: square, inside the frame
    found: bool


def detect_faces(frame: np.ndarray, detector: str | None = None) -> np.ndarray:
    """All faces in one RGB frame -> (K, 4) float32 x0, y0, x1, y1 (squares with either detector).

    ``detector``: one of FACE_DETECTORS, None for DEFAULT_FACE_DETECTOR. The frame is shrunk to DETECT_SIDE
    first and faces under MIN_FACE_FRACTION of its shorter side are left out. A detector whose weights are
    not installed raises FaceDetectorError, one line saying how to install them.
    """
    name = check_detector(detector or DEFAULT_FACE_DETECTOR)
    frame = np.ascontiguousarray(frame)
    scale = min(1.0, DETECT_SIDE / min(frame.shape[:2]))
    if scale < 1.0:
        frame = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    side = max(1, int(min(frame.shape[:2]) * MIN_FACE_FRACTION))
    return detect(name, frame, side) / np.float32(scale)


def _consistent(centres: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Mask of detections agreeing with the median face, dropping one-frame false positives."""
    centre, size = np.median(centres, axis=0), np.median(sizes)
    near = np.linalg.norm(centres - centre, axis=1) <= 0.5 * size
    similar = (sizes >= 0.5 * size) & (sizes <= 2.0 * size)
    keep = near & similar
    # Detections scattered with no majority: trust the largest face, the likely speaker.
    return keep if keep.any() else sizes == sizes.max()


def _moving_median(values: np.ndarray, window: int) -> np.ndarray:
    """Per-column moving median over time, edges padded, so one jumpy box cannot shake the crop."""
    half = window // 2
    padded = np.pad(values, ((half, half), (0, 0)), mode="edge")
    stacked = np.lib.stride_tricks.sliding_window_view(padded, window, axis=0)  # (N, C, window)
    return np.median(stacked, axis=-1)


def _square_boxes(centres: np.ndarray, sides: np.ndarray, height: int, width: int) -> np.ndarray:
    """Squares shifted (not clipped) into the frame, so crops keep the face's aspect ratio."""
    sides = np.minimum(sides, min(height, width))
    x0 = np.clip(centres[:, 0] - sides / 2, 0, width - sides)
    y0 = np.clip(centres[:, 1] - sides / 2, 0, height - sides)
    return np.stack([x0, y0, x0 + sides, y0 + sides], axis=1).astype(np.float32)


def centre_boxes(n: int, height: int, width: int) -> np.ndarray:
    """The largest centred square in every frame: the crop used when no face is found."""
    centres = np.tile([[width / 2, height / 2]], (n, 1))
    return _square_boxes(centres, np.full(n, min(height, width), dtype=np.float64), height, width)


def _largest_faces(frames: np.ndarray, detect_frames: int, detector: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Largest face on up to ``detect_frames`` evenly spaced frames -> (frame indices (K,), boxes (K, 4))."""
    n = len(frames)
    probe = np.unique(np.linspace(0, n - 1, min(n, detect_frames)).round().astype(np.int64))
    at, largest = [], []
    for i in probe:
        boxes = detect_faces(frames[i], detector)
        if len(boxes):
            at.append(i)
            largest.append(boxes[np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))])
    return np.array(at, dtype=np.float64), np.array(largest, dtype=np.float64).reshape(-1, 4)


def track_face(
    frames: np.ndarray, detect_frames: int = 8, margin: float = 0.1, smooth_window: int = 5,
    detector: str | None = None,
) -> FaceTrack:
    """One square face box per frame of ``frames`` (N, H, W, 3) uint8 RGB.

    The detector runs on ``detect_frames`` evenly spaced frames (faces in an utterance move little);
    the largest face of each is kept, detections disagreeing with the median face are dropped, the
    rest are interpolated over all frames, smoothed with a moving median and grown by ``margin`` of
    the face size on every side (20 % in all by default: the boxes are tight around brows and mouth,
    while face encoders were trained on crops that include the chin and forehead). ``detector`` is passed
    to detect_faces. Without any face: centred squares and ``found=False``.
    """
    n, height, width = frames.shape[:3]
    at, boxes = _largest_faces(frames, detect_frames, detector)
    if not len(at):
        return FaceTrack(centre_boxes(n, height, width), found=False)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    sizes = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    keep = _consistent(centres, sizes)
    track = np.column_stack([centres[keep], sizes[keep]])  # (K, 3) cx, cy, size
    every = np.arange(n, dtype=np.float64)
    filled = np.column_stack([np.interp(every, at[keep], track[:, c]) for c in range(3)])
    filled = _moving_median(filled, min(smooth_window, n))
    boxes = _square_boxes(filled[:, :2], filled[:, 2] * (1 + 2 * margin), height, width)
    return FaceTrack(boxes, found=True)


def crop_faces(frames: np.ndarray, track: FaceTrack, size: int) -> np.ndarray:
    """Face crops resized to ``size`` -> (N, size, size, 3) uint8."""
    crops = []
    for frame, (x0, y0, x1, y1) in zip(frames, np.round(track.boxes).astype(np.int64), strict=True):
        patch = frame[max(y0, 0):max(y1, y0 + 1), max(x0, 0):max(x1, x0 + 1)]
        shrink = patch.shape[0] > size
        crops.append(cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR))
    return np.stack(crops).astype(np.uint8, copy=False)


def _normalised_thumbnails(face_crops: np.ndarray) -> np.ndarray:
    """Grey PEAK_SIZE^2 thumbnails with zero mean and unit variance each -> (N, PEAK_SIZE, PEAK_SIZE)."""
    thumbs = np.stack([
        cv2.resize(cv2.cvtColor(np.ascontiguousarray(c), cv2.COLOR_RGB2GRAY), (PEAK_SIZE, PEAK_SIZE),
                   interpolation=cv2.INTER_AREA)
        for c in face_crops
    ]).astype(np.float32)
    thumbs -= thumbs.mean(axis=(1, 2), keepdims=True)
    return thumbs / (thumbs.std(axis=(1, 2), keepdims=True) + 1e-6)


def select_peak_frame(face_crops: np.ndarray) -> int:
    """Index of the frame with the strongest expression among ``face_crops`` (N, s, s, 3) uint8.

    An utterance clip opens and closes nearer the speaker's resting face than its middle does, so the
    first and last crops together stand for the neutral face (as the onset frame does in apex spotting),
    and the apex is the crop that deviates most from their mean (largest mean absolute difference).
    The clip's per-pixel median, the other obvious reference, fails when an expression is held over much
    of the utterance: the median then shows the expression itself and the relaxed ends win (on the
    synthetic set the median picks a frame 17 % of the clip away from the true apex, the ends 8 %).
    Each crop is normalised to zero mean and unit variance first, so a lighting change or a camera's
    gain shift does not pass for an expression. Ties go to the earliest frame.
    """
    if len(face_crops) == 0:
        raise ValueError("select_peak_frame needs at least one face crop")
    thumbs = _normalised_thumbnails(face_crops)
    neutral = (thumbs[0] + thumbs[-1]) / 2
    deviation = np.abs(thumbs - neutral).mean(axis=(1, 2))
    return int(np.argmax(deviation))
