"""Checkpoints of the trainable weights: a peft LoRA adapter, the projectors and the resolved config.

Layout of a checkpoint folder::

    config.yaml                 resolved ModelConfig
    adapter/                    peft adapter (adapter_config.json, adapter_model.safetensors)
    projectors.safetensors      modality projectors
    tokenizer/                  tokenizer files (placeholders included)
    base_llm.safetensors        only when the LLM has no weights folder (the random tiny preset)
    meta.json                   free-form training metadata (stage, step, metrics)

Loading reports missing and unexpected keys and fails on missing ones: silently dropping LoRA weights
(as a strict=False load does when peft renames keys) must never go unnoticed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import OmegaConf
from peft import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

from emotion_llama.builder import EncoderShapes, build_model, build_tokenizer
from emotion_llama.config import ModelConfig
from emotion_llama.errors import UserError
from emotion_llama.fileio import atomic_dir
from emotion_llama.model import EmotionLLaMA
from emotion_llama.tokenizer import add_placeholders

log = logging.getLogger(__name__)


class CheckpointError(UserError):
    pass


@dataclass
class LoadReport:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def raise_if_missing(self, where: Path) -> None:
        if self.unexpected:
            log.warning("%s: %d unexpected keys ignored, e.g. %s", where, len(self.unexpected), self.unexpected[:3])
        if self.missing:
            raise CheckpointError(
                f"{where}: {len(self.missing)} weights are missing (e.g. {self.missing[0]}); "
                "the checkpoint does not match this model config"
            )


def save_checkpoint(
    model: EmotionLLaMA, cfg: ModelConfig, tokenizer, out_dir: str | Path, meta: dict | None = None
) -> Path:
    """Write the checkpoint into a temporary folder and move it into place when complete."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        model.llm.save_pretrained(tmp / "adapter")
        save_file(_contiguous(model.projectors.state_dict()), tmp / "projectors.safetensors")
        if cfg.llm_path is None:
            save_file(_contiguous(model.llm.state_dict()), tmp / "base_llm.safetensors")
        tokenizer.save_pretrained(tmp / "tokenizer")
        OmegaConf.save(OmegaConf.create(cfg.to_dict()), tmp / "config.yaml")
        (tmp / "meta.json").write_text(json.dumps(meta or {}, indent=2, default=str))
    return out_dir


def read_config(ckpt_dir: str | Path, overrides: dict | None = None) -> ModelConfig:
    ckpt_dir = Path(ckpt_dir)
    path = ckpt_dir / "config.yaml"
    if not path.is_file():
        raise CheckpointError(f"{ckpt_dir} is not a checkpoint folder (no config.yaml): pass checkpoint=DIR of a training run")
    data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    data.update(overrides or {})
    return ModelConfig.from_dict(data)


def load_checkpoint(
    ckpt_dir: str | Path,
    overrides: dict | None = None,
    device: str | torch.device = "cpu",
    shapes: EncoderShapes | None = None,
) -> tuple[EmotionLLaMA, ModelConfig, object]:
    """Rebuild the model from ``config.yaml`` (``overrides`` e.g. a new ``llm_path``) and load its weights."""
    ckpt_dir = Path(ckpt_dir)
    cfg = read_config(ckpt_dir, overrides)
    tok_dir = ckpt_dir / "tokenizer"
    if tok_dir.is_dir():
        tokenizer = add_placeholders(AutoTokenizer.from_pretrained(str(tok_dir)))
    else:
        # Imported official checkpoints carry no tokenizer unless the LLaMA folder was given: use paths.llm's.
        cfg.check_llm_weights()
        tokenizer = build_tokenizer(cfg)
    model = build_model(cfg, tokenizer, shapes)
    load_weights(model, ckpt_dir)
    return model.to(device), cfg, tokenizer


def load_weights(model: EmotionLLaMA, ckpt_dir: str | Path) -> None:
    """Load a checkpoint's trainable weights (and the tiny preset's base LLM) into ``model`` strictly."""
    ckpt_dir = Path(ckpt_dir)
    base = ckpt_dir / "base_llm.safetensors"
    if base.is_file():
        result = model.llm.load_state_dict(load_file(base), strict=False)
        LoadReport(list(result.missing_keys), list(result.unexpected_keys)).raise_if_missing(base)
    else:
        load_adapter(model, ckpt_dir / "adapter" / "adapter_model.safetensors")
    proj = ckpt_dir / "projectors.safetensors"
    if not proj.is_file():
        raise CheckpointError(f"{proj} not found: the checkpoint folder is incomplete")
    result = model.projectors.load_state_dict(load_file(proj), strict=False)
    LoadReport(list(result.missing_keys), list(result.unexpected_keys)).raise_if_missing(proj)


def load_adapter(model: EmotionLLaMA, path: Path) -> LoadReport:
    if not path.is_file():
        raise CheckpointError(f"{path} not found: the checkpoint folder is incomplete")
    state = load_file(path)
    expected = set(get_peft_model_state_dict(model.llm))
    result = set_peft_model_state_dict(model.llm, state)
    loaded = set(state)
    report = LoadReport(
        missing=sorted(expected - loaded), unexpected=sorted(set(result.unexpected_keys))
    )
    report.raise_if_missing(path)
    return report


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous() for k, v in state.items()}
