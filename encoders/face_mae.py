"""MAE ViT-L on face crops: one vector per crop, averaged over the utterance ("UTT")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import ViTMAEConfig, ViTMAEModel

from emotion_llama.encoders.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EncoderOutput,
    HFEncoder,
    frames_to_tensor,
)


class FaceMAEEncoder(HFEncoder):
    """A crop's vector is the mean of its patch tokens, not the CLS token: MAE pre-training puts no loss
    on CLS, and MAE's own feature recipe (global_pool) averages the patches."""

    name = "mae"
    config_key = "paths.mae"
    hf_class = ViTMAEModel

    @classmethod
    def real_config(cls) -> ViTMAEConfig:
        return ViTMAEConfig(
            hidden_size=1024,
            num_hidden_layers=24,
            num_attention_heads=16,
            intermediate_size=4096,
            image_size=224,
            patch_size=16,
            mask_ratio=0.0,
        )

    @classmethod
    def tiny_config(cls) -> ViTMAEConfig:
        return ViTMAEConfig(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=128,
            image_size=32,
            patch_size=8,
            mask_ratio=0.0,
        )

    @classmethod
    def folder_config(cls, path: str | Path) -> ViTMAEConfig | None:
        config = super().folder_config(path)
        if config is not None:
            config.mask_ratio = 0.0  # as from_pretrained sets it: every patch is kept for features
        return config

    @classmethod
    def from_pretrained(cls, path: str | Path, frozen: bool = True) -> FaceMAEEncoder:
        encoder = super().from_pretrained(path, frozen=frozen)
        # Pre-training checkpoints ship mask_ratio 0.75: every patch must be kept for features.
        encoder.model.config.mask_ratio = 0.0
        return encoder

    @property
    def image_size(self) -> int:
        return self.model.config.image_size

    def preprocess(self, faces: np.ndarray) -> torch.Tensor:
        """uint8 RGB face crops (N, h, w, 3) -> (N, 3, S, S), squashed and ImageNet-normalised like
        the ViTMAE image processor."""
        return frames_to_tensor(faces, self.image_size, IMAGENET_MEAN, IMAGENET_STD)

    def forward(self, faces: torch.Tensor, mask: torch.Tensor | None = None) -> EncoderOutput:
        """faces (B, N, 3, S, S); mask (B, N) marks real crops when utterances are padded to N."""
        b, n = faces.shape[:2]
        flat = faces.flatten(0, 1)  # (B*N, 3, S, S)
        num_patches = self.model.embeddings.patch_embeddings.num_patches
        # An increasing noise keeps the patches in raster order (MAE otherwise shuffles them at random).
        noise = torch.arange(num_patches, device=flat.device, dtype=torch.float32).expand(len(flat), -1)
        hidden = self.model(pixel_values=flat, noise=noise).last_hidden_state  # (B*N, 1+P, D)
        tokens = hidden[:, 1:].mean(1).view(b, n, -1)  # (B, N, D)
        if mask is None:
            return EncoderOutput(tokens, tokens.mean(1))
        weights = mask.unsqueeze(-1).to(tokens.dtype)  # (B, N, 1)
        return EncoderOutput(tokens, (tokens * weights).sum(1) / weights.sum(1).clamp(min=1))
