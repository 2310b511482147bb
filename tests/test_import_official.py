import importlib.util
import json
from pathlib import Path

import pytest
import torch
from peft import get_peft_model_state_dict
from transformers import LlamaForCausalLM

from emotion_llama.encoders.build import EncoderShapes
from emotion_llama.encoders.eva import EvaEncoder
from emotion_llama.errors import UserError
from emotion_llama.model.builder import build_model
from emotion_llama.model.checkpoint import load_checkpoint, read_config
from emotion_llama.model.config import ModelConfig
from emotion_llama.model.fusion import FEATURE_MODALITIES
from emotion_llama.model.llm import llm_config
from emotion_llama.model.official import OfficialImportError, import_official
from emotion_llama.model.tokenizer import base_vocab_size, build_tiny_tokenizer

SHAPES = EncoderShapes(dims={"eva": 24, "mae": 20, "videomae": 18, "hubert": 16}, eva_patches=16)
ARCH = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, max_position_embeddings=512)
RANK = 4
PROJ_IN = {"llama_proj": 4 * 24, "cls_tk_llama_proj": 24, "feats_llama_proj1": 20,
           "feats_llama_proj2": 18, "feats_llama_proj3": 16}
ATTENTION = {"attention.in_proj_weight": torch.randn(48, 16), "attention.out_proj.bias": torch.randn(16)}


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory):
    """A tiny LLaMA folder (weights + tokenizer), standing in for Llama-2-7b-chat-hf."""
    path = tmp_path_factory.mktemp("llm")
    tokenizer = build_tiny_tokenizer(["the person smiles"], vocab_size=512)
    torch.manual_seed(0)
    LlamaForCausalLM(llm_config(base_vocab_size(tokenizer), **ARCH)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def cfg(llm_dir):
    lora = dict(r=RANK, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    return ModelConfig(preset="tiny_official", llm_path=str(llm_dir), llm_arch=ARCH, lora=lora)


def official_state(peft_naming: str) -> dict[str, torch.Tensor]:
    """Random trained tensors under MiniGPT-v2's names, as peft 0.2 or peft >= 0.3 saves them."""
    g = torch.Generator().manual_seed(1)
    adapter = ".default" if peft_naming == "peft>=0.3" else ""
    d = ARCH["hidden_size"]
    state = {}
    for i in range(ARCH["num_hidden_layers"]):
        for proj in ("q_proj", "v_proj"):
            stem = f"llama_model.base_model.model.model.layers.{i}.self_attn.{proj}"
            state[f"{stem}.lora_A{adapter}.weight"] = torch.randn(RANK, d, generator=g)
            state[f"{stem}.lora_B{adapter}.weight"] = torch.randn(d, RANK, generator=g)
    for name, d_in in PROJ_IN.items():
        state[f"{name}.weight"] = torch.randn(d, d_in, generator=g)
        state[f"{name}.bias"] = torch.randn(d, generator=g)
    return {**state, **ATTENTION}


def save_official(path: Path, state: dict, wrapped: bool = True) -> Path:
    obj = {"model": state, "optimizer": {}, "config": {"model": {"arch": "minigpt_v2"}}, "scaler": None,
           "epoch": 29} if wrapped else state
    torch.save(obj, path)
    return path


def our_key(official: str) -> str:
    return official.removeprefix("llama_model.").replace(".default.", ".")


def prompt(model) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    ids = [1] + [model.video_token_id] * model.num_video_tokens
    ids += [model.feature_token_id] * model.num_feature_tokens + [300, 301, 302]
    g = torch.Generator().manual_seed(2)
    feats = {"eva": torch.randn(1, 1 + SHAPES.eva_patches, SHAPES.dims["eva"], generator=g)}
    feats |= {m: torch.randn(1, SHAPES.dims[m], generator=g) for m in FEATURE_MODALITIES}
    input_ids = torch.tensor([ids])
    return input_ids, torch.ones_like(input_ids), feats


@pytest.mark.parametrize("peft_naming, wrapped", [("peft0.2", True), ("peft>=0.3", False)])
def test_imported_checkpoint_loads_the_official_tensors(tmp_path, cfg, peft_naming, wrapped):
    state = official_state(peft_naming)
    src = save_official(tmp_path / "Emotion_LLaMA.pth", state, wrapped)
    report = import_official(src, tmp_path / "out", cfg, shapes=SHAPES)
    assert report.ok
    assert report.mapped == {"lora": 8, "eva_patch": 2, "eva_cls": 2, "mae": 2, "videomae": 2, "hubert": 2}
    assert sorted(report.ignored) == sorted(ATTENTION)
    assert report.epoch == (29 if wrapped else None)
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["import"]["mapped"] == report.mapped

    model, loaded_cfg, _ = load_checkpoint(tmp_path / "out", shapes=SHAPES)
    assert loaded_cfg.llm_path == cfg.llm_path
    lora = get_peft_model_state_dict(model.llm)
    projectors = model.projectors.state_dict()
    renamed = {"llama_proj": "eva_patch", "cls_tk_llama_proj": "eva_cls", "feats_llama_proj1": "mae",
               "feats_llama_proj2": "videomae", "feats_llama_proj3": "hubert"}
    for key, tensor in state.items():
        if key.startswith("llama_model."):
            torch.testing.assert_close(lora[our_key(key)], tensor)
        elif not key.startswith("attention."):
            head, _, rest = key.partition(".")
            torch.testing.assert_close(projectors[f"{renamed[head]}.{rest}"], tensor)

    fresh = build_model(cfg, build_tiny_tokenizer(["the person smiles"], vocab_size=512), SHAPES).eval()
    inputs = prompt(model)
    with torch.no_grad():
        assert not torch.allclose(model.eval()(*inputs).logits, fresh(*inputs).logits, atol=1e-3)


def truncated(state):
    return {k: v for k, v in state.items() if ".layers.1.self_attn.q_proj." not in k}


def misshaped(state):
    return {**state, "llama_proj.weight": torch.randn(ARCH["hidden_size"], 5 * 24)}


def extra_lora(state):
    return {**state, "llama_model.base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight": torch.randn(4, 32)}


@pytest.mark.parametrize(
    "corrupt, words",
    [
        (truncated, ["2 weights missing", "layers.1.self_attn.q_proj.lora_A.weight"]),
        (misshaped, ["1 mis-shaped", "llama_proj.weight: checkpoint (32, 120), model (32, 96)"]),
        (extra_lora, ["no place for", "k_proj.lora_A.weight"]),
    ],
)
def test_incomplete_or_foreign_checkpoint_is_refused(tmp_path, cfg, corrupt, words):
    src = save_official(tmp_path / "Emotion_LLaMA.pth", corrupt(official_state("peft0.2")))
    with pytest.raises(OfficialImportError) as err:
        import_official(src, tmp_path / "out", cfg, shapes=SHAPES)
    message = str(err.value)
    assert "Emotion_LLaMA.pth" in message and "nothing was written" in message
    assert all(w in message for w in words), message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Emotion_LLaMA.pth"]


def test_eva_weights_of_another_width_are_refused(tmp_path, cfg):
    src = save_official(tmp_path / "Emotion_LLaMA.pth", official_state("peft0.2"))
    eva = tmp_path / "eva_vit_g.pth"
    torch.save(EvaEncoder.tiny().model.state_dict(), eva)  # width 64; the projectors take 24
    with pytest.raises(UserError, match="EVA tokens of width 64"):
        import_official(src, tmp_path / "out", cfg, shapes=SHAPES, eva_path=eva)
    assert not (tmp_path / "out").exists()


def test_existing_output_folder_is_not_overwritten(tmp_path, cfg):
    src = save_official(tmp_path / "Emotion_LLaMA.pth", official_state("peft0.2"))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="already exists"):
        import_official(src, tmp_path / "out", cfg, shapes=SHAPES)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def load_tool():
    path = Path(__file__).resolve().parents[1] / "tools" / "import_official.py"
    spec = importlib.util.spec_from_file_location("import_official_tool", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_preset_state(tool) -> dict[str, torch.Tensor]:
    """Official-named tensors at the sizes of the tiny preset (LoRA restricted to q/v by the overrides)."""
    from emotion_llama.encoders.build import encoder_shapes
    from emotion_llama.model.official import PROJECTOR_NAMES, expected_weights

    cfg = tool.model_config("tiny", None, OVERRIDES)
    want = expected_weights(cfg, encoder_shapes(cfg))
    inverse = {ours: official for official, ours in PROJECTOR_NAMES.items()}
    state = {f"llama_model.{k}": torch.randn(v.shape) for k, v in want.lora.items()}
    for key, v in want.projectors.items():
        head, _, rest = key.partition(".")
        state[f"{inverse[head]}.{rest}"] = torch.randn(v.shape)
    return state


OVERRIDES = ["model.lora.target_modules=[q_proj,v_proj]", "model.lora.modules_to_save=[]"]


def test_cli_prints_the_report_and_refuses_with_one_line(tmp_path, capsys):
    tool = load_tool()
    state = tiny_preset_state(tool)
    good = save_official(tmp_path / "good.pth", {**state, **ATTENTION})
    eva = tmp_path / "eva_vit_g.pth"
    torch.save({f"visual_encoder.{k}": v for k, v in EvaEncoder.tiny().model.state_dict().items()}, eva)
    args = [f"ckpt={good}", f"out={tmp_path / 'out'}", "model=tiny", f"paths.eva={eva}"]
    tool.main([*args, *OVERRIDES])
    printed = capsys.readouterr().out
    assert "mapped      18 tensors: lora 8, eva_patch 2" in printed
    assert "attention.in_proj_weight" in printed and "missing     none" in printed
    written = read_config(tmp_path / "out")
    assert written.preset == "tiny" and tuple(written.lora.target_modules) == ("q_proj", "v_proj")
    assert written.encoder_paths["eva"] == str(eva)

    bad = save_official(tmp_path / "bad.pth", {k: v for k, v in state.items() if ".layers.1." not in k})
    with pytest.raises(SystemExit) as exit_:
        tool.main([f"ckpt={bad}", f"out={tmp_path / 'out2'}", "model=tiny", *OVERRIDES])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.pth" in err and "missing" in err
    assert not (tmp_path / "out2").exists()


# ------------------------------------------------------------------ what the checkpoint and paths.llm say
def save_with_config(path: Path, state: dict, model_config: dict) -> Path:
    torch.save({"model": state, "optimizer": {}, "config": {"model": model_config}, "scaler": None, "epoch": 1}, path)
    return path


def lora_scaling(model) -> float:
    layer = model.llm.base_model.model.model.layers[0].self_attn.q_proj
    return float(layer.scaling["default"])


def test_lora_alpha_and_r_come_from_the_checkpoint_config(tmp_path, cfg):
    """The file's lora_alpha (4) and lora_r (2) win over the preset's (8, 4); each difference is one note."""
    state = official_state("peft0.2")
    for key in [k for k in state if ".lora_" in k]:  # rank-2 factors, as a checkpoint trained with r=2 holds
        state[key] = state[key][:2] if ".lora_A." in key else state[key][:, :2]
    src = save_with_config(tmp_path / "Emotion_LLaMA.pth", state, {"arch": "minigpt_v2", "lora_r": 2, "lora_alpha": 4})
    report = import_official(src, tmp_path / "out", cfg, shapes=SHAPES)
    assert report.ok
    text = report.format()
    assert any("alpha" in n and "checkpoint 4" in n and "preset 8" in n for n in report.notes), report.notes
    assert any(" r: " in n and "checkpoint 2" in n and "preset 4" in n for n in report.notes), report.notes
    assert "preset 8" in text
    written = read_config(tmp_path / "out")
    assert (written.lora.r, written.lora.alpha) == (2, 4)
    assert written.eva_frame == "first"  # the release's EVA input
    adapter = json.loads((tmp_path / "out" / "adapter" / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"]) == (2, 4)
    model, _, _ = load_checkpoint(tmp_path / "out", shapes=SHAPES)
    assert lora_scaling(model) == pytest.approx(4 / 2)


def test_lora_values_equal_to_the_preset_give_no_note(tmp_path, cfg):
    src = save_with_config(tmp_path / "Emotion_LLaMA.pth", official_state("peft0.2"),
                           {"lora_r": RANK, "lora_alpha": 8})
    report = import_official(src, tmp_path / "out", cfg, shapes=SHAPES)
    assert not [n for n in report.notes if n.startswith("LoRA ")]
    assert read_config(tmp_path / "out").lora.alpha == 8


def test_a_nonsense_lora_r_in_the_checkpoint_config_is_refused(tmp_path, cfg):
    src = save_with_config(tmp_path / "Emotion_LLaMA.pth", official_state("peft0.2"), {"lora_r": "sixty-four"})
    with pytest.raises(UserError, match="lora_r='sixty-four'"):
        import_official(src, tmp_path / "out", cfg, shapes=SHAPES)
    assert not (tmp_path / "out").exists()


def test_llm_shape_comes_from_the_llm_folder_not_the_preset(tmp_path, cfg, llm_dir):
    """A preset whose llm_arch says LLaMA-2-7B (the real preset's {}) still imports a checkpoint of the
    folder's tiny LLM: the shapes are read from its config.json."""
    from dataclasses import replace

    src = save_official(tmp_path / "Emotion_LLaMA.pth", official_state("peft0.2"))
    report = import_official(src, tmp_path / "out", replace(cfg, llm_arch={}), shapes=SHAPES)
    assert report.ok and report.mapped["lora"] == 8
    note = next(n for n in report.notes if n.startswith("LLM shape"))
    assert str(llm_dir / "config.json") in note and "hidden 32, 2 layers, 4 heads" in note

    bare = tmp_path / "no_config"
    bare.mkdir()
    with pytest.raises(UserError, match="no config.json"):
        import_official(src, tmp_path / "out2", replace(cfg, llm_path=str(bare)), shapes=SHAPES)


ROTARY = {
    "llama_model.base_model.model.model.layers.0.self_attn.rotary_emb.inv_freq": torch.rand(4),
    "llama_model.base_model.model.model.rotary_emb.inv_freq": torch.rand(4),
}


def test_buffers_without_a_place_are_ignored_and_reported(tmp_path, cfg):
    src = save_official(tmp_path / "Emotion_LLaMA.pth", {**official_state("peft0.2"), **ROTARY})
    report = import_official(src, tmp_path / "out", cfg, shapes=SHAPES)
    assert report.ok and report.mapped["lora"] == 8
    assert set(ROTARY) <= set(report.ignored)
    text = report.format()
    assert all(key in text for key in ROTARY)
    assert any("2 LLM tensors" in n and "buffers" in n for n in report.notes), report.notes


def base_weight(state):
    """A frozen base weight of the LLM, shipped as if trained: it has a place, but the import would drop it."""
    return {**state, "llama_model.base_model.model.model.layers.0.mlp.up_proj.weight": torch.randn(64, 32)}


@pytest.mark.parametrize(
    "corrupt, words",
    [
        (lambda s: truncated({**s, **ROTARY}), ["2 weights missing"]),
        (lambda s: misshaped({**s, **ROTARY}), ["1 mis-shaped", "llama_proj.weight"]),
        (base_weight, ["no place for", "mlp.up_proj.weight"]),
    ],
    ids=["missing", "misshaped", "base_weight"],
)
def test_buffers_do_not_hide_missing_or_misshaped_weights(tmp_path, cfg, corrupt, words):
    src = save_official(tmp_path / "Emotion_LLaMA.pth", corrupt(official_state("peft0.2")))
    with pytest.raises(OfficialImportError) as err:
        import_official(src, tmp_path / "out", cfg, shapes=SHAPES)
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message
    assert "inv_freq" not in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "override, words",
    [
        ("model.llm_arch={hidden_size:", ["model.llm_arch"]),
        ("model.lora={r: 4", ["model.lora"]),
        ("model.eva_frame=middle", ["model.eva_frame", "peak, first"]),
        ("model.encoder_size=huge", ["model.encoder_size"]),
        ("model.llm_arch=5", ["model.llm_arch"]),
    ],
)
def test_cli_bad_override_is_one_line_and_exit_2(tmp_path, capsys, override, words):
    tool = load_tool()
    src = save_official(tmp_path / "Emotion_LLaMA.pth", official_state("peft0.2"))
    with pytest.raises(SystemExit) as exit_:
        tool.main([f"ckpt={src}", f"out={tmp_path / 'out'}", "model=tiny", override])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert "Traceback" not in err and all(w in err for w in words), err
    assert not (tmp_path / "out").exists()
