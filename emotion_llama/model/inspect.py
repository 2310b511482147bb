"""Parameter and token counts of a model preset, built on the meta device (no weights, no memory)."""

from __future__ import annotations

import torch

from emotion_llama.encoders import ENCODERS
from emotion_llama.encoders.build import encoder_config, encoder_shapes
from emotion_llama.model.builder import build_model
from emotion_llama.model.config import ENCODER_NAMES, ModelConfig
from emotion_llama.model.llm import lora_parameter_count


def _count(module: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def inspect_model(cfg: ModelConfig) -> dict:
    if cfg.is_instructblip:
        return inspect_instructblip(cfg)
    shapes = encoder_shapes(cfg)
    with torch.device("meta"):
        model = build_model(cfg, tokenizer=None, shapes=shapes)
        encoders = {n: ENCODERS[n].from_config(encoder_config(cfg, n)) for n in ENCODER_NAMES}
    lora = lora_parameter_count(model.llm)
    llm_total = _count(model.llm)
    params = {
        "llm": llm_total - lora,
        **{name: _count(enc) for name, enc in encoders.items()},
        "projectors": _count(model.projectors),
    }
    return {
        "preset": cfg.preset,
        "params": params,
        "total_params": sum(params.values()) + lora,
        "trainable_params": _count(model, trainable_only=True),
        "lora_params": lora,
        "multimodal_tokens": model.num_multimodal_tokens,
        "video_tokens": model.num_video_tokens,
        "feature_tokens": model.num_feature_tokens,
        "llm_hidden_size": model.llm.get_input_embeddings().embedding_dim,
        "llm_layers": model.llm.config.num_hidden_layers,
        "encoder_dims": shapes.dims,
        "eva_patches": shapes.eva_patches,
    }


def inspect_instructblip(cfg: ModelConfig) -> dict:
    """The InstructBLIP backbone's figures: its vision tower, Q-Former and LLM (which replace the encoders and the
    projectors; there is no LoRA), from ``instructblip_arch`` and ``llm_arch``."""
    with torch.device("meta"):
        model = build_model(cfg, tokenizer=None)
    blip = model.blip
    params = {
        "vision": _count(blip.vision_model),
        "qformer": _count(blip.qformer) + blip.query_tokens.numel(),
        "language_projection": _count(blip.language_projection),
        "llm": _count(blip.language_model),
    }
    return {
        "preset": cfg.preset,
        "backbone": cfg.backbone,
        "params": params,
        "total_params": sum(params.values()),
        "trainable_params": _count(model, trainable_only=True),
        "lora_params": 0,
        "multimodal_tokens": model.num_multimodal_tokens,
        "video_tokens": model.num_video_tokens,
        "feature_tokens": model.num_feature_tokens,
        "llm_hidden_size": model.llm.get_input_embeddings().embedding_dim,
        "llm_layers": model.llm.config.num_hidden_layers,
        "image_size": blip.config.vision_config.image_size,
    }
