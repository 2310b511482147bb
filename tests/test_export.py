"""emotion-llama-export: a checkpoint's LoRA (and modules_to_save copies) merged into a plain Hugging Face LLM folder
that plain transformers opens, beside projectors and a config that load_checkpoint opens from wherever it is moved."""

import dataclasses
import json
import shutil

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import CONF_DIR, save_tiny_checkpoint
from emotion_llama.commands import export as export_command
from emotion_llama.encoders.build import encoder_shapes
from emotion_llama.errors import UserError
from emotion_llama.inference.core import InferenceCore
from emotion_llama.labels import MERR_LABELS
from emotion_llama.model import export as export_module
from emotion_llama.model.builder import build_model, build_tokenizer
from emotion_llama.model.checkpoint import CheckpointError, load_checkpoint, read_config, save_checkpoint
from emotion_llama.model.config import LoraSpec, ModelConfig, ModelConfigError
from emotion_llama.model.export import LLM_DIR, ExportError, export_checkpoint
from emotion_llama.model.llm import llm_config, merge_lora
from emotion_llama.model.prompts import FEATURE_TOKEN, VIDEO_TOKEN
from emotion_llama.model.tokenizer import base_vocab_size

pytestmark = pytest.mark.usefixtures("one_thread")

ARCH = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, max_position_embeddings=512)
TOL = 1e-4
LABELS = ["happy", "sad", "angry"]


def chat_config() -> ModelConfig:
    """The tiny_qwen2 preset (chat template, modules_to_save), smaller and without encoder folders."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = ModelConfig.from_cfg(compose("inspect_model", ["model=tiny_qwen2"]))
    assert cfg.prompt_format == "chat_template" and cfg.lora.modules_to_save
    return dataclasses.replace(cfg, llm_arch={**cfg.llm_arch, **ARCH, "num_key_value_heads": 2}, encoder_paths={},
                               lora=dataclasses.replace(cfg.lora, r=4, alpha=8, dropout=0.0))


def save_trained(cfg: ModelConfig, out, meta=None):
    """A checkpoint whose adapter is not a no-op: LoRA B drawn, the modules_to_save copies moved off the originals."""
    tokenizer = build_tokenizer(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, tokenizer, encoder_shapes(cfg))
    with torch.no_grad():
        for name, p in model.llm.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.02)
            elif "modules_to_save" in name:
                p.add_(torch.randn_like(p) * 0.05)
    return save_checkpoint(model, cfg, tokenizer, out, meta=meta)


CHECKPOINTS = {
    "lora": lambda out: save_tiny_checkpoint(out, lora_b_std=0.02),
    "modules_to_save": lambda out: save_trained(
        ModelConfig(llm_arch=ARCH, lora=dict(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"],
                                             modules_to_save=["embed_tokens", "lm_head"])),
        out, meta={"labels": LABELS, "stage": "fine"}),
    "chat": lambda out: save_trained(chat_config(), out),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """kind -> (checkpoint, export, summary)."""
    out = {}
    for kind, make in CHECKPOINTS.items():
        root = tmp_path_factory.mktemp(kind)
        ckpt = make(root / "ckpt")
        out[kind] = ckpt, root / "export", export_checkpoint(ckpt, root / "export")
    return out


def token_ids(vocab: int) -> torch.Tensor:
    return torch.randint(0, vocab, (2, 12), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("kind", list(CHECKPOINTS))
def test_plain_transformers_llm_gives_the_checkpoints_logits(exported, kind):
    ckpt, out, summary = exported[kind]
    model, cfg, _ = load_checkpoint(ckpt)
    llm = AutoModelForCausalLM.from_pretrained(out / LLM_DIR)
    assert type(llm).__module__.startswith("transformers.") and not hasattr(llm, "peft_config")
    ids = token_ids(llm.config.vocab_size)
    with torch.no_grad():
        want = model.llm.eval()(input_ids=ids).logits
        got = llm.eval()(input_ids=ids).logits
        with model.llm.disable_adapter():
            base = model.llm(input_ids=ids).logits
    diff = (got - want).abs().max().item()
    print(f"{kind}: max |logits diff| {diff:.2e}, adapter effect {(want - base).abs().max().item():.2e}")
    assert diff < TOL
    assert (want - base).abs().max() > 100 * TOL  # the adapter (and the trained copies) do change the logits
    assert summary["modules_to_save"] == list(cfg.lora.modules_to_save)
    assert summary["lora_modules_merged"] == ARCH["num_hidden_layers"] * len(cfg.lora.target_modules)
    assert summary["dtype"] == "float32"
    if cfg.lora.modules_to_save:  # the trained copies, not the originals, are the export's weights
        trained = model.llm.get_base_model().lm_head.modules_to_save["default"].weight
        assert torch.equal(llm.lm_head.weight, trained)
        assert torch.equal(llm.get_input_embeddings().weight,
                           model.llm.get_base_model().get_input_embeddings().modules_to_save["default"].weight)


@pytest.mark.parametrize("kind", list(CHECKPOINTS))
def test_the_whole_export_scores_as_the_checkpoint(exported, kind):
    ckpt, out, _ = exported[kind]
    assert not (out / "adapter").exists() and not (out / "base_llm").exists() and not (out / "tokenizer").exists()
    cfg = read_config(out)
    assert cfg.lora == LoraSpec(r=0, target_modules=(), modules_to_save=()) and not cfg.lora.enabled
    assert cfg.llm_path == str((out / LLM_DIR).absolute())
    before, after = InferenceCore.load(ckpt, device="cpu"), InferenceCore.load(out, device="cpu")
    assert after.labels == before.labels
    feats = {m: torch.randn(3, *shape, generator=torch.Generator().manual_seed(2))
             for m, shape in before.model.feature_shapes.items()}
    labels = after.labels or MERR_LABELS
    want, got = before.score(["I am fine", "", "no"], feats, labels), after.score(["I am fine", "", "no"], feats, labels)
    diff = (got - want).abs().max().item()
    print(f"{kind}: max |score diff| {diff:.2e}")
    assert got.shape == (3, len(labels)) and diff < TOL
    assert not any(p.requires_grad for p in after.model.llm.parameters())


def test_meta_is_copied_with_where_it_came_from(exported):
    ckpt, out, _ = exported["modules_to_save"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["labels"] == LABELS and meta["stage"] == "fine"
    assert meta["export"] == {"from": str(ckpt.absolute()), "dtype": "float32"}


@pytest.mark.parametrize("kind", list(CHECKPOINTS))
def test_the_tokenizer_opens_with_plain_transformers(exported, kind):
    ckpt, out, summary = exported[kind]
    _, cfg, tok = load_checkpoint(ckpt)
    plain = AutoTokenizer.from_pretrained(out / LLM_DIR)
    config = json.loads((out / LLM_DIR / "config.json").read_text())
    # The placeholders are kept, numbered right after the LLM's vocabulary.
    assert plain.convert_tokens_to_ids([VIDEO_TOKEN, FEATURE_TOKEN]) == [config["vocab_size"], config["vocab_size"] + 1]
    assert len(plain) == len(tok) == summary["tokenizer_size"] == config["vocab_size"] + 2
    text = "The person smiles and the voice is loud."
    assert plain(text).input_ids == tok(text).input_ids
    if cfg.prompt_format == "chat_template":
        turn = [{"role": "user", "content": "How does she feel?"}]
        rendered = plain.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
        assert rendered == tok.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
        assert "<|im_start|>assistant" in rendered and summary["chat_template"]
    else:
        assert not plain.chat_template and not summary["chat_template"]


def test_a_moved_export_still_loads(exported, tmp_path):
    ckpt, out, _ = exported["chat"]
    moved = tmp_path / "elsewhere" / "model"
    shutil.copytree(out, moved)
    core = InferenceCore.load(moved, device="cpu")
    assert core.config.llm_path == str((moved / LLM_DIR).absolute())
    shutil.rmtree(moved / LLM_DIR)
    with pytest.raises(CheckpointError, match=r"llm/config.json not found"):
        load_checkpoint(moved)


def test_the_export_dtype(tmp_path):
    ckpt = save_trained(ModelConfig(llm_arch=ARCH, dtype="bfloat16", lora=dict(
        r=4, alpha=8, dropout=0.0, modules_to_save=["embed_tokens", "lm_head"])), tmp_path / "ckpt")
    auto = export_checkpoint(ckpt, tmp_path / "auto")
    fp32 = export_checkpoint(ckpt, tmp_path / "fp32", dtype="float32")
    assert (auto["dtype"], fp32["dtype"]) == ("bfloat16", "float32")
    for name, dtype in (("auto", torch.bfloat16), ("fp32", torch.float32)):
        with safe_open(str(tmp_path / name / LLM_DIR / "model.safetensors"), "pt") as f:
            assert {f.get_slice(k).get_dtype() for k in f.keys()} == {str(dtype).removeprefix("torch.").replace(
                "bfloat16", "BF16").replace("float32", "F32")}
        assert read_config(tmp_path / name).dtype == str(dtype).removeprefix("torch.")
    # The fp32 export is the fp32 merge of the bf16 base with the fp32 adapter.
    model, _, _ = load_checkpoint(ckpt, {"dtype": "float32"})
    llm = AutoModelForCausalLM.from_pretrained(tmp_path / "fp32" / LLM_DIR)
    assert llm.dtype == torch.float32
    ids = token_ids(llm.config.vocab_size)
    with torch.no_grad():
        assert (llm(input_ids=ids).logits - model.llm(input_ids=ids).logits).abs().max() < TOL
    with pytest.raises(ExportError, match="dtype=float16 is not an export dtype"):
        export_checkpoint(ckpt, tmp_path / "fp16", dtype="float16")


def test_no_lora_is_one_decision():
    with pytest.raises(ModelConfigError, match="model.lora.r=0 means no adapters"):
        ModelConfig(lora=dict(r=0, modules_to_save=["lm_head"]))
    assert not ModelConfig(lora=dict(r=0)).lora.enabled and ModelConfig().lora.enabled


def test_an_export_is_neither_exported_again_nor_saved_as_a_checkpoint(exported, tmp_path):
    _, out, _ = exported["lora"]
    with pytest.raises(ExportError, match="already an export"):
        export_checkpoint(out, tmp_path / "again")
    model, cfg, tok = load_checkpoint(out)
    with pytest.raises(CheckpointError, match="model.lora.r=0"):
        save_checkpoint(model, cfg, tok, tmp_path / "ckpt")
    assert not (tmp_path / "again").exists() and not (tmp_path / "ckpt").exists()


def test_refusals_write_nothing(exported, tmp_path, monkeypatch):
    ckpt, _, _ = exported["lora"]
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="exists and is not empty"):
        export_checkpoint(ckpt, busy)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    with pytest.raises(ExportError, match="overlaps checkpoint"):
        export_checkpoint(ckpt, ckpt / "export")
    with pytest.raises(ExportError, match="overlaps checkpoint"):
        export_checkpoint(ckpt, ckpt.parent, overwrite=True)
    blip = tmp_path / "blip"
    blip.mkdir()
    (blip / "config.yaml").write_text("backbone: instructblip\n")
    with pytest.raises(ExportError, match="InstructBLIP .* not supported"):
        export_checkpoint(blip, tmp_path / "blip_out")
    # A failure while writing leaves neither the export nor a temporary folder.
    monkeypatch.setattr(export_module, "save_file", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        export_checkpoint(ckpt, tmp_path / "failed" / "out")
    assert list((tmp_path / "failed").iterdir()) == []
    monkeypatch.undo()
    # An empty folder is fine, and overwrite=true replaces a non-empty one.
    empty = tmp_path / "empty"
    empty.mkdir()
    export_checkpoint(ckpt, empty)
    export_checkpoint(ckpt, busy, overwrite=True)
    assert not (busy / "keep.txt").exists() and (busy / LLM_DIR / "config.json").is_file()


def one_error_line(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_:
        export_command.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith("error: ")
    return line


@pytest.mark.usefixtures("restore_logging")
def test_the_command(exported, tmp_path, capsys):
    ckpt, _, _ = exported["modules_to_save"]
    assert export_command.main([f"checkpoint={ckpt}", f"out={tmp_path / 'out'}"]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(line)
    assert summary["out"] == str(tmp_path / "out") and summary["modules_to_save"] == ["embed_tokens", "lm_head"]
    assert (tmp_path / "out" / LLM_DIR / "model.safetensors").is_file()
    assert "not empty" in one_error_line(capsys, [f"checkpoint={ckpt}", f"out={tmp_path / 'out'}"])
    (tmp_path / "nockpt").mkdir()
    assert "not a checkpoint folder" in one_error_line(capsys, [f"checkpoint={tmp_path / 'nockpt'}",
                                                               f"out={tmp_path / 'o2'}"])
    assert "checkpoint=" in one_error_line(capsys, [f"checkpoint={tmp_path / 'missing'}", f"out={tmp_path / 'o3'}"])
    assert "dtype" in one_error_line(capsys, [f"checkpoint={ckpt}", f"out={tmp_path / 'o4'}", "dtype=float16"])
    assert not any((tmp_path / o).exists() for o in ("o2", "o3", "o4"))
    assert export_command.main([f"checkpoint={ckpt}", f"out={tmp_path / 'out'}", "overwrite=true"]) == 0


def test_a_checkpoint_of_an_llm_folder_exports_with_paths_llm(tmp_path):
    """A real preset's checkpoint (the base LLM in its own folder): the folder moved since training is named."""
    tok = build_tokenizer(ModelConfig())
    base = tmp_path / "llama"
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(llm_config(base_vocab_size(tok), **ARCH)).save_pretrained(base)
    tok.save_pretrained(base)
    ckpt = save_trained(ModelConfig(llm_path=str(base), weights_required=True, lora=dict(r=4, alpha=8, dropout=0.0)),
                        tmp_path / "ckpt")
    moved = tmp_path / "moved_llama"
    base.rename(moved)
    with pytest.raises(UserError, match="paths.llm"):
        export_checkpoint(ckpt, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    export_checkpoint(ckpt, tmp_path / "out", llm_path=str(moved))
    model, _, _ = load_checkpoint(ckpt, {"llm_path": str(moved)})
    llm = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / LLM_DIR)
    ids = token_ids(llm.config.vocab_size)
    with torch.no_grad():
        assert (llm(input_ids=ids).logits - model.llm(input_ids=ids).logits).abs().max() < TOL


def test_merging_removes_the_dtype_bridges_of_the_trained_copies():
    cfg = ModelConfig(llm_arch=ARCH, dtype="bfloat16", lora=dict(r=4, alpha=8, dropout=0.0,
                                                                 modules_to_save=["embed_tokens", "lm_head"]))
    model = build_model(cfg, build_tokenizer(cfg), encoder_shapes(cfg))
    merged = merge_lora(model.llm).to(torch.bfloat16)
    assert not any(hasattr(m, "_dtype_bridge") or m._forward_hooks or m._forward_pre_hooks for m in merged.modules())
    with torch.no_grad():
        assert merged(input_ids=token_ids(merged.config.vocab_size)).logits.dtype == torch.bfloat16


def test_stage_two_from_an_export_is_refused_naming_it(exported):
    from emotion_llama.training.train import _model_and_tokenizer

    out = exported["lora"][1]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=tiny_fine", f"stage.init_from={out}"])
    with pytest.raises(UserError, match="is an export .*start stage 2 from the checkpoint it was exported from"):
        _model_and_tokenizer(cfg)


def test_the_base_llm_of_an_export_is_its_plain_llm(exported):
    ckpt, out, _ = exported["lora"]
    merged, _, _ = load_checkpoint(out)
    assert merged.base_llm is merged.llm  # no LoRA wrapper: what benchmarks count calls on
    wrapped, _, _ = load_checkpoint(ckpt)
    assert wrapped.base_llm is wrapped.llm.get_base_model()
