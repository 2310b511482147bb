"""Label sets of the datasets the model is trained and evaluated on."""

from __future__ import annotations

from collections.abc import Sequence

from emotion_llama.errors import UserError

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


def resolve_labels(value: object, key: str = "labels") -> tuple[str, ...] | None:
    """A label-set setting as the labels it names: None stays None (the caller's default), a name is one of
    :data:`LABEL_SETS`, a list gives at least two distinct label names (lower-cased). Anything else is a one-line
    UserError naming ``key``; every command and the web app read label settings through this."""
    if value is None:
        return None
    if isinstance(value, str):
        if value not in LABEL_SETS:
            raise UserError(f"{key}={value}: no such label set; use one of {', '.join(LABEL_SETS)} or a list such "
                            f"as {key}=[happy,sad]")
        return LABEL_SETS[value]
    items = list(value) if isinstance(value, Sequence) or hasattr(value, "__iter__") else None
    if items is None or not all(isinstance(v, str) and v.strip() for v in items):
        shown = value if items is None else f"[{','.join(map(str, items))}]"
        raise UserError(f"{key}={shown}: use a label set's name or a list of label names, e.g. {key}=[happy,sad]")
    labels = tuple(v.strip().lower() for v in items)
    repeated = sorted({v for v in labels if labels.count(v) > 1})
    if repeated:
        raise UserError(f"{key}=[{','.join(labels)}]: {', '.join(repeated)} repeated: name each label once")
    if len(labels) < 2:
        raise UserError(f"{key}=[{','.join(labels)}]: give at least two different labels, e.g. {key}=[happy,sad]")
    return labels
