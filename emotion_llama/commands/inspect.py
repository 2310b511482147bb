"""emotion-llama-inspect: one JSON object describing a model preset (no weights loaded)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from omegaconf import DictConfig

from emotion_llama.cli import Call, run
from emotion_llama.model.config import ModelConfig


def _main(cfg: DictConfig, call: Call) -> None:
    model_cfg = ModelConfig.from_cfg(cfg)
    # The model stack loads here, once the settings are checked: --help and usage errors answer without torch.
    from emotion_llama.model.inspect import inspect_model

    print(json.dumps(inspect_model(model_cfg)))


def main(argv: Sequence[str] | None = None) -> int:
    return run("inspect_model", _main, argv)
