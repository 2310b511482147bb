"""Input corruptions for robustness studies in the spirit of MER2024-NOISE: noisy audio, degraded frames."""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Corruption:
    snr_db: float | None = None  # white noise added to the audio at this signal-to-noise ratio
    blur_sigma: float | None = None  # Gaussian blur of every frame (pixels)
    downscale: float | None = None  # frames shrunk by this factor (e.g. 0.25) and scaled back up
    seed: int = 0

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.snr_db, self.blur_sigma, self.downscale))

    def key(self) -> dict:
        return asdict(self)

    def apply(self, name: str, frames: np.ndarray, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Corrupted copies of one clip's frames (N, H, W, 3) uint8 and audio (S,); the noise depends only
        on (seed, name), so a study is repeatable."""
        rng = np.random.default_rng([self.seed, zlib.crc32(name.encode())])
        if self.snr_db is not None and audio.size:
            power = float(np.mean(audio.astype(np.float64) ** 2)) or 1e-12
            noise = rng.standard_normal(audio.shape) * np.sqrt(power / 10 ** (self.snr_db / 10))
            audio = (audio + noise).astype(np.float32)
        if self.downscale is not None:
            frames = np.stack([_downscale(f, self.downscale) for f in frames])
        if self.blur_sigma is not None:
            frames = np.stack([cv2.GaussianBlur(f, (0, 0), self.blur_sigma) for f in frames])
        return frames, audio


def _downscale(frame: np.ndarray, factor: float) -> np.ndarray:
    h, w = frame.shape[:2]
    small = cv2.resize(frame, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
