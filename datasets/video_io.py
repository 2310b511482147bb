"""Writing small H.264 + AAC mp4 files with PyAV (synthetic data and test media)."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np


def write_mp4(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    crf: int = 23,
) -> Path:
    """Write ``frames`` (N, H, W, 3) uint8 RGB and optional mono ``audio`` (float in [-1, 1]) to ``path``.

    Width and height must be even (yuv420p). The file is written to a temporary name and renamed,
    so a reader never sees a half-written video.
    """
    import av

    path = Path(path)
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (N, H, W, 3) uint8, got {frames.shape}")
    n, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"frame size must be even for yuv420p, got {w}x{h}")
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    with av.open(str(tmp), mode="w", format="mp4") as container:
        vstream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        vstream.width, vstream.height, vstream.pix_fmt = w, h, "yuv420p"
        vstream.options = {"crf": str(crf), "preset": "veryfast", "tune": "zerolatency"}
        astream = None
        if audio is not None:
            astream = container.add_stream("aac", rate=sample_rate)
            astream.layout = "mono"
        for frame in frames:
            for packet in vstream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in vstream.encode():
            container.mux(packet)
        if astream is not None:
            pcm = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)[None, :]
            chunk = 1024
            for start in range(0, pcm.shape[1], chunk):
                aframe = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(pcm[:, start:start + chunk]), format="fltp", layout="mono"
                )
                aframe.sample_rate = sample_rate
                aframe.pts = start
                for packet in astream.encode(aframe):
                    container.mux(packet)
            for packet in astream.encode():
                container.mux(packet)
    os.replace(tmp, path)
    return path
