"""Turning a generated answer into a label.

Two protocols, so that both figures can be reported side by side:

- :func:`parse_emotion` reads the whole answer: every word is lower-cased, stripped of punctuation and mapped
  through :data:`SYNONYMS` (``joyful`` -> happy, ``anxious`` -> worried). Exact label words win over synonyms;
  among several, the one mentioned last wins (the original also kept the end of the answer, and a model that
  explains first tends to conclude last). Negation is not handled: "not happy" reads as happy. ``None`` means
  nothing parsed, which the metrics count as wrong.
- :func:`parse_like_original` replicates the original evaluation: the last word only, and anything that is
  not a label becomes ``"neutral"``, which flatters a model whose mistakes are unparseable.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

ORIGINAL_FALLBACK = "neutral"

# A synonym only ever maps to a label of the label set in use: for DFEW "anxious" parses to nothing.
_WORDS_BY_LABEL: dict[str, tuple[str, ...]] = {
    "happy": ("happiness", "joy", "joyful", "glad", "cheerful", "delighted", "pleased", "happily"),
    "sad": ("sadness", "unhappy", "sorrow", "sorrowful", "sadly", "grief", "depressed"),
    "angry": ("anger", "mad", "furious", "angrily", "annoyed", "irritated", "rage"),
    "surprise": ("surprised", "surprising", "astonished", "astonishment", "amazed", "amazement"),
    "fear": ("fearful", "afraid", "scared", "frightened", "terrified", "fright"),
    "worried": ("worry", "worrying", "anxious", "anxiety", "nervous", "concerned"),
    "doubt": ("doubtful", "doubting", "confused", "skeptical", "sceptical", "suspicious"),
    "contempt": ("contemptuous", "disdain", "disdainful", "scorn", "scornful"),
    "disgust": ("disgusted", "disgusting", "revulsion"),
    "neutral": ("calm", "none", "neutrality", "expressionless"),
}
SYNONYMS: dict[str, str] = {word: label for label, words in _WORDS_BY_LABEL.items() for word in words}

_WORD = re.compile(r"[a-z]+")


def parse_emotion(text: str, labels: Sequence[str]) -> str | None:
    """Return the label ``text`` names (exact label words first, the last one mentioned), or ``None``."""
    labels = [label.lower() for label in labels]
    words = _WORD.findall(text.lower())
    exact = [w for w in words if w in labels]
    if exact:
        return exact[-1]
    mapped = [SYNONYMS[w] for w in words if SYNONYMS.get(w) in labels]
    return mapped[-1] if mapped else None


def parse_like_original(text: str, labels: Sequence[str], fallback: str | None = ORIGINAL_FALLBACK) -> str | None:
    """The original protocol: the answer's last word, lower-cased, punctuation stripped; else ``fallback``
    ("neutral"), which must be one of ``labels`` (EmoSet has no neutral: pass None to count such answers
    as wrong instead)."""
    lowered = [label.lower() for label in labels]
    if fallback is not None and fallback not in lowered:
        raise ValueError(f"the fallback label {fallback!r} is not in the label set {', '.join(labels)}")
    words = re.sub(r"<[^>]*>", " ", text).lower().split()  # special tokens such as </s> are not words
    last = re.sub(r"[^\w]", "", words[-1]) if words else ""
    return last if last in lowered else fallback
