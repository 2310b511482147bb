"""Optimizers that training configs name by ``_target_`` (besides torch's own)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import torch

log = logging.getLogger(__name__)


def adamw_8bit(
    params: Iterable[torch.nn.Parameter],
    lr: float = 1e-4,
    weight_decay: float = 0.0,
    betas: Sequence[float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.Optimizer:
    """AdamW with 8-bit states (``bitsandbytes.optim.AdamW8bit``: ~2 bytes per trained weight instead of 8) where
    bitsandbytes can be imported, else ``torch.optim.AdamW`` (fp32 states) after one warning line.

    bitsandbytes is not a dependency of this project (``pip install bitsandbytes`` on a CUDA machine). Its
    8-bit states apply to tensors of 4,096 elements or more (every LoRA factor and projector here); smaller
    ones (biases) keep 32-bit states, as bitsandbytes decides.
    """
    betas = (float(betas[0]), float(betas[1]))
    try:
        import bitsandbytes as bnb
    except (ImportError, OSError, RuntimeError) as err:  # absent, or present without a usable CUDA library
        log.warning("no 8-bit AdamW (bitsandbytes: %s): torch.optim.AdamW with fp32 states instead, 6 bytes more "
                    "per trained weight; pip install bitsandbytes for 8-bit states",
                    str(err).splitlines()[0] if str(err) else type(err).__name__)
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps)
    return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps)
