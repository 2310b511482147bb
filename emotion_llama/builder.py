"""Building the tokenizer, encoders and fusion model from a :class:`ModelConfig`."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from emotion_llama.config import ENCODER_NAMES, ModelConfig
from emotion_llama.encoders import ENCODERS
from emotion_llama.errors import WeightsNotFoundError
from emotion_llama.llm import LLAMA2_7B, apply_lora, load_llm
from emotion_llama.model import EmotionLLaMA
from emotion_llama.prompts import FEATURE_TOKEN, VIDEO_TOKEN
from emotion_llama.tokenizer import base_vocab_size, build_tiny_tokenizer, load_tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncoderShapes:
    """What the fusion model needs to know about the encoders, without their weights."""

    dims: dict[str, int]
    eva_patches: int


def build_tokenizer(cfg: ModelConfig, extra_texts: Iterable[str] = ()) -> PreTrainedTokenizerBase:
    path = cfg.tokenizer_path or cfg.llm_path
    if path is None:
        return build_tiny_tokenizer(extra_texts, vocab_size=cfg.tiny_vocab_size)
    return load_tokenizer(path, "model.tokenizer_path")


def _encoder_config(cfg: ModelConfig, name: str):
    cls = ENCODERS[name]
    return cls.tiny_config() if cfg.encoder_size == "tiny" else cls.real_config()


def encoder_shapes(cfg: ModelConfig) -> EncoderShapes:
    """Encoder output sizes, read off architectures built on the meta device (no memory, no weights)."""
    with torch.device("meta"):
        encoders = {n: ENCODERS[n].from_config(_encoder_config(cfg, n)) for n in ENCODER_NAMES}
    return EncoderShapes({n: e.num_features for n, e in encoders.items()}, encoders["eva"].num_patches)


def build_encoders(
    cfg: ModelConfig, names: Iterable[str] = ENCODER_NAMES, seed: int = 0, random_tiny_ok: bool = False
) -> dict:
    """Frozen encoders from their local weights; tiny ones without a path are seeded random.

    With ``random_tiny_ok`` a tiny preset whose pre-trained encoders are absent (a fresh clone before
    ``make demo``) falls back to seeded random ones with a warning, instead of failing.
    """
    out = {}
    for name in names:
        cls = ENCODERS[name]
        path = cfg.encoder_paths.get(name)
        tiny = cfg.encoder_size == "tiny"
        if tiny and path and not Path(path).exists() and random_tiny_ok:
            log.warning("no pre-trained tiny %s encoder at %s: using a seeded random one (make demo creates it)",
                        name, path)
            path = None
        if tiny and not path:
            out[name] = cls.tiny(seed=seed)
            continue
        key = "paths.tiny_encoders" if tiny else f"paths.{name}"
        if not path or not Path(path).exists():
            raise WeightsNotFoundError(f"{name} encoder", path or "<unset>", key)
        # EVA files carry no architecture: the tiny preset's must be rebuilt at tiny size.
        extra = {"config": cls.tiny_config()} if tiny and name == "eva" else {}
        out[name] = cls.from_pretrained(path, **extra)
    return out


def build_model(
    cfg: ModelConfig,
    tokenizer: PreTrainedTokenizerBase | None,
    shapes: EncoderShapes | None = None,
) -> EmotionLLaMA:
    """The fusion model with LoRA applied.

    Under ``torch.device('meta')`` nothing is allocated and, for shape-only inspection, ``tokenizer``
    may be None (the placeholders then take the ids right after the LLM's vocabulary, as they do with
    the real LLaMA tokenizer).
    """
    shapes = shapes or encoder_shapes(cfg)
    on_meta = torch.get_default_device().type == "meta"
    if cfg.weights_required and cfg.llm_path is None and not on_meta:
        raise WeightsNotFoundError("LLM", "<unset>", "paths.llm")
    if tokenizer is None:
        vocab = cfg.llm_arch.get("vocab_size", LLAMA2_7B["vocab_size"])
        video_id, feature_id = vocab, vocab + 1
    else:
        vocab = base_vocab_size(tokenizer)
        video_id, feature_id = (tokenizer.convert_tokens_to_ids(t) for t in (VIDEO_TOKEN, FEATURE_TOKEN))
    llm = load_llm(None if on_meta else cfg.llm_path, cfg.llm_arch, vocab, cfg.torch_dtype)
    llm = apply_lora(llm, cfg.lora)
    model = EmotionLLaMA(
        llm,
        feature_dims=shapes.dims,
        eva_dim=shapes.dims["eva"],
        eva_patches=shapes.eva_patches,
        video_token_id=video_id,
        feature_token_id=feature_id,
        projector=cfg.projector,
    )
    model.projectors.to(cfg.torch_dtype)
    return model
