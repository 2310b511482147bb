"""MER-UniBench's open-vocabulary metrics: wheel normalisation, set metric, hit rate, sentiment, and the scorer."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from openpyxl import Workbook, load_workbook

from emotion_llama.commands.score_openset import main
from emotion_llama.datasets.synthetic.wheel import WHEELS, wheel_rows, write_wheel_folder
from emotion_llama.datasets.unibench import parse_openset
from emotion_llama.errors import UserError
from emotion_llama.evaluation.openset import (
    EmotionWheels,
    fill_down,
    hit_rate,
    read_openset,
    sentiment_scores,
    sentiment_value,
    set_scores,
)

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("restore_logging")

# Two small wheels; no format/synonym tables, so each word stands for itself.
#   wheel A level 1: pos {happy, cheerful}, neg {angry, worried, tense}; level 2: joy, anger, fear, tension
#   wheel B level 1: happy {happy, cheerful}, angry {angry, tense}, fearful {worried}
TWO_WHEELS = EmotionWheels(
    forms={}, parents={},
    wheels=[
        [("pos", "joy", "happy"), ("pos", "joy", "cheerful"), ("neg", "anger", "angry"),
         ("neg", "fear", "worried"), ("neg", "tension", "tense")],
        [("happy", "joy", "happy"), ("happy", "joy", "cheerful"), ("angry", "rage", "angry"),
         ("angry", "rage", "tense"), ("fearful", "anxiety", "worried")],
    ],
    names=["A", "B"],
)
GOLD_SETS = {"s1": ["worried", "tense"], "s2": ["happy", "angry"], "s3": ["neutral"], "s4": ["happy"]}
PRED_SETS = {"s1": ["worried", "happy"], "s2": ["cheerful"], "s3": ["happy"], "s9": ["angry"]}  # s4 missing


@pytest.fixture(scope="module")
def wheel_dir(tmp_path_factory):
    return write_wheel_folder(tmp_path_factory.mktemp("wheel") / "wheels")


def exits(code, fn, *args):
    with pytest.raises(SystemExit) as exit_:
        fn(*args)
    assert exit_.value.code == code


def one_line_error(capsys, argv):
    exits(2, main, argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: ")
    return line


def write_csv(path, rows, header=("name", "openset")):
    lines = [",".join(header)] + [",".join(f'"{c}"' for c in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("text, words", [
    ("[worried, tense]", ("worried", "tense")),
    (" [ Happy ,  SAD ] ", ("happy", "sad")),
    ("[]", ()), ("", ()), (None, ()), (float("nan"), ()),
    ("happy", ("happy",)), ("['a', \"b\"]", ("a", "b")), ("[happy,, ]", ("happy",)), ("[sad, Sad]", ("sad",)),
])
def test_parse_openset(text, words):
    # Predictions read an empty set as no words; a label file reads it as OV-MERD+'s [neutral].
    assert parse_openset(text, empty=()) == words
    assert parse_openset(text) == (words or ("neutral",))


# ---------------------------------------------------------------------------------------------- set metric


def test_set_metric_by_hand():
    # s3's true set (neutral) maps to nothing: left out; s4 has no prediction: P = R = 0; s9 is not in gold.
    # Wheel A, level 1:
    #   s1 G={neg}        P={neg, pos}  -> p=1/2 r=1/1
    #   s2 G={pos, neg}   P={pos}       -> p=1/1 r=1/2
    #   s4 G={pos}        P={}          -> p=0   r=0
    #   P=(1/2+1+0)/3=1/2  R=(1+1/2+0)/3=1/2  F=1/2
    # Wheel B, level 1:
    #   s1 G={fearful, angry}  P={fearful, happy} -> p=1/2 r=1/2
    #   s2 G={happy, angry}    P={happy}          -> p=1   r=1/2
    #   s4 -> 0, 0
    #   P=1/2  R=(1/2+1/2)/3=1/3  F=2*(1/2)(1/3)/(1/2+1/3)=2/5
    # Means over the wheels: F=(1/2+2/5)/2=9/20 (not 2PR/(P+R) of the mean P and R, 5/11), P=1/2, R=5/12.
    scores = set_scores(GOLD_SETS, PRED_SETS, TWO_WHEELS)
    assert scores["per_wheel"]["A"] == pytest.approx({"fscore": 0.5, "precision": 0.5, "recall": 0.5, "scored": 3})
    assert scores["per_wheel"]["B"] == pytest.approx({"fscore": 0.4, "precision": 0.5, "recall": 1 / 3,
                                                      "scored": 3})
    assert scores["fscore"] == pytest.approx(9 / 20)
    assert scores["precision"] == pytest.approx(0.5)
    assert scores["recall"] == pytest.approx(5 / 12)


def test_set_metric_at_level_2():
    # Wheel A, level 2: s1 G={fear, tension} P={fear, joy} -> p=1/2 r=1/2; s2 G={joy, anger} P={joy} -> 1, 1/2;
    #   s4 -> 0, 0: P=1/2 R=1/3 F=2/5. Wheel B, level 2: s1 G={anxiety, rage} P={anxiety, joy} -> 1/2, 1/2;
    #   s2 G={joy, rage} P={joy} -> 1, 1/2; s4 -> 0, 0: P=1/2 R=1/3 F=2/5.
    scores = set_scores(GOLD_SETS, PRED_SETS, TWO_WHEELS, level=2)
    assert scores["fscore"] == pytest.approx(0.4)
    assert scores["precision"] == pytest.approx(0.5)
    assert scores["recall"] == pytest.approx(1 / 3)
    # A level-1 word has no level-2 ancestor: it stands for itself.
    assert TWO_WHEELS.sector("pos", 0, level=2) == "pos" and TWO_WHEELS.sector("pos", 0, level=1) == "pos"
    with pytest.raises(ValueError, match="level=3"):
        TWO_WHEELS.sector("happy", 0, level=3)


def test_a_perfect_and_an_empty_prediction():
    scores = set_scores(GOLD_SETS, GOLD_SETS, TWO_WHEELS)
    assert (scores["fscore"], scores["precision"], scores["recall"]) == (1.0, 1.0, 1.0)
    scores = set_scores(GOLD_SETS, {}, TWO_WHEELS)
    assert (scores["fscore"], scores["precision"], scores["recall"]) == (0.0, 0.0, 0.0)
    with pytest.raises(UserError, match="maps onto any emotion wheel"):
        set_scores({"x": ["neutral"]}, {"x": ["happy"]}, TWO_WHEELS)


# ---------------------------------------------------------------------------------------------- hit rate


def test_hit_rate_by_hand():
    gold = {"s1": "worried", "s2": "happy", "s3": "neutral", "s4": "angry"}
    pred = {"s1": ["tense"], "s2": ["cheerful", "angry"], "s3": ["happy"]}  # s4 missing: a miss
    # s3 (neutral) maps to nothing: left out. Wheel A: s1 neg in {neg} 1; s2 pos in {pos, neg} 1; s4 0 -> 2/3.
    # Wheel B: s1 fearful in {angry} 0; s2 happy in {happy, angry} 1; s4 0 -> 1/3. Mean 1/2.
    scores = hit_rate(gold, pred, TWO_WHEELS)
    assert scores["per_wheel"]["A"] == pytest.approx({"hit": 2 / 3, "scored": 3})
    assert scores["per_wheel"]["B"] == pytest.approx({"hit": 1 / 3, "scored": 3})
    assert scores["hit"] == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------- sentiment


def test_sentiment_by_hand():
    values = [3.0, 0.4, 1.2, -0.6, -2.0, 0.0]
    answers = ["positive", "Positive ", "positive", "positive", "neutral", "negative"]
    # The last is dropped (true 0). truth > 0: T T T F F; answers > 0: T T T T F (neutral -> 0 -> F).
    # Accuracy 4/5. Class T (support 3): TP 3, FP 1, FN 0 -> P 3/4, R 1, F1 6/7.
    # Class F (support 2): TP 1, FP 0, FN 1 -> P 1, R 1/2, F1 2/3. Weighted (3*6/7 + 2*2/3)/5 = 82/105.
    scores = sentiment_scores(values, answers)
    assert scores == pytest.approx({"weighted_f1": 82 / 105, "accuracy": 0.8, "samples": 5})
    assert [sentiment_value(a) for a in ("positive", " NEGATIVE", "neutral", "[positive]", None)] == [1, -1, 0, 0, 0]
    with pytest.raises(UserError, match="non-zero"):
        sentiment_scores([0.0], ["positive"])


# ---------------------------------------------------------------------------------------------- wheel files


def test_blank_cells_are_filled_from_above(wheel_dir):
    sheet = load_workbook(wheel_dir / "wheel1.xlsx", read_only=True).worksheets[0]
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0] == ("level1", "level2", "level3")
    assert rows[2] == (None, None, "happy")  # written only where a level changes
    wheels = EmotionWheels.load(wheel_dir)
    assert [list(rows) for rows in wheels.wheels] == [wheel_rows(w) for w in WHEELS]
    assert fill_down([("a", "b", "c"), (None, "", "d"), (None, None, None), ("e", None, "f")]) == [
        ("a", "b", "c"), ("a", "b", "d"), ("e", "b", "f")]
    with pytest.raises(UserError, match="row 1 has a blank level1"):
        fill_down([(None, "b", "c")], "w.xlsx")


def test_surface_form_base_synonym_chain(wheel_dir):
    wheels = EmotionWheels.load(wheel_dir)
    assert wheels.names == ("wheel1", "wheel2", "wheel3", "wheel4", "wheel5")
    # happily -> happy (format.csv) -> happy (synonym.xlsx) -> sector happy / joy.
    assert [wheels.sector(" Happily", w) for w in range(5)] == ["happy", "joy", "happy", "happy", "joy"]
    # upset has two base words, sad and angry: candidates sorted, angry comes first and is in every wheel.
    assert wheels.candidates("upset") == ["angry", "sad"]
    assert [wheels.sector("upset", w) for w in range(5)] == ["mad", "anger", "angry", "angry", "anger"]
    # suspicious -> parents suspicious and doubt: doubt first (wheel1: surprised, though suspicious is disgusted);
    # wheel2 has neither; wheel4 only doubt.
    assert wheels.candidates("suspicious") == ["doubt", "suspicious"]
    assert [wheels.sector("suspicious", w) for w in range(5)] == ["surprised", None, "surprised", "disgusted",
                                                                  "surprise"]
    # terrified -> parents terrified, scared: scared first; in wheel1 it is a level-1 sector itself.
    assert wheels.sector("terrified", 0) == "scared" and wheels.sector("frightened", 1) == "fear"
    assert wheels.sector("nervousness", 0, level=2) == "anxious"


def test_words_found_nowhere_are_dropped(wheel_dir):
    wheels = EmotionWheels.load(wheel_dir)
    assert all(wheels.sector("neutral", w) is None for w in range(5))
    assert wheels.sectors(["neutral", "xyzzy", "Joy"], 0) == {"happy"}


def test_bad_wheel_folders_are_one_line_naming_the_file(tmp_path, wheel_dir):
    with pytest.raises(UserError, match=r"paths.emotion_wheel=\S*nowhere not found: .*your own copy"):
        EmotionWheels.load(tmp_path / "nowhere")

    def broken(name, write):
        folder = write_wheel_folder(tmp_path / name)
        write(folder)
        with pytest.raises(UserError) as err:
            EmotionWheels.load(folder)
        message = str(err.value)
        assert "\n" not in message and "paths.emotion_wheel=DIR" in message
        return message

    assert "wheel3.xlsx not found" in broken("gone", lambda f: (f / "wheel3.xlsx").unlink())
    message = broken("nocol", lambda f: (f / "format.csv").write_text("name,base\nhappy,happy\n"))
    assert "format.csv: missing column(s) format" in message
    assert "wheel1.xlsx: not a readable .xlsx" in broken("corrupt", lambda f: (f / "wheel1.xlsx").write_text("no"))

    def unpaired(folder):
        book = Workbook()
        book.active.append(["word_run1", "synonym_run1", "word_run2"])
        book.active.append(["happy", "happy", "sad"])
        book.save(folder / "synonym.xlsx")

    assert "synonym.xlsx: no column synonym_run2" in broken("unpaired", unpaired)

    def no_level3(folder):
        book = Workbook()
        book.active.append(["level1", "level2"])
        book.active.append(["happy", "joy"])
        book.save(folder / "wheel5.xlsx")

    assert "wheel5.xlsx: missing column(s) level3" in broken("nolevel3", no_level3)

    def blank_first(folder):
        book = Workbook()
        book.active.append(["level1", "level2", "level3"])
        book.active.append([None, "joy", "happy"])
        book.save(folder / "wheel2.xlsx")

    assert "wheel2.xlsx: row 2 has a blank level1 with nothing above" in broken("blank", blank_first)


# ---------------------------------------------------------------------------------------------- the scorer


GOLD_ROWS = [("a", "[worried, tense]"), ("b", "[happy]"), ("c", "[neutral]"), ("d", "[]")]
PRED_ROWS = [("a", "[anxious, nervous]"), ("b", "[joyful, sad]"), ("e", "[happy]")]


def scorer_json(capsys, argv, warning=None):
    """The one JSON line the scorer prints (and, when given, a warning it must show on stderr)."""
    import json

    assert main(argv) == 0
    captured = capsys.readouterr()
    out = captured.out.strip().splitlines()
    assert len(out) == 1
    if warning is not None:
        assert f"warning: {warning}" in captured.err
    return json.loads(out[0])


def test_scorer_set_metric_end_to_end(tmp_path, wheel_dir, capsys):
    gold = write_csv(tmp_path / "gold.csv", GOLD_ROWS)
    pred = write_csv(tmp_path / "pred.csv", PRED_ROWS)
    # c (neutral) and d (empty) map to nothing; c, d are missing from pred; e is ignored. By hand:
    #   wheel1: a G={scared, mad} P={scared} (anxious: level 2 under scared; nervous: under scared) p=1 r=1/2;
    #           b G={happy} P={happy, sad} p=1/2 r=1 -> P=3/4 R=3/4 F=3/4; wheel2 and wheel5 the same.
    #   wheel3, wheel4: tense is fearful there: a p=1 r=1; b p=1/2 r=1 -> P=3/4 R=1 F=6/7.
    #   means: F=(3*3/4 + 2*6/7)/5=111/140, P=3/4, R=(3*3/4+2)/5=17/20.
    result = scorer_json(capsys, [f"gold={gold}", f"pred={pred}", f"paths.emotion_wheel={wheel_dir}"],
                         warning="2 of the 4 gold samples are missing from pred")
    assert result["fscore"] == pytest.approx(111 / 140)
    assert result["precision"] == pytest.approx(0.75) and result["recall"] == pytest.approx(0.85)
    assert result["per_wheel"]["wheel3"]["fscore"] == pytest.approx(6 / 7)
    assert {k: result[k] for k in ("metric", "level", "samples", "scored", "missing_from_pred", "ignored_pred")} \
        == {"metric": "set", "level": 1, "samples": 4, "scored": 2, "missing_from_pred": 2, "ignored_pred": 1}
    level2 = scorer_json(capsys, [f"gold={gold}", f"pred={pred}", f"paths.emotion_wheel={wheel_dir}", "level=2"])
    expected = set_scores({n: parse_openset(s) for n, s in GOLD_ROWS},
                          {n: parse_openset(s, empty=()) for n, s in PRED_ROWS},
                          EmotionWheels.load(wheel_dir), level=2)
    assert level2["fscore"] == pytest.approx(expected["fscore"]) and level2["level"] == 2


@pytest.mark.parametrize("shape", ["arrays", "pickled_lists"])
def test_scorer_reads_the_original_openset_npz(tmp_path, wheel_dir, capsys, shape):
    gold = write_csv(tmp_path / "gold.csv", GOLD_ROWS)
    names = [n for n, _ in PRED_ROWS]
    items = np.empty(3, dtype=object)  # the answers' texts and, for one, a list of words: pickled by numpy
    items[:] = ["[anxious, nervous]", ["Joyful", "sad"], "[happy]"]
    if shape == "arrays":
        arrays = {"filenames": np.array(names), "fileitems": items}
    else:
        arrays = {k: np.empty((), dtype=object) for k in ("filenames", "fileitems")}
        arrays["filenames"][()] = names
        arrays["fileitems"][()] = list(items)
    np.savez_compressed(tmp_path / "ovmerd-openset.npz", **arrays)
    assert read_openset(tmp_path / "ovmerd-openset.npz") == {"a": ["anxious", "nervous"], "b": ["joyful", "sad"],
                                                              "e": ["happy"]}
    result = scorer_json(capsys, [f"gold={gold}", f"pred={tmp_path / 'ovmerd-openset.npz'}",
                                  f"paths.emotion_wheel={wheel_dir}"])
    assert result["fscore"] == pytest.approx(111 / 140) and result["missing_from_pred"] == 2


def test_scorer_hit_rate(tmp_path, wheel_dir, capsys):
    gold = write_csv(tmp_path / "gold.csv", [("a", "worried"), ("b", "happy"), ("c", "neutral")],
                     header=("name", "discrete"))
    pred = write_csv(tmp_path / "pred.csv", [("a", "[tense]"), ("b", "[sad]"), ("c", "[happy]")])
    # c maps to nothing. a: worried vs tense: same sector only in wheel3 and wheel4 (fearful); b: happy vs sad:
    # never. Per wheel: 0, 0, 1/2, 1/2, 0 -> mean 1/5.
    result = scorer_json(capsys, [f"gold={gold}", f"pred={pred}", f"paths.emotion_wheel={wheel_dir}", "metric=hit"])
    assert result["hit"] == pytest.approx(0.2)
    assert [result["per_wheel"][f"wheel{k}"]["hit"] for k in range(1, 6)] == pytest.approx([0, 0, 0.5, 0.5, 0])
    assert result["scored"] == 2 and "fscore" not in result


def test_scorer_bad_input_is_one_line(tmp_path, wheel_dir, capsys):
    gold = write_csv(tmp_path / "gold.csv", GOLD_ROWS)
    pred = write_csv(tmp_path / "pred.csv", PRED_ROWS)
    wheel = f"paths.emotion_wheel={wheel_dir}"
    assert "gold=" in one_line_error(capsys, [f"gold={tmp_path / 'none.csv'}", f"pred={pred}", wheel])
    assert "paths.emotion_wheel=null" in one_line_error(capsys, [f"gold={gold}", f"pred={pred}"])
    assert "missing pred=..." in one_line_error(capsys, [f"gold={gold}", wheel])
    assert "metric=f1: use one of set, hit" in one_line_error(capsys, [f"gold={gold}", f"pred={pred}", wheel,
                                                                      "metric=f1"])
    no_column = write_csv(tmp_path / "words.csv", PRED_ROWS, header=("name", "words"))
    assert "missing column(s) openset" in one_line_error(capsys, [f"gold={gold}", f"pred={no_column}", wheel])
    others = write_csv(tmp_path / "others.csv", [("x", "[happy]")])
    assert "none of the 4 sample names" in one_line_error(capsys, [f"gold={gold}", f"pred={others}", wheel])
    twice = write_csv(tmp_path / "twice.csv", [("a", "[happy]"), ("a", "[sad]")])
    assert "'a' appears twice" in one_line_error(capsys, [f"gold={twice}", f"pred={pred}", wheel])
    assert "the hit rate takes one label word" in one_line_error(capsys, [f"gold={gold}", f"pred={pred}", wheel,
                                                                          "metric=hit"])
    np.savez(tmp_path / "bad-openset.npz", filenames=np.array(["a"]))
    assert "no fileitems" in one_line_error(capsys, [f"gold={gold}", f"pred={tmp_path / 'bad-openset.npz'}", wheel])
    (tmp_path / "junk-openset.npz").write_text("not a zip")
    assert "corrupt" in one_line_error(capsys, [f"gold={gold}", f"pred={tmp_path / 'junk-openset.npz'}", wheel])


def test_help_and_torch_free_import(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ") and "gold=" in out and "paths.emotion_wheel=DIR" in out
    code = ("import sys; import emotion_llama.evaluation.openset, emotion_llama.commands.score_openset; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
