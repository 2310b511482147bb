"""Export a checkpoint for deployment: its LoRA merged into a plain Hugging Face LLM folder, beside the projectors.

Layout of an export folder::

    llm/                        the LLM with the LoRA deltas added into its weights and the trained copies of the
                                ``lora.modules_to_save`` modules (the tiny presets' embed_tokens, lm_head) in place
                                of the originals: config.json, model.safetensors, generation_config.json, and the
                                tokenizer with its chat template where it has one
    projectors.safetensors      modality projectors, as in the checkpoint
    config.yaml                 the checkpoint's ModelConfig with ``llm_path: ${checkpoint_dir}/llm`` (the folder
                                it is read from, so it can be moved), ``lora.r: 0`` (no adapters: see LoraSpec)
                                and the dtype of the written weights; the encoders are named as in the checkpoint
    meta.json                   the checkpoint's, plus ``export`` (where from, the dtype)

``llm/`` opens with plain transformers (``AutoModelForCausalLM.from_pretrained``, ``AutoTokenizer.from_pretrained``),
without this project or peft. Its tokenizer holds the project's two placeholder tokens ``<VideoHere>`` and
``<FeatureHere>`` past the LLM's vocabulary (``len(tokenizer) == config.vocab_size + 2``): the whole model needs
them to place the clips' features, so they are kept; a text-only prompt never produces them. The tiny LLaMA-2
tokenizer has no chat template (the ``release`` prompt format writes the LLaMA-2 turn itself).

The whole model opens with :func:`~emotion_llama.model.checkpoint.load_checkpoint` (so ``InferenceCore.load``,
``tools/infer.py checkpoint=OUT``, ``tools/eval.py checkpoint=OUT``) like any checkpoint. A random-base tiny
preset's export needs no ``base_llm/``: its weights are in ``llm/``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from emotion_llama.fileio import atomic_dir
from emotion_llama.model.checkpoint import (
    CHECKPOINT_DIR_KEY,
    CheckpointError,
    load_checkpoint,
    read_config,
    read_labels,
)
from emotion_llama.model.config import LoraSpec, ModelConfig
from emotion_llama.model.llm import merge_lora
from emotion_llama.model.prompts import FEATURE_TOKEN, VIDEO_TOKEN

LLM_DIR = "llm"
EXPORT_DTYPES = ("auto", "float32")  # auto: the base's dtype (the checkpoint's model.dtype)


class ExportError(CheckpointError):
    pass


def check_export_target(ckpt_dir: Path, out_dir: Path, overwrite: bool = False) -> None:
    """Refuse an ``out_dir`` that is a file, a non-empty folder (unless ``overwrite``), or the checkpoint itself,
    inside it or around it (replacing it would delete the checkpoint)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"out={out_dir} is a file: choose a new folder for the export")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise ExportError(f"out={out_dir} exists and is not empty: choose a new folder, or replace it with "
                          "overwrite=true")
    src, dst = ckpt_dir.resolve(), out_dir.resolve()
    if src == dst or src in dst.parents or dst in src.parents:
        raise ExportError(f"out={out_dir} overlaps checkpoint={ckpt_dir}: write the export to a folder outside it")


def exported_config(cfg: ModelConfig, dtype: str) -> ModelConfig:
    """``cfg`` for the export: the merged LLM in ``${checkpoint_dir}/llm`` (its own tokenizer and architecture
    there), no adapters, weights in ``dtype``, never a random LLM."""
    return dataclasses.replace(
        cfg,
        llm_path=f"${{{CHECKPOINT_DIR_KEY}}}/{LLM_DIR}",
        tokenizer_path=None,
        llm_arch={},
        lora=LoraSpec(r=0, target_modules=(), modules_to_save=()),
        dtype=dtype,
        weights_required=True,
    )


def export_checkpoint(
    ckpt_dir: str | Path,
    out_dir: str | Path,
    dtype: str = "auto",
    overwrite: bool = False,
    llm_path: str | None = None,
) -> dict:
    """Write the export of checkpoint ``ckpt_dir`` to ``out_dir`` (see the module doc) through a temporary folder
    renamed into place when complete; returns a summary. ``dtype``: ``auto`` keeps the base's dtype, ``float32``
    writes fp32 (the merge is then done in fp32). ``llm_path``: the base LLM's folder when it moved since training
    (``paths.llm``). Refuses an InstructBLIP checkpoint, one already exported, and a non-empty ``out_dir``
    unless ``overwrite``."""
    ckpt_dir, out_dir = Path(ckpt_dir), Path(out_dir)
    if dtype not in EXPORT_DTYPES:
        raise ExportError(f"dtype={dtype} is not an export dtype: use {' or '.join(EXPORT_DTYPES)}")
    cfg = read_config(ckpt_dir)
    if cfg.is_instructblip:
        raise ExportError(f"{ckpt_dir} is an InstructBLIP (EmoVIT, model.backbone=instructblip) checkpoint: export "
                          "is not supported for it; use the checkpoint folder itself (tools/infer.py checkpoint=DIR)")
    if not cfg.lora.enabled:
        raise ExportError(f"{ckpt_dir} is already an export (model.lora.r=0: its LoRA is merged): copy the folder "
                          "instead")
    check_export_target(ckpt_dir, out_dir, overwrite)
    meta = _read_meta(ckpt_dir)
    overrides = {"llm_path": llm_path} if llm_path else {}
    if dtype == "float32":
        overrides["dtype"] = "float32"  # the base read in fp32: the deltas are added without rounding
    model, cfg, tokenizer = load_checkpoint(ckpt_dir, overrides, device="cpu")
    dtype_name = cfg.dtype
    lora_modules = sum(1 for name, _ in model.llm.named_modules() if name.endswith(".lora_A"))
    with torch.no_grad():
        llm = merge_lora(model.llm).to(cfg.torch_dtype)  # the fp32 modules_to_save copies too
    exported = exported_config(cfg, dtype_name)
    with atomic_dir(out_dir) as tmp:
        llm.save_pretrained(tmp / LLM_DIR)
        tokenizer.save_pretrained(tmp / LLM_DIR)
        save_file({k: v.detach().contiguous() for k, v in model.projectors.state_dict().items()},
                  tmp / "projectors.safetensors")
        OmegaConf.save(OmegaConf.create(exported.to_dict()), tmp / "config.yaml")
        meta["export"] = {"from": str(ckpt_dir.absolute()), "dtype": dtype_name}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    return {
        "out": str(out_dir),
        "llm": str(out_dir / LLM_DIR),
        "dtype": dtype_name,
        "lora_modules_merged": lora_modules,
        "modules_to_save": list(cfg.lora.modules_to_save),
        "vocab_size": llm.config.vocab_size,
        "tokenizer_size": len(tokenizer),
        "placeholders": [VIDEO_TOKEN, FEATURE_TOKEN],
        "chat_template": bool(getattr(tokenizer, "chat_template", None)),
        "prompt_format": cfg.prompt_format,
    }


def _read_meta(ckpt_dir: Path) -> dict:
    """The checkpoint's meta.json (checked: its labels), {} when it has none."""
    read_labels(ckpt_dir)  # a corrupt file or bad label set is refused in one line
    path = ckpt_dir / "meta.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
