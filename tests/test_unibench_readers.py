"""MER-UniBench's nine test sets: written in their released layouts, read back, and every broken file refused
in one line naming it (a crafted pickle refused without running)."""

import os

import numpy as np
import pytest

from emotion_llama.datasets.common import Sample
from emotion_llama.datasets.synthetic.unibench import write_npz_dicts, write_unibench_set, write_unibench_sets
from emotion_llama.datasets.unibench import (
    BASIC,
    OPENSET,
    SENTIMENT,
    UNIBENCH_SETS,
    OpenSample,
    parse_openset,
    read_unibench,
    read_unibench_subtitles,
    unibench_label_path,
    unibench_set,
)
from emotion_llama.errors import UserError

NPZ_SETS = [k for k, s in UNIBENCH_SETS.items() if s.kind != OPENSET]
SENTIMENT_SETS = [k for k, s in UNIBENCH_SETS.items() if s.kind == SENTIMENT]


def refused(call, *texts: str) -> str:
    """The message of the UserError ``call`` raises: one line, holding every one of ``texts``."""
    with pytest.raises(UserError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message.strip(), message
    for text in texts:
        assert str(text) in message, (text, message)
    return message


class Payload:
    """What a crafted label file holds: unpickling it calls os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# ---------------------------------------------------------------------------------------------- the table


def test_the_table_holds_the_nine_sets_with_their_published_facts():
    assert len(UNIBENCH_SETS) == 9
    assert {s.kind for s in UNIBENCH_SETS.values()} == {BASIC, SENTIMENT, OPENSET}
    assert UNIBENCH_SETS["meld"].labels == ("anger", "joy", "sadness", "neutral", "disgust", "fear", "surprise")
    assert UNIBENCH_SETS["iemocap4"].labels == ("happy", "sad", "neutral", "anger")
    assert UNIBENCH_SETS["iemocap4"].name_prefix == "Ses05"
    assert [UNIBENCH_SETS[k].value_range for k in SENTIMENT_SETS] == [(-3, 3), (-3, 3), (-1, 1), (-1, 1)]
    assert sum(s.test_size for s in UNIBENCH_SETS.values()) == 411 + 1169 + 2610 + 1241 + 686 + 4659 + 457 + 1034 + 532
    for alias, key in [("CMU-MOSI", "cmumosi"), ("OV-MERD+", "ovmerdplus"), ("CH-SIMS v2", "simsv2"),
                       ("IEMOCAPFour", "iemocap4"), ("MER2024", "mer2024")]:
        assert unibench_set(alias)[0] == key
    refused(lambda: unibench_set("dfew"), "dfew", "mer2023", "ovmerdplus")


# ---------------------------------------------------------------------------------------------- round trips


def test_mer2023_and_mer2024_read_test1_corpus_with_words(tmp_path):
    samples = [Sample("sample_1", "worried", 1.5), Sample("sample_2", "surprise"), Sample("sample_3", "neutral", -2.0)]
    for key in ("mer2023", "mer2024"):
        path = write_unibench_set(key, tmp_path / key, samples)
        assert path.name == "label-6way.npz"
        official = np.load(path, allow_pickle=True)  # the layout numpy users read
        assert sorted(official.files) == ["test1_corpus", "test2_corpus", "test3_corpus", "train_corpus"]
        assert official["test1_corpus"].item()["sample_1"] == {"emo": "worried", "val": 1.5}
        assert read_unibench(key, tmp_path / key) == samples


def test_meld_maps_its_int_indices_in_unibench_order(tmp_path):
    write_npz_dicts(tmp_path / "label.npz", {"train_corpus": {"x": {"emo": 0}}, "test_corpus": {
        f"dia0_utt{i}": {"emo": i} for i in range(7)} | {"dia1_utt0": {"emo": np.int64(3)}}})
    samples = read_unibench("meld", tmp_path)
    assert [s.label for s in samples] == ["anger", "joy", "sadness", "neutral", "disgust", "fear", "surprise", "neutral"]
    assert samples[0] == Sample("dia0_utt0", "anger")
    assert write_unibench_set("meld", tmp_path / "w", [Sample("dia5_utt2", "fear")]).name == "label.npz"
    assert np.load(tmp_path / "w" / "label.npz", allow_pickle=True)["test_corpus"].item() == {"dia5_utt2": {"emo": 5}}
    assert read_unibench("MELD", tmp_path / "w") == [Sample("dia5_utt2", "fear")]


def test_iemocap_keeps_session_5_and_takes_an_index_or_the_word(tmp_path):
    write_unibench_set("iemocap4", tmp_path, {
        "Ses01F_impro01_F000": "happy", "Ses05F_impro01_F000": 0, "Ses04M_script01_M001": "anger",
        "Ses05M_script02_M003": "anger", "Ses05F_impro03_M004": 1})
    assert read_unibench("iemocap4", tmp_path) == [
        Sample("Ses05F_impro01_F000", "happy"), Sample("Ses05M_script02_M003", "anger"),
        Sample("Ses05F_impro03_M004", "sad")]
    write_npz_dicts(tmp_path / "label_4way.npz", {"whole_corpus": {
        "Ses05F_a": {"emo": "Neutral"}, "Ses05F_b": {"emo": "2"}, "Ses02F_c": {"emo": "whatever"}}})
    assert read_unibench("IEMOCAP", tmp_path / "label_4way.npz") == [  # root may be the label file itself
        Sample("Ses05F_a", "neutral"), Sample("Ses05F_b", "neutral")]


@pytest.mark.parametrize("key", SENTIMENT_SETS)
def test_sentiment_sets_carry_the_score_and_its_polarity(tmp_path, key):
    low, high = UNIBENCH_SETS[key].value_range
    values = {"v1_0": low, "v1_1": 0.0, "v2_0": high, "v3_7": np.float32(0.25), "v3_8": -0.5}
    write_unibench_set(key, tmp_path, values)
    assert np.load(tmp_path / "label.npz", allow_pickle=True)["test_corpus"].item()["v1_1"] == {"val": 0.0}
    samples = read_unibench(key, tmp_path)
    assert [s.name for s in samples] == list(values)
    assert [s.valence for s in samples] == [low, 0.0, high, 0.25, -0.5]
    assert [s.label for s in samples] == ["negative", "neutral", "positive", "positive", "negative"]


def test_ovmerd_plus_reads_open_sets_and_subtitles(tmp_path):
    (tmp_path / "ovlabel.csv").write_text(
        "name,openset\n"
        "samplenew3_1,\"[worried, tense]\"\n"
        "samplenew3_2,\n"
        "samplenew3_3,[]\n"
        "samplenew3_4,\"['Happy', ' relieved', 'happy']\"\n", encoding="utf-8")
    (tmp_path / "subtitle_eng.csv").write_text(
        "name,sentence\nsamplenew3_1,\"Well, I don't know.\"\nsamplenew3_2,nan\n", encoding="utf-8")
    samples = read_unibench("ovmerdplus", tmp_path)
    assert samples == [OpenSample("samplenew3_1", ("worried", "tense")), OpenSample("samplenew3_2", ("neutral",)),
                       OpenSample("samplenew3_3", ("neutral",)), OpenSample("samplenew3_4", ("happy", "relieved"))]
    assert samples[0].label == "worried, tense"
    assert read_unibench_subtitles("OV-MERD+", tmp_path, [s.name for s in samples]) == {
        "samplenew3_1": "Well, I don't know.", "samplenew3_2": ""}
    assert read_unibench_subtitles("mer2023", tmp_path) is None
    assert parse_openset(" [ ] ") == ("neutral",) and parse_openset("sad") == ("sad",)


def test_ovmerd_plus_writer_round_trips(tmp_path):
    write_unibench_set("ovmerdplus", tmp_path, {"a": ["worried", "tense"], "b": []}, {"a": "Hello, there.", "b": ""})
    assert (tmp_path / "ovlabel.csv").read_text() == 'name,openset\na,"[worried, tense]"\nb,\n'
    assert read_unibench("ovmerdplus", tmp_path) == [OpenSample("a", ("worried", "tense")), OpenSample("b", ("neutral",))]
    assert read_unibench_subtitles("ovmerdplus", tmp_path) == {"a": "Hello, there.", "b": ""}


def test_all_nine_sets_are_laid_out_deterministically(tmp_path):
    first, second = write_unibench_sets(tmp_path / "a", n=6), write_unibench_sets(tmp_path / "b", n=6)
    assert list(first) == list(UNIBENCH_SETS)
    for key, folder in first.items():
        files = sorted(p.name for p in folder.iterdir())
        spec = UNIBENCH_SETS[key]
        assert files == sorted([spec.label_file] + ([spec.subtitle_file] if spec.subtitle_file else []))
        for name in files:
            assert (folder / name).read_bytes() == (second[key] / name).read_bytes(), (key, name)
        samples = read_unibench(key, folder)
        assert len(samples) == 6, key
        if key == "iemocap4":
            assert all(s.name.startswith("Ses05") for s in samples)
            assert len(np.load(folder / spec.label_file, allow_pickle=True)["whole_corpus"].item()) == 9
    assert read_unibench("ovmerdplus", first["ovmerdplus"])[0].labels == ("neutral",)
    assert {s.label for s in read_unibench("cmumosi", first["cmumosi"])} >= {"neutral"}
    assert write_unibench_sets(tmp_path / "c", n=6, seed=1)["meld"] != first["meld"]


# ---------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("key", list(UNIBENCH_SETS))
def test_a_missing_label_file_names_it_and_the_fix(tmp_path, key):
    spec = UNIBENCH_SETS[key]
    refused(lambda: read_unibench(key, tmp_path), tmp_path / spec.label_file, spec.title, "released")
    refused(lambda: unibench_label_path(key, tmp_path / "nowhere"), tmp_path / "nowhere" / spec.label_file)


def test_a_missing_subtitle_file_or_column_is_refused(tmp_path):
    (tmp_path / "ovlabel.csv").write_text("name,openset\na,[sad]\n")
    refused(lambda: read_unibench_subtitles("ovmerdplus", tmp_path), tmp_path / "subtitle_eng.csv", "OV-MERD+")
    (tmp_path / "subtitle_eng.csv").write_text("name,chinese\na,x\n")
    refused(lambda: read_unibench_subtitles("ovmerdplus", tmp_path), tmp_path / "subtitle_eng.csv", "sentence")
    (tmp_path / "subtitle_eng.csv").write_text("name,sentence\nother,x\n")
    refused(lambda: read_unibench_subtitles("ovmerdplus", tmp_path, ["a"]), "none of the 1 clips")


@pytest.mark.parametrize("key", NPZ_SETS)
def test_a_missing_key_is_named_with_what_was_found(tmp_path, key):
    spec = UNIBENCH_SETS[key]
    write_npz_dicts(tmp_path / spec.label_file, {"train_corpus": {}})
    refused(lambda: read_unibench(key, tmp_path), tmp_path / spec.label_file, repr(spec.key), "found train_corpus")


@pytest.mark.parametrize("key", NPZ_SETS)
def test_an_empty_test_set_is_refused(tmp_path, key):
    spec = UNIBENCH_SETS[key]
    write_npz_dicts(tmp_path / spec.label_file, {spec.key: {}})
    refused(lambda: read_unibench(key, tmp_path), tmp_path / spec.label_file, "lists no clips")


def test_an_empty_ovmerd_plus_file_and_duplicates_are_refused(tmp_path):
    (tmp_path / "ovlabel.csv").write_text("name,openset\n")
    refused(lambda: read_unibench("ovmerdplus", tmp_path), tmp_path / "ovlabel.csv", "lists no clips")
    (tmp_path / "ovlabel.csv").write_text("name,openset\na,[sad]\na,[happy]\n")
    refused(lambda: read_unibench("ovmerdplus", tmp_path), "clip a twice")
    (tmp_path / "ovlabel.csv").write_text("name,labels\na,[sad]\n")
    refused(lambda: read_unibench("ovmerdplus", tmp_path), tmp_path / "ovlabel.csv", "openset")
    (tmp_path / "ovlabel.csv").write_text("name,openset\n,[sad]\n")
    refused(lambda: read_unibench("ovmerdplus", tmp_path), f"{tmp_path / 'ovlabel.csv'}:2", "no sample name")


def test_iemocap_without_session_5_is_refused(tmp_path):
    write_unibench_set("iemocap4", tmp_path, {"Ses01F_impro01_F000": "sad", "Ses04M_a": 2})
    refused(lambda: read_unibench("iemocap4", tmp_path), tmp_path / "label_4way.npz", "'Ses05'", "Ses01F_impro01_F000")


@pytest.mark.parametrize(("key", "bad", "text"), [
    ("meld", 7, "label index 7 is out of range"), ("meld", -1, "label index -1"),
    ("iemocap4", 4, "label index 4"), ("iemocap4", "excited", "unknown label 'excited'"),
    ("meld", 2.5, "not a label index"), ("meld", True, "not a label index"), ("meld", None, "not a label index"),
])
def test_an_unknown_label_index_names_the_sample(tmp_path, key, bad, text):
    spec = UNIBENCH_SETS[key]
    write_npz_dicts(tmp_path / spec.label_file, {spec.key: {"Ses05F_ok": {"emo": 0}, "Ses05F_bad": {"emo": bad}}})
    message = refused(lambda: read_unibench(key, tmp_path), tmp_path / spec.label_file, "'Ses05F_bad'", text)
    assert ", ".join(spec.labels) in message


def test_an_unknown_mer_label_or_a_missing_field_names_the_sample(tmp_path):
    write_npz_dicts(tmp_path / "label-6way.npz", {"test1_corpus": {"s1": {"emo": "happy", "val": 1.0},
                                                                   "s2": {"emo": "fear", "val": 0.0}}})
    refused(lambda: read_unibench("mer2024", tmp_path), tmp_path / "label-6way.npz", "'s2'", "unknown label 'fear'")
    write_npz_dicts(tmp_path / "label.npz", {"test_corpus": {"d0_u0": {"val": 1.0}}})
    refused(lambda: read_unibench("meld", tmp_path), tmp_path / "label.npz", "'d0_u0'", "expected a dict with 'emo'")
    write_npz_dicts(tmp_path / "label.npz", {"test_corpus": {"v0": [1.0]}})
    refused(lambda: read_unibench("cmumosi", tmp_path), "'v0'", "expected a dict with 'val'")


@pytest.mark.parametrize(("key", "value"), [
    ("cmumosi", 4.2), ("cmumosei", -3.5), ("sims", 1.5), ("simsv2", -1.01), ("cmumosi", float("nan")),
    ("sims", float("inf")),
])
def test_a_score_out_of_range_names_the_sample(tmp_path, key, value):
    write_unibench_set(key, tmp_path, {"fine_1": 0.5, "broken_2": value})
    low, high = UNIBENCH_SETS[key].value_range
    refused(lambda: read_unibench(key, tmp_path), tmp_path / "label.npz", "'broken_2'", f"[{low:g}, {high:g}]")


def test_a_score_that_is_no_number_is_refused(tmp_path):
    write_npz_dicts(tmp_path / "label.npz", {"test_corpus": {"a": {"val": "high"}}})
    refused(lambda: read_unibench("cmumosi", tmp_path), "'a'", "not a number")
    write_npz_dicts(tmp_path / "label.npz", {"test_corpus": {"a": {"val": "0.5"}, "b": {"val": np.array(-1.0)}}})
    assert [s.valence for s in read_unibench("sims", tmp_path)] == [0.5, -1.0]


@pytest.mark.parametrize("key", NPZ_SETS)
@pytest.mark.parametrize("where", ["whole", "inside_an_entry"])
def test_a_crafted_pickle_is_refused_and_never_runs(tmp_path, key, where):
    spec = UNIBENCH_SETS[key]
    marker = tmp_path / "ran"
    payload = Payload(marker)
    corpus = payload if where == "whole" else {"Ses05F_x": {"emo": payload, "val": payload}}
    np.savez(tmp_path / spec.label_file, **{spec.key: np.array(corpus, dtype=object)})
    refused(lambda: read_unibench(key, tmp_path), f"{tmp_path / spec.label_file}: refused", "system",
            f"re-download {spec.label_file}")
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"not a zip", b""])
def test_a_corrupt_npz_is_one_line(tmp_path, content):
    (tmp_path / "label.npz").write_bytes(content)
    refused(lambda: read_unibench("meld", tmp_path), tmp_path / "label.npz", "re-download label.npz")


def test_a_test_corpus_that_is_no_dict_is_refused(tmp_path):
    np.savez(tmp_path / "label.npz", test_corpus=np.arange(3))
    refused(lambda: read_unibench("cmumosei", tmp_path), tmp_path / "label.npz", "not a pickled dict")
    with pytest.raises(ValueError, match="not a MELD label"):
        write_unibench_set("meld", tmp_path, {"a": "happy"})
