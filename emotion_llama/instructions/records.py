"""Instruction records in EmoVIT's LLaVA-style schema, and the parser of ``Question: ... Answer: ...`` replies.

A record::

    {"id": "amusement_12865", "image": "image/amusement/amusement_12865.jpg",
     "conversations": [{"from": "human", "value": Q1}, {"from": "gpt", "value": A1}, ...]}

:func:`parse_qa` reads a generator's reply into ``(question, answer)`` pairs. It accepts what language models
write around the two markers: list numbers and bullets (``1.``, ``-``), heading and bold markers
(``### Question 2``, ``**Answer:**``), numbered markers (``Question 1:``, ``Q1:``), EmoVIT's ``Complex
question:``, a preamble before the first question, both markers on one line, and answers over several lines
or paragraphs. A reply it cannot read completely raises :class:`ReplyError`: no pair at all, an empty question
or answer, an answer without a question before it, or a question without an answer. Such a reply is skipped
as a whole by the caller, never kept in part.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

Turn = tuple[str, str]

# A marker: at the start of a line (after an optional heading mark, list number or bullet) or, for the full
# words only, after a space inside a line; bold/italic marks may wrap the word, its number and its colon.
_MARKER = re.compile(
    r"""
    (?:
        (?P<line>^[ \t]*(?:\#{1,6}[ \t]*)?(?:(?:\(?\d{1,3}[.):]|[-•+]|\*(?=[ \t]))[ \t]*)?)
        | (?<=\s)
    )
    [*_]{0,2}
    (?P<word>(?:complex[ \t]+)?question|answer|q|a)
    (?:[ \t]*\#?[ \t]*\d{1,3})?
    [ \t]*[*_]{0,2}[ \t]*[:：][ \t]*[*_]{0,2}
    """,
    re.IGNORECASE | re.MULTILINE | re.VERBOSE,
)
# Lines that only separate pairs: a markdown rule, or the list number of the next pair on its own line.
_RULE = re.compile(r"^[ \t]*(?:([-*_=])\1{2,}|\(?\d{1,3}[.)])[ \t]*$")


class ReplyError(ValueError):
    """A reply that does not read as complete ``Question:``/``Answer:`` pairs; the message says why."""


def _markers(text: str) -> list[re.Match]:
    keep = []
    for match in _MARKER.finditer(text):
        inline = match.group("line") is None
        if inline and match.group("word").lower() in ("q", "a"):
            continue  # "Q:"/"A:" only count at the start of a line
        keep.append(match)
    return keep


def _clean(text: str) -> str:
    """The text of one question or answer: lines stripped, paragraphs kept, stray bold marks removed."""
    lines = [ln.strip() for ln in text.strip().splitlines() if not _RULE.match(ln)]
    paragraphs, current = [], []
    for line in lines:
        if line:
            current.append(" ".join(line.split()))
        elif current:
            paragraphs.append("\n".join(current))
            current = []
    if current:
        paragraphs.append("\n".join(current))
    out = "\n\n".join(paragraphs)
    for mark in ("**", "__"):
        if out.count(mark) % 2:  # the closing half of "**Question: ...?**"
            out = out.removeprefix(mark).removesuffix(mark).strip()
    return out


def parse_qa(text: str) -> list[Turn]:
    """``(question, answer)`` pairs of a reply; :class:`ReplyError` when it is not complete pairs."""
    matches = _markers(text or "")
    if not matches:
        raise ReplyError("no 'Question:'/'Answer:' pair in the reply")
    segments = []
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        is_question = match.group("word").lower() not in ("answer", "a")
        segments.append((is_question, _clean(text[match.end():end])))
    turns: list[Turn] = []
    question: str | None = None
    for is_question, content in segments:
        n = len(turns) + 1
        if is_question:
            if question is not None:
                raise ReplyError(f"question {n} has no answer")
            if not content:
                raise ReplyError(f"question {n} is empty")
            question = content
        else:
            if question is None:
                raise ReplyError(f"an answer comes without a question before it (pair {n})")
            if not content:
                raise ReplyError(f"answer {n} is empty")
            turns.append((question, content))
            question = None
    if question is not None:
        raise ReplyError(f"question {len(turns) + 1} has no answer")
    return turns


def instruction_record(record_id: str, image: str, turns: Sequence[Turn]) -> dict:
    """One record of EmoVIT's schema: human/gpt turns alternating."""
    conversations = []
    for question, answer in turns:
        conversations += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    return {"id": record_id, "image": image, "conversations": conversations}


def split_turns(record: Mapping) -> list[dict]:
    """One record per question/answer pair, as in EmoVIT's released training file."""
    conv = record["conversations"]
    return [{"id": record["id"], "image": record["image"], "conversations": conv[i:i + 2]}
            for i in range(0, len(conv), 2)]
