"""Building the frozen encoders (and reading their output shapes) from a :class:`ModelConfig`."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from emotion_llama.encoders import ENCODERS
from emotion_llama.encoders.base import HFEncoder
from emotion_llama.errors import WeightsNotFoundError
from emotion_llama.model.config import ENCODER_NAMES, ModelConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncoderShapes:
    """What the fusion model needs to know about the encoders, without their weights."""

    dims: dict[str, int]
    eva_patches: int


def encoder_config(cfg: ModelConfig, name: str):
    """The architecture of encoder ``name``: its weights folder's ``config.json`` where
    ``encoder_paths[name]`` is a Hugging Face folder (MAE, VideoMAE, HuBERT: any size, e.g. hubert-base),
    else the preset size's built-in config (always so for EVA, whose weights file carries none)."""
    cls = ENCODERS[name]
    path = cfg.encoder_paths.get(name)
    if path and issubclass(cls, HFEncoder) and Path(path).expanduser().is_dir():
        config = cls.folder_config(path)
        if config is not None:
            return config
    return cls.tiny_config() if cfg.encoder_size == "tiny" else cls.real_config()


def encoder_shapes(cfg: ModelConfig) -> EncoderShapes:
    """Encoder output sizes, read off architectures built on the meta device (no memory, no weights);
    the sizes come from the weights folders' ``config.json`` where there are any (see :func:`encoder_config`)."""
    with torch.device("meta"):
        encoders = {n: ENCODERS[n].from_config(encoder_config(cfg, n)) for n in ENCODER_NAMES}
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
