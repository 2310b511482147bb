"""EMER-style reasoning: python tools/eval_reasoning.py checkpoint=DIR [judge.model=DIR] [reasoning.ground_truth=CSV]

Writes reasons.csv (EMER's names,chi_reasons), judgements.csv (with a judge) and reasoning.json into run_dir;
the last printed line is the report JSON.
"""

import json

import hydra
from omegaconf import DictConfig

from emotion_llama.cli import user_errors


@hydra.main(config_path="../conf", config_name="eval_reasoning", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from emotion_llama.reasoning import evaluate_reasoning

    with user_errors():
        report = evaluate_reasoning(cfg)
    print(f"outputs in {cfg.run_dir}")
    judged = report["judge"]
    if "skipped" in judged:
        print(f"judge: {judged['skipped']}")
    else:
        print(f"judge: clue {judged['clue_overlap']}, label {judged['label_overlap']} "
              f"({judged['n_judged']}/{judged['n']} judged, {judged['n_unparseable']} unparseable)")
    print(json.dumps({k: v for k, v in report.items() if k != "judge"} | {"judge": {k: v for k, v in judged.items() if k != "prompt"}}))


if __name__ == "__main__":
    main()
