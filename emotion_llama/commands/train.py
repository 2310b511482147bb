"""emotion-llama-train: train one stage (``experiment=tiny_coarse``, then ``experiment=tiny_fine``)."""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig

from emotion_llama.cli import Call, run
from emotion_llama.fileio import json_text


def _main(cfg: DictConfig, call: Call) -> None:
    # The model stack loads here, once the settings are checked: --help and usage errors answer without torch.
    from emotion_llama.training.train import train

    metrics, objects = train(cfg)
    print(json_text({"model": str(objects["export"]), **metrics}))


def main(argv: Sequence[str] | None = None) -> int:
    return run("train", _main, argv, literal=("run_dir", "stage.init_from", "imagine.prompt_template",
                                              "imagine.negative_prompt", "imagine.cache_dir"))
