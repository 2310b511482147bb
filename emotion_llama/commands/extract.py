"""emotion-llama-extract: features of a folder of clips: videos, images and frame folders (official .npy layout +
manifest.jsonl).

Exit code 0 when at least one clip is done (now or before), 1 otherwise.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from omegaconf import DictConfig

from emotion_llama.cli import Call, run
from emotion_llama.errors import UserError
from emotion_llama.model.config import ModelConfig
from emotion_llama.runtime import resolve_device


def lightning_devices(device: str, devices: int) -> tuple[str, int | list[int]]:
    """``device=auto|cpu|cuda|cuda:N`` (and ``devices=N`` GPUs to shard over) as Lightning's
    ``accelerator`` and ``devices``."""
    resolved = resolve_device(device)
    if resolved.type == "cpu":
        return "cpu", devices
    if resolved.index is None:
        return "gpu", devices
    if devices != 1:
        raise UserError(f"device={device} names one GPU but devices={devices}: use device=cuda devices={devices} "
                        "to shard over the first GPUs, or devices=1")
    return "gpu", [resolved.index]


def _main(cfg: DictConfig, call: Call) -> int:
    model_cfg = ModelConfig.from_cfg(cfg)
    if model_cfg.reads_pixels:
        raise UserError(f"model.backbone={cfg.model.backbone} reads the images themselves and needs no features: "
                        "train and evaluate it on the image folders directly")
    accelerator, devices = lightning_devices(cfg.device, cfg.devices)
    # The model stack loads here, once the settings are checked: --help and usage errors answer without torch.
    from emotion_llama.encoders.extract import extract_folder, iter_failures

    start = time.perf_counter()
    counts = extract_folder(
        cfg.input_dir, cfg.output_dir, model_cfg, feature_dirs=cfg.feature_dirs, batch_size=cfg.batch_size,
        num_workers=cfg.num_workers, accelerator=accelerator, devices=devices, progress=cfg.progress,
        face_detector=cfg.face_detector,
    )
    for entry in iter_failures(cfg.output_dir):
        print(f"failed: {entry.name}: {entry.reason}", file=sys.stderr)
    print(f"{counts} in {time.perf_counter() - start:.1f}s -> {cfg.output_dir}")
    return 0 if counts.ok + counts.skipped > 0 else 1


def main(argv: Sequence[str] | None = None) -> int:
    return run("extract", _main, argv, literal=("input_dir", "output_dir"))
