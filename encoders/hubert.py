"""HuBERT-large audio encoder: last hidden layer, mean over the utterance's valid frames."""

from __future__ import annotations

import numpy as np
import torch
from transformers import HubertConfig, HubertModel

from emotion_llama.encoders.base import EncoderOutput, HFEncoder


class HubertEncoder(HFEncoder):
    name = "hubert"
    config_key = "paths.hubert"
    hf_class = HubertModel
    # SpecAugment's mask vector: only used when training HuBERT itself, and absent from some exports.
    optional_keys = ("masked_spec_embed",)
    sampling_rate = 16_000

    @classmethod
    def real_config(cls) -> HubertConfig:
        """HuBERT-large (as chinese-hubert-large): stable layer norm, layer-normed conv feature extractor."""
        return HubertConfig(
            hidden_size=1024,
            num_hidden_layers=24,
            num_attention_heads=16,
            intermediate_size=4096,
            feat_extract_norm="layer",
            do_stable_layer_norm=True,
            conv_bias=True,
        )

    @classmethod
    def tiny_config(cls) -> HubertConfig:
        return HubertConfig(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=128,
            # The real feature extractor's strides (320 samples, 20 ms a frame): fewer frames, not fewer layers.
            conv_dim=(32,) * 7,
            conv_kernel=(10, 3, 3, 3, 3, 2, 2),
            conv_stride=(5, 2, 2, 2, 2, 2, 2),
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=4,
            feat_extract_norm="layer",
            do_stable_layer_norm=True,
            conv_bias=True,
        )

    def preprocess(self, waveform: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Mono float waveform (S,) at 16 kHz -> zero-mean unit-variance (S,), as the HuBERT-large
        feature extractor normalises each utterance."""
        x = torch.as_tensor(waveform, dtype=torch.float32)
        if x.ndim != 1:
            raise ValueError(f"expected a mono waveform (S,), got shape {tuple(x.shape)}")
        return (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-7)

    def forward(self, waveform: torch.Tensor, attention_mask: torch.Tensor | None = None) -> EncoderOutput:
        """waveform (B, S) normalised by ``preprocess`` and zero-padded; attention_mask (B, S) marks real samples."""
        if self.model._get_feat_extract_output_lengths(waveform.shape[-1]) < 1:
            raise ValueError(
                f"a waveform of {waveform.shape[-1]} samples is too short for HuBERT's feature extractor"
            )
        tokens = self.model(waveform, attention_mask=attention_mask).last_hidden_state  # (B, T, D)
        if attention_mask is None:
            return EncoderOutput(tokens, tokens.mean(1))
        frames = self.model._get_feature_vector_attention_mask(tokens.shape[1], attention_mask)  # (B, T)
        frames = frames.unsqueeze(-1).to(tokens.dtype)  # (B, T, 1)
        pooled = (tokens * frames).sum(1) / frames.sum(1).clamp(min=1)  # (B, D)
        return EncoderOutput(tokens, pooled)
