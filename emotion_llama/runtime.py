"""The runtime policy, decided here once for every command and library function:

- **device**: ``auto`` (the first CUDA GPU when there is one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``;
- **precision**: the weights' own dtype on the CPU; on a GPU the project's model runs under bf16 autocast and
  the helper models (captioner, local language models, text-to-image) load in a half dtype;
- **weights a user names**: the ``paths.*`` given on the command line replace a checkpoint's saved weight paths,
  the others are kept (``paths.tiny_encoders`` moves the whole folder of the tiny preset's encoders);
- **media size**: an image or video frame may hold at most :func:`max_image_pixels` pixels (50 million unless
  the environment variable ``EMOTION_LLAMA_MAX_IMAGE_PIXELS`` says otherwise), checked from the file's header
  before anything is decoded;
- **Hugging Face folders**: read locally, with the library's plain torch layers (:data:`LOCAL_PLAIN`), and a
  folder without ``config.json`` is refused in one line naming the key.

Importing this module loads no model code (torch is imported by the functions that need it), so the settings
checks and the command launcher use it without pulling in the model stack.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from emotion_llama.errors import UserError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = "use device=auto, cpu, cuda or cuda:N"

# transformers >= 5.25 kernelizes every model it loads by default (``use_kernels``): layers are swapped for kernels
# fetched from the hub, code downloaded at run time, and ``from_pretrained(device_map="meta")`` fails ("Unsupported
# device type 'meta'"). Each ``from_pretrained`` of a transformers model passes these keywords.
LOCAL_PLAIN = {"local_files_only": True, "use_kernels": False}

# The real-weight keys of the ``paths`` config group a user may name.
LLM_PATH_KEY = "llm"
ENCODER_PATH_KEYS = ("eva", "mae", "videomae", "hubert")
INSTRUCTBLIP_PATH_KEY = "instructblip"
TINY_ENCODERS_KEY = "tiny_encoders"
# The files of the tiny preset's pre-trained encoders inside ``paths.tiny_encoders``.
TINY_ENCODER_FILES = {"eva": "eva.pth", "mae": "mae", "videomae": "videomae", "hubert": "hubert"}


MAX_IMAGE_PIXELS_ENV = "EMOTION_LLAMA_MAX_IMAGE_PIXELS"
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000  # 8K video frames are 33 million


def max_image_pixels() -> int:
    """The most pixels an image or a video frame may hold (width x height); a larger one is refused before it
    is decoded (a small file of a huge image would otherwise take tens of GB of memory)."""
    raw = os.environ.get(MAX_IMAGE_PIXELS_ENV)
    if raw is None:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"{MAX_IMAGE_PIXELS_ENV}={raw}: give a whole number of pixels, e.g. 50000000")
    return value


# ---------------------------------------------------------------------------------------------- device


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; ``cpu``, ``cuda`` and ``cuda:N`` as given.
    Anything else, or a GPU this machine lacks, is a one-line UserError."""
    import torch

    name = "auto" if device is None else str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError:
        raise UserError(f"device={name} is not a device: {DEVICE_CHOICES}") from None
    if resolved.type not in ("cpu", "cuda"):
        raise UserError(f"device={name} is not supported: {DEVICE_CHOICES}")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device={name} needs a CUDA GPU but none is visible here: use device=cpu or device=auto")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise UserError(f"device={name}: only {torch.cuda.device_count()} CUDA GPU(s) are visible")
    return resolved


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on a GPU; full precision (the weights' own dtype) on the CPU."""
    import torch

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def helper_dtype(device: torch.device, half: str = "bfloat16") -> torch.dtype | None:
    """The dtype a helper model (captioner, local language model, text-to-image pipeline) loads in: ``half``
    on a GPU, None (the checkpoint's own, float32 for these) on the CPU."""
    import torch

    return getattr(torch, half) if device.type == "cuda" else None


# ---------------------------------------------------------------------------------------------- weights


def tiny_encoder_paths(root: str | Path) -> dict[str, str]:
    """The tiny preset's encoder weights inside the folder ``root`` (``paths.tiny_encoders``)."""
    return {name: str(Path(root) / f) for name, f in TINY_ENCODER_FILES.items()}


def model_folder(path: str | Path | None, key: str, what: str, otherwise: str = "") -> Path:
    """``path`` as a Hugging Face model folder (it holds ``config.json``); unset or anything else is a one-line
    UserError naming ``key``, what it should point at and ``otherwise``, the other way out (", or ...")."""
    if not path:
        raise UserError(f"{key} is not set: point it at a local {what} folder ({key}=DIR){otherwise}")
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise UserError(f"{key}={path} is not a Hugging Face model folder (no config.json): point it at a local "
                        f"{what} folder{otherwise}")
    return folder
