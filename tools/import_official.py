"""Convert the official Emotion_LLaMA.pth into a checkpoint folder of this project:

    python tools/import_official.py --ckpt Emotion_LLaMA.pth --out checkpoints/official \\
        [--llm /models/Llama-2-7b-chat-hf] [--eva eva_vit_g.pth] [--model emotion_llama_7b] [paths.hubert=...]

Prints the import report; refuses (exit code 2, nothing written) when a weight is missing or mis-shaped.
Trailing ``key=value`` arguments are Hydra overrides of the ``paths`` and ``model`` groups.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from emotion_llama.cli import user_errors
from emotion_llama.errors import UserError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="official Emotion_LLaMA.pth (or a bare state dict)")
    parser.add_argument("--out", required=True, help="checkpoint folder to create (must not exist)")
    parser.add_argument("--model", default="emotion_llama_7b", help="model preset in conf/model/")
    parser.add_argument("--llm", help="LLaMA-2-7B-chat folder: sets paths.llm and saves its tokenizer")
    parser.add_argument("--eva", help="EVA ViT-g weights: checked to load and recorded as paths.eva")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. paths.hubert=/models/hubert")
    return parser.parse_args(argv)


def model_config(name: str, llm: str | None, overrides: list[str]):
    """The preset's ModelConfig with ``${paths.*}`` resolved, as the training and eval tools compose it."""
    from emotion_llama.config import ModelConfig

    if not (CONF_DIR / "model" / f"{name}.yaml").is_file():
        presets = ", ".join(sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml")))
        raise UserError(f"unknown model preset {name!r}: pass --model with one of {presets}")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(overrides=["+paths=default", f"+model={name}", *overrides])
    if llm is not None:
        # Set after composing so that any character in the path is taken literally, not parsed as Hydra syntax.
        cfg.paths.llm = llm
    return ModelConfig.from_dict(OmegaConf.to_container(cfg.model, resolve=True))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with user_errors():
        from emotion_llama.official import OfficialImportError, import_official

        cfg = model_config(args.model, args.llm, args.overrides)
        try:
            report = import_official(args.ckpt, args.out, cfg, eva_path=args.eva)
        except OfficialImportError as err:
            print(err.report.format())
            raise
        print(report.format())
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
