"""emotion-llama-reason: EMER-style explanations of a checkpoint (reasons.csv, judgements.csv with a judge,
reasoning.json in run_dir); the last line printed is the report JSON."""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig

from emotion_llama.cli import Call, run
from emotion_llama.fileio import json_text


def _main(cfg: DictConfig, call: Call) -> None:
    # The model stack loads here, once the settings are checked: --help and usage errors answer without torch.
    from emotion_llama.evaluation.reasoning import evaluate_reasoning

    # The paths.* named on the command line replace the checkpoint's saved weight paths; the others stay.
    report = evaluate_reasoning(cfg, paths=call.named_paths(cfg))
    print(f"outputs in {cfg.run_dir}")
    judged = report["judge"]
    if "skipped" in judged:
        print(f"judge: {judged['skipped']}")
    else:
        print(f"judge: clue {judged['clue_overlap']}, label {judged['label_overlap']} "
              f"({judged['n_judged']}/{judged['n']} judged, {judged['n_unparseable']} unparseable)")
    judge = {k: v for k, v in judged.items() if k != "prompt"}
    print(json_text({k: v for k, v in report.items() if k != "judge"} | {"judge": judge}))


def main(argv: Sequence[str] | None = None) -> int:
    return run("eval_reasoning", _main, argv, literal=(
        "checkpoint", "run_dir", "data.root", "reasoning.ground_truth", "reasoning.features_dir", "judge.model"))
