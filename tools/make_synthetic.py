"""Write the synthetic MERR-style set: python tools/make_synthetic.py out_dir=DIR clips_per_label=N seed=S; see --help."""

import sys

from omegaconf import DictConfig

from emotion_llama.cli import Call, run
from emotion_llama.datasets.synthetic import timed_generate


def main(cfg: DictConfig, call: Call) -> None:
    print(timed_generate(cfg.out_dir, cfg.clips_per_label, cfg.seed, cfg.workers))


if __name__ == "__main__":
    sys.exit(run("make_synthetic", main, literal=("out_dir",)))
