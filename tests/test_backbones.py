"""Any chat LLM as the backbone: prompts through the model's own chat template, its end-of-turn token, the tiny
Qwen2 and Llama-3 presets through the same commands as the tiny LLaMA-2 one, and the real presets' sizes."""

import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from conftest import CONF_DIR, train_overrides
from emotion_llama.errors import UserError
from emotion_llama.evaluation.evaluate import evaluate
from emotion_llama.inference.core import InferenceCore
from emotion_llama.model.builder import build_model, build_tokenizer
from emotion_llama.model.chat import ChatFormatError, chat_format
from emotion_llama.model.config import ModelConfig, ModelConfigError
from emotion_llama.model.inspect import inspect_model
from emotion_llama.model.prompts import FEATURE_TOKEN, VIDEO_TOKEN, PromptParts, user_message
from emotion_llama.model.sequences import encode_answer, encode_prompt
from emotion_llama.training.train import train

# One user turn ready for the answer, as the real models' templates render it (REFERENCE, "Modern chat LLMs").
RENDERED = {
    "tiny_qwen2": "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
                  "<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n",
    "tiny_llama3": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December "
                   "2023\nToday Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n{user}"
                   "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
}
END_OF_TURN = {"tiny_qwen2": "<|im_end|>", "tiny_llama3": "<|eot_id|>"}
BOS = {"tiny_qwen2": None, "tiny_llama3": "<|begin_of_text|>"}
CHAT_PRESETS = list(RENDERED)


def compose_cfg(config_name: str, overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def model_cfg(preset: str) -> ModelConfig:
    return ModelConfig.from_cfg(compose_cfg("inspect_model", [f"model={preset}"]))


@pytest.fixture(scope="module", params=CHAT_PRESETS)
def chat(request):
    cfg = model_cfg(request.param)
    return request.param, cfg, build_tokenizer(cfg)


def expand(ids, tokenizer, n_video, n_feature):
    video, feature = tokenizer.convert_tokens_to_ids([VIDEO_TOKEN, FEATURE_TOKEN])
    out = []
    for i in ids:
        out += [video] * n_video if i == video else [feature] * n_feature if i == feature else [i]
    return out


def test_prompt_ids_are_the_reference_rendering(chat):
    preset, _, tok = chat
    parts = PromptParts("I cannot believe it.", "emotion", "Which emotion? happy, sad.")
    ids = encode_prompt(tok, parts, 3, 4)
    text = RENDERED[preset].format(user=user_message(parts).strip())
    assert ids == expand(tok(text, add_special_tokens=False).input_ids, tok, 3, 4)
    bos = BOS[preset]
    assert ids.count(tok.convert_tokens_to_ids(bos)) == 1 if bos else tok.bos_token_id is None
    if bos:
        assert ids[0] == tok.convert_tokens_to_ids(bos)


def test_answer_ends_with_the_models_end_of_turn(chat):
    preset, _, tok = chat
    end = tok.convert_tokens_to_ids(END_OF_TURN[preset])
    ids = encode_answer(tok, "happy")
    assert ids[-1] == end and ids[:-1] == tok("happy", add_special_tokens=False).input_ids
    assert chat_format(tok).stop_ids[0] == end
    # A chat marker typed in an answer is text, not the end of the turn.
    assert encode_answer(tok, f"a {END_OF_TURN[preset]} b").count(end) == 1
    # Decoding drops it, so answer parsing sees the words only.
    assert tok.decode(ids, skip_special_tokens=True) == "happy"


def test_the_release_evaluation_layout_is_llama2_only(chat):
    _, _, tok = chat
    with pytest.raises(ChatFormatError, match="prompt_layout=release_eval"):
        encode_prompt(tok, PromptParts("", "emotion", "x"), 2, 4, layout="release_eval")


def test_a_tokenizer_without_template_is_refused_for_chat_template():
    cfg = ModelConfig()  # the LLaMA-2-like tiny tokenizer has no chat template
    tok = build_tokenizer(cfg)
    from emotion_llama.model.chat import use_chat_format

    with pytest.raises(ChatFormatError, match="no chat template"):
        use_chat_format(tok, "chat_template")
    with pytest.raises(ModelConfigError, match="tiny_tokenizer=qwen2 goes with model.prompt_format=chat_template"):
        ModelConfig(tiny_tokenizer="qwen2")


def test_tiny_architectures_are_those_of_the_families(chat):
    preset, cfg, tok = chat
    torch.manual_seed(0)
    model = build_model(cfg, tok)
    config = model.llm.get_base_model().config
    assert config.num_key_value_heads < config.num_attention_heads  # grouped KV heads
    attn = model.llm.get_base_model().model.layers[0].self_attn
    if preset == "tiny_qwen2":
        assert config.model_type == "qwen2" and attn.q_proj.base_layer.bias is not None
    else:
        assert config.model_type == "llama" and config.rope_parameters["rope_type"] == "llama3"


@pytest.mark.parametrize("preset,llm", [("emotion_qwen2_5_7b", 7.62e9), ("emotion_llama3_1_8b", 8.03e9)])
def test_real_chat_presets_sizes_on_meta(preset, llm):
    info = inspect_model(model_cfg(preset))
    assert info["params"]["llm"] == pytest.approx(llm, rel=0.002)
    assert info["multimodal_tokens"] == 260
    assert model_cfg(preset).prompt_format == "chat_template"


@pytest.mark.parametrize("preset", CHAT_PRESETS)
def test_tiny_chat_backbone_trains_evaluates_and_answers(preset, merr_folder, tmp_path):
    out = tmp_path / "out"
    common = [f"model={preset}", "trainer.max_epochs=1", "trainer.limit_train_batches=2"]
    metrics, _ = train(compose_cfg("train", train_overrides(merr_folder, out, "experiment=tiny_coarse", *common)))
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    export = out / "runs" / "tiny_coarse" / "model"
    train(compose_cfg("train", train_overrides(merr_folder, out, "experiment=tiny_fine", *common)))
    fine = out / "runs" / "tiny_fine" / "model"
    saved = json.loads((export / "meta.json").read_text())
    assert saved["stage"] == "coarse"

    core = InferenceCore.load(fine, device="cpu")
    assert core.config.preset == preset and core.tokenizer.chat_template
    # The reloaded tokenizer keeps its template and end of turn.
    parts = PromptParts("hi", "emotion", "x")
    text = RENDERED[preset].format(user=user_message(parts).strip())
    assert encode_prompt(core.tokenizer, parts, 2, 4) == expand(
        core.tokenizer(text, add_special_tokens=False).input_ids, core.tokenizer, 2, 4)
    assert encode_answer(core.tokenizer, "sad")[-1] == core.tokenizer.convert_tokens_to_ids(END_OF_TURN[preset])
    feats = {m: torch.randn(2, *shape) for m, shape in core.model.feature_shapes.items()}
    scores = core.score(["a", ""], feats)
    assert scores.shape == (2, 9) and torch.isfinite(scores).all()
    answers = core.generate(["a", ""], feats, task="reason", max_new_tokens=4)
    assert len(answers) == 2 and all(END_OF_TURN[preset] not in a for a in answers)

    run = tmp_path / "eval"
    report = evaluate(compose_cfg("eval", [
        "data=merr", f"data.root={merr_folder}", f"data.test={merr_folder}/splits/val.txt",
        f"data.features_dir={merr_folder}", "data.videos_dir=null", f"data.subtitles={merr_folder}/subtitles.csv",
        f"checkpoint={fine}", f"run_dir={run}", "eval.extract_missing=false", "device=cpu"]))
    assert 0.0 <= report["war"] <= 1.0 and (run / "predictions.csv").is_file()
    with pytest.raises(UserError, match="prompt_layout=release_eval"):
        InferenceCore.load(fine, device="cpu", layout="release_eval")
