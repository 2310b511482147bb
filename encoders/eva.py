"""EVA ViT-g/14 (the BLIP-2 / MiniGPT-v2 vision tower) plus its separate ``ln_vision`` LayerNorm."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from timm.layers import resample_abs_pos_embed
from timm.models.eva import Eva
from torch import nn

from emotion_llama.encoders.base import Encoder, EncoderOutput, frames_to_tensor
from emotion_llama.errors import UserError

logger = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PREFIX = "visual_encoder."


class EvaEncoder(Encoder):
    """tokens are all of EVA's outputs after ln_vision, CLS first; pooled is the CLS token."""

    name = "eva"
    config_key = "paths.eva"

    def __init__(self, model: Eva, frozen: bool = True, ln_vision: nn.LayerNorm | None = None):
        super().__init__(model, frozen=frozen)
        self.ln_vision = nn.LayerNorm(model.embed_dim) if ln_vision is None else ln_vision
        self._apply_frozen()

    @classmethod
    def real_config(cls) -> dict[str, Any]:
        """EVA-CLIP-g as LAVIS uses it: 39 of its 40 blocks, no final norm, no head, at 448 px."""
        return dict(
            img_size=448,
            patch_size=14,
            embed_dim=1408,
            depth=39,
            num_heads=16,
            mlp_ratio=6144 / 1408,
            qkv_bias=True,  # q_bias and v_bias; EVA has no k bias
            num_classes=0,
            global_pool="token",
            use_post_transformer_norm=False,
        )

    @classmethod
    def tiny_config(cls) -> dict[str, Any]:
        return {**cls.real_config(), "img_size": 112, "embed_dim": 64, "depth": 2, "num_heads": 2}

    @classmethod
    def from_config(cls, config: dict[str, Any], frozen: bool = True) -> EvaEncoder:
        return cls(Eva(**config), frozen=frozen)

    @property
    def num_features(self) -> int:
        return self.model.embed_dim

    @property
    def num_patches(self) -> int:
        return self.model.patch_embed.num_patches

    @property
    def grid_size(self) -> tuple[int, int]:
        return tuple(self.model.patch_embed.grid_size)

    @property
    def image_size(self) -> int:
        return self.model.patch_embed.img_size[0]

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 RGB frames (N, h, w, 3) -> (N, 3, S, S): bicubic squash and CLIP normalisation, as the
        BLIP-2 eval image processor does."""
        return frames_to_tensor(frames, self.image_size, CLIP_MEAN, CLIP_STD, mode="bicubic")

    def forward(self, images: torch.Tensor) -> EncoderOutput:
        tokens = self.ln_vision(self.model.forward_features(images))  # (B, 1+P, D)
        return EncoderOutput(tokens, tokens[:, 0])

    @classmethod
    def from_pretrained(
        cls, path: str | Path, frozen: bool = True, config: dict[str, Any] | None = None
    ) -> EvaEncoder:
        """Load LAVIS ``eva_vit_g.pth`` or a MiniGPT-style checkpoint (``visual_encoder.*`` and ``ln_vision.*``)
        into the ``config`` architecture (EVA-g at 448 by default), in float32."""
        path = cls._check_path(path)
        if path.is_dir():
            raise UserError(f"{cls.config_key}={path} is a folder: EVA's weights are one file (LAVIS eva_vit_g.pth, "
                            "a MiniGPT-style .pth or a .safetensors); name that file")
        visual, ln_vision = split_eva_state_dict(read_state_dict(path))
        with torch.device("meta"):
            encoder = cls.from_config(config or cls.real_config(), frozen=frozen)
        visual["pos_embed"] = resample_pos_embed(visual, encoder.grid_size)
        result = encoder.model.load_state_dict(visual, strict=False, assign=True)
        cls._check_keys(path, result.missing_keys, result.unexpected_keys)
        if ln_vision:
            encoder.ln_vision.load_state_dict(ln_vision, assign=True)
        else:
            logger.info("%s has no ln_vision weights: keeping its identity initialisation", path)
            encoder.ln_vision = nn.LayerNorm(encoder.num_features)
        _zero_k_bias(encoder.model)
        encoder._apply_frozen()
        return encoder


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file or a torch checkpoint, unwrapped from a ``{"model": ...}`` dict."""
    if path.suffix == ".safetensors":
        return load_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UserError(
            f"{path} is not a plain tensor checkpoint ({err}): set paths.eva to a weights file"
        ) from err
    for wrapper in ("model", "state_dict", "module"):
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    return state


def split_eva_state_dict(state: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """(EVA weights with timm names, ln_vision weights), float32; MiniGPT keys carry a prefix, LAVIS's do not."""
    state = {k: v.float() for k, v in state.items() if torch.is_tensor(v)}
    ln_vision = {k.removeprefix("ln_vision."): v for k, v in state.items() if k.startswith("ln_vision.")}
    if any(k.startswith(PREFIX) for k in state):
        return {k.removeprefix(PREFIX): v for k, v in state.items() if k.startswith(PREFIX)}, ln_vision
    return {k: v for k, v in state.items() if not k.startswith("ln_vision.")}, ln_vision


def resample_pos_embed(visual: dict[str, torch.Tensor], grid_size: tuple[int, int]) -> torch.Tensor:
    """The stored pos_embed on the model's grid (LAVIS stores 224 px: 16x16 patches, for use at 448: 32x32)."""
    if "pos_embed" not in visual:
        raise UserError("the EVA checkpoint has no pos_embed: set paths.eva to an EVA ViT-g weights file")
    pos = visual["pos_embed"]  # (1, 1+P, D)
    if pos.shape[1] != 1 + grid_size[0] * grid_size[1]:
        logger.info("resampling EVA pos_embed from %d to %s patches", pos.shape[1] - 1, grid_size)
    # antialias=False is plain bicubic, which is what LAVIS interpolates with.
    return resample_abs_pos_embed(pos, list(grid_size), num_prefix_tokens=1, antialias=False)


def _zero_k_bias(model: Eva) -> None:
    """EVA's k bias is a zero, non-persistent buffer: no checkpoint holds it, so a meta build must create it."""
    for module in model.modules():
        if isinstance(getattr(module, "k_bias", None), torch.Tensor):
            module.k_bias = torch.zeros_like(module.q_bias)
