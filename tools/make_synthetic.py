"""Write the synthetic MERR-style set: python tools/make_synthetic.py out_dir=DIR clips_per_label=N seed=S"""

import hydra
from hydra.utils import to_absolute_path
from omegaconf import DictConfig

from emotion_llama.cli import user_errors
from emotion_llama.datasets.synthetic import timed_generate


@hydra.main(config_path="../conf", config_name="make_synthetic", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with user_errors():
        print(timed_generate(to_absolute_path(cfg.out_dir), cfg.clips_per_label, cfg.seed, cfg.workers))


if __name__ == "__main__":
    main()
