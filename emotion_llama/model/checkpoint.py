"""Checkpoints of the trainable weights: a peft LoRA adapter, the projectors and the resolved config.

Layout of a checkpoint folder::

    config.yaml                 resolved ModelConfig
    adapter/                    peft adapter (adapter_config.json, adapter_model.safetensors), with the
                                trained copies of any ``lora.modules_to_save`` modules
    projectors.safetensors      modality projectors
    tokenizer/                  tokenizer files (placeholders included)
    base_llm/                   only when the LLM has no weights folder (the random tiny preset): a plain
                                Hugging Face model folder (config.json, model.safetensors) of the base LLM
                                as built, i.e. without the LoRA deltas and with the untrained originals of
                                the ``modules_to_save`` modules
    meta.json                   training metadata (stage, step, metrics, labels: the label set it learnt)

So any checkpoint opens with plain transformers + peft (the placeholder tokens and projectors need this
project)::

    base = AutoModelForCausalLM.from_pretrained(f"{ckpt}/base_llm")  # real presets: the paths.llm folder
    llm = PeftModel.from_pretrained(base, f"{ckpt}/adapter")

:func:`load_checkpoint` gets the same weights another way: a random-LLM preset is rebuilt from its
``llm_arch`` (drawing the same random numbers as at training time, so that a run loading a checkpoint, e.g.
stage 2, continues with the RNG state it always had), ``base_llm/`` is copied in, then the adapter is loaded;
a real preset's LLM is read from its folder by ``from_pretrained``.

A checkpoint of the InstructBLIP backbone (``model.backbone: instructblip``, EmoVIT's model) holds, beside
``config.yaml``, ``tokenizer/`` and ``meta.json``::

    trainable.safetensors       the trained weights: Q-Former, query tokens, language projection (and the LLM
                                with ``train_llm``), under transformers' InstructBLIP names
    qformer_tokenizer/          the Q-Former's BERT tokenizer
    base_instructblip/          only when the model has no weights folder (the random tiny preset): the whole
                                InstructBLIP as exported, a Hugging Face folder (config.json, model.safetensors,
                                preprocessor_config.json, the tokenizers) that
                                ``InstructBlipForConditionalGeneration.from_pretrained`` reads

:func:`load_checkpoint` builds the model as at training time (the random preset with its fixed seed, which draws
nothing from the global RNG), copies ``base_instructblip/`` in (read by ``from_pretrained``), then the trained
weights.

An export (:mod:`emotion_llama.model.export`) is a checkpoint without adapters (``lora.r: 0``): its LoRA is merged
into a plain Hugging Face folder ``llm/`` named by ``llm_path: ${checkpoint_dir}/llm`` (``${checkpoint_dir}``: the
folder :func:`read_config` reads, wherever it was moved), beside ``projectors.safetensors``, ``config.yaml`` and
``meta.json``; :func:`load_checkpoint` reads the LLM whole from ``llm/``.

Loading reports missing and unexpected keys and fails on missing ones: silently dropping LoRA weights
(as a strict=False load does when peft renames keys) must never go unnoticed. Before anything is built,
:func:`check_layout` refuses a folder lacking a file the config needs (a missing ``base_llm/`` would
otherwise give a random LLM, a missing ``tokenizer/`` a rebuilt tokenizer) or holding a truncated one,
naming the file.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from peft import PeftModel, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from emotion_llama.encoders.build import EncoderShapes
from emotion_llama.errors import UserError
from emotion_llama.fileio import atomic_dir
from emotion_llama.model.builder import build_model, build_tokenizer
from emotion_llama.model.chat import use_chat_format
from emotion_llama.model.config import ModelConfig
from emotion_llama.model.fusion import EmotionLLaMA, PlaceholderFusion
from emotion_llama.model.instructblip import (
    QFORMER_TOKENIZER_DIR,
    InstructBlipEmotion,
    InstructBlipLoadError,
    read_instructblip,
)
from emotion_llama.model.tokenizer import add_placeholders

log = logging.getLogger(__name__)

BASE_LLM_DIR = "base_llm"
BASE_INSTRUCTBLIP_DIR = "base_instructblip"
TRAINABLE_FILE = "trainable.safetensors"  # InstructBLIP's trained weights
CHECKPOINT_DIR_KEY = "checkpoint_dir"  # ${checkpoint_dir} in config.yaml: the folder it is read from (read_config)
_BLIP_PREFIX = "blip."  # InstructBlipEmotion.state_dict() name = this + transformers' InstructBLIP name
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
# Module names peft inserts between a base module and its weights, and the parts that belong to the adapter.
_PEFT_WRAPPERS = ("base_layer", "original_module")
_ADAPTER_PARTS = ("modules_to_save",)
_PEFT_BASE_PREFIX = "base_model.model."  # PeftModel.state_dict() name = this + the base model's own name


class CheckpointError(UserError):
    pass


@dataclass
class LoadReport:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def raise_if_missing(self, where: Path) -> None:
        if self.unexpected:
            log.warning("%s: %d unexpected keys ignored, e.g. %s", where, len(self.unexpected), self.unexpected[:3])
        if self.missing:
            raise CheckpointError(
                f"{where}: {len(self.missing)} weights are missing (e.g. {self.missing[0]}); "
                "the checkpoint does not match this model config"
            )


def save_checkpoint(
    model: PlaceholderFusion,
    cfg: ModelConfig,
    tokenizer,
    out_dir: str | Path,
    meta: dict | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write the checkpoint into a temporary folder and move it into place when complete.

    ``state_dict``: the weights to write, under ``model.state_dict()``'s names, instead of ``model``'s own
    tensors (``model`` then gives only the structure): e.g. the full state gathered from the ranks of a
    sharded (ZeRO-3) run, whose ``model`` holds only its shard. It must hold every trainable weight, and
    every weight when ``cfg.llm_path`` is None (the base LLM is saved too); a missing one is an error.
    An InstructBLIP model is saved in its own layout (see the module doc). A model whose trainable weights are
    not all finite is refused: such a checkpoint would answer one label for everything.
    """
    check_finite_trainables(model, state_dict)
    if isinstance(model, InstructBlipEmotion):
        return save_instructblip_checkpoint(model, cfg, tokenizer, out_dir, meta, state_dict)
    if not cfg.lora.enabled:
        raise CheckpointError("a model without LoRA adapters (model.lora.r=0: an export) has nothing trained to save "
                              "as a checkpoint: export the trained checkpoint again instead")
    out_dir = Path(out_dir)
    llm_state = proj_state = None
    if state_dict is not None:
        needed = {n for n, p in model.named_parameters() if p.requires_grad or cfg.llm_path is None}
        missing = sorted(needed - set(state_dict))
        if missing:
            raise CheckpointError(f"the state to save lacks {len(missing)} of the model's weights, e.g. {missing[0]}")
        llm_state, proj_state = _under(state_dict, "llm."), _under(state_dict, "projectors.")
    with atomic_dir(out_dir) as tmp:
        model.llm.save_pretrained(tmp / "adapter", state_dict=llm_state)
        save_file(_contiguous(model.projectors.state_dict() if proj_state is None else proj_state), tmp / "projectors.safetensors")
        if cfg.llm_path is None:
            save_base_llm(model.llm, tmp / BASE_LLM_DIR, llm_state)
        tokenizer.save_pretrained(tmp / "tokenizer")
        OmegaConf.save(OmegaConf.create(cfg.to_dict()), tmp / "config.yaml")
        (tmp / "meta.json").write_text(json.dumps(meta or {}, indent=2, default=str))
    return out_dir


def check_finite_trainables(model: torch.nn.Module, state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """Refuse, naming the first one, trainable weights holding NaN or infinite values."""
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        value = state_dict.get(name, param) if state_dict is not None else param
        if value.is_floating_point() and value.device.type != "meta" and not torch.isfinite(value).all():
            raise CheckpointError(f"the trained weight {name} holds NaN or infinite values: nothing was saved; lower "
                                  "the learning rate or check the training data for NaN features")


def save_instructblip_checkpoint(
    model: InstructBlipEmotion,
    cfg: ModelConfig,
    tokenizer,
    out_dir: str | Path,
    meta: dict | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """:func:`save_checkpoint` of an InstructBLIP model: its trained weights, tokenizers and config, and, for a
    model without a weights folder, the whole InstructBLIP in ``base_instructblip/``."""
    out_dir = Path(out_dir)
    state = model.state_dict() if state_dict is None else state_dict
    needed = {n for n, p in model.named_parameters() if p.requires_grad or cfg.random_base}
    missing = sorted(needed - set(state))
    if missing:
        raise CheckpointError(f"the state to save lacks {len(missing)} of the model's weights, e.g. {missing[0]}")
    trained = {k.removeprefix(_BLIP_PREFIX): v for k, v in state.items() if model.is_trainable_key(k)}
    with atomic_dir(out_dir) as tmp:
        save_file(_contiguous(trained), tmp / TRAINABLE_FILE)
        if cfg.random_base:
            model.save_pretrained(tmp / BASE_INSTRUCTBLIP_DIR, state_dict=state)
        tokenizer.save_pretrained(tmp / "tokenizer")
        model.qformer_tokenizer.save_pretrained(tmp / QFORMER_TOKENIZER_DIR)
        OmegaConf.save(OmegaConf.create(cfg.to_dict()), tmp / "config.yaml")
        (tmp / "meta.json").write_text(json.dumps(meta or {}, indent=2, default=str))
    return out_dir


def base_llm_state(llm: PeftModel, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The base LLM's own weights under the plain transformers names, sharing storage with ``llm``
    (with ``state``, ``llm.state_dict()``-named weights to take them from instead: a gathered full state).

    peft wraps each LoRA target as ``<module>.base_layer`` beside its ``lora_*`` factors, and each
    ``modules_to_save`` module as ``<module>.original_module`` (untouched) beside the trained
    ``<module>.modules_to_save.<adapter>`` copy; the factors and trained copies belong to the adapter.
    """
    base = llm.get_base_model().state_dict() if state is None else _under(state, _PEFT_BASE_PREFIX)
    out = {}
    for key, tensor in base.items():
        parts = key.split(".")
        if any(p.startswith("lora_") or p in _ADAPTER_PARTS for p in parts):
            continue
        out[".".join(p for p in parts if p not in _PEFT_WRAPPERS)] = tensor
    return out


def save_base_llm(llm: PeftModel, out: Path, state: dict[str, torch.Tensor] | None = None) -> None:
    """``llm``'s base model as a Hugging Face folder that ``AutoModelForCausalLM.from_pretrained`` reads
    (``state``: ``llm.state_dict()``-named weights to write instead of ``llm``'s own, see :func:`base_llm_state`)."""
    base = llm.get_base_model()
    plain = AutoModelForCausalLM.from_config(base.config, dtype=base.dtype)
    plain.load_state_dict(base_llm_state(llm, state), strict=True)  # every base weight, nothing of the adapter
    plain.save_pretrained(out)


def read_labels(ckpt_dir: str | Path) -> list[str] | None:
    """The label set a checkpoint was trained on (``meta.json``'s ``labels``), None when it does not say
    (checkpoints written before it was recorded, imported official ones)."""
    path = Path(ckpt_dir) / "meta.json"
    if not path.is_file():
        return None
    try:
        labels = json.loads(path.read_text(encoding="utf-8")).get("labels")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        raise CheckpointError(f"{path} is not a JSON object ({err}): restore it from the training run") from None
    if labels is None:
        return None
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
        raise CheckpointError(f"{path}: labels must be a non-empty list of label names, got {labels!r}")
    if len(set(labels)) != len(labels) or len(labels) < 2:  # one label would be answered with probability 1
        raise CheckpointError(f"{path}: labels {labels} must name at least two different labels, each once: "
                              "restore it from the training run")
    return labels


def read_config(ckpt_dir: str | Path, overrides: dict | None = None) -> ModelConfig:
    """The checkpoint's ``config.yaml`` as a ModelConfig (``overrides`` replacing some of its values); a
    missing, unreadable or unknown-keyed file is a CheckpointError naming it. ``${checkpoint_dir}`` in a value
    is the checkpoint folder as found now (an export's ``llm_path: ${checkpoint_dir}/llm``: the folder can move)."""
    ckpt_dir = Path(ckpt_dir)
    path = ckpt_dir / "config.yaml"
    if ckpt_dir.exists() and not ckpt_dir.is_dir():
        raise CheckpointError(f"{ckpt_dir} is a file, not a checkpoint folder: pass checkpoint=DIR of a training run")
    if not path.is_file():
        raise CheckpointError(f"{ckpt_dir} is not a checkpoint folder (no config.yaml): pass checkpoint=DIR of a training run")
    try:
        raw = OmegaConf.load(path)
        if isinstance(raw, DictConfig):
            raw[CHECKPOINT_DIR_KEY] = str(ckpt_dir.absolute())
        data = OmegaConf.to_container(raw, resolve=True)
    except (yaml.YAMLError, UnicodeDecodeError, OmegaConfBaseException, ValueError) as err:
        raise CheckpointError(f"{path} is not readable YAML ({_first_line(err)}): restore it from the training "
                              "run (its run_dir/config.yaml holds the same model section)") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds no model config mapping: restore it from the training run")
    data.pop(CHECKPOINT_DIR_KEY, None)
    data.update(overrides or {})
    try:
        return ModelConfig.from_dict(data)
    except (UserError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: {_first_line(err)}; restore the file the checkpoint was saved with") from None


def check_layout(ckpt_dir: str | Path, cfg: ModelConfig) -> None:
    """Refuse, naming the first missing or unreadable file, a checkpoint folder that lacks a part ``cfg``
    needs: the model would otherwise be built with a random LLM or a rebuilt tokenizer and load "fine".

    Every checkpoint needs ``projectors.safetensors`` and the adapter (an export: its merged LLM folder instead,
    see :func:`check_merged_llm`); a random-LLM config (the tiny preset)
    needs its saved base LLM (``base_llm/``) and its ``tokenizer/`` (a new one would number the tokens
    differently); with an LLM folder the tokenizer may come from that folder. Safetensors headers are read
    (cheap) so that a truncated file is named here rather than failing deep inside a loader.
    """
    ckpt_dir = Path(ckpt_dir)
    if cfg.is_instructblip:
        check_instructblip_layout(ckpt_dir, cfg)
        return
    incomplete = "the checkpoint folder is incomplete: copy the whole folder again or re-export it"
    if not cfg.lora.enabled:  # an export: no adapter, the merged LLM in its own folder
        check_merged_llm(cfg, incomplete)
        _check_weight_files([ckpt_dir / "projectors.safetensors"], incomplete)
        return
    random_llm = cfg.llm_path is None
    base_dir = ckpt_dir / BASE_LLM_DIR
    needed = [ckpt_dir / "projectors.safetensors"]
    if random_llm and not base_dir.is_dir():
        if cfg.weights_required:
            cfg.check_llm_weights()  # a real preset without its LLM folder: name paths.llm
        raise CheckpointError(f"{base_dir} not found: the model's base LLM is saved there; {incomplete}")
    if random_llm:
        needed += _model_folder_files(base_dir, incomplete)
    adapter_config = ckpt_dir / "adapter" / "adapter_config.json"
    if not adapter_config.is_file():
        raise CheckpointError(f"{adapter_config} not found: {incomplete}")
    _check_json(adapter_config, incomplete)
    needed.append(ckpt_dir / "adapter" / "adapter_model.safetensors")
    tok_dir = ckpt_dir / "tokenizer"
    if random_llm and not tok_dir.is_dir():
        raise CheckpointError(f"{tok_dir} not found: the model's token ids are defined there and a new tokenizer "
                              f"would number them differently; {incomplete}")
    if tok_dir.is_dir():
        _check_tokenizer_dir(tok_dir, TOKENIZER_FILES, incomplete)
    _check_weight_files(needed, incomplete)


def check_merged_llm(cfg: ModelConfig, incomplete: str) -> None:
    """The LLM folder of a config without adapters (``model.lora.r: 0``, an export) holds a config and whole
    safetensors weights: with no adapter and no ``base_llm/``, a missing one would leave nothing to load."""
    if cfg.llm_path is None:
        raise CheckpointError("model.lora.r=0 (no adapters) needs the merged LLM's folder as model.llm_path, "
                              f"got none: {incomplete}")
    _check_weight_files(_model_folder_files(Path(cfg.llm_path), incomplete, "the model's merged LLM is saved "
                                            "there; "), incomplete)


def _model_folder_files(folder: Path, incomplete: str, what: str = "") -> list[Path]:
    """The safetensors files of a saved Hugging Face model folder, after checking its config.json parses."""
    config = folder / "config.json"
    if not config.is_file():
        raise CheckpointError(f"{config} not found: {what}{incomplete}")
    _check_json(config, incomplete)
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise CheckpointError(f"{folder} holds no *.safetensors weights: {incomplete}")
    return weights


def _check_tokenizer_dir(tok_dir: Path, names: tuple[str, ...], incomplete: str) -> None:
    """A saved tokenizer folder holds at least one of ``names``, and its JSON files parse."""
    files = [tok_dir / n for n in names if (tok_dir / n).is_file()]
    if not files:
        raise CheckpointError(f"{tok_dir} holds none of {', '.join(names)}: {incomplete}")
    for path in files:
        if path.suffix == ".json":
            _check_json(path, incomplete)


def _check_weight_files(needed: list[Path], incomplete: str) -> None:
    """Every file of ``needed`` exists and is a whole safetensors file (its header, not its tensors, is read)."""
    for path in needed:
        if not path.is_file():
            raise CheckpointError(f"{path} not found: {incomplete}")
        read_safetensors(path, header_only=True)


def check_instructblip_layout(ckpt_dir: Path, cfg: ModelConfig) -> None:
    """:func:`check_layout` of an InstructBLIP checkpoint: ``trainable.safetensors`` always; a model without a
    weights folder (the random tiny preset) also needs ``base_instructblip/``, ``tokenizer/`` and
    ``qformer_tokenizer/`` (new tokenizers would number the tokens differently)."""
    incomplete = "the checkpoint folder is incomplete: copy the whole folder again or re-export it"
    needed = [ckpt_dir / TRAINABLE_FILE]
    if cfg.random_base:
        base_dir = ckpt_dir / BASE_INSTRUCTBLIP_DIR
        if not base_dir.is_dir():
            if cfg.weights_required:
                cfg.check_llm_weights()  # a real preset without its model folder: name paths.instructblip
            raise CheckpointError(f"{base_dir} not found: the model's frozen InstructBLIP weights are saved there; "
                                  f"{incomplete}")
        needed += _model_folder_files(base_dir, incomplete)
        for name, what in (("tokenizer", "the LLM's"), (QFORMER_TOKENIZER_DIR, "the Q-Former's")):
            if not (ckpt_dir / name).is_dir():
                raise CheckpointError(f"{ckpt_dir / name} not found: {what} token ids are defined there and a new "
                                      f"tokenizer would number them differently; {incomplete}")
    for tok_dir in (ckpt_dir / "tokenizer", ckpt_dir / QFORMER_TOKENIZER_DIR):
        if tok_dir.is_dir():
            _check_tokenizer_dir(tok_dir, (*TOKENIZER_FILES, "vocab.txt"), incomplete)
    _check_weight_files(needed, incomplete)


def read_safetensors(path: Path, header_only: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of ``path`` (with ``header_only``, just check that its header describes the whole file);
    a corrupt or truncated file is a CheckpointError naming it."""
    try:
        if header_only:
            with safe_open(str(path), "pt") as f:
                f.keys()
            return {}
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is corrupt or truncated ({_first_line(err)}): copy the checkpoint folder "
                              "again or re-export it") from None


def _check_json(path: Path, fix: str) -> None:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is corrupt or truncated (not JSON: {_first_line(err)}): {fix}") from None


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def load_checkpoint(
    ckpt_dir: str | Path,
    overrides: dict | None = None,
    device: str | torch.device = "cpu",
    shapes: EncoderShapes | None = None,
) -> tuple[PlaceholderFusion, ModelConfig, object]:
    """Rebuild the model from ``config.yaml`` (``overrides`` e.g. a new ``llm_path``) and load its weights.

    The model is built straight on ``device`` in the config's dtype (the LLM read onto it by
    ``from_pretrained(device_map=...)``, the projectors created there), then the checkpoint's weights are
    copied in: a 7B model for a GPU is never materialised in host memory first. Trainable weights are
    fp32 whatever the base's dtype (see :func:`build_model`).
    """
    ckpt_dir = Path(ckpt_dir)
    cfg = read_config(ckpt_dir, overrides)
    check_layout(ckpt_dir, cfg)
    tok_dir = ckpt_dir / "tokenizer"
    if tok_dir.is_dir():
        try:
            tokenizer = use_chat_format(add_placeholders(AutoTokenizer.from_pretrained(str(tok_dir))),
                                        cfg.prompt_format)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{tok_dir} is not a readable tokenizer ({_first_line(err)}): copy the checkpoint "
                                  "folder again or re-export it") from None
    else:
        # Imported official checkpoints carry no tokenizer unless the LLaMA folder was given: use paths.llm's.
        cfg.check_llm_weights()
        tokenizer = build_tokenizer(cfg)
    # A random-LLM preset (tiny) is built from llm_arch exactly as when it was trained, and load_weights copies
    # base_llm/ in. Reading base_llm/ with from_pretrained instead would draw no random numbers, so a run that
    # loads a checkpoint (stage 2) would continue with another RNG state and other LoRA-dropout masks.
    model = build_model(cfg, tokenizer, shapes, device=device)
    load_weights(model, ckpt_dir)
    return model.to(device), cfg, tokenizer  # a no-op unless something was left elsewhere


def load_weights(model: PlaceholderFusion, ckpt_dir: str | Path) -> None:
    """Load a checkpoint's trainable weights (and the tiny preset's base LLM) into ``model`` strictly."""
    ckpt_dir = Path(ckpt_dir)
    if isinstance(model, InstructBlipEmotion):
        load_instructblip_weights(model, ckpt_dir)
        return
    base_dir = ckpt_dir / BASE_LLM_DIR
    if base_dir.is_dir():
        load_base_llm(model, base_dir)
    if isinstance(model.llm, PeftModel):  # else model.lora.r=0: an export, its LLM read whole from its folder
        load_adapter(model, ckpt_dir / "adapter" / "adapter_model.safetensors")
    proj = ckpt_dir / "projectors.safetensors"
    if not proj.is_file():
        raise CheckpointError(f"{proj} not found: the checkpoint folder is incomplete")
    result = model.projectors.load_state_dict(read_safetensors(proj), strict=False)
    LoadReport(list(result.missing_keys), list(result.unexpected_keys)).raise_if_missing(proj)


def load_instructblip_weights(model: InstructBlipEmotion, ckpt_dir: Path) -> None:
    """An InstructBLIP checkpoint into ``model`` strictly: ``base_instructblip/`` (when there is one), the trained
    weights, and the saved Q-Former tokenizer (whose ids the trained Q-Former was trained with)."""
    base_dir = ckpt_dir / BASE_INSTRUCTBLIP_DIR
    if base_dir.is_dir():
        try:
            base = read_instructblip(base_dir, dtype=torch.float32, device="cpu")
        except InstructBlipLoadError as err:
            raise CheckpointError(f"{_first_line(err)}; copy the checkpoint folder again or re-export it") from None
        _copy_checked(model.blip, base.state_dict(), base_dir)
        del base
    path = ckpt_dir / TRAINABLE_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} not found: the checkpoint folder is incomplete")
    saved = {_BLIP_PREFIX + k: v for k, v in read_safetensors(path).items()}
    want = set(model.trainable_state_dict())
    LoadReport(sorted(want - set(saved)), sorted(set(saved) - want)).raise_if_missing(path)
    _copy_checked(model, {k: saved[k] for k in want}, path, only=want)
    qformer_dir = ckpt_dir / QFORMER_TOKENIZER_DIR
    if qformer_dir.is_dir():
        try:
            model.qformer_tokenizer = AutoTokenizer.from_pretrained(str(qformer_dir), local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{qformer_dir} is not a readable tokenizer ({_first_line(err)}): copy the "
                                  "checkpoint folder again or re-export it") from None


def _copy_checked(module: torch.nn.Module, saved: dict[str, torch.Tensor], where: Path,
                  only: set[str] | None = None) -> None:
    """Copy ``saved`` into ``module``'s state (``only``: just those keys), refusing a missing weight or one of
    another shape in one line naming ``where`` (load_state_dict would fill nothing or fail with a traceback)."""
    own = module.state_dict()
    want = set(own) if only is None else only
    report = LoadReport(missing=sorted(want - set(saved)), unexpected=sorted(set(saved) - set(own)))
    report.raise_if_missing(where)
    _check_shapes(saved, own, want, where, "the model has", "the checkpoint does not match this model config")
    with torch.no_grad():
        for key in want:
            own[key].copy_(saved[key])


def _check_shapes(saved: dict[str, torch.Tensor], own: dict[str, torch.Tensor], keys, where: Path,
                  what: str, fix: str) -> None:
    """Refuse in one line naming ``where`` the first of ``keys`` whose saved weight has another shape."""
    for key in sorted(keys):
        if saved[key].shape != own[key].shape:
            raise CheckpointError(f"{where}: {key} has shape {tuple(saved[key].shape)} where {what} "
                                  f"{tuple(own[key].shape)}; {fix}")


def load_base_llm(model: EmotionLLaMA, base_dir: Path) -> LoadReport:
    """Check that ``base_dir`` holds every base weight (``from_pretrained`` would fill a missing one with
    random values and only warn) and copy them in, so a model built another way gets them too."""
    files = sorted(base_dir.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{base_dir} holds no *.safetensors weights: the checkpoint folder is incomplete")
    saved: dict[str, torch.Tensor] = {}
    for path in files:
        saved.update(read_safetensors(path))
    want = base_llm_state(model.llm)
    by_storage: dict[int, list[str]] = {}  # tied weights (one storage, several names) are saved once
    for key, tensor in want.items():
        by_storage.setdefault(tensor.data_ptr(), []).append(key)
    missing = []
    with torch.no_grad():
        for keys in by_storage.values():
            found = [k for k in keys if k in saved]
            if not found:
                missing.extend(keys)
                continue
            for key in keys:
                want[key].copy_(saved[found[0]])
    report = LoadReport(missing=sorted(missing), unexpected=sorted(set(saved) - set(want)))
    report.raise_if_missing(base_dir)
    return report


def load_adapter(model: EmotionLLaMA, path: Path) -> LoadReport:
    if not path.is_file():
        raise CheckpointError(f"{path} not found: the checkpoint folder is incomplete")
    state = read_safetensors(path)
    # Checked before loading: peft fails with a bare KeyError on a missing modules_to_save weight.
    expected = get_peft_model_state_dict(model.llm)
    LoadReport(missing=sorted(set(expected) - set(state))).raise_if_missing(path)
    # Adapters of another LoRA rank fail here in one line, not in torch.
    _check_shapes(state, expected, state.keys() & expected.keys(), path, "the checkpoint's config.yaml builds",
                  "adapters of another LoRA rank? restore the adapter and config.yaml of one training run together")
    result = set_peft_model_state_dict(model.llm, state)
    report = LoadReport(unexpected=sorted(set(result.unexpected_keys)))
    report.raise_if_missing(path)
    return report


def _under(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous() for k, v in state.items()}
