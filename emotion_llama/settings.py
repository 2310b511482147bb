"""The settings every command checks when its config is composed, before anything slow loads.

One table per top-level config in ``conf/`` (:data:`RULES`): each key with its type, range or choices, and
for the folders a command writes, that they can be folders. A bad value is one :class:`SettingError` naming
the key, what it got and what it takes; a few values are normalised on the way (``eval.drop=audio``, a bare
word, is the one-item list ``[audio]``). Keys a config does not have are skipped, so one rule serves every
config that has the key. A device this machine lacks is refused here too, with the key that asked for it.

Checks that need the files' contents (a checkpoint's layout, a split file's lines) belong to the readers of
those files; this module imports no torch unless a device is to be checked.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from emotion_llama.choices import BACKBONES, FACE_DETECTORS, PROMPT_FORMATS, TINY_TOKENIZERS
from emotion_llama.datasets.unibench import UNIBENCH_SETS
from emotion_llama.errors import UserError
from emotion_llama.labels import resolve_labels
from emotion_llama.runtime import resolve_device

_UNSET = object()


class SettingError(UserError):
    """A setting with a value the command cannot use."""


Check = Callable[[str, Any], Any]  # (key, value) -> the value to keep; raises SettingError


def _show(value: Any) -> str:
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return value if value else "''"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _bad(key: str, value: Any, wants: str) -> SettingError:
    return SettingError(f"{key}={_show(value)}: {wants}")


# ---------------------------------------------------------------------------------------------- value kinds


def integer(low: int | None = None, high: int | None = None, nullable: bool = False, note: str = "",
            multiple_of: int = 1) -> Check:
    def check(key: str, value: Any) -> Any:
        if value is None and nullable:
            return value
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and (low is None or value >= low) and (high is None or value <= high) and value % multiple_of == 0:
            return value
        span = (f"from {low} to {high}" if high is not None else f"of at least {low}") if low is not None else ""
        step = f"that is a multiple of {multiple_of}" if multiple_of > 1 else ""
        wants = " ".join(p for p in ("use a whole number", span, step) if p) + (" or null" if nullable else "")
        raise _bad(key, value, wants + (f" ({note})" if note else ""))
    return check


def number(low: float | None = None, high: float | None = None, above: bool = False, below: bool = False,
           nullable: bool = False) -> Check:
    """A finite number in [low, high] (``above``/``below``: the bound itself excluded)."""
    def check(key: str, value: Any) -> Any:
        if value is None and nullable:
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            if (low is None or value > low or (value == low and not above)) and \
               (high is None or value < high or (value == high and not below)):
                return value
        lo = "" if low is None else f"{'above' if above else 'at least'} {low}"
        hi = "" if high is None else f"{'below' if below else 'at most'} {high}"
        span = " and ".join(p for p in (lo, hi) if p)
        raise _bad(key, value, f"use a number{' ' + span if span else ''}" + (" or null" if nullable else ""))
    return check


def boolean(nullable: bool = False) -> Check:
    def check(key: str, value: Any) -> Any:
        if isinstance(value, bool) or (value is None and nullable):
            return value
        raise _bad(key, value, f"use {key}=true or {key}=false")
    return check


def choice(*options: str | int, nullable: bool = False) -> Check:
    def check(key: str, value: Any) -> Any:
        if (not isinstance(value, bool) and value in options) or (value is None and nullable):
            return value
        listed = ", ".join(dict.fromkeys(str(o) for o in options)) + (", null" if nullable else "")
        raise _bad(key, value, f"use one of {listed}")
    return check


def subset(*options: str) -> Check:
    """A list of some of ``options``; a bare word is the one-item list, null the empty one."""
    def check(key: str, value: Any) -> Any:
        if value is None:
            return []
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple, ListConfig)):
            raise _bad(key, value, f"use a list of {', '.join(options)}, e.g. {key}=[{options[0]}]")
        unknown = [str(v) for v in items if v not in options]
        if unknown:
            raise _bad(key, value, f"unknown {', '.join(unknown)}: use any of {', '.join(options)}, "
                                   f"e.g. {key}=[{options[0]}]")
        return list(dict.fromkeys(items))
    return check


def text(nullable: bool = True) -> Check:
    def check(key: str, value: Any) -> Any:
        if isinstance(value, str) or (value is None and nullable):
            return value
        raise _bad(key, value, "use a text value (quote it)")
    return check


def mapping(value_check: Check, keys: tuple[str, ...] | None = None, nullable: bool = False,
            need_positive: bool = False) -> Check:
    """A mapping whose values pass ``value_check`` (and whose keys are among ``keys`` when given)."""
    def check(key: str, value: Any) -> Any:
        if value is None and nullable:
            return value
        if not isinstance(value, (dict, DictConfig)):
            example = f"{{{keys[0]}: 1}}" if keys else "{name: value}"
            raise _bad(key, value, f"use a mapping such as {key}={example}")
        unknown = [k for k in value if keys is not None and k not in keys]
        if unknown:
            raise _bad(key, value, f"unknown {', '.join(map(str, unknown))}: use any of {', '.join(keys)}")
        for k, v in value.items():
            value_check(f"{key}.{k}", v)
        if need_positive and not any(isinstance(v, (int, float)) and v > 0 for v in value.values()):
            raise _bad(key, value, "give at least one a weight above 0")
        return value
    return check


def noise() -> Check:
    """``eval.noise``: null, or a mapping of the corruption's settings (see datasets.noise.Corruption)."""
    fields = {
        "snr_db": number(nullable=True), "blur_sigma": number(0, above=True, nullable=True),
        "downscale": number(0, 1, above=True, nullable=True), "seed": integer(0),
    }

    def check(key: str, value: Any) -> Any:
        if value is None:
            return value
        if not isinstance(value, (dict, DictConfig)):
            raise _bad(key, value, f"use a mapping of {', '.join(fields)}, e.g. {key}={{snr_db: 5, blur_sigma: 2}}")
        unknown = [str(k) for k in value if k not in fields]
        if unknown:
            raise _bad(key, value, f"unknown {', '.join(unknown)}: use any of {', '.join(fields)}")
        for k, v in value.items():
            fields[k](f"{key}.{k}", v)
        return value
    return check


def device(accelerator: bool = False) -> Check:
    """``auto|cpu|cuda|cuda:N``, and present on this machine (``accelerator``: Lightning's names, cpu, gpu,
    cuda, auto)."""
    def check(key: str, value: Any) -> Any:
        if not isinstance(value, str):
            raise _bad(key, value, "use auto, cpu, cuda or cuda:N")
        if accelerator:
            if value not in ("auto", "cpu", "gpu", "cuda"):
                raise _bad(key, value, "use cpu, gpu or auto")
            if value in ("gpu", "cuda"):
                import torch

                if not torch.cuda.is_available():
                    raise SettingError(f"{key}={value} needs a CUDA GPU but none is visible here: use trainer=cpu "
                                       f"(or {key}=cpu)")
            return value
        if value == "auto":
            return value
        try:
            resolve_device(value)
        except UserError as err:
            message = str(err)
            raise SettingError(message if message.startswith(f"{key}=") else f"{key}: {message}") from None
        return value
    return check


def output_dir(nullable: bool = False) -> Check:
    """A folder the command writes into: it may not exist yet, but neither it nor a parent may be a file,
    and the nearest existing one must be writable."""
    def check(key: str, value: Any) -> Any:
        if value is None and nullable:
            return value
        if not isinstance(value, str) or not value:
            raise _bad(key, value, "use a folder path")
        _writable_folder(key, Path(value), value)
        return value
    return check


def output_path(nullable: bool = True) -> Check:
    """A file or folder the command writes (e.g. ``card=OUT.png|DIR``): its parents must be folders."""
    def check(key: str, value: Any) -> Any:
        if value is None and nullable:
            return value
        if not isinstance(value, str) or not value:
            raise _bad(key, value, "use a file or folder path")
        path = Path(value)
        _writable_folder(key, path if path.is_dir() else path.parent, value)
        return value
    return check


def _writable_folder(key: str, folder: Path, value: str) -> None:
    for part in (folder, *folder.parents):
        if part.exists():
            if not part.is_dir():
                where = "is a file" if part == folder else f"has a file where a folder should be ({part})"
                raise SettingError(f"{key}={value} {where}: choose a folder path for {key}")
            if not os.access(part, os.W_OK | os.X_OK):
                raise SettingError(f"{key}={value}: {part} is not writable; choose another {key}")
            return


def new_folder() -> Check:
    """A folder the command creates and that must not exist yet."""
    def check(key: str, value: Any) -> Any:
        output_dir()(key, value)
        if Path(value).exists():
            raise _bad(key, value, "already exists: choose a new folder or delete it")
        return value
    return check


def existing_file(what: str) -> Check:
    def check(key: str, value: Any) -> Any:
        if not isinstance(value, str) or not value:
            raise _bad(key, value, f"use the path of {what}")
        path = Path(value)
        if path.is_dir():
            raise SettingError(f"{key}={value} is a folder: pass {what}")
        if not path.is_file():
            raise SettingError(f"{key}={value} not found: pass {what}")
        return value
    return check


def existing_dir(what: str, nullable: bool = False) -> Check:
    def check(key: str, value: Any) -> Any:
        if value is None and nullable:
            return value
        if not isinstance(value, str) or not value:
            raise _bad(key, value, f"use the folder of {what}")
        path = Path(value)
        if path.exists() and not path.is_dir():
            raise SettingError(f"{key}={value} is a file: pass the folder of {what}")
        if not path.is_dir():
            raise SettingError(f"{key}={value} not found: pass the folder of {what}")
        return value
    return check


def labels() -> Check:
    """``data.labels``: at least two distinct label names."""
    def check(key: str, value: Any) -> Any:
        items = list(value) if isinstance(value, (list, tuple, ListConfig)) else None
        if items is None or len(items) < 2 or not all(isinstance(v, str) and v.strip() for v in items):
            raise _bad(key, value, f"use a list of at least two label names, e.g. {key}=[happy,sad]")
        repeated = sorted({v for v in items if items.count(v) > 1})
        if repeated:
            raise _bad(key, value, f"{', '.join(repeated)} repeated: name each label once")
        return value
    return check


def label_set(nullable: bool = True) -> Check:
    """A label-set setting (:func:`emotion_llama.labels.resolve_labels`): a set's name or a list of labels, or
    null (the command's default: the checkpoint's own) when ``nullable``."""
    def check(key: str, value: Any) -> Any:
        if value is None and not nullable:
            raise _bad(key, value, f"use a label set's name or a list such as {key}=[happy,sad]")
        try:
            resolve_labels(OmegaConf.to_container(value) if isinstance(value, ListConfig) else value, key)
        except UserError as err:
            raise SettingError(str(err)) from None
        return value
    return check


# ---------------------------------------------------------------------------------------------- the tables

TASK_WEIGHTS = ("emotion", "describe", "reason")
DROP = ("visual", "audio", "text")
DFEW_LAYOUTS = ("auto", "original", "frames")  # data.layout: which of DFEW's clip folders data.videos_dir is
IMAGE_FOLDER = ("auto", "clip", "images")  # infer: how a folder of images named on the command line is read

MODEL: dict[str, Check] = {
    "model.projector": choice("linear", "mlp2x_gelu"),
    "model.encoder_size": choice("tiny", "real"),
    "model.dtype": choice("float32", "bfloat16", "float16"),
    "model.eva_frame": choice("peak", "first"),
    "model.tiny_vocab_size": integer(64),
    "model.weights_required": boolean(),
    "model.lora.r": integer(1),
    "model.lora.alpha": number(0, above=True),
    "model.lora.dropout": number(0, 1, below=True),
    "model.llm_arch": mapping(lambda key, value: value),
    "model.backbone": choice(*BACKBONES),
    "model.prompt_format": choice(*PROMPT_FORMATS),
    "model.tiny_tokenizer": choice(*TINY_TOKENIZERS),
    "model.instructblip_arch": mapping(lambda key, value: value, keys=("vision_config", "qformer_config",
                                                                       "num_query_tokens")),
    "model.qformer_max_length": integer(1),
    "model.train_llm": boolean(),
}

DATA_TRAIN: dict[str, Check] = {
    "data.labels": labels(),
    "data.batch_size": integer(1),
    "data.val_batch_size": integer(1, nullable=True),
    "data.num_workers": integer(0),
    "data.max_length": integer(16),
    "data.length_grouped": boolean(),
    "data.clean_answers": boolean(),
    "data.on_missing_features": choice("skip", "fail"),
}

# How an utterance is pictured (conf/imagine/default.yaml): evaluation on text-only dialogue sets and text-only
# training with pictures (data.imagined=true).
IMAGINE: dict[str, Check] = {
    "paths.t2i": existing_dir("a diffusers text-to-image pipeline (paths.t2i=DIR)", nullable=True),
    "imagine.prompt_template": text(nullable=False),
    "imagine.negative_prompt": text(),
    "imagine.context_turns": integer(0),
    "imagine.steps": integer(1),
    "imagine.guidance": number(0),
    "imagine.size": integer(8, multiple_of=8),
    "imagine.batch_size": integer(1),
    "imagine.dtype": choice("auto", "float32", "float16", "bfloat16"),
    "imagine.seed": integer(0),
    "imagine.cache_dir": output_dir(),
    "imagine.grid": integer(0),
}

RULES: dict[str, dict[str, Check]] = {
    "train": {
        **MODEL, **DATA_TRAIN, **IMAGINE,
        "data.imagined": boolean(),
        "seed": integer(0),
        "face_detector": choice(*FACE_DETECTORS),
        "resume": boolean(),
        "activation_checkpointing": boolean(),
        "compile": boolean(),
        "run_dir": output_dir(),
        "optimizer.lr": number(0, above=True),
        "optimizer.weight_decay": number(0),
        "optimizer.betas": lambda key, value: _betas(key, value),
        "scheduler.num_warmup_steps": integer(0),
        "scheduler.min_lr_rate": number(0, 1),
        "trainer.accelerator": device(accelerator=True),
        "trainer.max_epochs": integer(-1, note="-1: no limit"),
        "trainer.max_steps": integer(-1, note="-1: no limit"),
        "trainer.log_every_n_steps": integer(1),
        "trainer.gradient_clip_val": number(0, nullable=True),
        "trainer.accumulate_grad_batches": integer(1),
        "trainer.limit_train_batches": number(0, above=True, nullable=True),
        "trainer.limit_val_batches": number(0, nullable=True),
        "trainer.precision": choice("32-true", "bf16-mixed", "bf16-true", "16-mixed", "16-true", "64-true", "bf16",
                                    "32", "16", "64", 32, 16, 64),
        "trainer.enable_progress_bar": boolean(),
        "stage.tasks": mapping(number(0), keys=TASK_WEIGHTS, need_positive=True),
        "stage.init_from": text(),
    },
    "eval": {
        "device": device(),
        "protocol": choice("score", "generate"),
        "prompt_layout": choice("train", "release_eval"),
        "data.labels": labels(),
        "checkpoint": existing_dir("a trained model (checkpoint=DIR)"),
        "run_dir": output_dir(),
        "eval.batch_size": integer(1),
        "eval.max_new_tokens": integer(1),
        "eval.drop": subset(*DROP),
        "eval.noise": noise(),
        "eval.features_dir": text(),
        "eval.extract_missing": boolean(),
        "eval.num_workers": integer(0),
        "eval.tag": text(nullable=False),
        "face_detector": choice(*FACE_DETECTORS),
        "data.layout": choice(*DFEW_LAYOUTS),
        # Text-only dialogue sets through imagination (emotion_llama.evaluation.imagined).
        "variant": choice("text", "imagined", "both"),
        "mapper": choice("embedding", "parse", "score"),
        "data.classes": choice(4, 6),
        "data.limit": integer(1, nullable=True),
        "paths.embedder": existing_dir("a sentence-embedding model (paths.embedder=DIR)", nullable=True),
        **IMAGINE,
        # MER-UniBench (emotion_llama.evaluation.unibench): the sets, the wheels' level, answer -> words. The
        # wheel folder is checked by its reader (a synthetic config's is written on first use).
        "data.set": choice(*UNIBENCH_SETS),
        "data.sets": subset(*UNIBENCH_SETS),
        "eval.level": choice(1, 2),
        "paths.emotion_wheel": text(),
        "extractor.kind": choice("rule", "local", "openai"),
        "extractor.model": text(),
        "extractor.base_url": text(),
        "extractor.api_key_env": text(),
        "extractor.temperature": number(0),
        "extractor.max_new_tokens": integer(1),
        "extractor.batch_size": integer(1),
        "extractor.seed": integer(0),
        "extractor.device": device(),
        "extractor.cache": output_path(),
    },
    "eval_reasoning": {
        "device": device(),
        "checkpoint": existing_dir("a trained model (checkpoint=DIR)"),
        "run_dir": output_dir(),
        "reasoning.batch_size": integer(1),
        "reasoning.max_new_tokens": integer(1),
        "reasoning.drop": subset(*DROP),
        "reasoning.features_dir": text(),
        "reasoning.tag": text(nullable=False),
        "judge.model": existing_dir("a local Hugging Face causal LM (judge.model=DIR)", nullable=True),
        "judge.batch_size": integer(1),
        "judge.max_new_tokens": integer(1),
        "judge.device": device(),
    },
    "extract": {
        **MODEL,
        "device": device(),
        "input_dir": existing_dir("your videos (input_dir=DIR)"),
        "output_dir": output_dir(),
        "batch_size": integer(1),
        "num_workers": integer(0),
        "devices": integer(1),
        "progress": boolean(),
        "feature_dirs": mapping(text(nullable=False), keys=("mae", "videomae", "hubert", "eva")),
        "face_detector": choice(*FACE_DETECTORS),
    },
    "infer": {
        "device": device(),
        "checkpoint": existing_dir("a trained model (checkpoint=DIR)", nullable=True),
        "task": choice("emotion", "reason"),
        "json": boolean(),
        "card": output_path(),
        "subtitle": text(),
        "subtitles": lambda key, value: value if value is None else existing_file("a name,sentence CSV")(key, value),
        "asr_model": existing_dir("a local Whisper model (asr_model=DIR)", nullable=True),
        "batch_size": integer(1),
        "max_new_tokens": integer(1),
        "num_workers": integer(0),
        "face_detector": choice(*FACE_DETECTORS),
        "image_folder": choice(*IMAGE_FOLDER),
        "labels": label_set(),
    },
    "make_instructions": {"labels": label_set(nullable=False)},
    "import_official": {
        **MODEL,
        "ckpt": existing_file("the official Emotion_LLaMA.pth (ckpt=FILE)"),
        "out": new_folder(),
    },
    "inspect_model": dict(MODEL),
    "export": {
        "checkpoint": existing_dir("a trained model (checkpoint=DIR)"),
        "out": output_dir(),
        "dtype": choice("auto", "float32"),
        "overwrite": boolean(),
    },
    "demo": {"clips_per_label": integer(1), "seed": integer(0), "demo_dir": output_dir(),
             "face_detector": choice(*FACE_DETECTORS), "model.preset": choice("tiny", "tiny_qwen2", "tiny_llama3")},
    "demo_text": {"per_label": integer(1), "seed": integer(0), "demo_dir": output_dir(),
                  "train_per_label": integer(1), "train_pictures": boolean(),
                  "variant": choice("text", "imagined", "both"),
                  "mappers": subset("embedding", "parse", "score"), "size": integer(8), "steps": integer(1),
                  "device": device(), "threads": integer(1, nullable=True),
                  "checkpoint": existing_dir("a trained model (checkpoint=DIR)", nullable=True),
                  "t2i": existing_dir("a diffusers text-to-image pipeline (t2i=DIR)", nullable=True),
                  "embedder": existing_dir("a sentence-embedding model (embedder=DIR)", nullable=True)},
    "make_synthetic": {"clips_per_label": integer(1), "seed": integer(0), "workers": integer(1),
                       "out_dir": output_dir()},
    "bench": {"device": device(), "clips_per_label": integer(1), "batch": integer(1, nullable=True),
              "threads": integer(1, nullable=True), "workers": integer(0), "steps": integer(1),
              "warmup": integer(0), "min_time": number(0, above=True), "max_new_tokens": integer(1),
              "original": boolean()},
    "bench_faces": {"synthetic_dir": existing_dir("a synthetic set (synthetic_dir=DIR)", nullable=True),
                    "detectors": subset(*FACE_DETECTORS, "dlib"), "search": lambda key, value: _folders(key, value),
                    "repeats": integer(1), "json": output_path()},
    "score_openset": {
        "gold": existing_file("the true labels (gold=FILE: a name,openset CSV)"),
        "pred": existing_file("the predictions (pred=FILE: a name,openset CSV or an *-openset.npz)"),
        "metric": choice("set", "hit"),
        "level": choice(1, 2),
        "paths.emotion_wheel": existing_dir("your own copy of the emotion wheels (format.csv, synonym.xlsx, "
                                            "wheel1..wheel5.xlsx): paths.emotion_wheel=DIR"),
    },
}


def _folders(key: str, value: Any) -> Any:
    """A list of folder paths (a bare path is the one-item list, null the empty one)."""
    items = [] if value is None else [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple, ListConfig)) or not all(isinstance(v, str) and v for v in items):
        raise _bad(key, value, f"use a list of folders, e.g. {key}=[/data/images]")
    return list(items)


def _betas(key: str, value: Any) -> Any:
    if isinstance(value, (list, tuple, ListConfig)) and len(value) == 2:
        for i, beta in enumerate(value):
            number(0, 1, below=True)(f"{key}[{i}]", beta)
        return value
    raise _bad(key, value, f"use two numbers in [0, 1), e.g. {key}=[0.9,0.999]")


def validate(config_name: str, cfg: DictConfig, rules: Mapping[str, Mapping[str, Check]] | None = None) -> DictConfig:
    """Check ``cfg`` (the composed ``conf/<config_name>.yaml``) against its table; normalised values are
    written back. Raises :class:`SettingError` on the first bad value."""
    table = (RULES if rules is None else rules).get(config_name, {})
    for key, check in table.items():
        value = OmegaConf.select(cfg, key, default=_UNSET, throw_on_missing=False)
        if value is _UNSET:
            continue
        kept = check(key, value)
        if kept is not value and kept != value:
            OmegaConf.update(cfg, key, kept, merge=False)
    return cfg
