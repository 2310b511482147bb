"""The MELD and IEMOCAP readers on small files in the real layouts, and the synthetic MELD-layout set."""

from collections import Counter

import pytest

from emotion_llama.datasets.dialogue import Utterance
from emotion_llama.datasets.iemocap import read_iemocap
from emotion_llama.datasets.meld import meld_clip_path, read_meld, read_meld_split, repair_text
from emotion_llama.datasets.synthetic.utterances import write_synthetic_meld
from emotion_llama.errors import UserError
from emotion_llama.imagination.mapper import ParseMapper
from emotion_llama.labels import IEMOCAP4_LABELS, IEMOCAP6_LABELS, MELD_LABELS

HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"


def _meld(tmp_path, body: str, name="test_sent_emo.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes((HEADER + body).encode(encoding))
    return path


# ---------------------------------------------------------------------------------------------- MELD


def test_meld_reads_quoted_fields_times_and_context(tmp_path):
    path = _meld(tmp_path, (
        '1,"Oh, my God, you guys, it\'s here!",Monica,Joy,positive,0,0,3,19,"00:14:38,127","00:14:40,378"\n'
        "2,What?,Chandler,surprise,negative,0,1,3,19,\"00:14:41,000\",\"00:14:41,500\"\n"
        '3,"Okay, fine.",Ross,Neutral,neutral,0,2,3,19,"00:14:42,010","00:14:43,700"\n'
        '4,"I said ""no"", Joey.",Rachel,anger,negative,7,0,1,2,"00:01:00,5","00:01:02,250"\n'
    ))
    utts = read_meld(path)
    assert [u.id for u in utts] == ["dia0_utt0", "dia0_utt1", "dia0_utt2", "dia7_utt0"]
    first, _, third, fourth = utts
    assert first.text == "Oh, my God, you guys, it's here!"
    assert (first.speaker, first.label, first.sentiment, first.dialogue, first.index) == (
        "Monica", "joy", "positive", "dia0", 0)
    assert first.start == pytest.approx(14 * 60 + 38.127) and first.end == pytest.approx(14 * 60 + 40.378)
    assert fourth.text == 'I said "no", Joey.' and fourth.start == pytest.approx(60.5)
    assert third.context == (("Monica", "Oh, my God, you guys, it's here!"), ("Chandler", "What?"))
    assert third.context_text(1) == "Chandler: What?" and fourth.context == ()
    assert set(u.label for u in utts) <= set(MELD_LABELS)


def test_meld_context_follows_utterance_order_not_file_order(tmp_path):
    path = _meld(tmp_path, "1,second,B,neutral,neutral,4,1,1,1,,\n2,first,A,neutral,neutral,4,0,1,1,,\n")
    second, first = read_meld(path)
    assert second.context == (("A", "first"),) and first.context == ()
    assert second.start is None and second.end is None


def test_meld_repairs_mis_encoded_punctuation_and_keeps_other_text(tmp_path):
    # U+0092 is what MELD's utf-8 files hold for a Windows right quote; "â\x80\x99" is utf-8 read as Latin-1.
    path = _meld(tmp_path, (
        '1,"You\x92re late.",Joey,anger,negative,1,0,1,1,,\n'
        '2,"It\xe2\x80\x99s the caf\xe9, right?",Ross,neutral,neutral,1,1,1,1,,\n'
        '3,"Voil\xe0, na\xefve \u2014 fine \u2019",Phoebe,joy,positive,1,2,1,1,,\n'
    ))
    texts = [u.text for u in read_meld(path)]
    assert texts[0] == "You\u2019re late."
    # A field mixing mojibake with a real accent: the mis-decoded sequence is undone, the accent kept.
    assert texts[1] == "It\u2019s the caf\u00e9, right?"
    assert texts[2] == "Voil\u00e0, na\u00efve \u2014 fine \u2019"
    assert repair_text("It\u00e2\u0080\u0099s here") == "It\u2019s here"  # the whole field was utf-8 as Latin-1
    assert repair_text("caf\u00e9 na\u00efve") == "caf\u00e9 na\u00efve"


def test_meld_reads_a_windows_1252_file(tmp_path):
    path = tmp_path / "dev_sent_emo.csv"
    path.write_bytes((HEADER + '1,"We\x92re at the caf\xe9.",Rachel,joy,positive,2,0,1,1,,\n').encode("latin-1"))
    assert read_meld_split(tmp_path, "dev")[0].text == "We\u2019re at the caf\u00e9."


@pytest.mark.parametrize("row, message", [
    ("1,Hi,Ross,happy,positive,0,0,1,1,,\n", "unknown Emotion 'happy'"),
    ("1,Hi,Ross,joy,positive,0,x,1,1,,\n", "Utterance_ID should be a whole number"),
    ("1,Hi,Ross,joy,positive,0,0,1,1,00:01,\n", "is not HH:MM:SS,mmm"),
    ("1,Hi, there,Ross,joy,positive,0,0,1,1,,\n", "expected 11 fields"),
    ("1,Hi,Ross,joy,glad,0,0,1,1,,\n", "unknown Sentiment"),
    ("1,Hi,Ross,joy,positive,0,0,1,1,,\n2,Yo,Ross,joy,positive,0,0,1,1,,\n", "already on line 2"),
])
def test_meld_bad_rows_are_one_line_errors_naming_file_and_line(tmp_path, row, message):
    path = _meld(tmp_path, row)
    with pytest.raises(UserError) as e:
        read_meld(path)
    text = str(e.value)
    assert message in text and "\n" not in text
    assert f"{path}:{2 + row.count(chr(10)) - 1}" in text


def test_meld_missing_file_and_missing_columns(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_meld(tmp_path / "nope.csv")
    (tmp_path / "bad.csv").write_text("Utterance,Speaker\nHi,Ross\n")
    with pytest.raises(UserError, match="missing column.*Emotion"):
        read_meld(tmp_path / "bad.csv")
    with pytest.raises(UserError, match="not a MELD split"):
        read_meld_split(tmp_path, "val")


def test_meld_clip_path(tmp_path):
    (tmp_path / "dia3_utt1.mp4").write_bytes(b"\0")
    utt = Utterance("dia3_utt1", "Hi", "Ross", "joy", "dia3", 1)
    assert meld_clip_path(tmp_path, utt) == tmp_path / "dia3_utt1.mp4"
    assert meld_clip_path(tmp_path, "dia3_utt2") is None


# ---------------------------------------------------------------------------------------------- IEMOCAP

EVAL_01 = """% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]

[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]
C-E2:\tNeutral;\t()
A-E3:\tval 3; act 2; dom  2;\t()

[10.0100 - 11.3925]\tSes01F_impro01_M000\texc\t[3.5000, 3.5000, 3.0000]
C-E1:\tExcited;\t()

[14.8872 - 18.0175]\tSes01F_impro01_F001\tfru\t[2.0000, 3.0000, 3.0000]

[19.2900 - 20.7875]\tSes01F_impro01_M001\txxx\t[2.5000, 3.0000, 2.5000]

[21.0000 - 23.5000]\tSes01F_impro01_F002\tang\t[1.5000, 4.0000, 4.0000]
"""
TRANS_01 = """Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.
Ses01F_impro01_M000 [010.0100-011.3925]: Do you have your forms?
M: breathing
Ses01F_impro01_F001 [014.8872-018.0175]: Yeah, I already filled them out.
Ses01F_impro01_MXX0 [018.5000-019.0000]: Hmm.
Ses01F_impro01_F002 [021.0000-023.5000]: This is ridiculous!
Ses01F_impro01_M001 [019.2900-020.7875]: Let me see them.
"""
EVAL_02 = "[1.0 - 2.0]\tSes02M_script01_1_F000\tsad\t[2.0, 2.0, 2.0]\n[3.0 - 4.0]\tSes02M_script01_1_M000\thap\t[4.0, 3.0, 3.0]\n"
TRANS_02 = "Ses02M_script01_1_F000 [001.0000-002.0000]: I lost it.\nSes02M_script01_1_M000 [003.0000-004.0000]: Great!\n"


def _iemocap(root, files=((1, "Ses01F_impro01", EVAL_01, TRANS_01), (2, "Ses02M_script01_1", EVAL_02, TRANS_02))):
    for session, name, evaluation, transcript in files:
        dialog = root / f"Session{session}" / "dialog"
        (dialog / "EmoEvaluation" / "Categorical").mkdir(parents=True, exist_ok=True)  # ignored subfolders
        (dialog / "transcriptions").mkdir(parents=True, exist_ok=True)
        (dialog / "EmoEvaluation" / f"{name}.txt").write_text(evaluation)
        (dialog / "transcriptions" / f"{name}.txt").write_text(transcript)
    return root


def test_iemocap_four_classes_merge_excited_and_count_dropped(tmp_path):
    root = _iemocap(tmp_path)
    dropped = Counter()
    utts = read_iemocap(root, classes=4, sessions=(1, 2), dropped=dropped)
    assert [(u.id, u.label) for u in utts] == [
        ("Ses01F_impro01_F000", "neu"), ("Ses01F_impro01_M000", "hap"), ("Ses01F_impro01_F002", "ang"),
        ("Ses02M_script01_1_F000", "sad"), ("Ses02M_script01_1_M000", "hap"),
    ]
    assert dropped == Counter({"fru": 1, "xxx": 1})
    assert {u.label for u in utts} <= set(IEMOCAP4_LABELS)
    angry = utts[2]
    assert (angry.text, angry.speaker, angry.dialogue) == ("This is ridiculous!", "Ses01_F", "Ses01F_impro01")
    assert (angry.start, angry.end) == (21.0, 23.5)
    # Context: every earlier turn in time, dropped and unlabelled ones included; "M: breathing" is no turn.
    assert angry.context == (
        ("Ses01_F", "Excuse me."), ("Ses01_M", "Do you have your forms?"),
        ("Ses01_F", "Yeah, I already filled them out."), ("Ses01_M", "Hmm."), ("Ses01_M", "Let me see them."),
    )
    assert angry.index == 5 and utts[3].dialogue == "Ses02M_script01_1" and utts[3].context == ()


def test_iemocap_six_classes_and_session_choice(tmp_path):
    root = _iemocap(tmp_path)
    dropped = Counter()
    utts = read_iemocap(root, classes=6, sessions=[1], dropped=dropped)
    assert [u.label for u in utts] == ["neu", "exc", "fru", "ang"]
    assert {u.label for u in utts} <= set(IEMOCAP6_LABELS) and dropped == Counter({"xxx": 1})
    assert [u.label for u in read_iemocap(root, classes=6, sessions=(2,))] == ["sad", "hap"]


@pytest.mark.parametrize("evaluation, message", [
    ("[6.29 - 8.23]\tSes01F_impro01_F000\tneu\n", "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt:1: expected"),
    ("\n[6.29 - 8.23]\tSes01F_impro01_F000\tjoy\t[1, 2, 3]\n", "Ses01F_impro01.txt:2: unknown emotion code 'joy'"),
    ("[6.29 - 8.23]\tSes01F_impro01_F009\tneu\t[1, 2, 3]\n", "Ses01F_impro01.txt:1: turn Ses01F_impro01_F009 has no line"),
])
def test_iemocap_bad_evaluation_lines(tmp_path, evaluation, message):
    root = _iemocap(tmp_path, [(1, "Ses01F_impro01", evaluation, TRANS_01)])
    with pytest.raises(UserError) as e:
        read_iemocap(root, sessions=[1])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_iemocap_bad_transcription_line_and_setup_errors(tmp_path):
    root = _iemocap(tmp_path, [(1, "Ses01F_impro01", EVAL_01, TRANS_01 + "Ses01F_impro01_F003 6.0-7.0 Hi\n")])
    with pytest.raises(UserError, match=r"transcriptions/Ses01F_impro01.txt:8: expected"):
        read_iemocap(root, sessions=[1])
    with pytest.raises(UserError, match="classes=4 or classes=6"):
        read_iemocap(root, classes=7)
    with pytest.raises(UserError, match="Session3/dialog/EmoEvaluation not found"):
        read_iemocap(root, sessions=[3])
    with pytest.raises(UserError, match="among 1..5"):
        read_iemocap(root, sessions=[6])
    (root / "Session1" / "dialog" / "transcriptions" / "Ses01F_impro01.txt").unlink()
    with pytest.raises(UserError, match="needs the transcription"):
        read_iemocap(root, sessions=[1])


# ---------------------------------------------------------------------------------------------- synthetic


def test_synthetic_meld_layout_labels_and_determinism(tmp_path):
    paths = write_synthetic_meld(tmp_path / "a", per_label=4, seed=3)
    assert sorted(p.name for p in paths.values()) == ["dev_sent_emo.csv", "test_sent_emo.csv", "train_sent_emo.csv"]
    again = write_synthetic_meld(tmp_path / "b", per_label=4, seed=3, splits=("test",))
    other = write_synthetic_meld(tmp_path / "c", per_label=4, seed=4, splits=("test",))
    assert again["test"].read_bytes() == paths["test"].read_bytes()
    assert other["test"].read_bytes() != paths["test"].read_bytes()
    assert paths["train"].read_bytes() != paths["test"].read_bytes()
    assert paths["test"].read_text().splitlines()[0] == HEADER.strip()
    utts = read_meld(paths["test"])
    assert Counter(u.label for u in utts) == {label: 4 for label in MELD_LABELS}
    dialogues = Counter(u.dialogue for u in utts)
    assert all(3 <= n <= 6 for n in list(dialogues.values())[:-1]) and "dia0" in dialogues
    assert all(len({u.speaker for u in utts if u.dialogue == d}) >= 2 for d in dialogues if dialogues[d] >= 2)
    assert any(u.context for u in utts) and all(u.start < u.end for u in utts)
    assert any("," in u.text for u in utts)  # quoted fields survive the round trip


def test_synthetic_meld_wording_names_the_emotion(tmp_path):
    utts = read_meld(write_synthetic_meld(tmp_path, per_label=15, seed=0, splits=("test",))["test"])
    parse = ParseMapper(MELD_LABELS)
    for u in utts:  # the answer parser reads each emotional utterance's label; neutral ones name none
        assert parse(u.text).label == (None if u.label == "neutral" else u.label), u.text
