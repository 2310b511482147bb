"""EmoVIT's InstructBLIP backbone: loading, training, scoring, generation, the instruction-aware Q-Former."""

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from PIL import Image
from safetensors.torch import load_file, save_file

from emotion_llama.errors import WeightsNotFoundError
from emotion_llama.model.fusion import PlaceholderFusion
from emotion_llama.model.instructblip import (
    QFORMER_INPUT_IDS,
    TINY_ARCH,
    TINY_LLM_ARCH,
    VICUNA7B_ARCH,
    VICUNA7B_LLM_ARCH,
    ImageTransform,
    InstructBlipEmotion,
    InstructBlipLoadError,
    build_instructblip_backbone,
    build_tiny_instructblip,
    build_tiny_qformer_tokenizer,
    load_instructblip,
)
from emotion_llama.model.prompts import PromptParts, emotion_instruction
from emotion_llama.model.sequences import (
    IGNORE_INDEX,
    encode_answer,
    encode_example,
    encode_prompt,
    pad_batch,
)
from emotion_llama.model.tokenizer import base_vocab_size, build_tiny_tokenizer, load_tokenizer

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
LABELS = ["happy", "sad", "angry"]
SIZE = TINY_ARCH["vision_config"]["image_size"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer(vocab_size=512)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, tokenizer):
    return build_tiny_instructblip(tokenizer, seed=0).save_pretrained(tmp_path_factory.mktemp("instructblip"))


@pytest.fixture(scope="module")
def model(folder, tokenizer):
    return load_instructblip(folder, tokenizer).eval()


def images(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def parts(subtitle: str = "I am fine", instruction: str | None = None) -> PromptParts:
    return PromptParts(subtitle, "emotion", instruction or emotion_instruction(LABELS))


def prompts(tokenizer, model, subtitles, padding_side="left", instruction=None):
    ids = [encode_prompt(tokenizer, parts(s, instruction), model.num_video_tokens, model.num_feature_tokens)
           for s in subtitles]
    return pad_batch(ids, tokenizer.pad_token_id, padding_side)


def examples(tokenizer, model, answers, subtitles=None):
    subtitles = subtitles or ["I am fine"] * len(answers)
    ex = [encode_example(tokenizer, parts(s), a, model.num_video_tokens, model.num_feature_tokens)
          for s, a in zip(subtitles, answers, strict=True)]
    ids, mask = pad_batch([e["input_ids"] for e in ex], tokenizer.pad_token_id)
    labels, _ = pad_batch([e["labels"] for e in ex], IGNORE_INDEX)
    return ids, mask, labels


def test_folder_loads_back_through_the_loader_with_every_weight(folder, tokenizer, model):
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "qformer_tokenizer"} <= names
    assert json.loads((folder / "config.json").read_text())["model_type"] == "instructblip"
    built = build_tiny_instructblip(tokenizer, seed=0)
    loaded = model.state_dict()
    assert loaded.keys() == built.state_dict().keys()
    assert all(torch.equal(loaded[k], v) for k, v in built.state_dict().items())
    assert isinstance(model, PlaceholderFusion) and model.llm is model.blip.language_model
    assert (model.num_video_tokens, model.num_feature_tokens, model.token_modalities) == (8, 0, [0] * 8)
    assert (model.video_token_id, model.feature_token_id) == tuple(
        tokenizer.convert_tokens_to_ids(["<VideoHere>", "<FeatureHere>"]))
    assert model.llm.get_input_embeddings().weight.shape[0] == base_vocab_size(tokenizer)
    assert model.image_processor.size["height"] == SIZE
    assert model.qformer_tokenizer.get_vocab() == built.qformer_tokenizer.get_vocab()
    # The folder's LLM tokenizer is the project's (tokenizer_path may point at the folder).
    text = "[INST] Please determine the emotion [/INST]"
    assert load_tokenizer(folder)(text).input_ids == tokenizer(text).input_ids


def test_loader_refuses_missing_weights_and_other_folders(folder, tokenizer, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    state = load_file(broken / "model.safetensors")
    dropped = next(k for k in state if "qformer" in k and k.endswith("crossattention.attention.query.weight"))
    del state[dropped]
    save_file(state, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(InstructBlipLoadError, match="missing"):
        load_instructblip(broken, tokenizer)
    other = tmp_path / "llama"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(InstructBlipLoadError, match=f"{other} is not an InstructBLIP model folder"):
        load_instructblip(other, tokenizer)
    with pytest.raises(WeightsNotFoundError, match="paths.instructblip"):
        load_instructblip(tmp_path / "nowhere", tokenizer)
    with pytest.raises(WeightsNotFoundError, match="paths.instructblip"):
        build_instructblip_backbone(tokenizer, path=None, weights_required=True)


def test_a_larger_project_vocabulary_extends_the_llm_with_mean_rows(folder):
    bigger = build_tiny_tokenizer(vocab_size=700)
    model = load_instructblip(folder, bigger)
    emb, head = model.llm.get_input_embeddings().weight, model.llm.get_output_embeddings().weight
    old = load_file(folder / "model.safetensors")
    old_emb = next(v for k, v in old.items() if k.endswith("embed_tokens.weight"))
    n = old_emb.shape[0]
    assert emb.shape[0] == head.shape[0] == base_vocab_size(bigger) > n
    assert torch.equal(emb[:n], old_emb)
    assert torch.allclose(emb[n:], old_emb.mean(0).expand_as(emb[n:]))
    assert model.blip.config.text_config.vocab_size == emb.shape[0]


def test_image_tokens_are_transformers_instructblip_image_features(model, tokenizer):
    ids, _ = prompts(tokenizer, model, ["I am fine", "Leave me alone"])
    q = model.encode_instructions(model.instruction_texts(ids))
    pixels = images(2)
    ours = model.image_tokens(pixels, q["qformer_input_ids"], q["qformer_attention_mask"])
    theirs = model.blip.get_image_features(pixels, q["qformer_input_ids"], q["qformer_attention_mask"]).pooler_output
    assert ours.shape == (2, model.num_video_tokens, model.llm.config.hidden_size)
    torch.testing.assert_close(ours, theirs)


def test_forward_loss_is_finite_and_only_the_qformer_side_gets_gradients(tokenizer):
    model = build_tiny_instructblip(tokenizer, seed=1).train()
    assert not model.blip.vision_model.training  # the frozen tower stays in eval mode
    ids, mask, labels = examples(tokenizer, model, ["happy", "sad"])
    out = model(ids, mask, {"image": images(2)}, labels=labels)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == trainable
    assert trainable == {n for n in trainable if n.startswith(("blip.qformer.", "blip.query_tokens",
                                                                "blip.language_projection."))}
    assert any(n.startswith("blip.qformer.") for n in trainable)
    assert model.blip.query_tokens.grad.abs().sum() > 0 and model.blip.language_projection.weight.grad.abs().sum() > 0
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if p.requires_grad)


def test_bf16_frozen_parts_with_fp32_trained_parts(folder, tokenizer):
    model = load_instructblip(folder, tokenizer, dtype=torch.bfloat16).train()
    assert model.blip.vision_model.dtype == model.llm.dtype == torch.bfloat16
    assert model.blip.query_tokens.dtype == model.blip.qformer.dtype == torch.float32
    ids, mask, labels = examples(tokenizer, model, ["happy", "sad"])
    out = model(ids, mask, {"image": images(2)}, labels=labels)
    out.loss.backward()
    assert torch.isfinite(out.loss) and model.blip.language_projection.weight.grad.dtype == torch.float32


def test_a_few_adamw_steps_lower_the_loss(tokenizer):
    model = build_tiny_instructblip(tokenizer, seed=2).train()
    ids, mask, labels = examples(tokenizer, model, ["happy", "sad", "angry"], ["I won", "I lost", "Go away"])
    feats = {"image": images(3, seed=5)}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(8):
        loss = model(ids, mask, feats, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_score_labels_is_the_sum_of_per_token_log_probs_of_a_plain_forward(model, tokenizer):
    subtitles = ["I am fine", "Leave me alone right now"]  # prompts of different lengths: left padding
    ids, mask = prompts(tokenizer, model, subtitles)
    feats = {"image": images(2, seed=3)}
    candidates = [encode_answer(tokenizer, label) for label in LABELS]
    scores = model.score_labels(ids, mask, feats, candidates)
    assert scores.shape == (2, len(LABELS))
    for b, subtitle in enumerate(subtitles):
        prompt = encode_prompt(tokenizer, parts(subtitle), model.num_video_tokens, 0)
        for k, cand in enumerate(candidates):
            seq = torch.tensor([prompt + cand])
            labels = torch.tensor([[IGNORE_INDEX] * len(prompt) + cand])
            with torch.no_grad():
                logits = model(seq, torch.ones_like(seq), {"image": feats["image"][b : b + 1]}, labels=labels).logits
            logp = F.log_softmax(logits[0, len(prompt) - 1 : -1].float(), dim=-1)
            expected = logp.gather(-1, torch.tensor(cand).unsqueeze(-1)).sum()
            torch.testing.assert_close(scores[b, k], expected, atol=1e-4, rtol=1e-4)


def test_generate_returns_the_greedy_continuation(model, tokenizer):
    ids, mask = prompts(tokenizer, model, ["I am fine", "Leave me alone right now"])
    feats = {"image": images(2, seed=4)}
    out = model.generate(ids, mask, feats, max_new_tokens=5, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    assert out.dtype == torch.long and out.shape[0] == 2 and 1 <= out.shape[1] <= 5
    assert int(out.max()) < model.llm.get_input_embeddings().weight.shape[0]
    with torch.no_grad():
        first = model(ids, mask, feats).logits[:, -1].argmax(-1)
    assert torch.equal(out[:, 0], first)


def test_the_qformer_reads_the_instruction_but_never_the_answer(model, tokenizer):
    pixels = images(1, seed=6).expand(2, -1, -1, -1)
    a, b = (prompts(tokenizer, model, ["I am fine"], instruction=text)[0] for text in (
        "Which emotion does the person show?", "Describe the colours of the picture."))
    texts = model.instruction_texts(a) + model.instruction_texts(b)
    assert "Which emotion does the person show?" in texts[0] and "colours of the picture" in texts[1]
    assert "<VideoHere>" not in texts[0] and "<s>" not in texts[0]
    with torch.no_grad():
        ta = model.multimodal_tokens(a, {"image": pixels[:1]})
        tb = model.multimodal_tokens(b, {"image": pixels[:1]})
        ta2 = model.multimodal_tokens(a, {"image": pixels[:1]})
    assert not torch.allclose(ta, tb, atol=1e-5) and torch.equal(ta, ta2)
    # Given Q-Former ids are used as they are: the recovered ones give the same tokens.
    q = model.encode_instructions(texts[:1])
    with torch.no_grad():
        given = model.multimodal_tokens(a, {"image": pixels[:1], **q})
        other = model.multimodal_tokens(a, {"image": pixels[:1], QFORMER_INPUT_IDS: model.encode_instructions(
            texts[1:])[QFORMER_INPUT_IDS]})
    torch.testing.assert_close(given, ta)
    torch.testing.assert_close(other, tb, atol=1e-5, rtol=1e-5)
    # Two examples that differ only in their answer: the Q-Former sees the same prompt in training.
    ids, mask, labels = examples(tokenizer, model, ["happy", "sad"])
    seen = []
    handle = model.blip.language_projection.register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        with torch.no_grad():
            model(ids, mask, {"image": pixels}, labels=labels)
            model.multimodal_tokens(ids, {"image": pixels})  # without the prompt mask the answer would leak
    finally:
        handle.remove()
    torch.testing.assert_close(seen[0][0], seen[0][1])
    assert not torch.allclose(seen[1][0], seen[1][1], atol=1e-6)


def test_an_absent_image_does_not_reach_the_logits(model, tokenizer):
    ids, mask = prompts(tokenizer, model, ["I am fine", "Leave me alone"])
    absent = torch.tensor([[False, True, True, True]] * 2)
    with torch.no_grad():
        x = model(ids, mask, {"image": images(2, seed=7), "present": absent}).logits
        y = model(ids, mask, {"image": images(2, seed=8), "present": absent}).logits
        z = model(ids, mask, {"present": absent}).logits  # the image may be left out
        p = model(ids, mask, {"image": images(2, seed=7)}).logits
        q = model(ids, mask, {"image": images(2, seed=8)}).logits
    torch.testing.assert_close(x, y, rtol=0, atol=0)
    torch.testing.assert_close(x, z, rtol=0, atol=0)
    assert not torch.allclose(p, q, atol=1e-6)  # when present, the image does change them
    with pytest.raises(ValueError, match="no image"):
        model(ids, mask, {})


def test_trainable_state_dict_round_trip(folder, model, tokenizer):
    state = model.trainable_state_dict()
    assert state and all(k.startswith(("blip.qformer.", "blip.query_tokens", "blip.language_projection."))
                         for k in state)
    assert set(state) == {n for n, p in model.named_parameters() if p.requires_grad}
    other = load_instructblip(folder, tokenizer).eval()
    with torch.no_grad():
        for p in other.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    ids, _ = prompts(tokenizer, model, ["I am fine"])
    feats = {"image": images(1, seed=9)}
    with torch.no_grad():
        want = model.multimodal_tokens(ids, feats)
        assert not torch.allclose(other.multimodal_tokens(ids, feats), want, atol=1e-4)
        other.load_trainable_state_dict(copy.deepcopy(state))
        torch.testing.assert_close(other.multimodal_tokens(ids, feats), want)
    with pytest.raises(InstructBlipLoadError, match="1 missing"):
        other.load_trainable_state_dict({k: v for k, v in state.items() if k != "blip.query_tokens"})
    with pytest.raises(InstructBlipLoadError, match="1 unexpected"):
        extra = next(k for k in model.state_dict() if k.startswith("blip.vision_model."))
        other.load_trainable_state_dict({**state, extra: model.state_dict()[extra]})


def test_image_transform_matches_instructblip_processing(folder):
    transform = ImageTransform(folder)
    assert transform.image_size == SIZE
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
    expected = (torch.from_numpy(array).permute(2, 0, 1).float() / 255 - mean) / std
    torch.testing.assert_close(transform(array), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(transform(Image.fromarray(array)), expected, atol=1e-5, rtol=1e-5)
    big = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    assert transform.batch([big, array]).shape == (2, 3, SIZE, SIZE)


def test_tiny_qformer_tokenizer_is_bert_like_and_covers_ascii():
    tok = build_tiny_qformer_tokenizer()
    enc = tok("Please select the emotion: Awe, zzqx!")
    assert enc.input_ids[0] == tok.cls_token_id and enc.input_ids[-1] == tok.sep_token_id
    assert tok.unk_token_id not in enc.input_ids and tok.pad_token_id == 0
    assert tok.decode(enc.input_ids, skip_special_tokens=True) == "please select the emotion : awe, zzqx!"
    assert build_tiny_qformer_tokenizer().get_vocab() == tok.get_vocab()


def test_presets_build(tokenizer):
    tiny = OmegaConf.to_container(OmegaConf.load(CONF / "instructblip_tiny.yaml"))
    assert tiny["backbone"] == "instructblip" and tiny["instructblip_path"] is None
    assert tiny["instructblip_arch"] == TINY_ARCH and tiny["llm_arch"] == TINY_LLM_ARCH
    model = build_instructblip_backbone(
        tokenizer, path=None, arch=tiny["instructblip_arch"], llm_arch=tiny["llm_arch"],
        qformer_max_length=tiny["qformer_max_length"], train_llm=tiny["train_llm"],
    )
    assert isinstance(model, InstructBlipEmotion)
    assert model.num_video_tokens == tiny["instructblip_arch"]["num_query_tokens"]
    real = OmegaConf.load(CONF / "instructblip_vicuna7b.yaml")  # paths.* left unresolved
    assert OmegaConf.to_container(real.instructblip_arch) == VICUNA7B_ARCH
    assert OmegaConf.to_container(real.llm_arch) == VICUNA7B_LLM_ARCH
    assert real.backbone == "instructblip" and real.dtype == "bfloat16" and real.weights_required


def test_real_size_architecture_on_meta():
    model = build_instructblip_backbone(None, arch=VICUNA7B_ARCH, llm_arch=VICUNA7B_LLM_ARCH,
                                        dtype=torch.bfloat16, device="meta")
    blip = model.blip

    def count(module):
        return sum(p.numel() for p in module.parameters())

    vision, qformer, llm = count(blip.vision_model), count(blip.qformer), count(blip.language_model)
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0.95e9 < vision < 1.05e9
    assert 0.1e9 < qformer < 0.2e9
    assert 6.6e9 < llm < 6.8e9
    assert trained == qformer + blip.query_tokens.numel() + count(blip.language_projection)
    assert blip.query_tokens.shape == (1, 32, 768) and blip.language_projection.weight.shape == (4096, 768)
    assert (model.num_video_tokens, model.video_token_id, model.feature_token_id) == (32, 32000, 32001)
    assert blip.vision_model.dtype == model.llm.dtype == torch.bfloat16 and blip.qformer.dtype == torch.float32
    assert blip.query_tokens.device.type == "meta"
