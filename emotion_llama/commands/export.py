"""emotion-llama-export: a checkpoint's LoRA merged into a plain Hugging Face LLM folder, with the projectors and
a model config, for deployment (:mod:`emotion_llama.model.export`).

Prints one JSON line describing the export; refuses (exit code 2, nothing written) a folder that is no
checkpoint, an InstructBLIP checkpoint and a non-empty ``out`` (unless ``overwrite=true``).
"""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig

from emotion_llama.cli import Call, run
from emotion_llama.fileio import json_text


def _main(cfg: DictConfig, call: Call) -> None:
    # The model stack loads here, once the settings are checked: --help and usage errors answer without torch.
    from emotion_llama.model.export import export_checkpoint

    summary = export_checkpoint(cfg.checkpoint, cfg.out, dtype=cfg.dtype, overwrite=cfg.overwrite,
                                llm_path=call.named_paths(cfg).get("llm"))
    print(json_text(summary))


def main(argv: Sequence[str] | None = None) -> int:
    return run("export", _main, argv, literal=("checkpoint", "out"))
