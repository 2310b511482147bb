"""Decoded media -> the inputs a loaded model takes, in one place for video inference, the web app and the
pictures of imagination.

A model that encodes images itself (InstructBLIP: :attr:`InferenceCore.reads_pixels`) gets the pixel values of
its own image transform; the fusion model gets the features of the frozen encoders feature extraction used for
its training (the checkpoint's saved paths, or the seeded tiny ones), each clip only the modalities it has.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from emotion_llama.datasets.features import stack_features
from emotion_llama.datasets.pixels import pixel_batch
from emotion_llama.encoders.build import build_encoders
from emotion_llama.encoders.extract import FeatureEncoders
from emotion_llama.inference.core import InferenceCore
from emotion_llama.model.config import ENCODER_NAMES


class ClipInputs:
    """``inputs(clips)``: clips decoded as feature extraction decodes them (``decode_clip``, ``decode_image``) ->
    the model's input dict. ``encoders``: the encoders to build (all four by default; a caller that only ever has
    pictures asks for EVA alone). They are built at once, so missing weights are reported before any media is
    read, and kept for every later call."""

    def __init__(self, core: InferenceCore, encoders: Sequence[str] = ENCODER_NAMES):
        self.core = core
        self.encoders = (None if core.reads_pixels
                         else FeatureEncoders(build_encoders(core.config, names=encoders)).to(core.device).eval())

    def __call__(self, clips: Sequence[dict]) -> dict[str, torch.Tensor]:
        if self.encoders is None:  # the image as read, in the model's own image processing
            return pixel_batch([c["eva_image"] for c in clips], self.core.image_transform)
        with self.core.autocast():
            per_clip = self.encoders(clips)  # also sets audio_found=False for tracks too short to use
        return stack_features([{m: torch.from_numpy(a.astype(np.float32)) for m, a in f.items()} for f in per_clip])
