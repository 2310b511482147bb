"""Training entry point: ``train(cfg)`` runs one stage (coarse or fine) from a composed Hydra config."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import zipfile
from pathlib import Path

import hydra
import lightning as L
import torch
import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from emotion_llama.datasets.dialogue import dialogue_labels, is_dialogue
from emotion_llama.datasets.emoset import read_emoset
from emotion_llama.datasets.features import FeatureStore
from emotion_llama.datasets.image_instruction import (
    INSTRUCTION_KINDS,
    HeldFeatures,
    ImageInstructionDataset,
    categorical_turns,
    keep_images_with_features,
    load_turns,
)
from emotion_llama.datasets.instruction import MERRDataset, keep_with_features, load_records
from emotion_llama.datasets.meld import read_meld_split
from emotion_llama.datasets.pixels import ImagePixels
from emotion_llama.errors import UserError
from emotion_llama.fileio import atomic_write_text, json_text
from emotion_llama.imagination.pictures import build_imaginer, check_imagine, picture_features
from emotion_llama.model.builder import build_model, build_tokenizer
from emotion_llama.model.checkpoint import load_checkpoint, read_config, save_checkpoint
from emotion_llama.model.config import ModelConfig
from emotion_llama.model.instructblip import ImageTransform
from emotion_llama.model.prompts import MEDIA, answer_text
from emotion_llama.model.sequences import encode_answer
from emotion_llama.training.lightning import EmotionDataModule, EmotionLLaMAModule

log = logging.getLogger(__name__)

RUN_CONFIG = "config.yaml"  # the run's whole config, in run_dir


def _media(cfg: DictConfig) -> str:
    return cfg.data.get("media", "video")


def _image_records(cfg: DictConfig, split: str):
    """The labelled images of a split of an image data config (``data.media: image``), or None."""
    name = (cfg.data.get("splits") or {}).get(split)
    return read_emoset(cfg.data.root, name, labels=list(cfg.data.labels)) if name else None


def _image_dataset(cfg: DictConfig, split: str, store: FeatureStore, tokenizer, model, train: bool):
    records = _image_records(cfg, split)
    if records is None:
        return None
    if model.reads_pixels:  # it encodes the pixels itself: no feature cache
        store = ImagePixels([r.image for r in records], ImageTransform(model.image_processor))
    else:
        records = keep_images_with_features(records, store, cfg.data.on_missing_features)
    if not records:
        raise UserError(f"{cfg.data.root}: no image of the {split} split has features under {store.root}")
    kinds = list(cfg.stage.get("instructions") or ["categorical"]) if train else ["categorical"]
    turns = load_turns(records, list(cfg.data.labels), kinds, cfg.data.get("instructions_dir"))
    return ImageInstructionDataset(
        turns, records, store, tokenizer, model.num_video_tokens, model.num_feature_tokens,
        labels=list(cfg.data.labels), max_length=cfg.data.max_length, train=train, seed=cfg.seed,
        clean_answers=cfg.data.get("clean_answers", False),
    )


def _utterances(cfg: DictConfig, split: str):
    """The labelled utterances of a split of a text-only dialogue config (``data.media: text``), or None."""
    name = (cfg.data.get("splits") or {}).get(split)
    return read_meld_split(cfg.data.root, name) if name else None


def _text_dataset(cfg: DictConfig, split: str, tokenizer, model, train: bool):
    """Each utterance of the split as the text of EmoVIT's categorical prompt, its label the answer; with
    ``data.imagined``, its picture's EVA features too (EVA the only modality present), else no modality."""
    utterances = _utterances(cfg, split)
    if utterances is None:
        return None
    if not utterances:
        raise UserError(f"{cfg.data.root}: the {cfg.data.splits[split]} split has no labelled utterance")
    labels = list(cfg.data.labels)
    features = _imagined_features(cfg, split, utterances) if cfg.data.get("imagined") else None
    return ImageInstructionDataset(
        categorical_turns(utterances, labels), utterances, HeldFeatures(features), tokenizer, model.num_video_tokens,
        model.num_feature_tokens, labels=labels, max_length=cfg.data.max_length, train=train, seed=cfg.seed,
        subtitles={u.id: u.text for u in utterances}, media="image" if features is not None else "text",
    )


def _imagined_features(cfg: DictConfig, split: str, utterances) -> dict[str, dict[str, torch.Tensor]]:
    """The EVA features of each utterance's picture, drawn (or found) in the cache the evaluation of that split
    reads: ``imagine.cache_dir`` resolved with ``data.split`` set to it (one folder per split by default).
    Computed at the start of each run and held in memory in float16 (about 0.7 MB a picture with the real EVA)."""
    name = cfg.data.splits[split]
    device = "cpu" if cfg.trainer.get("accelerator") == "cpu" else "auto"
    done = build_imaginer(cfg, cache_dir=_split_cache_dir(cfg, name), device=device).imagine(utterances)
    log.info("%s split: %d pictures drawn, %d from the cache", name, done.drawn, done.cached)
    feats = picture_features([done.paths[u.id] for u in utterances], ModelConfig.from_cfg(cfg), device)
    return {u.id: f for u, f in zip(utterances, feats, strict=True)}


def _split_cache_dir(cfg: DictConfig, split_name: str) -> Path:
    """``imagine.cache_dir`` as an evaluation of ``data.split=split_name`` resolves it; a folder that does not
    depend on the split gets one subfolder per split (MELD's splits share utterance ids)."""
    def resolved(name: str) -> Path:
        other = copy.deepcopy(cfg)
        OmegaConf.update(other, "data.split", name, force_add=True)
        return Path(other.imagine.cache_dir)

    folder = resolved(split_name)
    others = [n for n in cfg.data.splits.values() if n != split_name]
    return folder / split_name if any(resolved(n) == folder for n in others) else folder


def _dataset(cfg: DictConfig, split: str, store: FeatureStore, tokenizer, model, train: bool) -> MERRDataset | None:
    if _media(cfg) == "image":
        return _image_dataset(cfg, split, store, tokenizer, model, train)
    if _media(cfg) == "text":
        return _text_dataset(cfg, split, tokenizer, model, train)
    path = cfg.data.get(split)
    if not path:
        return None
    records = load_records(path, cfg.data.subtitles, cfg.data.coarse_json, cfg.data.fine_json, cfg.data.labels)
    records = keep_with_features(records, store, cfg.data.on_missing_features)
    if not records:
        raise UserError(f"{path}: no clip of the {split} split has features under {store.root}")
    return MERRDataset(
        records, store, tokenizer, model.num_video_tokens, model.num_feature_tokens,
        tasks=dict(cfg.stage.tasks), labels=list(cfg.data.labels), max_length=cfg.data.max_length,
        train=train, seed=cfg.seed, clean_answers=cfg.data.get("clean_answers", False),
    )


def _model_and_tokenizer(cfg: DictConfig):
    """Stage 1 builds a fresh model; stage 2 rebuilds the stage-1 model and loads its weights strictly."""
    model_cfg = ModelConfig.from_cfg(cfg)
    model_cfg.check_llm_weights()
    init_from = cfg.stage.get("init_from")
    if init_from:
        if not Path(init_from, "config.yaml").is_file():
            raise UserError(f"{init_from} has no stage-1 model: run stage 1 first or set stage.init_from=DIR")
        prior = read_config(init_from)
        if prior.preset != model_cfg.preset:
            raise UserError(f"{init_from} holds a {prior.preset} model but model={model_cfg.preset} was asked for")
        if not prior.lora.enabled:  # an export: its LoRA is merged into llm/, there is no adapter to continue
            raise UserError(f"stage.init_from={init_from} is an export (its LoRA merged, model.lora.r=0): start "
                            "stage 2 from the checkpoint it was exported from (its runs/NAME/model folder)")
        if prior.lora != model_cfg.lora:  # the adapter of stage 1 is continued: its shape is stage 1's
            raise UserError(f"{init_from} holds LoRA adapters of rank {prior.lora.r} (alpha {prior.lora.alpha}, on "
                            f"{', '.join(prior.lora.target_modules)}) but this stage asks for rank {model_cfg.lora.r} "
                            f"(alpha {model_cfg.lora.alpha}, on {', '.join(model_cfg.lora.target_modules)}): stage 2 "
                            "continues stage 1's adapter; leave model.lora as stage 1 had it")
        if prior.train_llm != model_cfg.train_llm:  # what is trained is the checkpoint's, not silently another
            raise UserError(f"{init_from} holds a model trained with model.train_llm={str(prior.train_llm).lower()}: "
                            f"set model.train_llm={str(prior.train_llm).lower()} for this stage too")
        overrides = {k: getattr(model_cfg, k) for k in ("llm_path", "tokenizer_path", "encoder_paths",
                                                         "instructblip_path", "qformer_tokenizer_path")}
        model, model_cfg, tokenizer = load_checkpoint(init_from, overrides)
        return model, model_cfg, tokenizer
    texts = []
    if model_cfg.tokenizer_path is None and model_cfg.llm_path is None and _media(cfg) == "image":
        kinds = [k for k in INSTRUCTION_KINDS if k == "categorical" or cfg.data.get("instructions_dir")
                 and Path(cfg.data.instructions_dir, f"{k}.json").is_file()]
        turns = load_turns(_image_records(cfg, "train"), list(cfg.data.labels), kinds, cfg.data.get("instructions_dir"))
        texts = [t for turn in turns for t in (turn.question, turn.answer)]
    elif model_cfg.tokenizer_path is None and model_cfg.llm_path is None and _media(cfg) == "text":
        utterances = _utterances(cfg, "train")
        turns = categorical_turns(utterances, list(cfg.data.labels))
        texts = [t for u, turn in zip(utterances, turns, strict=True) for t in (u.text, turn.question, turn.answer)]
    elif model_cfg.tokenizer_path is None and model_cfg.llm_path is None:
        records = load_records(cfg.data.train, cfg.data.subtitles, cfg.data.coarse_json, cfg.data.fine_json, cfg.data.labels)
        texts = [t for r in records for t in (r.subtitle, r.caption, r.reason)]
    tokenizer = build_tokenizer(model_cfg, texts)
    return build_model(model_cfg, tokenizer), model_cfg, tokenizer


def train(cfg: DictConfig) -> tuple[dict, dict]:
    """Fit one stage and export its trainable weights to ``{run_dir}/model``; returns (metrics, objects)."""
    check_run_dir(cfg)  # before anything is built: a run folder of another model is refused at once
    check_media(cfg)
    ckpt_path = resume_path(cfg)
    record_run(cfg)
    L.seed_everything(cfg.seed, workers=True)
    if cfg.data.get("generate"):
        # The data config names how its data is made when absent (data=synthetic: the synthetic set); a text-only
        # set is written to data.root, as the evaluation writes it.
        hydra.utils.instantiate(cfg.data.generate)(cfg.data.root if _media(cfg) == "text" else cfg)
    model, model_cfg, tokenizer = _model_and_tokenizer(cfg)
    if cfg.get("activation_checkpointing"):
        model.enable_activation_checkpointing()
    store = None if _media(cfg) == "text" else FeatureStore(cfg.data.features_dir, cfg.data.feature_dirs,
                                                            shapes=model.feature_shapes)
    train_set = _dataset(cfg, "train", store, tokenizer, model, train=True)
    val_set = _dataset(cfg, "val", store, tokenizer, model, train=False)
    datamodule = EmotionDataModule(
        train_set, val_set, tokenizer.pad_token_id, cfg.data.batch_size, cfg.data.val_batch_size,
        cfg.data.num_workers, cfg.seed, length_grouped=cfg.data.get("length_grouped", False),
    )
    module = EmotionLLaMAModule(
        model,
        optimizer=hydra.utils.instantiate(cfg.optimizer),
        scheduler=hydra.utils.instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        label_candidates=[encode_answer(tokenizer, answer_text(label, _media(cfg))) for label in cfg.data.labels],
        checkpoint_frozen=model_cfg.random_base,
    )
    callbacks = [hydra.utils.instantiate(c) for c in cfg.get("callbacks", {}).values()]
    loggers = [hydra.utils.instantiate(c) for c in cfg.get("logger", {}).values()]
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    fitted = torch.compile(module) if cfg.get("compile") else module
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    try:
        trainer.fit(fitted, datamodule=datamodule, ckpt_path=ckpt_path)
    except RuntimeError as err:
        if ckpt_path and str(err).startswith("Error(s) in loading state_dict"):
            raise UserError(f"{ckpt_path} does not fit this model ({str(err).splitlines()[-1].strip()}): it was made "
                            "with another model config; set resume=false to start afresh, or choose another "
                            "run_dir") from None
        raise
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    export = Path(cfg.run_dir, "model")
    # Every rank takes part in the gather (a sharded strategy holds a part of each weight per rank); rank 0
    # writes what it gathered, which save_checkpoint checks is complete.
    state = gather_export_state(trainer, module, with_frozen=model_cfg.random_base)
    if trainer.is_global_zero:
        meta = {"stage": cfg.stage.name, "epoch": trainer.current_epoch, "step": trainer.global_step, "metrics": metrics,
                "labels": list(cfg.data.labels)}  # the label set it was trained on: what inference scores
        save_checkpoint(model, model_cfg, tokenizer, export, meta=meta, state_dict=state)
        atomic_write_text(Path(cfg.run_dir, "metrics.json"), json_text(metrics, indent=2))
        atomic_write_text(Path(cfg.run_dir, RUN_CONFIG), OmegaConf.to_yaml(cfg))
    del state
    trainer.strategy.barrier("export")  # no rank returns (or reads the export) before it is complete
    return metrics, {"model": model, "tokenizer": tokenizer, "trainer": trainer, "export": export}


def check_media(cfg: DictConfig) -> None:
    """Refuse a video data config for a backbone that reads still images (InstructBLIP), and text-only data
    that is not in MELD's layout or asks for pictures without the settings to draw them."""
    media = _media(cfg)
    if media not in MEDIA:
        raise UserError(f"data.media={media}: use one of {', '.join(MEDIA)}")
    if (is_dialogue(cfg.data) or media == "text") and (media != "text" or cfg.data.get("kind") != "meld"):
        raise UserError(f"data.kind={cfg.data.get('kind')} with data.media={media}: text-only training reads "
                        "MELD-layout splits with data.media: text (data=meld or data=synthetic_meld)")
    if media == "text":
        dialogue_labels(cfg.data)  # MELD's seven, in any order
        if cfg.data.get("imagined"):
            check_imagine(cfg, "data.imagined=true", "set data.imagined=false")
    model_cfg = ModelConfig.from_cfg(cfg)
    if model_cfg.reads_pixels and _media(cfg) != "image":
        raise UserError(f"model.backbone={model_cfg.backbone} reads still images: train it on an image data config "
                        "(data.media: image), e.g. data=synthetic_images or data=emoset")


def check_run_dir(cfg: DictConfig) -> None:
    """Refuse to continue, in ``run_dir``, a run made with another model config (its checkpoints would not
    load, or its export would be silently replaced by another model's); ``resume=false`` starts afresh there."""
    run_dir = Path(cfg.run_dir)
    saved = run_dir / RUN_CONFIG
    if cfg.resume and saved.is_file():
        before = _saved_run(saved)
        changed = _model_differences(_model_section(before), _model_section(cfg))
        changed |= _experiment_differences(before, cfg)
        if changed:
            shown = "; ".join(f"{k}: {a} there, {b} now" for k, (a, b) in list(changed.items())[:3])
            more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
            raise UserError(f"{run_dir} holds a run of another model or experiment ({shown}{more}): set "
                            "resume=false to start afresh in that folder, or choose another name=/run_dir= for this one")


# Besides the model, what makes a run the same experiment: its stage, its data and where it starts from.
EXPERIMENT_KEYS = ("stage.name", "stage.init_from", "data.kind", "data.train", "data.labels")


def _experiment_differences(saved: DictConfig, cfg: DictConfig) -> dict[str, tuple[object, object]]:
    """The :data:`EXPERIMENT_KEYS` whose value differs: key -> (value there, value now)."""
    out = {}
    for key in EXPERIMENT_KEYS:
        there, now = _plain(saved, key), _plain(cfg, key)
        if there != now:
            out[key] = (there, now)
    return out


def _plain(cfg: DictConfig, key: str) -> object:
    """``key`` of ``cfg`` as plain data, resolved (None when unset or its interpolation cannot be resolved)."""
    value = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def record_run(cfg: DictConfig) -> None:
    """This run's config in ``run_dir/config.yaml`` from its start, so that a rerun can be checked against it."""
    if os.environ.get("LOCAL_RANK", "0") == "0":
        atomic_write_text(Path(cfg.run_dir, RUN_CONFIG), OmegaConf.to_yaml(cfg))


def _saved_run(path: Path) -> DictConfig:
    """The config a run in this folder was started with, read once."""
    try:
        saved = OmegaConf.load(path)
    except (yaml.YAMLError, OmegaConfBaseException, UnicodeDecodeError, ValueError) as err:
        raise UserError(f"{path} is not readable YAML ({str(err).splitlines()[0]}): delete it (the folder's run "
                        "is then continued as it is) or set resume=false") from None
    if not isinstance(saved, DictConfig) or "model" not in saved:
        raise UserError(f"{path} holds no model section: delete it or set resume=false")
    return saved


def _model_section(cfg: DictConfig) -> dict:
    """The model settings, a key missing (a run recorded before that key existed) read as its default value."""
    try:
        section = OmegaConf.to_container(cfg.model, resolve=True)
    except OmegaConfBaseException:  # a saved file whose interpolations point outside it: compare as written
        section = OmegaConf.to_container(cfg.model, resolve=False)
    return {**ModelConfig().to_dict(), **section}


def _model_differences(before: dict, now: dict, prefix: str = "model") -> dict[str, tuple]:
    out = {}
    for key in sorted(set(before) | set(now), key=str):
        a, b = before.get(key, "<unset>"), now.get(key, "<unset>")
        name = f"{prefix}.{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out.update(_model_differences(a, b, name))
        elif a != b:
            out[name] = (a, b)
    return out


def resume_path(cfg: DictConfig) -> str | None:
    """``run_dir/checkpoints/last.ckpt`` when resuming and it is there (checked whole: a truncated file is
    refused here, naming it, rather than failing inside Lightning)."""
    last = Path(cfg.run_dir, "checkpoints", "last.ckpt")
    if not (cfg.resume and last.is_file()):
        return None
    try:
        with zipfile.ZipFile(last) as archive:
            broken = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        broken = str(err) or type(err).__name__
    if broken is not None:
        raise UserError(f"{last} is corrupt or truncated ({broken}): delete it to start the run over (or set "
                        "resume=false)")
    return str(last)


def gather_export_state(trainer: L.Trainer, module: EmotionLLaMAModule, with_frozen: bool) -> dict[str, torch.Tensor]:
    """The fitted model's full, unsharded weights on CPU under ``module.model.state_dict()``'s names, on global
    rank 0 (an empty dict on the other ranks): the trainable ones, and the frozen ones too with ``with_frozen``.

    A collective under sharding strategies, so every rank must call it. The strategy's wrapped model goes
    through ``torch.distributed.checkpoint``'s ``get_model_state_dict``, which knows DDP, FSDP and compiled
    wrappers and unshards FSDP parameters straight to rank 0's CPU (DDP and a single device are tested).
    DeepSpeed's engine is not a wrapper it knows, so there the LightningModule is read, under ZeRO-3 inside
    ``deepspeed.zero.GatheredParameters`` (untested: deepspeed is not a dependency).
    """
    from lightning.pytorch.strategies import DeepSpeedStrategy  # importable without deepspeed
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=not with_frozen)
    strategy = trainer.strategy
    if isinstance(strategy, DeepSpeedStrategy):
        gather = contextlib.nullcontext()
        if getattr(strategy, "zero_stage_3", False):
            import deepspeed

            params = [p for p in module.parameters() if with_frozen or p.requires_grad]
            gather = deepspeed.zero.GatheredParameters(params, modifier_rank=None)
        with gather:
            state = get_model_state_dict(module, options=options)
    else:
        wrapped = strategy.model if isinstance(strategy.model, torch.nn.Module) else module
        state = get_model_state_dict(wrapped, options=options)
    prefix = "model."  # the LightningModule's attribute holding the EmotionLLaMA
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
