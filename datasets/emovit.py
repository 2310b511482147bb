"""EmoVIT instruction files: a JSON list of LLaVA-style records, as EmoVIT released them and as
``tools/make_instructions.py`` writes them::

    [{"id": "12865", "image": "amusement_12865.jpg",
      "conversations": [{"from": "human", "value": Q}, {"from": "gpt", "value": A}, ...]}, ...]

EmoVIT's own file keeps one question/answer pair per record, so an image appears in several records with the
same id; ours keep all the turns of one image in one record. Both read the same way. Ids are kept as strings
(a number in the file becomes its text).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from emotion_llama.datasets.common import PathLike, _existing
from emotion_llama.errors import UserError

ROLES = ("human", "gpt")
REQUIRED = ("id", "image", "conversations")


@dataclass(frozen=True)
class InstructionRecord:
    id: str
    image: str  # as written in the file: relative to the image folder
    turns: list[tuple[str, str]]  # (question, answer) pairs in order


def read_instructions(path: PathLike) -> list[InstructionRecord]:
    """Every record of an instruction JSON file; a :class:`UserError` naming the file and entry for a bad one."""
    path = _existing(path, "instruction JSON")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}:{err.lineno}: not valid JSON ({err.msg}); an instruction file is a JSON list of "
                        "records") from None
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of records, found a {type(data).__name__}")
    return [_record(path, i, entry) for i, entry in enumerate(data)]


def _record(path: Path, index: int, entry: object) -> InstructionRecord:
    where = f"{path}: entry {index}"
    if not isinstance(entry, dict):
        raise UserError(f"{where}: expected an object with {', '.join(REQUIRED)}, found a {type(entry).__name__}")
    if "id" in entry:
        where += f" (id {entry['id']!r})"
    missing = [k for k in REQUIRED if k not in entry]
    if missing:
        raise UserError(f"{where}: missing {', '.join(repr(k) for k in missing)}; every record needs "
                        f"{', '.join(REQUIRED)}")
    if not isinstance(entry["id"], (str, int)) or isinstance(entry["id"], bool):
        raise UserError(f"{where}: 'id' should be a string or a number")
    if not isinstance(entry["image"], str) or not entry["image"].strip():
        raise UserError(f"{where}: 'image' should be the image's file path, found {entry['image']!r}")
    return InstructionRecord(str(entry["id"]), entry["image"], _turns(where, entry["conversations"]))


def _turns(where: str, conversations: object) -> list[tuple[str, str]]:
    if not isinstance(conversations, list) or not conversations:
        raise UserError(f"{where}: 'conversations' should be a non-empty list of {{from, value}} turns")
    values = []
    for i, turn in enumerate(conversations):
        expected = ROLES[i % 2]
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise UserError(f"{where}: turn {i} should be an object with 'from' and 'value'")
        if turn["from"] != expected:
            raise UserError(f"{where}: turn {i} is from {turn['from']!r} but should be from {expected!r}; turns "
                            "alternate human, gpt, human, gpt, ...")
        if not isinstance(turn["value"], str) or not turn["value"].strip():
            raise UserError(f"{where}: turn {i} ({expected}) has an empty or non-text 'value'")
        values.append(turn["value"])
    if len(values) % 2:
        raise UserError(f"{where}: the last human turn ({len(values) - 1}) has no gpt answer after it")
    return list(zip(values[0::2], values[1::2], strict=True))
