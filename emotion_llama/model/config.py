"""Validated model configuration: the ``model`` group of the Hydra configs, as a dataclass."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from emotion_llama.choices import BACKBONES, PROMPT_FORMATS, TINY_TOKENIZERS
from emotion_llama.errors import UserError, WeightsNotFoundError

ENCODER_NAMES = ("eva", "mae", "videomae", "hubert")
# The dtype names the frozen base may be held in (torch.<name>); the module stays importable without torch, so that
# a command validates its model settings before the model stack loads.
DTYPES = ("float32", "bfloat16", "float16")
# Which frame of a video EVA sees: the expression's apex ("peak", as the paper describes) or the video's
# first decoded frame, whole ("first", what the release trains and evaluates on).
EVA_FRAMES = ("peak", "first")
# The model between the prompt and the LLM: Emotion-LLaMA's projectors over cached encoder features, or EmoVIT's
# InstructBLIP (a ViT and an instruction-aware Q-Former reading the image's pixels; no feature cache).


@dataclass
class LoraSpec:
    """The LoRA adapters put on the LLM (peft's LoraConfig fields).

    ``r: 0`` means no adapters at all: the LLM is used as its folder holds it (an export, whose LoRA deltas and
    ``modules_to_save`` copies are merged into its ``llm/`` folder: :mod:`emotion_llama.model.export`); the
    other fields are then unused and ``modules_to_save`` must be empty.
    """

    r: int = 64
    alpha: int = 16
    dropout: float = 0.05
    target_modules: Sequence[str] = ("q_proj", "v_proj")
    # Also fully trained and saved with the adapter (the tiny preset's LLM is random, so LoRA alone is too weak).
    modules_to_save: Sequence[str] = field(default_factory=tuple)

    @property
    def enabled(self) -> bool:
        """Whether the LLM gets adapters (``r > 0``); ``r: 0`` is a merged (exported) LLM."""
        return self.r > 0


class ModelConfigError(UserError, ValueError):
    """A model config value that cannot be used (a ValueError for library callers, one line for tools)."""


@dataclass
class ModelConfig:
    preset: str = "tiny"
    backbone: str = "emotion_llama"
    # Local weights. A null LLM path builds a random LLM with ``llm_arch`` (the tiny presets): a transformers config's
    # fields, ``model_type`` naming the architecture (llama when absent; LLaMA-2-7B's sizes fill what is not given).
    llm_path: str | None = None
    llm_arch: dict[str, Any] = field(default_factory=dict)
    tokenizer_path: str | None = None
    # "tiny": seeded random tiny encoders; "real": real-size encoders loaded from ``encoder_paths``.
    encoder_size: str = "tiny"
    encoder_paths: dict[str, str | None] = field(default_factory=dict)
    projector: str = "linear"
    lora: LoraSpec = field(default_factory=LoraSpec)
    dtype: str = "float32"
    tiny_vocab_size: int = 1024
    # The chat turn around the prompt (see PROMPT_FORMATS): "release" keeps the release's LLaMA-2 ids exactly;
    # "chat_template" renders the tokenizer's own template and ends answers with its end-of-turn token.
    prompt_format: str = "release"
    # The tiny tokenizer built when there is no tokenizer folder (see TINY_TOKENIZERS).
    tiny_tokenizer: str = "llama2"
    # Real presets must never fall back to random weights outside a shape-only (meta device) build.
    weights_required: bool = False
    # The frame EVA encodes (see EVA_FRAMES); part of the feature-extraction fingerprint.
    eva_frame: str = "peak"
    # backbone=instructblip (emotion_llama.model.instructblip). A Hugging Face InstructBLIP folder; None builds a
    # seeded random one from ``instructblip_arch`` (transformers' vision_config / qformer_config fields and
    # num_query_tokens) and ``llm_arch`` (the tiny preset).
    instructblip_path: str | None = None
    instructblip_arch: dict[str, Any] = field(default_factory=dict)
    # None: <instructblip_path>/qformer_tokenizer, or a tiny one built from the project's text.
    qformer_tokenizer_path: str | None = None
    qformer_max_length: int = 128
    # Also train the whole LLM (the Q-Former, its query tokens and the language projection always are).
    train_llm: bool = False

    def __post_init__(self):
        if isinstance(self.lora, dict):
            self.lora = LoraSpec(**self.lora)
        self.lora.target_modules = tuple(self.lora.target_modules)
        self.lora.modules_to_save = tuple(self.lora.modules_to_save)
        for key, value, kind in (("lora.r", self.lora.r, "whole"), ("lora.alpha", self.lora.alpha, "number"),
                                 ("lora.dropout", self.lora.dropout, "number"),
                                 ("tiny_vocab_size", self.tiny_vocab_size, "whole")):
            whole = isinstance(value, int) and not isinstance(value, bool)
            if not (whole or (kind == "number" and isinstance(value, float))) or value < 0:
                raise ModelConfigError(f"model.{key} must be a {kind} number >= 0, got {value!r}")
        if not self.lora.enabled and self.lora.modules_to_save:
            raise ModelConfigError(f"model.lora.r=0 means no adapters, so nothing is trained either: "
                                   f"model.lora.modules_to_save must be empty, got {list(self.lora.modules_to_save)}")
        if self.backbone not in BACKBONES:
            raise ModelConfigError(f"model.backbone must be one of {', '.join(BACKBONES)}, got {self.backbone!r}")
        if not isinstance(self.instructblip_arch, dict):
            raise ModelConfigError("model.instructblip_arch must be a mapping of vision_config, qformer_config and "
                                   f"num_query_tokens, got {self.instructblip_arch!r}")
        if isinstance(self.qformer_max_length, bool) or not isinstance(self.qformer_max_length, int) \
                or self.qformer_max_length < 1:
            raise ModelConfigError(f"model.qformer_max_length must be a whole number of at least 1, "
                                   f"got {self.qformer_max_length!r}")
        if self.encoder_size not in ("tiny", "real"):
            raise ModelConfigError(f"model.encoder_size must be 'tiny' or 'real', got {self.encoder_size!r}")
        if self.dtype not in DTYPES:
            raise ModelConfigError(f"model.dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.prompt_format not in PROMPT_FORMATS:
            raise ModelConfigError(f"model.prompt_format must be one of {', '.join(PROMPT_FORMATS)}, "
                                   f"got {self.prompt_format!r}")
        if self.tiny_tokenizer not in TINY_TOKENIZERS:
            raise ModelConfigError(f"model.tiny_tokenizer must be one of {', '.join(TINY_TOKENIZERS)}, "
                                   f"got {self.tiny_tokenizer!r}")
        if self.tokenizer_path is None and self.llm_path is None and not (self.is_instructblip or self.weights_required):
            # The tiny LLaMA-2 tokenizer has no chat template; the byte-level ones exist for theirs.
            wanted = "release" if self.tiny_tokenizer == "llama2" else "chat_template"
            if self.prompt_format != wanted:
                raise ModelConfigError(f"model.tiny_tokenizer={self.tiny_tokenizer} goes with "
                                       f"model.prompt_format={wanted}, got {self.prompt_format}")
        if self.eva_frame not in EVA_FRAMES:
            raise ModelConfigError(f"model.eva_frame must be one of {', '.join(EVA_FRAMES)}, got {self.eva_frame!r}")
        if not isinstance(self.llm_arch, dict):
            raise ModelConfigError(f"model.llm_arch must be a mapping such as {{hidden_size: 128}}, got {self.llm_arch!r}")
        unknown = set(self.encoder_paths) - set(ENCODER_NAMES)
        if unknown:
            raise ModelConfigError(f"model.encoder_paths has unknown encoders {sorted(unknown)}")

    def check_llm_weights(self) -> None:
        """Fail early, naming the key to set, when a real preset has no LLM folder (InstructBLIP: no model folder)."""
        if self.is_instructblip:
            path, what, key = self.instructblip_path, "InstructBLIP", "paths.instructblip"
        else:
            path, what, key = self.llm_path, "LLM", "paths.llm"
        if self.weights_required and (path is None or not Path(path).is_dir()):
            raise WeightsNotFoundError(what, path or "<unset>", key)

    @property
    def is_instructblip(self) -> bool:
        return self.backbone == "instructblip"

    @property
    def random_base(self) -> bool:
        """Whether the frozen base weights are built random (no weights folder): a checkpoint must then hold
        them (``base_llm/``, ``base_instructblip/``), while a folder's are re-read from it."""
        return (self.instructblip_path if self.is_instructblip else self.llm_path) is None

    @property
    def reads_pixels(self) -> bool:
        """Whether the model encodes images itself (``features["image"]``: pixel values) instead of reading
        cached encoder features; such a model needs no feature extraction."""
        return self.is_instructblip

    @property
    def torch_dtype(self):
        """The ``torch.dtype`` named by ``dtype``."""
        import torch

        return getattr(torch, self.dtype)

    @classmethod
    def from_cfg(cls, cfg) -> ModelConfig:
        """The ``model`` group of a composed command config (an OmegaConf ``DictConfig``), resolved."""
        from omegaconf import OmegaConf

        return cls.from_dict(OmegaConf.to_container(cfg.model, resolve=True))

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        extra = set(data) - known
        if extra:
            raise ModelConfigError(f"unknown model config keys {sorted(extra)}")
        return cls(**{k: v for k, v in data.items()})

    def to_dict(self) -> dict:
        out = asdict(self)
        out["lora"]["target_modules"] = list(self.lora.target_modules)
        out["lora"]["modules_to_save"] = list(self.lora.modules_to_save)
        return out
