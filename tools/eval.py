"""Zero-shot evaluation: python tools/eval.py data=<dfew|mer2023|mer2024|merr|synthetic> checkpoint=DIR protocol=<score|generate>

Writes metrics.json, predictions.csv and confusion.png into run_dir; the last printed line is the metrics JSON.
"""

import json

import hydra
from omegaconf import DictConfig

from emotion_llama.cli import user_errors


@hydra.main(config_path="../conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from emotion_llama.evaluate import evaluate, format_table

    with user_errors():
        report = evaluate(cfg)
    print(format_table(report))
    print(f"outputs in {cfg.run_dir}")
    summary = {k: v for k, v in report.items() if k != "subsets"}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
