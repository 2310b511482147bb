"""emotion-llama-eval: zero-shot evaluation of a checkpoint on a dataset (metrics.json, predictions.csv,
confusion.png in run_dir); the last line printed is the metrics JSON. Text-only dialogue sets (data=meld,
iemocap, synthetic_meld) go through :mod:`emotion_llama.evaluation.imagined`, MER-UniBench's sets
(data=unibench_<set>, mer_unibench, synthetic_ov, synthetic_unibench) through
:mod:`emotion_llama.evaluation.unibench`."""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig

from emotion_llama.cli import Call, run
from emotion_llama.datasets.dialogue import is_dialogue
from emotion_llama.datasets.unibench import UNIBENCH_KINDS
from emotion_llama.fileio import json_text


def _main(cfg: DictConfig, call: Call) -> None:
    # The model stack loads here, once the settings are checked: --help and usage errors answer without torch.
    from emotion_llama.evaluation import evaluate, imagined, unibench

    # The paths.* named on the command line replace the checkpoint's saved weight paths; the others stay.
    paths = call.named_paths(cfg)
    if is_dialogue(cfg.data):  # text-only dialogue sets (MELD, IEMOCAP): through imagination
        report = imagined.evaluate_dialogue(cfg, paths)
        table, details = imagined.format_report(report), ("variants", "imagination")
    elif cfg.data.kind in UNIBENCH_KINDS:  # MER-UniBench: open-vocabulary answers, scored per set
        report = unibench.evaluate_unibench(cfg, paths)
        table, details = unibench.format_report(report), unibench.REPORT_DETAILS
    else:
        report = evaluate.evaluate(cfg, paths)
        table, details = evaluate.format_table(report), ("subsets",)
    print(table)
    print(f"outputs in {cfg.run_dir}")
    print(json_text({k: v for k, v in report.items() if k not in details}))


def main(argv: Sequence[str] | None = None) -> int:
    return run("eval", _main, argv, literal=("checkpoint", "run_dir", "data.root", "eval.features_dir",
                                             "imagine.prompt_template", "imagine.negative_prompt",
                                             "imagine.cache_dir", "extractor.model", "extractor.base_url",
                                             "extractor.cache"))
