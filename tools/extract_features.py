"""Extract multimodal features for a folder of videos (official .npy layout + manifest.jsonl).

python tools/extract_features.py input_dir=VIDEOS output_dir=FEATURES model=tiny
Exit code 0 when at least one clip is done (now or before), 1 otherwise.
"""

import sys
import time

import hydra
from omegaconf import DictConfig

from emotion_llama.cli import model_config, user_errors


@hydra.main(config_path="../conf", config_name="extract", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from emotion_llama.encoders.extract import extract_folder, iter_failures

    start = time.perf_counter()
    with user_errors():
        counts = extract_folder(
            cfg.input_dir, cfg.output_dir, model_config(cfg), feature_dirs=cfg.feature_dirs,
            batch_size=cfg.batch_size, num_workers=cfg.num_workers, accelerator=cfg.accelerator,
            devices=cfg.devices, progress=cfg.progress,
        )
    for entry in iter_failures(cfg.output_dir):
        print(f"failed: {entry.name}: {entry.reason}", file=sys.stderr)
    print(f"{counts} in {time.perf_counter() - start:.1f}s -> {cfg.output_dir}")
    sys.exit(0 if counts.ok + counts.skipped > 0 else 1)


if __name__ == "__main__":
    main()
