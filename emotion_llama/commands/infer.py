"""emotion-llama-infer: the emotion of raw videos, frame folders and images with a trained checkpoint.

    emotion-llama-infer clip.mp4 videos/ frames/00001/ subtitles=subs.csv task=reason json=true card=cards/

The cards of a run are saved together once every input has been answered (an interrupted run leaves the cards
that were there before). Exit code 0 when every input was processed, 1 when some could not be read, 2 on a
usage or setup error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from omegaconf import DictConfig

from emotion_llama.cli import Call, UsageError, run
from emotion_llama.errors import UserError
from emotion_llama.labels import resolve_labels


def check_args(cfg: DictConfig, call: Call) -> None:
    """What the per-key settings checks cannot see (task, json and the rest are checked there)."""
    if not call.positional:
        raise UsageError(f"give at least one video or folder: {call.prog} VIDEO|DIR [...] [key=value ...]")
    if cfg.subtitle is not None and cfg.subtitles is not None:
        raise UsageError("give subtitle=TEXT (every video) or subtitles=CSV (per video), not both")


def find_checkpoint(cfg: DictConfig) -> Path:
    if cfg.checkpoint is not None:
        return Path(cfg.checkpoint)
    for path in map(Path, cfg.demo_checkpoints):
        if (path / "config.yaml").is_file():
            print(f"using the demo's tiny model at {path}; pass checkpoint=DIR for another", file=sys.stderr)
            return path
    raise UserError(f"no checkpoint found at {' or '.join(cfg.demo_checkpoints)}: run `make demo` to train the "
                    "tiny model, or pass checkpoint=DIR")


def load_subtitles(cfg: DictConfig) -> dict[str, str] | str | None:
    if cfg.subtitles is None:
        return None if cfg.subtitle is None else str(cfg.subtitle)
    from emotion_llama.datasets.common import read_subtitles

    return read_subtitles(cfg.subtitles)


def emit(result, as_json: bool, save_card: Callable, show: bool = True) -> bool:
    """Print one result (when ``show``) and stage its card; False for an input that could not be processed
    (its one-line reason goes to stderr either way)."""
    from emotion_llama.inference.video import Failure, format_prediction

    if isinstance(result, Failure):
        print(f"error: {str(result).replace(chr(10), ' ')}", file=sys.stderr, flush=True)
        return False
    if show:
        print(json.dumps(result.to_dict()) if as_json else format_prediction(result) + "\n", flush=True)
    save_card(result)
    return True


def infer(cfg: DictConfig, inputs: Sequence[str], paths: Mapping[str, object] | None = None,
          show: bool = True) -> list:
    """What ``emotion-llama-infer`` does with the settings ``cfg`` on ``inputs`` (videos, images, frame folders
    or folders of these): answers each with the checkpoint (``paths``: the weight paths the user named, which
    replace its saved ones), prints each answer when ``show``, and writes the cards of ``cfg.card`` together
    once every input is answered. Returns the results in input order (a Failure for an input that failed)."""
    from emotion_llama.inference.video import Predictor, card_paths, card_set, expand_inputs

    labels = resolve_labels(cfg.labels)  # None: the checkpoint's own
    checkpoint = find_checkpoint(cfg)
    videos = expand_inputs(inputs, cfg.image_folder)
    subtitles = load_subtitles(cfg)
    predictor = Predictor(checkpoint, paths=paths, device=cfg.device, batch_size=cfg.batch_size,
                          max_new_tokens=cfg.max_new_tokens, num_workers=cfg.num_workers, asr_model=cfg.asr_model,
                          face_detector=cfg.face_detector, labels=list(labels) if labels is not None else None)
    cards = card_paths(cfg.card, [str(v) for v in videos]) if cfg.card else {}
    results = []
    with card_set(cards) as save_card:  # the cards land together when every input has been answered
        for result in predictor.predict_iter(videos, subtitles, cfg.task, keep_image=bool(cards)):
            emit(result, cfg.json, save_card, show)
            results.append(result)
    return results


def _main(cfg: DictConfig, call: Call) -> int:
    check_args(cfg, call)
    from emotion_llama.inference.video import Failure

    # The paths.* named on the command line replace the checkpoint's saved weight paths; the others stay.
    results = infer(cfg, call.positional, paths=call.named_paths(cfg))
    return 1 if any(isinstance(r, Failure) for r in results) else 0


def main(argv: Sequence[str] | None = None) -> int:
    # --json is the common spelling of json=true for tools that print JSON lines.
    argv = ["json=true" if arg == "--json" else arg for arg in (sys.argv[1:] if argv is None else argv)]
    return run("infer", _main, argv, positional="VIDEO",
               literal=("checkpoint", "card", "subtitle", "subtitles", "asr_model"))
