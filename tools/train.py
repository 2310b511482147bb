"""Train one stage: python tools/train.py experiment=tiny_coarse (then experiment=tiny_fine)."""

import json

import hydra
from omegaconf import DictConfig

from emotion_llama.cli import user_errors
from emotion_llama.train import train


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with user_errors():
        metrics, objects = train(cfg)
    print(json.dumps({"model": str(objects["export"]), **metrics}))


if __name__ == "__main__":
    main()
