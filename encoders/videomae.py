"""VideoMAE ViT-L over 16 sampled frames: spatio-temporal tokens, mean-pooled for the utterance."""

from __future__ import annotations

import numpy as np
import torch
from transformers import VideoMAEConfig, VideoMAEModel

from emotion_llama.encoders.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EncoderOutput,
    HFEncoder,
    frames_to_tensor,
)


class VideoMAEEncoder(HFEncoder):
    name = "videomae"
    config_key = "paths.videomae"
    hf_class = VideoMAEModel

    @classmethod
    def real_config(cls) -> VideoMAEConfig:
        # use_mean_pooling=False keeps the pre-trained encoder's final LayerNorm inside the model.
        return VideoMAEConfig(
            hidden_size=1024,
            num_hidden_layers=24,
            num_attention_heads=16,
            intermediate_size=4096,
            image_size=224,
            patch_size=16,
            tubelet_size=2,
            num_frames=16,
            use_mean_pooling=False,
        )

    @classmethod
    def tiny_config(cls) -> VideoMAEConfig:
        return VideoMAEConfig(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=128,
            image_size=32,
            patch_size=8,
            tubelet_size=2,
            num_frames=16,
            use_mean_pooling=False,
        )

    @property
    def num_frames(self) -> int:
        return self.model.config.num_frames

    @property
    def image_size(self) -> int:
        return self.model.config.image_size

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 RGB frames (16, h, w, 3) -> (16, 3, S, S): short side resized, centre crop, ImageNet
        normalisation, as the VideoMAE image processor does."""
        if len(frames) != self.num_frames:
            raise ValueError(f"VideoMAE takes {self.num_frames} frames per clip, got {len(frames)}")
        return frames_to_tensor(frames, self.image_size, IMAGENET_MEAN, IMAGENET_STD, center_crop=True)

    def forward(self, clip: torch.Tensor) -> EncoderOutput:
        """clip (B, F, 3, S, S) -> tokens (B, F/tubelet * (S/patch)^2, D)."""
        tokens = self.model(pixel_values=clip).last_hidden_state  # (B, T', D)
        return EncoderOutput(tokens, tokens.mean(1))
