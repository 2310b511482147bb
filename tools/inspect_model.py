"""Print one JSON object describing a model preset: python tools/inspect_model.py model=emotion_llama_7b"""

import json

import hydra
from omegaconf import DictConfig

from emotion_llama.cli import model_config, user_errors
from emotion_llama.inspect import inspect_model


@hydra.main(config_path="../conf", config_name="inspect_model", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with user_errors():
        print(json.dumps(inspect_model(model_config(cfg))))


if __name__ == "__main__":
    main()
