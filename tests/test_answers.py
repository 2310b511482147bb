import pytest

from emotion_llama.answers import ORIGINAL_FALLBACK, parse_emotion, parse_like_original
from emotion_llama.labels import DFEW_LABELS, MER_LABELS, MERR_LABELS


@pytest.mark.parametrize(
    "text, expected",
    [
        ("happy", "happy"),
        ("  Sad.  ", "sad"),
        ("The emotion is: ANGRY!", "angry"),
        ("She looks joyful and glad.", "happy"),
        ("Sadness.", "sad"),
        ("He seems anxious", "worried"),
        ("She appears skeptical", "doubt"),
        ("contemptuous", "contempt"),
        ("The person is calm", "neutral"),
        ("He is furious", "angry"),
        ("astonished", "surprise"),
        ("scared", "fear"),
        ("unhappy", "sad"),
        ("At first happy, but then sad", "sad"),  # the last mentioned label wins
        ("The label is surprise; his voice sounds nervous", "surprise"),  # exact label beats a synonym
        ("I cannot tell.", None),
        ("", None),
    ],
)
def test_parse_emotion(text, expected):
    assert parse_emotion(text, MERR_LABELS) == expected


def test_synonyms_only_map_into_the_label_set():
    assert parse_emotion("disgusted", DFEW_LABELS) == "disgust"
    assert parse_emotion("disgusted", MER_LABELS) is None
    assert parse_emotion("anxious", DFEW_LABELS) is None
    assert parse_emotion("He is anxious but happy", DFEW_LABELS) == "happy"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("happy", "happy"),
        ("happy</s>", "happy"),
        ("The emotion is Sad.", "sad"),
        ("sad, not happy", "happy"),
        ("He looks joyful", ORIGINAL_FALLBACK),  # a synonym is not a label: forced to neutral
        ("happy but unclear", ORIGINAL_FALLBACK),
        ("", ORIGINAL_FALLBACK),
    ],
)
def test_parse_like_original(text, expected):
    assert parse_like_original(text, MERR_LABELS) == expected
