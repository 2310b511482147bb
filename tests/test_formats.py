import numpy as np
import pytest

from emotion_llama.datasets.common import Sample, read_subtitles, write_subtitles
from emotion_llama.datasets.dfew import read_dfew_split, read_dfew_txt, write_dfew_split, write_dfew_txt
from emotion_llama.datasets.emer import read_emer_csv, write_emer_predictions
from emotion_llama.datasets.mer import (
    read_mer2023_csv,
    read_mer2023_npz,
    read_mer2024_csv,
    write_mer2023_csv,
    write_mer2023_npz,
    write_mer2024_csv,
)
from emotion_llama.datasets.merr import read_merr_json, read_merr_txt, write_merr_json, write_merr_txt
from emotion_llama.errors import UserError

MER = [Sample("sample_00000001", "happy", 1.5), Sample("sample_00000002", "worried", -0.25)]


def test_merr_txt_reads_the_release_lines(tmp_path):
    path = tmp_path / "MERR_fine.txt"
    path.write_text("sample_00000003 43 happy\n\nsamplenew_00006611 125 Sad  2.5\nsamplenew_7 9 doubt -10\n")
    assert read_merr_txt(path) == [
        Sample("sample_00000003", "happy", None, 43),
        Sample("samplenew_00006611", "sad", 2.5, 125),
        Sample("samplenew_7", "doubt", None, 9),  # -10 is the release's "no valence"
    ]


def test_merr_txt_round_trip(tmp_path):
    samples = [
        Sample("a", "contempt", None, 12),
        Sample("b", "neutral", -3.0, 40),
        Sample("c", "sad", 1 / 3, 0),  # valence written exactly, 0 frames kept
    ]
    write_merr_txt(tmp_path / "m.txt", samples)
    assert read_merr_txt(tmp_path / "m.txt") == samples


@pytest.mark.parametrize(
    "line, message",
    [
        ("a 12\n", r"m\.txt:2: expected 'name n_frames label \[valence\]'"),
        ("a twelve happy\n", r"m\.txt:2: n_frames should be a number"),
        ("a 12 bored\n", r"m\.txt:2: unknown label 'bored'; use one of neutral, angry"),
    ],
)
def test_merr_txt_errors_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "m.txt"
    path.write_text("ok 3 happy\n" + line)
    with pytest.raises(UserError, match=message):
        read_merr_txt(path)


def test_merr_txt_label_set_is_configurable(tmp_path):
    path = tmp_path / "m.txt"
    path.write_text("a 3 fear\n")
    with pytest.raises(UserError, match="unknown label 'fear'"):
        read_merr_txt(path, labels=("happy", "sad"))


def test_missing_file_is_a_user_error(tmp_path):
    for reader in (read_merr_txt, read_merr_json, read_subtitles, read_dfew_split, read_dfew_txt,
                   read_mer2023_npz, read_mer2023_csv, read_mer2024_csv, read_emer_csv):
        with pytest.raises(UserError, match=r"nope\.x not found: point the .* path at an existing file"):
            reader(tmp_path / "nope.x")


def test_merr_json_round_trip_and_errors(tmp_path):
    data = {"sample_1": {"caption": "A smile.", "peak_index": "3"}, "sample_2": {"smp_reason_caption": "é"}}
    write_merr_json(tmp_path / "m.json", data)
    assert read_merr_json(tmp_path / "m.json") == data
    (tmp_path / "bad.json").write_text('{"a": {}\n,,}')
    with pytest.raises(UserError, match=r"bad\.json:2: not valid JSON"):
        read_merr_json(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="expected a JSON object"):
        read_merr_json(tmp_path / "list.json")


def test_subtitles_empty_and_nan_become_empty_strings(tmp_path):
    path = tmp_path / "sub.csv"
    path.write_text(',name,sentence\n0,s1,"Hello, world."\n1,s2,\n2,s3,NaN\n')  # pandas index column
    assert read_subtitles(path) == {"s1": "Hello, world.", "s2": "", "s3": ""}


def test_subtitles_round_trip_with_mer2024_column(tmp_path):
    subs = {"s1": 'She said "no", twice.', "s2": ""}
    write_subtitles(tmp_path / "sub.csv", subs, column="sentence_en")
    assert (tmp_path / "sub.csv").read_text().splitlines()[0] == "name,sentence_en"
    assert read_subtitles(tmp_path / "sub.csv") == subs


def test_subtitles_without_a_sentence_column(tmp_path):
    (tmp_path / "sub.csv").write_text("name,text\na,b\n")
    with pytest.raises(UserError, match="missing column.*sentence.*found name, text"):
        read_subtitles(tmp_path / "sub.csv")


def test_dfew_split_maps_one_based_labels_and_keeps_names_as_strings(tmp_path):
    path = tmp_path / "set_1.csv"
    path.write_text("video_name,label\n1,1\n23,7\n0456,3\n")
    assert read_dfew_split(path) == [Sample("1", "happy"), Sample("23", "fear"), Sample("0456", "neutral")]
    write_dfew_split(tmp_path / "out.csv", read_dfew_split(path))
    assert (tmp_path / "out.csv").read_text() == path.read_text()


@pytest.mark.parametrize("label", ["0", "8", "x", "2.5"])
def test_dfew_split_rejects_labels_outside_1_to_7(tmp_path, label):
    path = tmp_path / "set_1.csv"
    path.write_text(f"video_name,label\n1,1\n2,{label}\n")
    with pytest.raises(UserError, match=r"set_1\.csv:3: "):
        read_dfew_split(path)


def test_dfew_split_malformed_row(tmp_path):
    path = tmp_path / "set_1.csv"
    path.write_text("video_name,label\n1,1,9\n")
    with pytest.raises(UserError, match=r"set_1\.csv:2: expected 2 fields"):
        read_dfew_split(path)


def test_dfew_txt_name_is_last_path_component(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("/data/DFEW/frames/0001/ 16 0\nframes/23 40 6\n")
    assert read_dfew_txt(path) == [Sample("0001", "happy", n_frames=16), Sample("23", "fear", n_frames=40)]
    write_dfew_txt(tmp_path / "o.txt", read_dfew_txt(path), frame_root="root/frames")
    assert (tmp_path / "o.txt").read_text() == "root/frames/0001 16 0\nroot/frames/23 40 6\n"
    assert read_dfew_txt(tmp_path / "o.txt") == read_dfew_txt(path)
    path.write_text("frames/1 16 7\n")
    with pytest.raises(UserError, match=r"train\.txt:1: DFEW label '7' is outside 0\.\.6"):
        read_dfew_txt(path)


def test_mer2023_npz_mimics_the_official_file(tmp_path):
    path = tmp_path / "label-6way.npz"
    write_mer2023_npz(path, {"train": MER, "test3": [Sample("semi_1", "surprise")]})
    official = np.load(path, allow_pickle=True)
    assert sorted(official.files) == ["test1_corpus", "test2_corpus", "test3_corpus", "train_corpus"]
    assert official["test3_corpus"].tolist() == {"semi_1": {"emo": "surprise", "val": -10.0}}
    assert read_mer2023_npz(path, "train") == MER
    assert read_mer2023_npz(path) == [Sample("semi_1", "surprise")]
    assert read_mer2023_npz(path, "test1_corpus") == []


def test_mer2023_npz_tolerates_case_and_names_bad_labels(tmp_path):
    path = tmp_path / "label-6way.npz"
    corpus = {"a": {"emo": " Neutral ", "val": 0}, "b": {"emo": "fear", "val": 1}}
    np.savez_compressed(path, test3_corpus=np.array(corpus, dtype=object))
    with pytest.raises(UserError, match=r"\[test3_corpus\]\['b'\]: unknown label 'fear'"):
        read_mer2023_npz(path)
    with pytest.raises(UserError, match="no corpus 'train_corpus' .found test3_corpus"):
        read_mer2023_npz(path, "train")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="re-download label-6way.npz"):
        read_mer2023_npz(tmp_path / "junk.npz")


def test_mer2023_csv(tmp_path):
    path = tmp_path / "train-label.csv"
    path.write_text("name, discrete, valence\nsample_00000001, Happy ,1.5\nsample_00000002,worried,-0.25\n")
    assert read_mer2023_csv(path) == MER
    write_mer2023_csv(tmp_path / "o.csv", MER)
    assert read_mer2023_csv(tmp_path / "o.csv") == MER
    path.write_text("name,discrete,valence\nsample_1,joy,1\n")
    with pytest.raises(UserError, match=r"train-label\.csv:2: unknown label 'joy'; use one of neutral"):
        read_mer2023_csv(path)


def test_mer2024_csv(tmp_path):
    samples = [Sample(s.name, s.label) for s in MER]
    write_mer2024_csv(tmp_path / "label-disdim.csv", samples)
    assert (tmp_path / "label-disdim.csv").read_text().splitlines()[0] == "name,discrete"
    assert read_mer2024_csv(tmp_path / "label-disdim.csv") == samples


def test_emer(tmp_path):
    path = tmp_path / "emer.csv"
    path.write_text(
        'names,emotions,subtitles,reasons\nsample_1,happy,"Hi, you.",She smiles.\nsample_2,sad,,x\n'
    )
    assert read_emer_csv(path) == [
        {"names": "sample_1", "emotions": "happy", "subtitles": "Hi, you.", "reasons": "She smiles."},
        {"names": "sample_2", "emotions": "sad", "subtitles": "", "reasons": "x"},
    ]
    write_emer_predictions(tmp_path / "pred.csv", {"sample_1": "Smiling, \"warm\" voice."})
    assert (tmp_path / "pred.csv").read_text() == 'names,chi_reasons\nsample_1,"Smiling, ""warm"" voice."\n'


def test_writers_leave_no_temporary_files(tmp_path):
    write_merr_txt(tmp_path / "a.txt", [Sample("a", "happy", n_frames=1)])
    write_mer2023_npz(tmp_path / "b.npz", {"test3": MER})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.npz"]
