"""The language model: a Hugging Face causal LM from a local folder (or a tiny random LLaMA) with peft LoRA."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedModel

from emotion_llama.errors import WeightsNotFoundError

# LLaMA-2-7B's architecture, for building it on the meta device without a weights folder.
LLAMA2_7B = dict(
    vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
    num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5,
    bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
)


@dataclass
class LoraSpec:
    r: int = 64
    alpha: int = 16
    dropout: float = 0.05
    target_modules: Sequence[str] = ("q_proj", "v_proj")
    # Also fully trained and saved with the adapter (the tiny preset's LLM is random, so LoRA alone is too weak).
    modules_to_save: Sequence[str] = field(default_factory=tuple)


def llama_config(vocab_size: int, **arch) -> LlamaConfig:
    """A LlamaConfig with ``arch`` overriding LLaMA-2-7B's shape (tiny presets pass a few small sizes)."""
    cfg = {**LLAMA2_7B, **arch, "vocab_size": vocab_size}
    return LlamaConfig(**cfg, attn_implementation="sdpa")


def load_llm(
    path: str | Path | None,
    arch: dict | None = None,
    vocab_size: int = 32000,
    dtype: torch.dtype = torch.float32,
    config_key: str = "paths.llm",
) -> PreTrainedModel:
    """The base LLM: pretrained from the local folder ``path``; random with ``arch`` when path is None."""
    if path is None:
        return AutoModelForCausalLM.from_config(llama_config(vocab_size, **(arch or {})), dtype=dtype)
    if not Path(path).is_dir():
        raise WeightsNotFoundError("LLM", path, config_key)
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, attn_implementation="sdpa")


def apply_lora(llm: PreTrainedModel, spec: LoraSpec) -> PeftModel:
    """Freeze the base model and add LoRA adapters (peft), plus any fully trained ``modules_to_save``."""
    config = LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=list(spec.target_modules),
        modules_to_save=list(spec.modules_to_save) or None,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(llm, config)


def lora_parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)


def enable_checkpointing(llm: torch.nn.Module) -> None:
    """Activation checkpointing on every decoder layer; transformers 5 renamed gradient_checkpointing_enable."""
    kwargs = {"use_reentrant": False}  # the reentrant form drops gradients when the inputs need none
    if hasattr(llm, "activation_checkpointing_enable"):
        llm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
