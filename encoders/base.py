"""The interface every frozen encoder shares, the Hugging Face loader and the frame preprocessing."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel

from emotion_llama.errors import UserError, WeightsNotFoundError
from emotion_llama.runtime import LOCAL_PLAIN

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class EncoderOutput:
    tokens: torch.Tensor  # (B, T, D)
    pooled: torch.Tensor  # (B, D) utterance-level vector


class Encoder(nn.Module):
    """A wrapped pretrained model. Frozen ones have no trainable parameters and always run in eval mode
    (no dropout, no SpecAugment), whatever the surrounding module's ``.train()`` says."""

    name: ClassVar[str]
    config_key: ClassVar[str]

    def __init__(self, model: nn.Module, frozen: bool = True):
        super().__init__()
        self.model = model
        self.frozen = frozen
        self._apply_frozen()

    def _apply_frozen(self) -> None:
        # Unfreezing leaves requires_grad alone: some weights are fixed by design (MAE's sin-cos positions).
        if self.frozen:
            self.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> Encoder:
        return super().train(mode and not self.frozen)

    @property
    def num_features(self) -> int:
        raise NotImplementedError

    @classmethod
    def tiny_config(cls) -> Any:
        raise NotImplementedError

    @classmethod
    def real_config(cls) -> Any:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: Any, frozen: bool = True) -> Encoder:
        raise NotImplementedError

    @classmethod
    def from_pretrained(cls, path: str | Path, frozen: bool = True) -> Encoder:
        raise NotImplementedError

    @classmethod
    def tiny(cls, seed: int = 0, frozen: bool = True) -> Encoder:
        """A tiny random model, the same weights for the same seed, leaving the caller's RNG untouched."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls.from_config(cls.tiny_config(), frozen=frozen)

    @classmethod
    def _check_path(cls, path: str | Path) -> Path:
        path = Path(path).expanduser()
        if not path.exists():
            raise WeightsNotFoundError(f"{cls.name} encoder", path, cls.config_key)
        return path

    @classmethod
    def _check_keys(cls, path: Path, missing: list[str], unexpected: list[str]) -> None:
        """Log what a checkpoint did not fit and fail when the model lacks weights."""
        if unexpected:
            logger.warning("%s: %d unexpected keys ignored: %s", path, len(unexpected), _preview(unexpected))
            logger.debug("all unexpected keys: %s", sorted(unexpected))
        if missing:
            logger.error("%s: %d missing keys: %s", path, len(missing), _preview(missing))
            raise UserError(
                f"{path} lacks {len(missing)} weights of the {cls.name} encoder (e.g. {sorted(missing)[:3]}):"
                f" set {cls.config_key} to a complete {cls.name} checkpoint"
            )


def _preview(keys: list[str], limit: int = 10) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


class HFEncoder(Encoder):
    """An encoder around a Hugging Face model whose config gives the feature size."""

    hf_class: ClassVar[type[PreTrainedModel]]
    # Weights the checkpoint may lack without changing the frozen model's outputs.
    optional_keys: ClassVar[tuple[str, ...]] = ()

    @property
    def num_features(self) -> int:
        return self.model.config.hidden_size

    @classmethod
    def from_config(cls, config: PretrainedConfig, frozen: bool = True) -> HFEncoder:
        return cls(cls.hf_class(config), frozen=frozen)

    @classmethod
    def folder_config(cls, path: str | Path) -> PretrainedConfig | None:
        """The architecture a weights folder's ``config.json`` describes (no weights read); None without one.

        Real encoders come in several sizes (hubert-base 768-d, hubert-large 1024-d): the folder, not
        :meth:`real_config`, says which.
        """
        path = Path(path).expanduser()
        if not (path / "config.json").is_file():
            return None
        config = AutoConfig.from_pretrained(str(path))
        expected = cls.hf_class.config_class
        if not isinstance(config, expected):
            raise UserError(
                f"{path}/config.json describes a {type(config).__name__}, not the {expected.__name__} of the"
                f" {cls.name} encoder: set {cls.config_key} to a {cls.name} model folder"
            )
        return config

    @classmethod
    def from_pretrained(cls, path: str | Path, frozen: bool = True) -> HFEncoder:
        """Load a ``save_pretrained`` folder in float32; missing weights are an error, extra ones a warning."""
        path = cls._check_path(path)
        if not (path / "config.json").is_file():
            raise UserError(
                f"{path} is not a Hugging Face model folder (no config.json):"
                f" set {cls.config_key} to the folder holding config.json and the weights"
            )
        with _no_progress_bar():  # a bar per encoder says nothing: loading a local folder takes seconds
            model, info = cls.hf_class.from_pretrained(path, output_loading_info=True, dtype=torch.float32,
                                                       **LOCAL_PLAIN)
        missing = [k for k in info["missing_keys"] if k not in cls.optional_keys]
        missing += [f"{k} (shape mismatch)" for k, *_ in info["mismatched_keys"]]
        cls._check_keys(path, missing, list(info["unexpected_keys"]))
        return cls(model, frozen=frozen)


@contextmanager
def _no_progress_bar() -> Iterator[None]:
    """transformers' ``Loading weights`` progress bar off for the block (restored after)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def frames_to_tensor(
    frames: np.ndarray,
    size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    mode: str = "bilinear",
    center_crop: bool = False,
) -> torch.Tensor:
    """uint8 RGB frames (N, h, w, 3) -> normalised float (N, 3, size, size).

    Without ``center_crop`` the frame is squashed to a square; with it the short side is resized to
    ``size`` and the centre cut out, as the models' own image processors do.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB frames (N, h, w, 3), got {frames.dtype} {frames.shape}")
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255  # (N, 3, h, w)
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    out_hw = (max(size, round(h * scale)), max(size, round(w * scale))) if center_crop else (size, size)
    x = F.interpolate(x, size=out_hw, mode=mode, align_corners=False, antialias=True).clamp_(0, 1)
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    x = x[..., top : top + size, left : left + size]
    mean_t, std_t = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    return (x - mean_t) / std_t
