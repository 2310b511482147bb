"""Building the tokenizer and the model from a :class:`ModelConfig`: the Emotion-LLaMA fusion model, or EmoVIT's
InstructBLIP (``model.backbone``), both :class:`~emotion_llama.model.fusion.PlaceholderFusion` models."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from transformers import PreTrainedTokenizerBase

from emotion_llama.encoders.build import EncoderShapes, encoder_shapes
from emotion_llama.errors import WeightsNotFoundError
from emotion_llama.model.chat import use_chat_format
from emotion_llama.model.config import ModelConfig
from emotion_llama.model.fusion import EmotionLLaMA, PlaceholderFusion
from emotion_llama.model.instructblip import InstructBlipEmotion, build_instructblip_backbone
from emotion_llama.model.llm import LLAMA2_7B, apply_lora, folder_config, load_llm
from emotion_llama.model.prompts import FEATURE_TOKEN, VIDEO_TOKEN
from emotion_llama.model.tokenizer import (
    base_vocab_size,
    build_tiny_chat_tokenizer,
    build_tiny_tokenizer,
    load_tokenizer,
)

log = logging.getLogger(__name__)

# The dtype of every trainable weight, whatever the frozen base's (model.dtype).
TRAINABLE_DTYPE = torch.float32


def build_tokenizer(cfg: ModelConfig, extra_texts: Iterable[str] = ()) -> PreTrainedTokenizerBase:
    """The tokenizer of ``model.tokenizer_path`` (else the LLM folder's), or a tiny one of ``model.tiny_tokenizer``
    trained on the project's text and ``extra_texts``; with the prompt format of ``model.prompt_format``."""
    path = cfg.tokenizer_path or cfg.llm_path
    if path is not None:
        tokenizer = load_tokenizer(path, "model.tokenizer_path")
    elif cfg.tiny_tokenizer == "llama2":
        tokenizer = build_tiny_tokenizer(extra_texts, vocab_size=cfg.tiny_vocab_size)
    else:
        tokenizer = build_tiny_chat_tokenizer(cfg.tiny_tokenizer, extra_texts, vocab_size=cfg.tiny_vocab_size)
    return use_chat_format(tokenizer, cfg.prompt_format)


def build_model(
    cfg: ModelConfig,
    tokenizer: PreTrainedTokenizerBase | None,
    shapes: EncoderShapes | None = None,
    device: str | torch.device | None = None,
    vocab_size: int | None = None,
) -> PlaceholderFusion:
    """The model ``cfg.backbone`` names: the fusion model with LoRA applied (``emotion_llama``), or InstructBLIP
    (``instructblip``, see :func:`build_instructblip_model`), built on ``device`` (default: the current default
    device).

    The frozen base LLM is in the preset's dtype (bf16 for the real preset); every trainable weight
    (projectors, LoRA factors, ``modules_to_save`` copies) is fp32, so that small AdamW steps are kept
    (a bf16 weight of 0.01 does not move by lr 1e-5 steps). Everything is created on ``device``: a 7B
    model bound for a GPU is read or initialised there, never staged in host memory.

    Under ``torch.device('meta')`` (or ``device='meta'``) nothing is allocated and, for shape-only
    inspection, ``tokenizer`` may be None (the placeholders then take the ids right after the LLM's
    vocabulary, as they do with the real LLaMA tokenizer). ``vocab_size`` gives the LLM another vocabulary than
    the tokenizer's (a real-size model with random weights prompted through a small tokenizer, for benchmarks).
    """
    if cfg.is_instructblip:
        return build_instructblip_model(cfg, tokenizer, device)
    shapes = shapes or encoder_shapes(cfg)
    device = torch.device(device) if device is not None else torch.get_default_device()
    on_meta = device.type == "meta"
    if cfg.weights_required and cfg.llm_path is None and not on_meta:
        raise WeightsNotFoundError("LLM", "<unset>", "paths.llm")
    # A shape-only build of a preset whose weights folder is present takes the folder's own architecture.
    shape_of = folder_config(cfg.llm_path) if on_meta else None
    if tokenizer is None:
        vocab = shape_of.vocab_size if shape_of else cfg.llm_arch.get("vocab_size", LLAMA2_7B["vocab_size"])
        video_id, feature_id = vocab, vocab + 1
    else:
        vocab = vocab_size or base_vocab_size(tokenizer)
        video_id, feature_id = (tokenizer.convert_tokens_to_ids(t) for t in (VIDEO_TOKEN, FEATURE_TOKEN))
    llm = load_llm(None if on_meta else cfg.llm_path, cfg.llm_arch, vocab, cfg.torch_dtype, device=device,
                   config=shape_of)
    llm = apply_lora(llm, cfg.lora, trainable_dtype=TRAINABLE_DTYPE)
    with torch.device(device):
        model = EmotionLLaMA(
            llm,
            feature_dims=shapes.dims,
            eva_dim=shapes.dims["eva"],
            eva_patches=shapes.eva_patches,
            video_token_id=video_id,
            feature_token_id=feature_id,
            projector=cfg.projector,
        )
    model.projectors.to(TRAINABLE_DTYPE)
    return model


def build_instructblip_model(
    cfg: ModelConfig,
    tokenizer: PreTrainedTokenizerBase | None,
    device: str | torch.device | None = None,
) -> InstructBlipEmotion:
    """EmoVIT's InstructBLIP: read from ``cfg.instructblip_path``, or (None) a random one built from
    ``instructblip_arch`` and ``llm_arch`` (empty: the tiny preset's) with a fixed seed that leaves the global RNG
    untouched, so a checkpoint's model is rebuilt the same way (its saved ``base_instructblip/`` is then copied
    in). The vision tower and the LLM are frozen in ``cfg.dtype``; the Q-Former side is trained in fp32. On the
    meta device only shapes are built (``instructblip_arch`` and ``llm_arch`` are then the architecture)."""
    return build_instructblip_backbone(
        tokenizer,
        path=cfg.instructblip_path,
        arch=cfg.instructblip_arch or None,
        llm_arch=cfg.llm_arch or None,
        dtype=cfg.torch_dtype,
        device=device,
        qformer_tokenizer_path=cfg.qformer_tokenizer_path,
        qformer_max_length=cfg.qformer_max_length,
        train_llm=cfg.train_llm,
        weights_required=cfg.weights_required,
    )
