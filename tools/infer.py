"""Emotion of raw videos with a trained checkpoint; see ``--help``.

python tools/infer.py clip.mp4 videos/ --subtitles subs.csv --task reason --json --card cards/
Exit code 0 when every video was processed, 1 when some could not be read, 2 on a usage or setup error.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from emotion_llama.cli import user_errors
from emotion_llama.errors import UserError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

EPILOG = """\
key=value arguments override conf/infer.yaml and its paths group; real-weight paths replace those saved
in the checkpoint: paths.llm=DIR, paths.eva=FILE, paths.mae=DIR, paths.videomae=DIR, paths.hubert=DIR,
and paths.tiny_encoders=DIR for the tiny preset's pre-trained encoders. Others: batch_size=8, num_workers=0.
--card OUT.png with several videos writes OUT_<name>.png for each; a folder (or a name without suffix)
gets <name>.png inside it.
"""


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="tools/infer.py", description="Recognise (and explain) the emotion in videos.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="VIDEO|DIR|key=value", help="videos, folders of videos, overrides")
    subs = parser.add_mutually_exclusive_group()
    subs.add_argument("--subtitle", help="what the person says, for every video")
    subs.add_argument("--subtitles", type=Path, metavar="CSV", help="name,sentence per video (name = file stem)")
    parser.add_argument("--task", choices=("emotion", "reason"), default="emotion",
                        help="reason: also generate an explanation")
    parser.add_argument("--checkpoint", type=Path, metavar="DIR", help="default: the demo's tiny model")
    parser.add_argument("--json", action="store_true", help="one JSON object per video per line")
    parser.add_argument("--card", type=Path, metavar="OUT.png", help="save a picture of each prediction")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    parser.add_argument("--asr-model", type=Path, metavar="DIR",
                        help="local Whisper folder transcribing the speech of videos without a subtitle")
    args = parser.parse_intermixed_args(argv)
    # A video whose name holds '=' stays a video; any other key=value is an override.
    overrides = [a for a in args.inputs if "=" in a and not Path(a).exists()]
    args.inputs = [a for a in args.inputs if a not in overrides]
    if not args.inputs:
        parser.error("give at least one video or folder")
    return args, overrides


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose("infer", overrides=overrides)
    except HydraException as err:
        first = str(err).strip().splitlines()[0]
        raise UserError(f"bad override in {' '.join(overrides)}: {first}; use key=value, e.g. paths.llm=/models/llama") from None


def find_checkpoint(given: Path | None, demo: list[str]) -> Path:
    if given is not None:
        return given
    for path in map(Path, demo):
        if (path / "config.yaml").is_file():
            print(f"using the demo's tiny model at {path}; pass --checkpoint DIR for another", file=sys.stderr)
            return path
    raise UserError(f"no checkpoint found at {' or '.join(demo)}: run `make demo` to train the tiny model, "
                    "or pass --checkpoint DIR")


def given_paths(cfg, overrides: list[str]) -> dict[str, str]:
    """The ``paths.*`` values named on the command line (resolved); the defaults must not replace the
    paths a checkpoint was trained with."""
    keys = {o.split("=", 1)[0].removeprefix("paths.") for o in overrides if o.startswith("paths.")}
    return {k: cfg.paths[k] for k in keys if k in cfg.paths}


def load_subtitles(args: argparse.Namespace) -> dict[str, str] | str | None:
    if args.subtitles is None:
        return args.subtitle
    from emotion_llama.datasets.formats import read_subtitles

    return read_subtitles(args.subtitles)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    cfg = compose(overrides)
    ckpt = find_checkpoint(args.checkpoint, list(cfg.demo_checkpoints))
    from emotion_llama.inference import Predictor, card_paths, expand_inputs, model_overrides

    subtitles = load_subtitles(args)
    videos = expand_inputs(args.inputs)
    predictor = Predictor(ckpt, model_overrides(ckpt, given_paths(cfg, overrides)), args.device, batch_size=cfg.batch_size,
                          max_new_tokens=cfg.max_new_tokens, num_workers=cfg.num_workers, asr_model=args.asr_model)
    cards = card_paths(args.card, [str(v) for v in videos]) if args.card else {}
    results = predictor.predict_iter(videos, subtitles, args.task, keep_image=bool(cards))
    failed = sum(not emit(r, args.json, cards) for r in results)
    return 1 if failed else 0


def emit(result, as_json: bool, cards: dict[str, Path]) -> bool:
    """Print one result (and save its card); False for a video that could not be processed."""
    from emotion_llama.inference import Failure, format_prediction, save_card

    if isinstance(result, Failure):
        print(f"error: {str(result).replace(chr(10), ' ')}", file=sys.stderr, flush=True)
        return False
    print(json.dumps(result.to_dict()) if as_json else format_prediction(result) + "\n", flush=True)
    if cards:
        save_card(result, cards[result.video])
    return True


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(argv)
    # Library deprecation notices mean nothing to someone labelling videos.
    warnings.filterwarnings("ignore", category=FutureWarning)
    with user_errors():
        return run(args, overrides)


if __name__ == "__main__":
    sys.exit(main())
