"""Pictures as model inputs, for the text-only sets answered through imagination (WALL-E): the settings and the
:class:`~emotion_llama.imagination.imagine.Imaginer` that draw them, and the features a model gets from them.

Evaluation (:mod:`emotion_llama.evaluation.imagined`) and training on text with pictures
(:mod:`emotion_llama.training.train`, ``data.imagined=true``) both use these, so a training run draws into the
same cache with the same settings and gives the model the same EVA features as its evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig

from emotion_llama.encoders.build import build_encoders
from emotion_llama.encoders.extract import FeatureEncoders, decode_image
from emotion_llama.errors import UserError
from emotion_llama.imagination.imagine import Imaginer, check_template
from emotion_llama.inference.inputs import ClipInputs
from emotion_llama.model.fusion import MODALITIES, PRESENT
from emotion_llama.runtime import autocast, resolve_device


def check_imagine(cfg: DictConfig, needs: str, instead: str) -> None:
    """``paths.t2i`` and ``imagine.*`` of a config that draws its utterances (``needs``: the setting that
    does, e.g. ``variant=both``; ``instead``: how to do without pictures)."""
    im = cfg.imagine
    if not cfg.paths.get("t2i"):
        raise UserError(f"paths.t2i is not set: {needs} draws each utterance with a local text-to-image "
                        "pipeline; set paths.t2i=DIR (a diffusers folder saved with save_pretrained, e.g. Stable "
                        f"Diffusion 2) or {instead}")
    if not (Path(cfg.paths.t2i) / "model_index.json").is_file():
        raise UserError(f"paths.t2i={cfg.paths.t2i} is not a diffusers pipeline folder (no model_index.json): "
                        "set paths.t2i to a text-to-image pipeline saved with save_pretrained")
    try:
        check_template(im.prompt_template)
    except UserError as err:
        raise UserError(f"imagine.{err}") from None


def build_imaginer(cfg: DictConfig, cache_dir: str | Path | None = None, device: str | None = None):
    """The :class:`~emotion_llama.imagination.imagine.Imaginer` of ``paths.t2i`` and ``imagine.*`` (the
    cache: ``imagine.cache_dir`` unless ``cache_dir``; the device: ``cfg.device`` unless ``device``)."""
    im = cfg.imagine
    return Imaginer(cfg.paths.t2i, cache_dir or im.cache_dir, prompt_template=im.prompt_template, steps=im.steps,
                    guidance=im.guidance, size=im.size, batch_size=im.batch_size, device=device or cfg.device,
                    dtype=im.dtype, negative_prompt=im.negative_prompt, context_turns=im.context_turns,
                    seed=im.seed)


def text_inputs(n: int) -> dict:
    """Features of ``n`` utterances with nothing but their text: every modality absent."""
    return {PRESENT: torch.zeros(n, len(MODALITIES), dtype=torch.bool)}


class ImageInputs:
    """Model inputs of picture files, the same for any backbone the core holds (:class:`ClipInputs`), from the
    image as :func:`~emotion_llama.encoders.extract.decode_image` decodes it. The picture is the only modality
    present (a face in it is not given to the face encoder), so only EVA is built."""

    def __init__(self, core):
        self.inputs = ClipInputs(core, encoders=("eva",))

    def __call__(self, paths: Sequence[str | Path]) -> dict:
        return self.inputs(decode_pictures(paths))


def decode_pictures(paths: Sequence[str | Path]) -> list[dict]:
    """Drawn pictures decoded as feature extraction decodes an image, each EVA's only input (no face MAE, even
    when a face is found in it)."""
    clips = []
    for path in paths:
        clip = decode_image(path)
        if "error" in clip:
            raise UserError(f"{path}: {clip['error']}; delete it (and rerun) to have it drawn again")
        clips.append({**clip, "face_found": False})
    return clips


def eva_encoder(config, device):
    """The EVA encoder of a model config (a checkpoint's, or a training run's) as feature extraction builds it:
    decoded pictures -> ``[{"eva": float16 tokens}]``."""
    return FeatureEncoders(build_encoders(config, names=("eva",))).to(device).eval()


def picture_features(paths: Sequence[str | Path], config, device="cpu", batch_size: int = 16) -> list[dict]:
    """Per picture, the features the image path of an Emotion-LLaMA of ``config`` gets (as :class:`ImageInputs`
    gives them at test time): ``{"eva": (1 + P, D) float16 tokens}``, EVA the only modality present."""
    device = resolve_device(device)
    encoders = eva_encoder(config, device)
    out = []
    for start in range(0, len(paths), batch_size):
        with autocast(device):
            per_clip = encoders(decode_pictures(paths[start:start + batch_size]))
        out += [{"eva": torch.from_numpy(f["eva"])} for f in per_clip]
    return out
