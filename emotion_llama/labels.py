"""Label sets of the datasets the model is trained and evaluated on."""

from __future__ import annotations

MERR_LABELS: tuple[str, ...] = (
    "neutral", "angry", "happy", "sad", "worried", "surprise", "fear", "contempt", "doubt",
)
MER_LABELS: tuple[str, ...] = ("neutral", "angry", "happy", "sad", "worried", "surprise")
# DFEW's official split files number these 1..7 in this order.
DFEW_LABELS: tuple[str, ...] = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")

# EmoSet's eight labels in its index order 0-7 (FI uses the same eight, Emotion6 six of them plus neutral).
EMOSET_LABELS: tuple[str, ...] = (
    "amusement", "awe", "contentment", "excitement", "anger", "disgust", "fear", "sadness",
)
EMOTION6_LABELS: tuple[str, ...] = ("anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral")
# MELD's seven labels; IEMOCAP's four-class set (exc merged into hap) and its six-class set.
MELD_LABELS: tuple[str, ...] = ("neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust")
IEMOCAP4_LABELS: tuple[str, ...] = ("neu", "hap", "sad", "ang")
IEMOCAP6_LABELS: tuple[str, ...] = ("hap", "sad", "neu", "ang", "exc", "fru")

LABEL_SETS: dict[str, tuple[str, ...]] = {
    "merr": MERR_LABELS,
    "mer2023": MER_LABELS,
    "mer2024": MER_LABELS,
    "dfew": DFEW_LABELS,
    "emoset": EMOSET_LABELS,
    "fi": EMOSET_LABELS,
    "emotion6": EMOTION6_LABELS,
    "meld": MELD_LABELS,
    "iemocap4": IEMOCAP4_LABELS,
    "iemocap6": IEMOCAP6_LABELS,
}


def check_label(label: str, labels: tuple[str, ...], source: str) -> str:
    """Return ``label`` normalised to lower case, or fail naming where it came from."""
    norm = label.strip().lower()
    if norm not in labels:
        raise ValueError(f"{source}: unknown label {label!r}; expected one of {', '.join(labels)}")
    return norm
