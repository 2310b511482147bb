"""One utterance of a conversation, as the text-only readers (:mod:`.meld`, :mod:`.iemocap`) return it.

``context`` holds the (speaker, text) pairs of the utterances that came before it in the same dialogue,
oldest first: the readers fill it from every utterance of the dialogue, including those whose label a
class set drops, so a prompt sees the conversation as it happened.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from omegaconf import DictConfig

from emotion_llama.errors import UserError
from emotion_llama.labels import IEMOCAP4_LABELS, IEMOCAP6_LABELS, MELD_LABELS

DIALOGUE_KINDS = ("meld", "iemocap")  # the text-only dialogue sets (data.kind)


@dataclass(frozen=True)
class Utterance:
    id: str
    text: str
    speaker: str
    label: str
    dialogue: str
    index: int  # position in the dialogue (MELD's Utterance_ID; IEMOCAP: order of the turns in time)
    start: float | None = None  # seconds
    end: float | None = None
    sentiment: str | None = None  # MELD only: positive, negative or neutral
    context: tuple[tuple[str, str], ...] = ()

    def context_text(self, turns: int | None = None, separator: str = "\n") -> str:
        """The last ``turns`` earlier utterances (all when ``None``) as ``Speaker: text`` lines."""
        if turns is None:
            pairs = self.context
        else:
            pairs = self.context[-turns:] if turns > 0 else ()
        return separator.join(f"{speaker}: {text}" for speaker, text in pairs)


def with_context(utterances: Iterable[Utterance]) -> list[Utterance]:
    """The utterances in their given order, each with ``context`` set from the others of its dialogue
    that have a smaller ``index``."""
    utterances = list(utterances)
    by_dialogue: dict[str, list[Utterance]] = {}
    for u in utterances:
        by_dialogue.setdefault(u.dialogue, []).append(u)
    context: dict[tuple[str, int], tuple[tuple[str, str], ...]] = {}
    for dialogue, members in by_dialogue.items():
        earlier: list[tuple[str, str]] = []
        for u in sorted(members, key=lambda u: u.index):
            context[(dialogue, u.index)] = tuple(earlier)
            earlier.append((u.speaker, u.text))
    return [replace(u, context=context[(u.dialogue, u.index)]) for u in utterances]


def is_dialogue(data: DictConfig) -> bool:
    """Whether ``data`` is a text-only dialogue set (MELD, IEMOCAP)."""
    return data.get("kind") in DIALOGUE_KINDS


def dialogue_labels(data: DictConfig) -> list[str]:
    """The label set, in metric order: MELD's seven (``data.labels`` may reorder them), IEMOCAP's by
    ``data.classes`` (4: exc merged into hap; 6: hap, sad, neu, ang, exc, fru)."""
    if data.kind == "iemocap":
        classes = data.get("classes", 4)
        if classes not in (4, 6):
            raise UserError(f"data.classes={classes}: use 4 (exc merged into hap) or 6")
        return list(IEMOCAP4_LABELS if classes == 4 else IEMOCAP6_LABELS)
    labels = list(data.get("labels") or MELD_LABELS)
    if sorted(labels) != sorted(MELD_LABELS):
        raise UserError(f"data.labels=[{','.join(labels)}]: MELD's labels are {', '.join(MELD_LABELS)} "
                        "(any order, each once)")
    return labels
