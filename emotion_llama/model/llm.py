"""The language model: a Hugging Face causal LM from a local folder (or a random one of a given architecture) with
peft LoRA."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils import ModulesToSaveWrapper
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from emotion_llama.errors import WeightsNotFoundError
from emotion_llama.model.config import LoraSpec, ModelConfigError
from emotion_llama.runtime import LOCAL_PLAIN

# LLaMA-2-7B's architecture, for building it on the meta device without a weights folder.
LLAMA2_7B = dict(
    vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
    num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5,
    bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
)


def llm_config(vocab_size: int, /, **arch) -> PretrainedConfig:
    """The transformers config of a random LLM: ``arch['model_type']`` names the architecture (``llama`` when
    absent, with LLaMA-2-7B's shape under what ``arch`` gives); its other fields are the config's own
    (``num_key_value_heads``, ``rope_parameters``, ...). ``vocab_size`` wins over ``arch``'s."""
    arch = dict(arch)
    model_type = arch.pop("model_type", "llama")
    base = LLAMA2_7B if model_type == "llama" else {}
    try:
        return AutoConfig.for_model(model_type, **{**base, **arch, "vocab_size": vocab_size},
                                    attn_implementation="sdpa")
    except ValueError as err:  # an unknown model_type
        raise ModelConfigError(f"model.llm_arch.model_type={model_type} is not an architecture transformers "
                               f"knows: {str(err).splitlines()[0]}") from None


def folder_config(path: str | Path | None) -> PretrainedConfig | None:
    """The config.json of an LLM folder, or None when there is none (for shape-only builds on the meta device)."""
    if path is None or not (Path(path) / "config.json").is_file():
        return None
    return AutoConfig.from_pretrained(str(path), **LOCAL_PLAIN)


def load_llm(
    path: str | Path | None,
    arch: dict | None = None,
    vocab_size: int = 32000,
    dtype: torch.dtype = torch.float32,
    config_key: str = "paths.llm",
    device: str | torch.device | None = None,
    config: PretrainedConfig | None = None,
) -> PreTrainedModel:
    """The base LLM in ``dtype`` on ``device``: pretrained from the local folder ``path``; random when path is
    None, of ``config`` (e.g. a folder's, for a shape-only build) or else of ``arch`` (see :func:`llm_config`).

    ``device`` (default: the current default device, normally the CPU) is where the weights are created:
    a weights folder is read straight onto it (``device_map``) and a random model is initialised there,
    so a 7B model bound for a GPU never passes through host memory.
    """
    device = torch.device(device) if device is not None else torch.get_default_device()
    if path is None:
        with torch.device(device):
            config = config or llm_config(vocab_size, **(arch or {}))
            return AutoModelForCausalLM.from_config(config, dtype=dtype)
    if not Path(path).is_dir():
        raise WeightsNotFoundError("LLM", path, config_key)
    # The CPU keeps transformers' plain loading path (no device_map: no accelerate dispatch hooks).
    placement = {} if device.type == "cpu" else {"device_map": device}
    return AutoModelForCausalLM.from_pretrained(
        str(path), dtype=dtype, attn_implementation="sdpa", **LOCAL_PLAIN, **placement
    )


def apply_lora(llm: PreTrainedModel, spec: LoraSpec,
               trainable_dtype: torch.dtype = torch.float32) -> PeftModel | PreTrainedModel:
    """Freeze the base model and add LoRA adapters (peft), plus any fully trained ``modules_to_save``; with
    ``spec.r == 0`` (no adapters: an exported, merged LLM) just freeze it and return it as it is.

    The base keeps its dtype (bf16 for the real preset); every trainable weight is ``trainable_dtype``
    (fp32), so that small optimiser steps are not rounded away. peft keeps the LoRA factors in fp32
    itself (``autocast_adapter_dtype``) and casts their input; the ``modules_to_save`` copies are cast
    here and bridged by hooks (see :func:`upcast_modules_to_save`).
    """
    if not spec.enabled:
        return llm.requires_grad_(False)
    config = LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=list(spec.target_modules),
        modules_to_save=list(spec.modules_to_save) or None,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(llm, config, autocast_adapter_dtype=trainable_dtype == torch.float32)
    upcast_modules_to_save(model, trainable_dtype)
    return model


def upcast_modules_to_save(model: nn.Module, dtype: torch.dtype = torch.float32) -> None:
    """Cast the trained copies of peft's ``modules_to_save`` to ``dtype``, their frozen originals untouched.

    Where the base runs in another dtype (bf16), hooks cast the copy's floating inputs to ``dtype`` and
    its floating output back to the base's dtype, so the model's dtype flow is that of the base with or
    without autocast (an fp32 embedding copy still hands bf16 embeddings to bf16 layers).
    """
    for wrapper in model.modules():
        if not isinstance(wrapper, ModulesToSaveWrapper):
            continue
        base_dtype = _float_dtype(wrapper.original_module)
        for copy in wrapper.modules_to_save.values():
            for param in copy.parameters():
                if param.is_floating_point() and param.dtype != dtype:
                    param.data = param.data.to(dtype)  # the same Parameter: tied copies stay tied
            if base_dtype is not None and base_dtype != dtype and not getattr(copy, "_dtype_bridge", False):
                copy._dtype_bridge = (copy.register_forward_pre_hook(partial(_cast_inputs, dtype=dtype)),
                                      copy.register_forward_hook(partial(_cast_output, dtype=base_dtype)))


def merge_lora(llm: PeftModel) -> PreTrainedModel:
    """The plain transformers model of ``llm``: its LoRA deltas added into the base weights and the trained
    ``modules_to_save`` copies in place of their originals (peft's ``merge_and_unload``, which refuses NaN
    results), the dtype bridges of :func:`upcast_modules_to_save` removed. Done in place (``llm`` is spent);
    the weights keep their dtypes (the base's; ``trainable_dtype`` for the copies): cast the result as wanted."""
    merged = llm.merge_and_unload(progressbar=False, safe_merge=True)
    for module in merged.modules():
        for handle in getattr(module, "_dtype_bridge", None) or ():
            handle.remove()
        module.__dict__.pop("_dtype_bridge", None)
    inputs, outputs = merged.get_input_embeddings(), merged.get_output_embeddings()
    if outputs is not None and inputs.weight is not outputs.weight and getattr(merged.config, "tie_word_embeddings",
                                                                               False):
        merged.config.tie_word_embeddings = False  # separately trained copies: tying on reload would lose one
    return merged


def _float_dtype(module: nn.Module) -> torch.dtype | None:
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), None)


def _cast_inputs(module: nn.Module, args: tuple, dtype: torch.dtype) -> tuple:
    return tuple(a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)


def _cast_output(module: nn.Module, args: tuple, output, dtype: torch.dtype):
    return output.to(dtype) if isinstance(output, torch.Tensor) and output.is_floating_point() else output


def lora_parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)


def enable_checkpointing(llm: torch.nn.Module) -> None:
    """Activation checkpointing on every decoder layer; transformers 5 renamed gradient_checkpointing_enable."""
    kwargs = {"use_reentrant": False}  # the reentrant form drops gradients when the inputs need none
    if hasattr(llm, "activation_checkpointing_enable"):
        llm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
