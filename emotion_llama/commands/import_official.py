"""emotion-llama-import: convert the official Emotion_LLaMA.pth into a checkpoint folder of this project.

Prints the import report; refuses (exit code 2, nothing written) when a weight is missing or mis-shaped.
"""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig

from emotion_llama import cli
from emotion_llama.cli import Call, run
from emotion_llama.model.config import ModelConfig


def model_config(name: str, llm: str | None = None, overrides: Sequence[str] = ()):
    """The preset's ModelConfig with ``${paths.*}`` resolved, as ``emotion-llama-import model=NAME`` composes it."""
    args = [f"model={name}", "ckpt=-", "out=-", *overrides] + ([f"paths.llm={llm}"] if llm is not None else [])
    with cli._hydra():
        return ModelConfig.from_cfg(cli.compose("import_official", args))


def _main(cfg: DictConfig, call: Call) -> None:
    model_cfg = ModelConfig.from_cfg(cfg)
    if model_cfg.is_instructblip:
        raise cli.UsageError("the official Emotion_LLaMA.pth holds an Emotion-LLaMA model: use model=emotion_llama_7b "
                             "(or another preset of backbone emotion_llama)")
    # The model stack loads here, once the settings are checked: --help and usage errors answer without torch.
    from emotion_llama.model.official import OfficialImportError, import_official

    try:
        report = import_official(cfg.ckpt, cfg.out, model_cfg, eva_path=cfg.paths.eva)
    except OfficialImportError as err:
        print(err.report.format())
        raise
    print(report.format())
    print(f"wrote {cfg.out}")


def main(argv: Sequence[str] | None = None) -> int:
    return run("import_official", _main, argv, literal=("ckpt", "out"))
