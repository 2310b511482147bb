"""Drawn faces, tones and wav files for the media tests.

What OpenCV's frontal-face Haar cascade needs from a drawn face (checked over sizes 64-104 px, offsets,
expressions and noise): a skin ellipse clearly BRIGHTER than the background (grey < ~120; on light grey
backgrounds detection drops to 30-70 %), dark pupils with eyebrows above them, and a dark mouth (without
the mouth nothing is detected). A dark hair cap makes it robust on lighter and coloured backgrounds.
The nose is optional. Do not equalise the histogram before detecting: it halves the hit rate.
"""

from __future__ import annotations

import wave
from pathlib import Path

import cv2
import numpy as np

from emotion_llama.datasets.synthetic import plan_clips, synthesize_clip
from emotion_llama.datasets.video_io import write_mp4

SKIN = (224, 172, 140)
HAIR = (50, 35, 25)
BACKGROUND = (70, 90, 110)


def draw_face(
    size: int = 160,
    centre: tuple[int, int] = (80, 80),
    height: int = 80,
    expression: float = 0.0,
    background: tuple[int, int, int] = BACKGROUND,
) -> np.ndarray:
    """A cartoon face (size, size, 3) uint8 RGB; ``expression`` in [0, 1] opens the mouth, raises the brows."""
    img = np.full((size, size, 3), background, np.uint8)
    cx, cy = centre
    s = height / 80
    cv2.ellipse(img, (cx, cy - int(6 * s)), (int(34 * s), int(42 * s)), 0, 180, 360, HAIR, -1, cv2.LINE_AA)
    cv2.ellipse(img, (cx, cy), (int(31 * s), height // 2), 0, 0, 360, SKIN, -1, cv2.LINE_AA)
    eye_y = cy - int(8 * s)
    for side in (-1, 1):
        _draw_eye(img, cx + side * int(14 * s), eye_y, s, expression)
    nose = np.array([[cx, eye_y + int(2 * s)], [cx - int(5 * s), cy + int(10 * s)],
                     [cx + int(5 * s), cy + int(10 * s)]], np.int32)
    cv2.fillPoly(img, [nose], (185, 135, 110), cv2.LINE_AA)
    mouth_axes = (int((10 + 4 * expression) * s), max(1, int((2 + 8 * expression) * s)))
    cv2.ellipse(img, (cx, cy + int(22 * s)), mouth_axes, 0, 0, 360, (120, 40, 50), -1, cv2.LINE_AA)
    return img


def _draw_eye(img: np.ndarray, x: int, y: int, s: float, expression: float) -> None:
    cv2.ellipse(img, (x, y), (int(7 * s), int(4 * s)), 0, 0, 360, (235, 235, 230), -1, cv2.LINE_AA)
    cv2.circle(img, (x, y), max(1, int(3 * s)), (40, 30, 30), -1, cv2.LINE_AA)
    brow_y = y - int((9 + 3 * expression) * s)
    cv2.line(img, (x - int(8 * s), brow_y + int(s)), (x + int(8 * s), brow_y), (60, 40, 30),
             max(1, int(3 * s)), cv2.LINE_AA)


def tone(seconds: float, sample_rate: int, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def write_wav(path: Path, audio: np.ndarray, sample_rate: int, channels: int = 1) -> Path:
    """16-bit PCM wav; the mono signal is repeated over ``channels``."""
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(np.repeat(pcm, channels).tobytes())
    return path


def write_synthetic_videos(root: Path) -> Path:
    """good.mp4 and silent.mp4 (two synthetic clips, the second without audio) and noface.mp4 (a flat
    grey video with the first clip's audio) under ``root``."""
    plans = plan_clips(clips_per_label=1, seed=3)
    good = synthesize_clip(plans[0])
    write_mp4(root / "good.mp4", good.frames, good.fps, good.audio)
    second = synthesize_clip(plans[1])
    write_mp4(root / "silent.mp4", second.frames, second.fps, audio=None)
    blank = np.full((20, 96, 96, 3), 90, dtype=np.uint8)  # no face anywhere
    write_mp4(root / "noface.mp4", blank, 12, good.audio[: 16000 * 20 // 12])
    return root
