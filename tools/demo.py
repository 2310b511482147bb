"""make demo: synthetic data -> features -> stage 1 -> stage 2 -> evaluation -> inference, on CPU."""

import json

import hydra
from omegaconf import DictConfig

from emotion_llama.cli import user_errors


@hydra.main(config_path="../conf", config_name="demo", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from emotion_llama.demo import format_summary, run_demo

    with user_errors():
        summary = run_demo(cfg)
    print(format_summary(summary))
    print(f"summary: {cfg.demo_dir}/summary.json")
    print(json.dumps({k: summary[k] for k in ("test_war", "test_uar", "ablation_war", "minutes")}))


if __name__ == "__main__":
    main()
