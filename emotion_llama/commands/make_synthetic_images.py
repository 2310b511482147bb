"""Write the synthetic image emotion set in EmoSet's layout:
python tools/make_synthetic_images.py out_dir=DIR images_per_label=N seed=S; see --help."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from omegaconf import DictConfig

from emotion_llama.cli import Call, run


def _main(cfg: DictConfig, call: Call) -> None:
    # The model stack loads here, once the settings are checked: --help and usage errors answer without torch.
    from emotion_llama.datasets.synthetic.images import timed_generate_images

    print(timed_generate_images(cfg.out_dir, cfg.images_per_label, cfg.seed, size=cfg.size,
                                person_fraction=cfg.person_fraction, workers=cfg.workers))


def main(argv: Sequence[str] | None = None) -> int:
    return run("make_synthetic_images", _main, argv, literal=("out_dir",))


if __name__ == "__main__":
    sys.exit(main())
