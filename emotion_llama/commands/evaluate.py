"""emotion-llama-eval: zero-shot evaluation of a checkpoint on a dataset (metrics.json, predictions.csv,
confusion.png in run_dir); the last line printed is the metrics JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence

from omegaconf import DictConfig

from emotion_llama.cli import Call, run


def _main(cfg: DictConfig, call: Call) -> None:
    from emotion_llama.evaluation.evaluate import evaluate, format_table

    report = evaluate(cfg)
    print(format_table(report))
    print(f"outputs in {cfg.run_dir}")
    print(json.dumps({k: v for k, v in report.items() if k != "subsets"}))


def main(argv: Sequence[str] | None = None) -> int:
    return run("eval", _main, argv, literal=("checkpoint", "run_dir", "data.root", "eval.features_dir"))
