"""Shared glue for the command-line tools: user errors become one line on stderr and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from omegaconf import DictConfig, OmegaConf

from emotion_llama.errors import UserError


@contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def model_config(cfg: DictConfig):
    """The validated ``model`` group (imported lazily: torch is slow to import for commands that skip it)."""
    from emotion_llama.config import ModelConfig

    return ModelConfig.from_dict(OmegaConf.to_container(cfg.model, resolve=True))
