"""Import the official Emotion-LLaMA checkpoint (MiniGPT-v2's ``Emotion_LLaMA.pth``) as a checkpoint folder.

The official file holds only the trained tensors, under MiniGPT-v2's module names. Every one is renamed to
ours and its shape checked against the model the config builds on the meta device (no weights needed)
before anything is written, so a truncated or foreign checkpoint is refused instead of half-loaded.

What the file says wins over the preset: LoRA r and alpha come from the checkpoint's own ``config['model']``
(``lora_r``, ``lora_alpha``) when it has one (a wrong alpha would silently rescale every LoRA delta), and
the LLM's shape from ``paths.llm``'s ``config.json`` when that folder is given. Tensors that are no
parameter of the model (buffers such as a rotary ``inv_freq``, the unused fusion head) are ignored and
reported; a weight the model has in another shape, or lacks, refuses the file. The imported config sets
``eva_frame: first``: the release trains and evaluates EVA on the video's first frame.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from omegaconf import OmegaConf
from peft import LoraConfig, get_peft_model_state_dict
from safetensors import SafetensorError
from safetensors.torch import save_file
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from emotion_llama.encoders.build import EncoderShapes, encoder_config, encoder_shapes
from emotion_llama.encoders.eva import EvaEncoder
from emotion_llama.errors import UserError, WeightsNotFoundError
from emotion_llama.fileio import atomic_dir
from emotion_llama.model.builder import build_model, build_tokenizer
from emotion_llama.model.checkpoint import CheckpointError
from emotion_llama.model.config import ModelConfig
from emotion_llama.model.llm import LLAMA2_7B
from emotion_llama.model.tokenizer import PLACEHOLDERS

# MiniGPT-v2 attribute -> our projector; feats_llama_proj1/2/3 follow the order of its feature list.
PROJECTOR_NAMES = {
    "llama_proj": "eva_patch",
    "cls_tk_llama_proj": "eva_cls",
    "feats_llama_proj1": "mae",
    "feats_llama_proj2": "videomae",
    "feats_llama_proj3": "hubert",
}
LLM_PREFIX = "llama_model."
UNUSED_HEAD = "attention."  # a fusion head that is trained and saved but never used in forward
PREVIEW = 10
# config.json keys that fix the shapes of the LLM's weights (what the meta build needs).
LLM_SHAPE_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "head_dim", "max_position_embeddings", "tie_word_embeddings")
# Module names peft inserts between a base module and its weight.
_PEFT_WRAPPERS = ("base_layer", "original_module")
# The release's frame choice for EVA (see ModelConfig.eva_frame).
RELEASE_EVA_FRAME = "first"


@dataclass
class ImportReport:
    source: str
    preset: str
    mapped: dict[str, int] = field(default_factory=dict)  # our group (lora or a projector) -> tensors
    # Official keys with no counterpart in our model: the unused fusion head, buffers, other non-parameters.
    ignored: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)  # trained LLM/projector weights our model lacks
    missing: list[str] = field(default_factory=list)  # our weights the checkpoint lacks
    mismatched: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    epoch: int | None = None

    @property
    def ok(self) -> bool:
        return not (self.missing or self.mismatched or self.unexpected)

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        epoch = "" if self.epoch is None else f" (epoch {self.epoch})"
        mapped = ", ".join(f"{group} {n}" for group, n in self.mapped.items())
        lines = [
            f"import of {self.source}{epoch} into model {self.preset}",
            f"  mapped      {sum(self.mapped.values())} tensors: {mapped or '-'}",
            f"  ignored     {_listing(self.ignored)}",
            f"  unexpected  {_listing(self.unexpected)}",
            f"  missing     {_listing(self.missing)}",
            f"  mis-shaped  {_listing(self.mismatched)}",
        ]
        return "\n".join(lines + [f"  note        {note}" for note in self.notes])

    def refusal(self) -> str:
        """One sentence saying why nothing was written and how to fix it."""
        problems = [
            f"{len(keys)} {what} (e.g. {keys[0]})"
            for what, keys in (
                ("weights missing", self.missing),
                ("mis-shaped", self.mismatched),
                ("trained weights the model has no place for", self.unexpected),
            )
            if keys
        ]
        return (
            f"{self.source} does not fit model {self.preset}: {'; '.join(problems)}; nothing was written: "
            "pass the complete official checkpoint or the model preset it was trained with"
        )


class OfficialImportError(CheckpointError):
    def __init__(self, report: ImportReport):
        super().__init__(report.refusal())
        self.report = report


def import_official(
    ckpt_path: str | Path,
    out_dir: str | Path,
    cfg: ModelConfig,
    shapes: EncoderShapes | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    eva_path: str | Path | None = None,
) -> ImportReport:
    """Convert ``ckpt_path`` into the checkpoint folder ``out_dir`` for the model ``cfg`` describes.

    The tokenizer is saved when given, or when ``cfg`` names an LLM/tokenizer folder; otherwise the folder
    has no ``tokenizer/`` and the one in ``paths.llm`` must be used at load time.
    """
    ckpt_path, out_dir = Path(ckpt_path), Path(out_dir)
    if out_dir.exists():
        raise CheckpointError(f"{out_dir} already exists: choose a new output folder or delete it")
    state, epoch, file_config = read_official(ckpt_path)
    report = ImportReport(source=str(ckpt_path), preset=cfg.preset, epoch=epoch)
    cfg = checkpoint_lora(cfg, file_config, report)
    if cfg.eva_frame != RELEASE_EVA_FRAME:
        report.notes.append(f"eva_frame {RELEASE_EVA_FRAME} (preset: {cfg.eva_frame}): the release trained EVA "
                            "on the video's first frame, whole")
        cfg = replace(cfg, eva_frame=RELEASE_EVA_FRAME)
    shapes = shapes or encoder_shapes(cfg)
    want = expected_weights(with_llm_shape(cfg, report), shapes)
    lora, projectors = map_weights(state, want, report)
    if not report.ok:
        raise OfficialImportError(report)
    if eva_path is not None:
        check_eva(Path(eva_path), cfg, shapes)
        cfg = replace(cfg, encoder_paths={**cfg.encoder_paths, "eva": str(eva_path)})
        report.notes.append(f"EVA weights {eva_path} load; recorded as encoder_paths.eva")
    if tokenizer is None:
        tokenizer = _configured_tokenizer(cfg)
    report.notes.append(_tokenizer_note(cfg, tokenizer))
    with atomic_dir(out_dir, replace=False) as tmp:  # an existing folder was refused above
        write_checkpoint(tmp, cfg, want.peft_config, lora, projectors, tokenizer, report)
    return report


def read_official(path: Path) -> tuple[dict[str, Tensor], int | None, dict | None]:
    """The tensors of a training checkpoint ``{model, optimizer, config, ...}`` or of a bare state dict, its
    epoch and its ``config`` (None when absent)."""
    if not path.is_file():
        raise UserError(f"{path} not found: pass the downloaded Emotion_LLaMA.pth")
    check_torch_file(path, "the downloaded Emotion_LLaMA.pth")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (EOFError, OSError, zipfile.BadZipFile) as err:
        raise UserError(f"{path} is corrupt or truncated ({type(err).__name__}: {_first_line(err)}): download "
                        "Emotion_LLaMA.pth again") from None
    except (pickle.UnpicklingError, RuntimeError) as err:
        raise UserError(
            f"{path} is not a plain tensor checkpoint ({(str(err).splitlines() or [type(err).__name__])[0]}): if you trust it, "
            "re-save its state dict with torch.save(torch.load(path, weights_only=False)['model'], new_path)"
        ) from err
    wrapped = isinstance(obj, dict) and isinstance(obj.get("model"), dict)
    epoch = obj.get("epoch") if wrapped else None
    config = obj.get("config") if wrapped else None
    state = obj["model"] if wrapped else obj
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise UserError(f"{path} holds no state dict of tensors: pass the official Emotion_LLaMA.pth")
    return state, epoch if isinstance(epoch, int) else None, config if isinstance(config, dict) else None


def check_torch_file(path: Path, what: str) -> None:
    """Refuse, naming it, a file that cannot be a whole ``torch.save`` checkpoint: the zip archive torch writes
    (its directory is at the end, so a truncated one has none) or the older pickle format."""
    if zipfile.is_zipfile(path):
        return
    with open(path, "rb") as f:
        head = f.read(2)
    if len(head) == 2 and head[0] == 0x80:  # a pickle protocol marker: the pre-1.6 format
        return
    size = path.stat().st_size
    raise UserError(f"{path} is corrupt or truncated ({size} bytes, not a torch checkpoint archive): pass {what} "
                    "(download it again if it was cut short)")


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def checkpoint_lora(cfg: ModelConfig, file_config: dict | None, report: ImportReport) -> ModelConfig:
    """``cfg`` with LoRA r and alpha from the checkpoint's ``config['model']`` where it has them; every
    difference from the preset is a note naming both values."""
    model = (file_config or {}).get("model")
    model = model if isinstance(model, dict) else {}
    lora, changed = cfg.lora, {}
    for ours, theirs in (("r", "lora_r"), ("alpha", "lora_alpha")):
        if theirs not in model:
            continue
        value = model[theirs]
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise UserError(f"{report.source}: its config gives {theirs}={value!r}, not a positive whole number: "
                            "pass the official Emotion_LLaMA.pth")
        if value != getattr(lora, ours):
            report.notes.append(f"LoRA {ours}: checkpoint {value}, preset {getattr(lora, ours)}: "
                                "the checkpoint's value is used")
            changed[ours] = value
    if not model or not {"lora_r", "lora_alpha"} & set(model):
        report.notes.append(f"the checkpoint records no LoRA r/alpha: the preset's are used (r {lora.r}, "
                            f"alpha {lora.alpha})")
    return replace(cfg, lora=replace(lora, **changed)) if changed else cfg


def llm_shape(path: str | Path) -> dict:
    """The shape-defining keys of the LLM folder's ``config.json``."""
    path = Path(path)
    if not path.is_dir():
        raise WeightsNotFoundError("LLM", path, "paths.llm")
    config_file = path / "config.json"
    try:
        data = json.loads(config_file.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} has no config.json: set paths.llm to the Hugging Face folder of "
                        "Llama-2-7b-chat-hf") from None
    except (OSError, ValueError) as err:
        raise UserError(f"{config_file} is not readable JSON ({err}): set paths.llm to the Hugging Face "
                        "folder of Llama-2-7b-chat-hf") from None
    if not isinstance(data, dict) or not isinstance(data.get("hidden_size"), int):
        raise UserError(f"{config_file} gives no hidden_size: set paths.llm to the Hugging Face folder of "
                        "Llama-2-7b-chat-hf")
    return {k: data[k] for k in LLM_SHAPE_KEYS if data.get(k) is not None}


def with_llm_shape(cfg: ModelConfig, report: ImportReport) -> ModelConfig:
    """``cfg`` whose ``llm_arch`` is the shape of the ``llm_path`` folder (for the meta build), or ``cfg``
    itself when there is no folder; the report says where the shape came from."""
    if cfg.llm_path is None:
        arch = {**LLAMA2_7B, **cfg.llm_arch}
        report.notes.append(f"LLM shape from the preset (no paths.llm): {_shape_text(arch)}")
        return cfg
    arch = llm_shape(cfg.llm_path)
    report.notes.append(f"LLM shape from {Path(cfg.llm_path) / 'config.json'}: {_shape_text(arch)}")
    return replace(cfg, llm_arch=arch)


def _shape_text(arch: dict) -> str:
    return (f"hidden {arch.get('hidden_size')}, {arch.get('num_hidden_layers')} layers, "
            f"{arch.get('num_attention_heads')} heads, vocab {arch.get('vocab_size')}")


def our_name(key: str) -> tuple[str, str] | None:
    """(group, our key) for an official key, or None when our model has no such part."""
    if key.startswith(LLM_PREFIX):
        # peft >= 0.3 saves "lora_A.default.weight"; peft 0.2 and our adapter files omit the adapter name.
        return "lora", key.removeprefix(LLM_PREFIX).replace(".default.", ".")
    head, _, rest = key.partition(".")
    if head in PROJECTOR_NAMES:
        return PROJECTOR_NAMES[head], f"{PROJECTOR_NAMES[head]}.{rest}"
    return None


@dataclass
class Expected:
    """Our trainable tensors as meta tensors (names and shapes, no memory) and the adapter's peft config."""

    lora: dict[str, Tensor]
    projectors: dict[str, Tensor]
    peft_config: LoraConfig
    # Every parameter of the LLM (frozen ones too), under the peft model's names without peft's wrappers.
    llm_parameters: frozenset[str] = frozenset()


def expected_weights(cfg: ModelConfig, shapes: EncoderShapes) -> Expected:
    """Our trainable tensors for ``cfg``, built on the meta device; a ``vocab_size`` in ``cfg.llm_arch`` sizes
    the embedding (the placeholders take the ids right after it, as with the real tokenizer)."""
    arch = dict(cfg.llm_arch)
    vocab = arch.pop("vocab_size", None)
    tokenizer = None if vocab is None else _Placeholders(int(vocab))
    with torch.device("meta"):
        model = build_model(replace(cfg, llm_arch=arch), tokenizer=tokenizer, shapes=shapes)
    peft_config = model.llm.peft_config["default"]
    params = frozenset(
        ".".join(p for p in name.split(".") if p not in _PEFT_WRAPPERS) for name, _ in model.llm.named_parameters()
    )
    return Expected(get_peft_model_state_dict(model.llm), dict(model.projectors.state_dict()), peft_config, params)


class _Placeholders:
    """What a shape-only build asks of a tokenizer: the placeholders' ids, right after ``vocab`` ids."""

    def __init__(self, vocab: int):
        self.vocab = vocab

    def convert_tokens_to_ids(self, token: str) -> int:
        return self.vocab + PLACEHOLDERS.index(token)


def map_weights(state: dict[str, Tensor], want: Expected, report: ImportReport) -> tuple[dict, dict]:
    """Rename ``state`` to our keys, check each against ``want`` and fill ``report``: (adapter, projectors).

    An LLM tensor that is neither a LoRA factor nor a parameter of the model (a buffer such as a rotary
    ``inv_freq``) is ignored; a LoRA factor or an LLM weight the adapter does not hold is unexpected.
    """
    out: dict[str, dict[str, Tensor]] = {"lora": {}, "projectors": {}}
    counts: Counter[str] = Counter()
    buffers = []
    for key, tensor in state.items():
        named = our_name(key)
        if named is None:
            report.ignored.append(key)
            continue
        group, ours = named
        part = "lora" if group == "lora" else "projectors"
        target = getattr(want, part).get(ours)
        if target is None and part == "lora" and not _is_llm_weight(ours, want):
            report.ignored.append(key)
            buffers.append(key)
        elif target is None:
            report.unexpected.append(key)
        elif tuple(tensor.shape) != tuple(target.shape):
            report.mismatched.append(f"{key}: checkpoint {tuple(tensor.shape)}, model {tuple(target.shape)}")
        else:
            out[part][ours] = tensor.detach().contiguous()
            counts[group] += 1
    report.missing = [k for part in out for k in getattr(want, part) if k not in out[part]]
    report.mapped = {g: counts[g] for g in ("lora", *PROJECTOR_NAMES.values()) if counts[g]}
    unused = [k for k in report.ignored if k.startswith(UNUSED_HEAD)]
    if unused:
        report.notes.append(f"{len(unused)} tensors of the unused '{UNUSED_HEAD}*' fusion head ignored")
    if buffers:
        report.notes.append(f"{len(buffers)} LLM tensors that are no parameter of the model (buffers) ignored, "
                            f"e.g. {buffers[0]}")
    others = [k for k in report.ignored if not k.startswith(UNUSED_HEAD) and k not in buffers]
    if others:
        report.notes.append(f"{len(others)} tensors of modules this model does not have ignored, e.g. {others[0]}")
    return out["lora"], out["projectors"]


def _is_llm_weight(ours: str, want: Expected) -> bool:
    """Whether an LLM tensor is trained weight (a LoRA factor, or a parameter of the LLM), not a buffer."""
    return any(part.startswith("lora_") for part in ours.split(".")) or ours in want.llm_parameters


def check_eva(path: Path, cfg: ModelConfig, shapes: EncoderShapes) -> None:
    """Fail now, not at the first inference, when the EVA file does not load into the configured EVA."""
    if path.is_file() and path.suffix != ".safetensors":
        check_torch_file(path, "the EVA ViT-g weights (paths.eva=FILE)")
    try:
        eva = EvaEncoder.from_pretrained(path, config=encoder_config(cfg, "eva"))
    except (EOFError, OSError, RuntimeError, SafetensorError) as err:
        raise UserError(f"{path} does not load as EVA ViT-g weights ({type(err).__name__}: {_first_line(err)}): "
                        "set paths.eva to the eva_vit_g.pth file (download it again if it was cut short)") from None
    if (eva.num_features, eva.num_patches) != (shapes.dims["eva"], shapes.eva_patches):
        raise UserError(
            f"{path} gives {eva.num_patches} EVA tokens of width {eva.num_features}, but the projectors expect "
            f"{shapes.eva_patches} of width {shapes.dims['eva']}: pass the EVA ViT-g weights of this model"
        )


def write_checkpoint(
    out: Path,
    cfg: ModelConfig,
    peft_config: LoraConfig,
    lora: dict[str, Tensor],
    projectors: dict[str, Tensor],
    tokenizer: PreTrainedTokenizerBase | None,
    report: ImportReport,
) -> None:
    """The files :func:`emotion_llama.model.checkpoint.load_checkpoint` reads (no materialised model needed)."""
    # What PeftModel.save_pretrained records, so that peft's own loaders accept the adapter too.
    peft_config.base_model_name_or_path = cfg.llm_path
    peft_config.inference_mode = True
    peft_config.save_pretrained(str(out / "adapter"))
    save_file(lora, out / "adapter" / "adapter_model.safetensors")
    save_file(projectors, out / "projectors.safetensors")
    if tokenizer is not None:
        tokenizer.save_pretrained(out / "tokenizer")
    OmegaConf.save(OmegaConf.create(cfg.to_dict()), out / "config.yaml")
    meta = {"stage": "imported", "format": "official Emotion-LLaMA (MiniGPT-v2)", "import": report.to_dict()}
    (out / "meta.json").write_text(json.dumps(meta, indent=2))


def _configured_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase | None:
    # Without a folder, build_tokenizer would make the tiny preset's tokenizer, which LLaMA's weights never saw.
    return build_tokenizer(cfg) if (cfg.tokenizer_path or cfg.llm_path) else None


def _tokenizer_note(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase | None) -> str:
    if tokenizer is None:
        return "no tokenizer saved: at load time it comes from paths.llm (pass overrides={'llm_path': ...})"
    source = cfg.tokenizer_path or cfg.llm_path
    return f"tokenizer saved from {source}" if source else "tokenizer saved"


def _listing(keys: list[str]) -> str:
    if not keys:
        return "none"
    more = f", ... ({len(keys) - PREVIEW} more)" if len(keys) > PREVIEW else ""
    return f"{len(keys)}: " + ", ".join(keys[:PREVIEW]) + more
