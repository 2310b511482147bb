import pytest
import torch

from emotion_llama.encoders.build import EncoderShapes
from emotion_llama.labels import DFEW_LABELS, MER_LABELS, MERR_LABELS
from emotion_llama.model.builder import build_model
from emotion_llama.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from emotion_llama.model.config import ModelConfig
from emotion_llama.model.fusion import FEATURE_MODALITIES
from emotion_llama.model.llm import lora_parameter_count
from emotion_llama.model.prompts import (
    RELEASE_MER_ORDER,
    RELEASE_MERR_ORDER,
    PromptParts,
    clean_answer,
    emotion_instruction,
    format_chat,
    pick_instruction,
    user_message,
)
from emotion_llama.model.sequences import (
    IGNORE_INDEX,
    encode_answer,
    encode_example,
    encode_prompt,
    pad_batch,
)
from emotion_llama.model.tokenizer import build_tiny_tokenizer, segment_encoder

SHAPES = EncoderShapes(dims={"eva": 24, "mae": 20, "videomae": 18, "hubert": 16}, eva_patches=16)
LABELS = ["happy", "sad", "angry"]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer(["the person smiles and the voice is loud"], vocab_size=512)


def tiny_cfg(**kw) -> ModelConfig:
    arch = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=4, max_position_embeddings=512)
    lora = dict(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    return ModelConfig(llm_arch=arch, lora=lora, **kw)


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    return build_model(tiny_cfg(), tokenizer, SHAPES).eval()


def features(batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    feats = {"eva": torch.randn(batch, 1 + SHAPES.eva_patches, SHAPES.dims["eva"], generator=g)}
    for m in FEATURE_MODALITIES:
        feats[m] = torch.randn(batch, SHAPES.dims[m], generator=g)
    return feats


def batch(tokenizer, model, answers, padding_side="right"):
    parts = PromptParts("I am fine", "emotion", emotion_instruction(LABELS))
    ex = [encode_example(tokenizer, parts, a, model.num_video_tokens, model.num_feature_tokens) for a in answers]
    ids, mask = pad_batch([e["input_ids"] for e in ex], tokenizer.pad_token_id, padding_side)
    labels, _ = pad_batch([e["labels"] for e in ex], IGNORE_INDEX, padding_side)
    return ids, mask, labels


def test_prompts_carry_every_placeholder_and_malformed_ones_are_refused(tokenizer, model):
    ids, _, _ = batch(tokenizer, model, ["happy"])
    video = (ids[0] == model.video_token_id).nonzero().flatten()
    feature = (ids[0] == model.feature_token_id).nonzero().flatten()
    # 16 EVA patches merged 4 by 4, then MAE, VideoMAE, HuBERT and EVA-CLS, video first.
    assert (len(video), len(feature)) == (4, 4) and video.max() < feature.min()
    feats = features(1)
    with pytest.raises(ValueError, match="placeholder tokens"):  # a truncated prompt never shifts the tokens
        model.embed(ids[:, : int(feature[-1])], feats)
    swapped = ids.clone()
    swapped[0, video[0]], swapped[0, feature[0]] = model.feature_token_id, model.video_token_id
    with pytest.raises(ValueError, match="must come before"):
        model.embed(swapped, feats)


def test_labels_cover_only_the_answer(tokenizer, model):
    parts = PromptParts("hello there", "emotion", emotion_instruction(LABELS))
    ex = encode_example(tokenizer, parts, "happy", model.num_video_tokens, model.num_feature_tokens)
    prompt = encode_prompt(tokenizer, parts, model.num_video_tokens, model.num_feature_tokens)
    answer = encode_answer(tokenizer, "happy")
    assert ex["input_ids"] == prompt + answer
    assert ex["labels"][: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    assert ex["labels"][len(prompt):] == answer
    assert answer[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(answer, skip_special_tokens=True) == "happy"


def test_prompt_text_is_the_releases():
    text = format_chat(user_message(PromptParts("I see you.", "emotion", "Pick one.")))
    assert text == ("[INST] <video><VideoHere></video> <feature><FeatureHere></feature> "
                    "The person in video says: I see you..  [emotion] Pick one.  [/INST]")
    assert format_chat("x", "release_eval") == "<s>[INST] x [/INST]"
    with pytest.raises(ValueError, match="layout"):
        format_chat("x", "chat_template")


def test_prompt_segments_are_encoded_one_by_one(tokenizer, model):
    """The tiny tokenizer follows the release's layout with its own encoding: BOS, segment, video run,
    segment, feature run, segment; the answer right after, then EOS."""
    parts = PromptParts("I see you.", "emotion", emotion_instruction(LABELS))
    n_video, n_feature = model.num_video_tokens, model.num_feature_tokens
    encode = segment_encoder(tokenizer)
    head, rest = format_chat(user_message(parts)).split("<VideoHere>")
    middle, tail = rest.split("<FeatureHere>")
    want = [tokenizer.bos_token_id, *encode(head), *[model.video_token_id] * n_video, *encode(middle),
            *[model.feature_token_id] * n_feature, *encode(tail)]
    assert encode_prompt(tokenizer, parts, n_video, n_feature) == want
    assert encode_example(tokenizer, parts, "happy", n_video, n_feature)["input_ids"] == want + encode("happy") + [
        tokenizer.eos_token_id]
    assert tokenizer.decode(encode(tail)).endswith("[/INST]")


def test_release_eval_layout(tokenizer, model):
    """A second BOS from the literal <s>; every placeholder at <VideoHere>; <FeatureHere> kept as text."""
    parts = PromptParts("hello there", "emotion", emotion_instruction(LABELS))
    n_video, n_feature = model.num_video_tokens, model.num_feature_tokens
    ids = encode_prompt(tokenizer, parts, n_video, n_feature, layout="release_eval")
    bos = tokenizer.bos_token_id
    assert ids[:2] == [bos, bos] and ids.count(bos) == 2
    start = ids.index(model.video_token_id)
    assert ids[start: start + n_video + n_feature] == [model.video_token_id] * n_video + [model.feature_token_id] * n_feature
    assert ids.count(model.video_token_id) == n_video and ids.count(model.feature_token_id) == n_feature
    assert "<feature><FeatureHere></feature>" in tokenizer.decode(ids[start + n_video + n_feature:])
    embeds = model.embed(torch.tensor([ids]), features(1))  # all video placeholders before the feature ones
    assert embeds.shape[1] == len(ids)
    with pytest.raises(ValueError, match="layout"):
        encode_prompt(tokenizer, parts, n_video, n_feature, layout="eval")


def test_emotion_instruction_lists_merr_labels_in_the_release_order():
    assert emotion_instruction(MERR_LABELS) == emotion_instruction(RELEASE_MERR_ORDER) == (
        "Please determine which emotion label in the video represents: "
        "happy, sad, neutral, angry, worried, surprise, fear, contempt, doubt.")
    assert emotion_instruction(MER_LABELS).endswith(": " + ", ".join(RELEASE_MER_ORDER) + ".")
    assert emotion_instruction(["angry", "happy"]).endswith(": happy, angry.")
    # A label set with a label MERR does not have keeps its own order.
    assert emotion_instruction(DFEW_LABELS).endswith(": " + ", ".join(DFEW_LABELS) + ".")
    assert pick_instruction("emotion", MER_LABELS) == emotion_instruction(MER_LABELS)


def test_clean_answer_is_the_releases():
    assert clean_answer('He is "Happy"!  Really: (yes)') == "he is happy really yes"
    assert clean_answer("  Fear~ ") == "fear"
    assert clean_answer(" ".join(f"Word{i}." for i in range(60))).split(" ") == [f"word{i}" for i in range(50)]


def test_clean_answers_option(tokenizer, model):
    parts = PromptParts("hi", "reason", "Explain.")
    n = (model.num_video_tokens, model.num_feature_tokens)
    raw = encode_example(tokenizer, parts, "He smiles: HAPPY!", *n)
    clean = encode_example(tokenizer, parts, "He smiles: HAPPY!", *n, clean_answers=True)
    assert clean == encode_example(tokenizer, parts, "he smiles happy", *n) != raw


def test_placeholders_receive_projector_outputs(tokenizer, model):
    ids, _, _ = batch(tokenizer, model, ["happy", "sad"])
    feats = features(2)
    embeds = model.embed(ids, feats)
    projected = model.project(feats)
    is_mm = (ids == model.video_token_id) | (ids == model.feature_token_id)
    for row in range(2):
        torch.testing.assert_close(embeds[row][is_mm[row]], projected[row])
    # Text positions keep their token embeddings.
    text = model.llm.get_input_embeddings()(ids.masked_fill(is_mm, 0))
    torch.testing.assert_close(embeds[~is_mm], text[~is_mm])
    # MAE, VideoMAE, HuBERT, then CLS follow the video tokens.
    torch.testing.assert_close(projected[:, model.num_video_tokens], model.projectors["mae"](feats["mae"]))
    torch.testing.assert_close(projected[:, -1], model.projectors["eva_cls"](feats["eva"][:, 0]))


def test_forward_backward_trains_lora_and_projectors_only(tokenizer, model):
    model.train()
    ids, mask, labels = batch(tokenizer, model, ["happy", "a much longer answer"])
    loss = model(ids, mask, features(2), labels=labels).loss
    assert torch.isfinite(loss)
    loss.backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert any("lora_A" in n for n in grads) and any(n.startswith("projectors.") for n in grads)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert all("lora_" not in n and not n.startswith("projectors.") for n in frozen)
    assert not any(n in grads for n in frozen)
    model.zero_grad()
    model.eval()


def test_loss_ignores_prompt_tokens(tokenizer, model):
    ids, mask, labels = batch(tokenizer, model, ["happy"])
    feats = features(1)
    out = model(ids, mask, feats, labels=labels)
    logits = out.logits[0, :-1]
    target = labels[0, 1:]
    keep = target != IGNORE_INDEX
    manual = torch.nn.functional.cross_entropy(logits[keep], target[keep])
    torch.testing.assert_close(out.loss, manual)


def test_lora_parameter_count(tokenizer):
    cfg = tiny_cfg()
    with torch.device("meta"):
        m = build_model(cfg, tokenizer, SHAPES)
    # q_proj and v_proj (32 -> 32) in 2 layers, A (r x 32) + B (32 x r) each.
    assert lora_parameter_count(m.llm) == 2 * 2 * (4 * 32 + 32 * 4)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert all("lora_" in n or n.startswith("projectors.") for n in trainable)


def test_score_labels_matches_full_forward(tokenizer, model):
    parts = PromptParts("so good", "emotion", emotion_instruction(LABELS))
    prompts = [encode_prompt(tokenizer, parts, model.num_video_tokens, model.num_feature_tokens)] * 2
    prompts[1] = prompts[1][:3] + prompts[1][4:]  # different lengths exercise left padding
    ids, mask = pad_batch(prompts, tokenizer.pad_token_id, "left")
    feats = features(2, seed=1)
    cands = [encode_answer(tokenizer, label) for label in LABELS]
    scores = model.score_labels(ids, mask, feats, cands)
    assert scores.shape == (2, len(LABELS))
    for b in range(2):
        for k, cand in enumerate(cands):
            full = torch.tensor([prompts[b] + cand])
            one = {n: f[b: b + 1] for n, f in feats.items()}
            logits = model(full, torch.ones_like(full), one).logits[0].log_softmax(-1)
            start = len(prompts[b])
            expected = sum(logits[start - 1 + j, t] for j, t in enumerate(cand))
            torch.testing.assert_close(scores[b, k], expected, atol=1e-4, rtol=1e-4)


def test_generate_is_the_greedy_continuation_whatever_the_padding(tokenizer, model):
    parts = PromptParts("", "reason", "Explain.")
    prompt = encode_prompt(tokenizer, parts, model.num_video_tokens, model.num_feature_tokens)
    prompts = [prompt, prompt[:2] + prompt[3:]]  # the shorter one is left-padded in the batch
    ids, mask = pad_batch(prompts, tokenizer.pad_token_id, "left")
    feats = features(2, seed=2)
    special = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    out = model.generate(ids, mask, feats, max_new_tokens=5, **special)
    for b, p in enumerate(prompts):
        one = {n: f[b: b + 1] for n, f in feats.items()}
        alone = torch.tensor([p])
        greedy = []  # argmax of the full forward, one token at a time
        while len(greedy) < 5 and (not greedy or greedy[-1] != tokenizer.eos_token_id):
            full = torch.tensor([p + greedy])
            greedy.append(int(model(full, torch.ones_like(full), one).logits[0, -1].argmax()))
        # Only new tokens come back, the same with or without padding (finished rows are then padded).
        assert out[b, : len(greedy)].tolist() == greedy
        assert set(out[b, len(greedy):].tolist()) <= {tokenizer.pad_token_id}
        assert model.generate(alone, torch.ones_like(alone), one, max_new_tokens=5, **special)[0].tolist() == greedy


def test_save_load_gives_identical_logits(tokenizer, tmp_path):
    torch.manual_seed(1)
    cfg = tiny_cfg()
    model = build_model(cfg, tokenizer, SHAPES).eval()
    with torch.no_grad():  # make the adapter non-trivial (lora_B starts at zero)
        for n, p in model.llm.named_parameters():
            if "lora_B" in n:
                p.normal_()
    ids, mask, _ = batch(tokenizer, model, ["happy"])
    feats = features(1)
    before = model(ids, mask, feats).logits
    save_checkpoint(model, cfg, tokenizer, tmp_path / "ckpt", meta={"step": 3})
    loaded, loaded_cfg, loaded_tok = load_checkpoint(tmp_path / "ckpt", shapes=SHAPES)
    assert loaded_cfg == cfg
    assert loaded_tok.get_vocab() == tokenizer.get_vocab()
    torch.testing.assert_close(loaded.eval()(ids, mask, feats).logits, before)


def test_load_fails_on_missing_weights(tokenizer, tmp_path):
    cfg = tiny_cfg()
    model = build_model(cfg, tokenizer, SHAPES)
    save_checkpoint(model, cfg, tokenizer, tmp_path / "ckpt")
    from safetensors.torch import load_file, save_file
    path = tmp_path / "ckpt" / "projectors.safetensors"
    state = load_file(path)
    state.pop("eva_cls.weight")
    save_file(state, path)
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path / "ckpt", shapes=SHAPES)


def test_real_preset_without_llm_path_fails_clearly(tokenizer):
    cfg = tiny_cfg(weights_required=True)
    with pytest.raises(FileNotFoundError, match="paths.llm"):
        build_model(cfg, tokenizer, SHAPES)


def scoring_case(tokenizer):
    """A model with a non-trivial adapter, three left-padded prompts and candidates of 1 to many tokens."""
    torch.manual_seed(3)
    model = build_model(tiny_cfg(), tokenizer, SHAPES).eval()
    with torch.no_grad():
        for n, p in model.llm.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)
    parts = PromptParts("so good", "emotion", emotion_instruction(LABELS))
    prompt = encode_prompt(tokenizer, parts, model.num_video_tokens, model.num_feature_tokens)
    prompts = [prompt, prompt[:3] + prompt[6:], prompt[:2] + prompt[3:]]
    answers = ["happy", "the person smiles and the voice is loud", "sad"]
    cands = [encode_answer(tokenizer, a) for a in answers] + [[tokenizer.eos_token_id]]
    assert len({len(c) for c in cands}) >= 3
    return model, prompts, cands


def test_score_labels_equals_one_full_forward_per_clip_and_label(tokenizer):
    model, prompts, cands = scoring_case(tokenizer)
    ids, mask = pad_batch(prompts, tokenizer.pad_token_id, "left")
    feats = features(3, seed=4)
    scores = model.score_labels(ids, mask, feats, cands)
    assert scores.shape == (3, len(cands)) and scores.dtype == torch.float32
    with torch.no_grad():
        for b, prompt in enumerate(prompts):
            one = {n: f[b: b + 1] for n, f in feats.items()}
            for k, cand in enumerate(cands):
                # log p(answer tokens, EOS included | prompt): one forward of prompt + answer, no cache, no padding.
                full = torch.tensor([prompt + cand])
                logp = model(full, torch.ones_like(full), one).logits[0].float().log_softmax(-1)
                expected = sum(logp[len(prompt) - 1 + j, t] for j, t in enumerate(cand))
                torch.testing.assert_close(scores[b, k], expected, atol=1e-5, rtol=1e-5)


def test_score_labels_keeps_one_cache_and_computes_only_the_needed_logits(tokenizer, monkeypatch):
    from transformers import DynamicCache

    model, prompts, cands = scoring_case(tokenizer)
    ids, mask = pad_batch(prompts, tokenizer.pad_token_id, "left")

    def no_copies(self, repeats):
        raise AssertionError("the prompt's cache must not be copied per candidate")

    monkeypatch.setattr(DynamicCache, "batch_repeat_interleave", no_copies)
    rows = []  # (batch, positions) of every lm_head call: the logits computed
    head = model.llm.get_output_embeddings()
    handle = head.register_forward_hook(lambda m, args, out: rows.append(tuple(out.shape[:2])))
    caches = []
    real_forward = model.llm.forward

    def spy(*args, **kwargs):
        out = real_forward(*args, **kwargs)
        caches.append(out.cache)
        return out

    monkeypatch.setattr(model.llm, "forward", spy)
    try:
        model.score_labels(ids, mask, features(3), cands)
    finally:
        handle.remove()
    # Prefill: the last position only; each candidate: its C-1 fed tokens (a 1-token one needs no pass).
    assert rows == [(3, 1)] + [(3, len(c) - 1) for c in cands if len(c) > 1]
    # One cache, cropped back to the prompt after every candidate.
    assert all(c is caches[0] for c in caches)
    assert caches[0].get_seq_length() == ids.shape[1]
