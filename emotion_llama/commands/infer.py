"""emotion-llama-infer: the emotion of raw videos, frame folders and images with a trained checkpoint.

    emotion-llama-infer clip.mp4 videos/ frames/00001/ subtitles=subs.csv task=reason json=true card=cards/

The cards of a run are saved together once every input has been answered (an interrupted run leaves the cards
that were there before). Exit code 0 when every input was processed, 1 when some could not be read, 2 on a
usage or setup error.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from omegaconf import DictConfig

from emotion_llama.cli import Call, UsageError, run
from emotion_llama.datasets.common import read_subtitles
from emotion_llama.errors import UserError
from emotion_llama.fileio import json_text
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
    return read_subtitles(cfg.subtitles)


def infer(cfg: DictConfig, inputs: Sequence[str], paths: Mapping[str, object] | None = None,
          show: bool = True) -> list:
    """What ``emotion-llama-infer`` does with the settings ``cfg`` on ``inputs`` (videos, images, frame folders
    or folders of these): answers each with the checkpoint (``paths``: the weight paths the user named, which
    replace its saved ones), prints each answer when ``show`` (a failed input's one-line reason goes to stderr
    either way), and writes the cards of ``cfg.card`` together once every input is answered. Returns the results
    in input order (a ``Failure`` for an input that failed)."""
    # The model stack loads here, once the settings are checked: --help and usage errors answer without torch.
    from emotion_llama.inference import video

    labels = resolve_labels(cfg.labels)  # None: the checkpoint's own
    checkpoint = find_checkpoint(cfg)
    videos = video.expand_inputs(inputs, cfg.image_folder)
    subtitles = load_subtitles(cfg)
    predictor = video.Predictor(
        checkpoint, paths=paths, device=cfg.device, batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens,
        num_workers=cfg.num_workers, asr_model=cfg.asr_model, face_detector=cfg.face_detector,
        labels=list(labels) if labels is not None else None)
    cards = video.card_paths(cfg.card, [str(v) for v in videos]) if cfg.card else {}
    results = []
    with video.card_set(cards) as save_card:  # the cards land together when every input has been answered
        for result in predictor.predict_iter(videos, subtitles, cfg.task, keep_image=bool(cards)):
            results.append(result)
            if not result.ok:
                print(f"error: {str(result).replace(chr(10), ' ')}", file=sys.stderr, flush=True)
                continue
            if show:
                shown = json_text(result.to_dict()) if cfg.json else video.format_prediction(result) + "\n"
                print(shown, flush=True)
            save_card(result)
    return results


def _main(cfg: DictConfig, call: Call) -> int:
    check_args(cfg, call)
    # The paths.* named on the command line replace the checkpoint's saved weight paths; the others stay.
    results = infer(cfg, call.positional, paths=call.named_paths(cfg))
    return 0 if all(r.ok for r in results) else 1


def main(argv: Sequence[str] | None = None) -> int:
    # --json is the common spelling of json=true for tools that print JSON lines.
    argv = ["json=true" if arg == "--json" else arg for arg in (sys.argv[1:] if argv is None else argv)]
    return run("infer", _main, argv, positional="VIDEO",
               literal=("checkpoint", "card", "subtitle", "subtitles", "asr_model"))
