"""Label sets of the datasets the model is trained and evaluated on."""

from __future__ import annotations

MERR_LABELS: tuple[str, ...] = (
    "neutral", "angry", "happy", "sad", "worried", "surprise", "fear", "contempt", "doubt",
)
MER_LABELS: tuple[str, ...] = ("neutral", "angry", "happy", "sad", "worried", "surprise")
# DFEW's official split files number these 1..7 in this order.
DFEW_LABELS: tuple[str, ...] = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")

LABEL_SETS: dict[str, tuple[str, ...]] = {
    "merr": MERR_LABELS,
    "mer2023": MER_LABELS,
    "mer2024": MER_LABELS,
    "dfew": DFEW_LABELS,
}


def check_label(label: str, labels: tuple[str, ...], source: str) -> str:
    """Return ``label`` normalised to lower case, or fail naming where it came from."""
    norm = label.strip().lower()
    if norm not in labels:
        raise ValueError(f"{source}: unknown label {label!r}; expected one of {', '.join(labels)}")
    return norm
