"""Parity with the original Emotion-LLaMA release: token-exact prompts, splicing, scoring, checkpoint import.

Two kinds of tests:

* ``test_reference_*``: self-checks of the independent reference (``tests/release_reference.py``, written from
  REFERENCE.md only) on the real LLaMA-2 ``tokenizer.model``. The literal ids below were produced by
  transformers 4.35.2's slow ``LlamaTokenizer(vocab_file=..., legacy=True)`` (the release's tokenizer) on the
  same file, so the reference is held to the release's tokenizer, not only to itself.
* ``test_project_*``: the project (prompts, sequences, tokenizer loader, fusion model, official import) held
  to the reference.

The whole module skips when ``shared/llama2-tokenizer/tokenizer.model`` (beside the repository) or the
``sentencepiece`` package is absent.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip(
    "sentencepiece", minversion="0.2", reason="the release-parity tests need sentencepiece>=0.2 (pip install sentencepiece)"
)
TOKENIZER_DIR = Path(__file__).resolve().parents[2] / "shared" / "llama2-tokenizer"
TOKENIZER_MODEL = TOKENIZER_DIR / "tokenizer.model"
if not TOKENIZER_MODEL.is_file():
    pytest.skip(
        f"the real LLaMA-2 tokenizer is not at {TOKENIZER_MODEL} (shared/ beside the repository; CI has it)",
        allow_module_level=True,
    )

import release_reference as R  # noqa: E402
import sentencepiece as spm  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

# ------------------------------------------------------------------ ids of the release's tokenizer
# transformers 4.35.2 slow LlamaTokenizer (legacy=True), add_special_tokens=False, on "I see you." / emotion / MERR.
SEG0 = [518, 25580, 29962, 529, 9641, 29958]  # ▁[ INST ] ▁< video >
SEG1 = [1533, 9641, 29958, 529, 14394, 29958]  # ▁</ video > ▁< feature >   (1533 = ▁</, never 829 = </)
SEG2_I_SEE_YOU = [
    1533, 14394, 29958, 450, 2022, 297, 4863, 4083, 29901,  # ▁</ feature > ▁The ▁person ▁in ▁video ▁says :
    306, 1074, 366, 636, 29871, 518, 331, 8194, 29962,  # ▁I ▁see ▁you .. ▁ ▁[ em otion ]
    3529, 8161, 607, 953, 8194, 3858, 297, 278, 4863, 11524, 29901,  # ▁Please ... represents:
    9796, 29892, 14610, 29892, 21104, 29892, 26230, 29892, 6365, 1255, 29892, 16671, 29892, 8866, 29892,
    640, 3456, 29892, 7404, 29889,  # happy, sad, neutral, angry, worried, surprise, fear, contempt, doubt.
    29871, 518, 29914, 25580, 29962,  # ▁ ▁[ / INST ]
]
# The ids between "says:" and the "▁[" of "[emotion]" (inclusive of that "▁["), per subtitle.
SUBTITLE_WINDOWS = {
    "I see you.": [306, 1074, 366, 636, 29871, 518],  # ".." is one piece (636); then ▁ (29871), ▁[ (518)
    "Are you sure?": [4683, 366, 1854, 9808, 29871, 518],  # "?." (9808)
    "": [869, 29871, 518],  # "says: .  [" -> ▁. ▁ ▁[
    "I  am  here": [306, 29871, 626, 29871, 1244, 29889, 29871, 518],
    "Un café, s'il vous plaît": [853, 274, 28059, 29892, 269, 29915, 309, 7890, 2174, 13871, 29889, 29871, 518],
}
EVAL_SEG0 = [1, 1, 518, 25580, 29962, 529, 9641, 29958]  # tokenizer BOS + literal "<s>" split out as id 1
EVAL_SEG1_HEAD = [1533, 9641, 29958, 529, 14394, 5299, 19132, 10605, 2565, 14394, 29958, 450]
# ▁</ video > ▁< feature >< Feature Here ></ feature > ▁The   (<FeatureHere> as plain characters)
ANSWER_IDS = {  # f"{answer}</s>"
    "happy": [9796, 2], "sad": [14610, 2], "neutral": [21104, 2], "angry": [26230, 2],
    "worried": [6365, 1255, 2], "surprise": [16671, 2], "fear": [8866, 2], "contempt": [640, 3456, 2],
    "doubt": [7404, 2], "he is happy really yes": [540, 338, 9796, 2289, 4874, 2], "Happy!": [28569, 29991, 2],
    "x ": [921, 29871, 2], "a </s> b": [263, 29871, 2, 29871, 289, 2],
}

MERR_INSTRUCTION = (
    "Please determine which emotion label in the video represents: "
    "happy, sad, neutral, angry, worried, surprise, fear, contempt, doubt."
)
REASON_INSTRUCTION = "Please analyze all the clues in the video and reason about the emotion of the person."
SUBTITLES = list(SUBTITLE_WINDOWS)
TASKS = [
    ("emotion", MERR_INSTRUCTION),
    ("emotion", R.release_instruction(R.RELEASE_MER_ORDER)),
    ("reason", REASON_INSTRUCTION),
]
N_VIDEO, N_FEATURE = 256, 4
FAKE_VIDEO, FAKE_FEATURE = 32000, 32001  # placeholder ids for the reference-only tests
RAW_ANSWER = 'He is "Happy"!  Really: (yes)'
LONG_ANSWER = " ".join(f"Word{i}." for i in range(60))

SHAPES_DIMS = {"eva": 24, "mae": 20, "videomae": 18, "hubert": 16}
EVA_PATCHES = 1024
ARCH = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, max_position_embeddings=2048)
RANK = 4
INV_FREQ = "llama_model.base_model.model.model.layers.0.self_attn.rotary_emb.inv_freq"
LOGIT_TOL, SCORE_TOL = 1e-4, 1e-3


@pytest.fixture(scope="module")
def sp():
    return spm.SentencePieceProcessor(model_file=str(TOKENIZER_MODEL))


def first_index(ids, value):
    return ids.index(value)


def window(seg2):
    """The ids after "says:" (29901) up to and including the "▁[" (518) of "[task]"."""
    i = first_index(seg2, 29901)
    return seg2[i + 1 : seg2.index(518, i) + 1]


def features(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {"eva": torch.randn(1, 1 + EVA_PATCHES, SHAPES_DIMS["eva"], generator=g)}
    out |= {m: torch.randn(1, SHAPES_DIMS[m], generator=g) for m in ("mae", "videomae", "hubert")}
    return out


# ================================================================= reference self-checks (pass today)
def test_reference_instruction_and_label_orders():
    assert R.RELEASE_MERR_ORDER == (
        "happy", "sad", "neutral", "angry", "worried", "surprise", "fear", "contempt", "doubt",
    )
    assert R.RELEASE_MER_ORDER == ("happy", "sad", "neutral", "angry", "worried", "surprise")
    assert R.release_instruction(R.RELEASE_MERR_ORDER) == MERR_INSTRUCTION
    assert R.release_instruction(R.RELEASE_MER_ORDER) == (
        "Please determine which emotion label in the video represents: happy, sad, neutral, angry, worried, surprise."
    )


def test_reference_train_text_has_double_dot_and_double_spaces():
    text = R.release_train_text("I see you.", "emotion", MERR_INSTRUCTION)
    assert text == (
        "[INST] <video><VideoHere></video> <feature><FeatureHere></feature> "
        "The person in video says: I see you..  [emotion] " + MERR_INSTRUCTION + "  [/INST]"
    )
    seg0, seg1, seg2 = R.release_train_segments("I see you.", "emotion", MERR_INSTRUCTION)
    assert (seg0, seg1) == ("[INST] <video>", "</video> <feature>")
    assert seg2.startswith("</feature> The person in video says: I see you..  [emotion] ")
    assert seg2.endswith("doubt.  [/INST]")


def test_reference_train_segment_ids(sp):
    seg0, seg1, seg2 = (R.slow_encode(sp, s) for s in R.release_train_segments("I see you.", "emotion", MERR_INSTRUCTION))
    assert seg0 == SEG0 and seg0[0] == 518  # ▁[
    assert seg1 == SEG1 and seg1[0] == 1533 and sp.id_to_piece(1533) == "▁</" and sp.id_to_piece(829) == "</"
    assert seg2 == SEG2_I_SEE_YOU and seg2[0] == 1533
    # The double space before "[emotion]" and before "[/INST]": a lone ▁ (29871) then ▁[ (518).
    assert seg2[12:15] == [636, 29871, 518] and sp.id_to_piece(636) == ".."
    assert seg2[-5:] == [29871, 518, 29914, 25580, 29962]


@pytest.mark.parametrize("subtitle", SUBTITLES)
def test_reference_subtitle_ids(sp, subtitle):
    seg2 = R.slow_encode(sp, R.release_train_segments(subtitle, "emotion", MERR_INSTRUCTION)[2])
    assert window(seg2) == SUBTITLE_WINDOWS[subtitle]


def test_reference_train_ids_with_answer(sp):
    ids = R.release_train_ids(
        sp, "I see you.", "emotion", MERR_INSTRUCTION, N_VIDEO, N_FEATURE, FAKE_VIDEO, FAKE_FEATURE, answer="happy"
    )
    expected = [1, *SEG0, *[FAKE_VIDEO] * N_VIDEO, *SEG1, *[FAKE_FEATURE] * N_FEATURE, *SEG2_I_SEE_YOU, 9796, 2]
    assert ids == expected
    # The answer follows "]" (29962) of [/INST] directly: no ▁ (29871) between them.
    assert ids[-3:] == [29962, 9796, 2]
    prompt = R.release_train_ids(sp, "I see you.", "emotion", MERR_INSTRUCTION, N_VIDEO, N_FEATURE, FAKE_VIDEO, FAKE_FEATURE)
    assert ids[: len(prompt)] == prompt and prompt[-4:] == [518, 29914, 25580, 29962] and ids[len(prompt)] == 9796
    assert ids.count(1) == 1 and ids.count(2) == 1


def test_reference_eval_ids(sp):
    assert sp.encode("<s>") == [529, 29879, 29958]  # SentencePiece alone does not know the special token
    assert R.slow_encode(sp, "<s>") == [1]  # the slow tokenizer splits it out of the text
    seg0, seg1 = R.release_eval_segments("I see you.", "emotion", MERR_INSTRUCTION)
    assert seg0 == "<s>[INST] <video>"
    assert seg1.startswith("</video> <feature><FeatureHere></feature> The person") and seg1.endswith("  [/INST]")
    ids = R.release_eval_ids(sp, "I see you.", "emotion", MERR_INSTRUCTION, N_VIDEO, N_FEATURE, FAKE_VIDEO, FAKE_FEATURE)
    n0 = len(EVAL_SEG0)
    assert ids[:n0] == EVAL_SEG0
    assert ids[n0 : n0 + N_VIDEO + N_FEATURE] == [FAKE_VIDEO] * N_VIDEO + [FAKE_FEATURE] * N_FEATURE
    rest = ids[n0 + N_VIDEO + N_FEATURE :]
    assert rest[: len(EVAL_SEG1_HEAD)] == EVAL_SEG1_HEAD
    assert rest[len(EVAL_SEG1_HEAD) - 1 :] == SEG2_I_SEE_YOU[3:]  # from "▁The" on, as in training
    assert ids.count(FAKE_VIDEO) + ids.count(FAKE_FEATURE) == N_VIDEO + N_FEATURE


def test_reference_slow_encode(sp):
    for text in ["[INST] <video>", "  lead", "trail  ", "tab\there", "café", "I  am"]:
        assert R.slow_encode(sp, text) == sp.encode(text)
    assert R.slow_encode(sp, "a<s>b") == [263, 1, 289]
    assert R.slow_encode(sp, "x </s> y") == [921, 29871, 2, 29871, 343]
    assert R.slow_encode(sp, "<unk>z") == [0, 503]


@pytest.mark.parametrize("answer", list(ANSWER_IDS))
def test_reference_answer_ids(sp, answer):
    assert R.release_answer_ids(sp, answer) == ANSWER_IDS[answer]


def test_reference_answer_text():
    assert R.release_answer_text(RAW_ANSWER) == "he is happy really yes"
    assert R.release_answer_text(".!\"()*#:;~a~;:#*)(\"!.") == "a"
    assert R.release_answer_text("  Fear  ") == "fear"
    assert R.release_answer_text("one   two    three") == "one two three"
    cut = R.release_answer_text(LONG_ANSWER)
    assert cut.split(" ") == [f"word{i}" for i in range(50)]
    assert R.release_answer_text(" ".join(["x"] * 50)) == " ".join(["x"] * 50)


@pytest.fixture(scope="module")
def plain_llm():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=32002, **ARCH, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).eval()


def test_reference_embeds_splice_in_order(plain_llm):
    g = torch.Generator().manual_seed(3)
    mm = torch.randn(1, 7, ARCH["hidden_size"], generator=g)
    v, f = 32000, 32001
    ids = [1, 5, 6, v, v, v, v, 7, f, f, f, 8, 9]
    emb = R.release_embeds(plain_llm, ids, mm, v, f)
    table = plain_llm.get_input_embeddings().weight
    assert emb.shape == (1, len(ids), ARCH["hidden_size"])
    torch.testing.assert_close(emb[0, 3:7], mm[0, :4])
    torch.testing.assert_close(emb[0, 8:11], mm[0, 4:7])
    for pos in (0, 1, 2, 7, 11, 12):
        torch.testing.assert_close(emb[0, pos], table[ids[pos]])
    with pytest.raises(ValueError):
        R.release_embeds(plain_llm, ids[:-3] + [v, 9], mm, v, f)  # a video run after the features
    with pytest.raises(ValueError):
        R.release_embeds(plain_llm, [1, v, f], mm, v, f)  # 2 placeholders, 7 tokens


def test_reference_scorer(plain_llm):
    g = torch.Generator().manual_seed(4)
    prompt = torch.randn(1, 5, ARCH["hidden_size"], generator=g)
    first = torch.log_softmax(R.release_logits(plain_llm, prompt)[0, -1], -1)
    assert R.release_score(plain_llm, prompt, [9796]) == pytest.approx(float(first[9796]), abs=1e-5)
    # Two tokens: log p(a) + log p(b | a), the second from a forward that includes a.
    table = plain_llm.get_input_embeddings()
    longer = torch.cat([prompt, table(torch.tensor([[9796]]))], dim=1)
    second = torch.log_softmax(R.release_logits(plain_llm, longer)[0, -1], -1)
    total = float(first[9796] + second[2])
    assert R.release_score(plain_llm, prompt, [9796, 2]) == pytest.approx(total, abs=1e-5)
    assert R.ranking([0.5, 2.0, -1.0, 2.0]) == [1, 3, 0, 2]


def test_reference_projection_and_lora_merge(plain_llm):
    g = torch.Generator().manual_seed(5)
    h, d = ARCH["hidden_size"], SHAPES_DIMS
    state = {
        "llama_proj.weight": torch.randn(h, 4 * d["eva"], generator=g), "llama_proj.bias": torch.randn(h, generator=g),
        "cls_tk_llama_proj.weight": torch.randn(h, d["eva"], generator=g),
        "cls_tk_llama_proj.bias": torch.randn(h, generator=g),
    }
    for i, m in enumerate(("mae", "videomae", "hubert"), start=1):
        state[f"feats_llama_proj{i}.weight"] = torch.randn(h, d[m], generator=g)
        state[f"feats_llama_proj{i}.bias"] = torch.randn(h, generator=g)
    feats = features(6)
    out = R.release_project(state, feats)
    assert out.shape == (1, EVA_PATCHES // 4 + 4, h)
    eva = feats["eva"][0]
    lin = torch.nn.functional.linear
    torch.testing.assert_close(out[0, 1], lin(eva[5:9].reshape(-1), state["llama_proj.weight"], state["llama_proj.bias"]))
    torch.testing.assert_close(out[0, 256], lin(feats["mae"][0], state["feats_llama_proj1.weight"], state["feats_llama_proj1.bias"]))
    torch.testing.assert_close(out[0, 258], lin(feats["hubert"][0], state["feats_llama_proj3.weight"], state["feats_llama_proj3.bias"]))
    torch.testing.assert_close(out[0, 259], lin(eva[0], state["cls_tk_llama_proj.weight"], state["cls_tk_llama_proj.bias"]))

    key = "llama_model.base_model.model.model.layers.1.self_attn.v_proj"
    lora = {f"{key}.lora_A.weight": torch.randn(RANK, h, generator=g), f"{key}.lora_B.weight": torch.randn(h, RANK, generator=g)}
    merged, n = R.release_merge_lora(plain_llm, lora, RANK, 8)
    assert n == 1
    x = torch.randn(3, h, generator=g)
    base = plain_llm.model.layers[1].self_attn.v_proj
    want = base(x) + (x @ lora[f"{key}.lora_A.weight"].T @ lora[f"{key}.lora_B.weight"].T) * (8 / RANK)
    torch.testing.assert_close(merged.model.layers[1].self_attn.v_proj(x), want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(merged.model.layers[0].self_attn.q_proj.weight, plain_llm.model.layers[0].self_attn.q_proj.weight)


# ====================================================================== project parity (the project)
@pytest.fixture(scope="module")
def project_tok(tmp_path_factory):
    """The project's tokenizer loaded from a folder that holds only LLaMA-2's tokenizer.model."""
    from emotion_llama.model.tokenizer import load_tokenizer

    folder = tmp_path_factory.mktemp("llama2_tokenizer_only")
    shutil.copy(TOKENIZER_MODEL, folder / "tokenizer.model")
    return load_tokenizer(folder, "model.tokenizer_path")


def placeholder_ids(tok) -> tuple[int, int]:
    return tok.convert_tokens_to_ids("<VideoHere>"), tok.convert_tokens_to_ids("<FeatureHere>")


def test_project_tokenizer_from_a_bare_tokenizer_model(project_tok):
    video_id, feature_id = placeholder_ids(project_tok)
    assert {video_id, feature_id} == {32000, 32001}
    assert (project_tok.bos_token_id, project_tok.eos_token_id) == (1, 2)


def test_project_instruction_and_label_order():
    from emotion_llama.model.prompts import RELEASE_MERR_ORDER, emotion_instruction

    assert tuple(RELEASE_MERR_ORDER) == R.RELEASE_MERR_ORDER
    assert emotion_instruction(RELEASE_MERR_ORDER) == R.release_instruction(R.RELEASE_MERR_ORDER)
    assert emotion_instruction(R.RELEASE_MER_ORDER) == R.release_instruction(R.RELEASE_MER_ORDER)


@pytest.mark.parametrize("task, instruction", TASKS, ids=["emotion_merr", "emotion_mer", "reason"])
@pytest.mark.parametrize("subtitle", SUBTITLES)
def test_project_prompt_ids_train_layout(sp, project_tok, subtitle, task, instruction):
    from emotion_llama.model.prompts import PromptParts
    from emotion_llama.model.sequences import encode_prompt

    video_id, feature_id = placeholder_ids(project_tok)
    got = encode_prompt(project_tok, PromptParts(subtitle, task, instruction), N_VIDEO, N_FEATURE)
    want = R.release_train_ids(sp, subtitle, task, instruction, N_VIDEO, N_FEATURE, video_id, feature_id)
    assert list(got) == want


@pytest.mark.parametrize("task, instruction", TASKS, ids=["emotion_merr", "emotion_mer", "reason"])
@pytest.mark.parametrize("subtitle", SUBTITLES)
def test_project_prompt_ids_eval_layout(sp, project_tok, subtitle, task, instruction):
    from emotion_llama.model.prompts import PromptParts
    from emotion_llama.model.sequences import encode_prompt

    video_id, feature_id = placeholder_ids(project_tok)
    got = encode_prompt(project_tok, PromptParts(subtitle, task, instruction), N_VIDEO, N_FEATURE, layout="release_eval")
    want = R.release_eval_ids(sp, subtitle, task, instruction, N_VIDEO, N_FEATURE, video_id, feature_id)
    assert list(got) == want


@pytest.mark.parametrize("clean", [True, False], ids=["clean_answers", "raw_answers"])
@pytest.mark.parametrize("answer", ["happy", RAW_ANSWER, LONG_ANSWER], ids=["label", "punctuated", "sixty_words"])
def test_project_example_ids(sp, project_tok, answer, clean):
    from emotion_llama.model.prompts import PromptParts
    from emotion_llama.model.sequences import IGNORE_INDEX, encode_example

    video_id, feature_id = placeholder_ids(project_tok)
    parts = PromptParts("I see you.", "emotion", MERR_INSTRUCTION)
    got = encode_example(project_tok, parts, answer, N_VIDEO, N_FEATURE, clean_answers=clean)
    prompt = R.release_train_ids(sp, "I see you.", "emotion", MERR_INSTRUCTION, N_VIDEO, N_FEATURE, video_id, feature_id)
    answer_ids = R.release_answer_ids(sp, R.release_answer_text(answer) if clean else answer)
    assert list(got["input_ids"]) == prompt + answer_ids
    assert list(got["labels"]) == [IGNORE_INDEX] * len(prompt) + answer_ids


@pytest.mark.parametrize("label", R.RELEASE_MERR_ORDER)
def test_project_answer_ids(sp, project_tok, label):
    from emotion_llama.model.sequences import encode_answer

    assert list(encode_answer(project_tok, label)) == R.release_answer_ids(sp, label) == ANSWER_IDS[label]


# ------------------------------------------------------------------ model parity on tiny random weights
def shapes():
    from emotion_llama.encoders.build import EncoderShapes

    return EncoderShapes(dims=dict(SHAPES_DIMS), eva_patches=EVA_PATCHES)


@torch.no_grad()
def randomise_lora_b(model, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for name, p in model.llm.named_parameters():
        if "lora_B" in name:
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


@pytest.fixture(scope="module")
def tiny_model(project_tok):
    from emotion_llama.model.builder import build_model
    from emotion_llama.model.config import ModelConfig

    cfg = ModelConfig(
        llm_arch=dict(ARCH),
        lora=dict(r=RANK, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"]),
    )
    torch.manual_seed(0)
    model = build_model(cfg, project_tok, shapes()).float().eval()
    randomise_lora_b(model, 7)
    return model


def project_inputs(tok, layout: str | None):
    from emotion_llama.model.prompts import PromptParts
    from emotion_llama.model.sequences import encode_prompt

    parts = PromptParts("I see you.", "emotion", MERR_INSTRUCTION)
    kwargs = {} if layout is None else {"layout": layout}
    ids = torch.tensor([list(encode_prompt(tok, parts, N_VIDEO, N_FEATURE, **kwargs))])
    return ids, torch.ones_like(ids)


def reference_ids(sp, tok, layout: str | None):
    video_id, feature_id = placeholder_ids(tok)
    build = R.release_eval_ids if layout == "release_eval" else R.release_train_ids
    return build(sp, "I see you.", "emotion", MERR_INSTRUCTION, N_VIDEO, N_FEATURE, video_id, feature_id)


@pytest.mark.parametrize("layout", [None, "release_eval"], ids=["train_layout", "eval_layout"])
def test_project_last_logits_tiny_model(sp, project_tok, tiny_model, layout):
    feats = features(8)
    ids, mask = project_inputs(project_tok, layout)
    ref_ids = reference_ids(sp, project_tok, layout)
    assert ids[0].tolist() == ref_ids
    with torch.no_grad():
        got = tiny_model(ids, mask, feats).logits[:, -1].float()
        embeds = R.release_embeds(tiny_model.llm, ref_ids, tiny_model.project(feats), *placeholder_ids(project_tok))
        want = R.release_logits(tiny_model.llm, embeds)[:, -1]
    torch.testing.assert_close(got, want, atol=LOGIT_TOL, rtol=0)


def assert_same_ranking(got: list[float], want: list[float]) -> None:
    ordered = sorted(want, reverse=True)
    assert min(a - b for a, b in zip(ordered, ordered[1:], strict=False)) > SCORE_TOL, "test setup: reference scores too close to rank"
    assert got == pytest.approx(want, abs=SCORE_TOL)
    assert R.ranking(got) == R.ranking(want)


def test_project_label_ranking_tiny_model(sp, project_tok, tiny_model):
    from emotion_llama.model.sequences import encode_answer

    feats = features(9)
    labels = R.RELEASE_MERR_ORDER
    ids, mask = project_inputs(project_tok, None)
    got = tiny_model.score_labels(ids, mask, feats, [encode_answer(project_tok, lab) for lab in labels])[0].tolist()
    ref_ids = reference_ids(sp, project_tok, None)
    assert ids[0].tolist() == ref_ids
    with torch.no_grad():
        embeds = R.release_embeds(tiny_model.llm, ref_ids, tiny_model.project(feats), *placeholder_ids(project_tok))
    want = R.release_label_scores(sp, tiny_model.llm, embeds, labels)
    assert_same_ranking(got, want)


# ------------------------------------------------------------------------- release checkpoint import
def release_state(hidden: int) -> dict[str, torch.Tensor]:
    """Trained tensors named and shaped as the release's .pth holds them (peft 0.2 LoRA names)."""
    g = torch.Generator().manual_seed(11)
    state = {}
    for i in range(ARCH["num_hidden_layers"]):
        for proj in ("q_proj", "v_proj"):
            stem = f"llama_model.base_model.model.model.layers.{i}.self_attn.{proj}"
            state[f"{stem}.lora_A.weight"] = torch.randn(RANK, hidden, generator=g) * 0.2
            state[f"{stem}.lora_B.weight"] = torch.randn(hidden, RANK, generator=g) * 0.2
    d = SHAPES_DIMS
    inputs = {"llama_proj": 4 * d["eva"], "cls_tk_llama_proj": d["eva"], "feats_llama_proj1": d["mae"],
              "feats_llama_proj2": d["videomae"], "feats_llama_proj3": d["hubert"]}
    for name, d_in in inputs.items():
        state[f"{name}.weight"] = torch.randn(hidden, d_in, generator=g) * 0.1
        state[f"{name}.bias"] = torch.randn(hidden, generator=g) * 0.1
    state["attention.in_proj_weight"] = torch.randn(3 * d["hubert"], d["hubert"], generator=g)
    state["attention.out_proj.bias"] = torch.randn(d["hubert"], generator=g)
    half = ARCH["hidden_size"] // ARCH["num_attention_heads"] // 2
    state[INV_FREQ] = 1.0 / (10000 ** (torch.arange(half).float() / half))
    return state


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory):
    """A tiny LLaMA folder (weights + LLaMA-2's tokenizer.model), standing in for Llama-2-7b-chat-hf."""
    path = tmp_path_factory.mktemp("tiny_llama2")
    torch.manual_seed(1)
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=32000, **ARCH, tie_word_embeddings=False)).eval()
    llm.save_pretrained(path)
    shutil.copy(TOKENIZER_MODEL, path / "tokenizer.model")
    return path, llm


@pytest.fixture(scope="module")
def imported(tmp_path_factory, llm_dir):
    from emotion_llama.model.checkpoint import load_checkpoint
    from emotion_llama.model.config import ModelConfig
    from emotion_llama.model.official import import_official

    path, base = llm_dir
    root = tmp_path_factory.mktemp("release_ckpt")
    state = release_state(ARCH["hidden_size"])
    file_config = {"model": {"arch": "minigpt_v2", "lora_r": RANK, "lora_alpha": 8, "lora_dropout": 0.05,
                             "llama_model": "/path/to/Llama-2-7b-chat-hf", "max_txt_len": 1024}}
    src = root / "Emotion_LLaMA.pth"
    torch.save({"model": state, "optimizer": {}, "config": file_config, "scaler": None, "epoch": 3}, src)
    # The preset says alpha 16; the file says 8: the file must win.
    cfg = ModelConfig(preset="tiny_release", llm_path=str(path), llm_arch=dict(ARCH),
                      lora=dict(r=RANK, alpha=16, dropout=0.0, target_modules=["q_proj", "v_proj"]))
    report = import_official(src, root / "out", cfg, shapes=shapes())
    model, loaded_cfg, tok = load_checkpoint(root / "out", shapes=shapes())
    return dict(state=state, base=base, report=report, model=model.float().eval(), cfg=loaded_cfg, tok=tok)


def test_project_import_release_layout_report(imported):
    report, state = imported["report"], imported["state"]
    assert report.ok
    assert report.epoch == 3
    assert report.mapped == {"lora": 8, "eva_patch": 2, "eva_cls": 2, "mae": 2, "videomae": 2, "hubert": 2}
    assert INV_FREQ in report.ignored and INV_FREQ in report.format()
    assert {k for k in state if k.startswith("attention.")} <= set(report.ignored)
    assert any("attention" in note for note in report.notes)
    assert any("alpha" in note and "8" in note and "16" in note for note in report.notes), report.notes
    assert (imported["cfg"].lora.r, imported["cfg"].lora.alpha) == (RANK, 8)


def test_project_import_release_layout_matches_raw_tensors(sp, imported):
    model, tok, state = imported["model"], imported["tok"], imported["state"]
    ref_llm, merged = R.release_merge_lora(imported["base"], state, r=RANK, alpha=8)
    assert merged == 2 * ARCH["num_hidden_layers"]
    feats = features(12)
    ids, mask = project_inputs(tok, None)
    ref_ids = reference_ids(sp, tok, None)
    assert ids[0].tolist() == ref_ids
    with torch.no_grad():
        embeds = R.release_embeds(ref_llm, ref_ids, R.release_project(state, feats), *placeholder_ids(tok))
        want = R.release_logits(ref_llm, embeds)[:, -1]
        got = model(ids, mask, feats).logits[:, -1].float()
    torch.testing.assert_close(got, want, atol=LOGIT_TOL, rtol=0)

    from emotion_llama.model.sequences import encode_answer

    labels = R.RELEASE_MERR_ORDER
    scores = model.score_labels(ids, mask, feats, [encode_answer(tok, lab) for lab in labels])[0].tolist()
    assert_same_ranking(scores, R.release_label_scores(sp, ref_llm, embeds, labels))
