"""python tools/score_openset.py: MER-UniBench's open-vocabulary scores of predicted emotion words against true
labels, through the user's own copy of the emotion wheels (:mod:`emotion_llama.evaluation.openset`).

Prints one JSON line: ``fscore``, ``precision``, ``recall`` (``metric=set``) or ``hit`` (``metric=hit``), each
the mean over the five wheels, ``per_wheel``, and the counts: ``samples`` (gold rows), ``scored`` (gold
samples whose true labels map onto at least one wheel), ``missing_from_pred`` (gold samples the predictions
lack: scored as empty predictions) and ``ignored_pred`` (predicted samples not in gold). Torch is never
imported.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from omegaconf import DictConfig

from emotion_llama.cli import Call, run
from emotion_llama.errors import UserError
from emotion_llama.evaluation import openset
from emotion_llama.evaluation.openset import read_openset_csv
from emotion_llama.fileio import json_text

log = logging.getLogger(__name__)
HIT_COLUMNS = ("openset", "label", "discrete")  # the gold label word's column for metric=hit, first found


def _hit_gold(path: str) -> dict[str, str]:
    """Sample name -> its one label word ("" for none)."""
    gold = {}
    for name, words in read_openset_csv(path, columns=HIT_COLUMNS, what="gold").items():
        if len(words) > 1:
            raise UserError(f"gold={path}: sample {name!r} has {len(words)} labels ([{', '.join(words)}]); the hit "
                            "rate takes one label word a sample: give one, or score word sets with metric=set")
        gold[name] = words[0] if words else ""
    return gold


def _main(cfg: DictConfig, call: Call) -> None:
    wheels = openset.EmotionWheels.load(cfg.paths.emotion_wheel)
    level = int(cfg.level)
    gold = _hit_gold(cfg.gold) if cfg.metric == "hit" else openset.read_openset(cfg.gold, what="gold")
    pred = openset.read_openset(cfg.pred, what="pred")
    if not gold:
        raise UserError(f"gold={cfg.gold}: no samples; point gold= at the true labels (name,openset rows)")
    missing = [name for name in gold if name not in pred]
    ignored = [name for name in pred if name not in gold]
    if len(missing) == len(gold):
        raise UserError(f"pred={cfg.pred}: none of the {len(gold)} sample names of gold={cfg.gold} is in it (pred "
                        f"has e.g. {', '.join(list(pred)[:3]) or 'no samples'}); are they of the same test set?")
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        log.warning("%d of the %d gold samples are missing from pred=%s (%s): scored as empty predictions",
                    len(missing), len(gold), cfg.pred, shown)

    def labels(item):
        return [item] if isinstance(item, str) else item

    scored = sum(1 for item in gold.values()
                 if any(wheels.sectors(labels(item), w, level) for w in range(len(wheels.wheels))))
    if cfg.metric == "hit":
        scores = openset.hit_rate(gold, pred, wheels, level)
    else:
        scores = openset.set_scores(gold, pred, wheels, level)
    print(json_text({"metric": cfg.metric, "level": level, **scores, "samples": len(gold), "scored": scored,
                     "missing_from_pred": len(missing), "ignored_pred": len(ignored)}))


def main(argv: Sequence[str] | None = None) -> int:
    return run("score_openset", _main, argv, literal=("gold", "pred"))
