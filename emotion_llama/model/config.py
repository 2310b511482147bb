"""Validated model configuration: the ``model`` group of the Hydra configs, as a dataclass."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from emotion_llama.errors import UserError, WeightsNotFoundError
from emotion_llama.model.llm import LoraSpec

ENCODER_NAMES = ("eva", "mae", "videomae", "hubert")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Which frame of a video EVA sees: the expression's apex ("peak", as the paper describes) or the video's
# first decoded frame, whole ("first", what the release trains and evaluates on).
EVA_FRAMES = ("peak", "first")


class ModelConfigError(UserError, ValueError):
    """A model config value that cannot be used (a ValueError for library callers, one line for tools)."""


@dataclass
class ModelConfig:
    preset: str = "tiny"
    # Local weights. A null LLM path builds a random LLaMA with ``llm_arch`` (the tiny preset).
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
    # Real presets must never fall back to random weights outside a shape-only (meta device) build.
    weights_required: bool = False
    # The frame EVA encodes (see EVA_FRAMES); part of the feature-extraction fingerprint.
    eva_frame: str = "peak"

    def __post_init__(self):
        if isinstance(self.lora, dict):
            self.lora = LoraSpec(**self.lora)
        self.lora.target_modules = tuple(self.lora.target_modules)
        self.lora.modules_to_save = tuple(self.lora.modules_to_save)
        if self.encoder_size not in ("tiny", "real"):
            raise ModelConfigError(f"model.encoder_size must be 'tiny' or 'real', got {self.encoder_size!r}")
        if self.dtype not in DTYPES:
            raise ModelConfigError(f"model.dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.eva_frame not in EVA_FRAMES:
            raise ModelConfigError(f"model.eva_frame must be one of {', '.join(EVA_FRAMES)}, got {self.eva_frame!r}")
        if not isinstance(self.llm_arch, dict):
            raise ModelConfigError(f"model.llm_arch must be a mapping such as {{hidden_size: 128}}, got {self.llm_arch!r}")
        unknown = set(self.encoder_paths) - set(ENCODER_NAMES)
        if unknown:
            raise ModelConfigError(f"model.encoder_paths has unknown encoders {sorted(unknown)}")

    def check_llm_weights(self) -> None:
        """Fail early, naming the key to set, when a real preset has no LLM folder."""
        if self.weights_required and (self.llm_path is None or not Path(self.llm_path).is_dir()):
            raise WeightsNotFoundError("LLM", self.llm_path or "<unset>", "paths.llm")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

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
