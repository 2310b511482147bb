"""IEMOCAP: the turn labels of ``Session{n}/dialog/EmoEvaluation/*.txt`` with the text of
``Session{n}/dialog/transcriptions/*.txt``, in the 4-class or the 6-class setup.

An evaluation file has one summary line per turn, ``[6.2901 - 8.2357]\\tSes01F_impro01_F000\\tneu\\t[2.5, 2.5, 2.5]``,
among the annotators' lines (``C-E2:``, ``A-E3:``, ...), which are skipped. A transcription has one line per
turn, ``Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.``; its lines that do not start with a turn id
(``Ses``...) are not turns and are skipped.

- 4 classes (:data:`IEMOCAP4_LABELS`): ``exc`` counts as ``hap``; ``neu``, ``hap``, ``sad``, ``ang`` are kept.
- 6 classes (:data:`IEMOCAP6_LABELS`): ``hap``, ``sad``, ``neu``, ``ang``, ``exc``, ``fru``.

Every other turn (``fru`` in the 4-class setup, ``sur``, ``fea``, ``dis``, ``oth``, ``xxx``) is dropped and
counted per code. The speaker of a turn is its session and the letter of its last id part (``Ses01_F``);
``context`` is every earlier turn of the transcription in time, dropped ones included.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from emotion_llama.datasets.common import PathLike
from emotion_llama.datasets.dialogue import Utterance
from emotion_llama.errors import UserError
from emotion_llama.labels import IEMOCAP4_LABELS, IEMOCAP6_LABELS

log = logging.getLogger(__name__)

IEMOCAP_CODES = ("neu", "fru", "sad", "sur", "ang", "hap", "exc", "fea", "dis", "oth", "xxx")
SESSIONS = (1, 2, 3, 4, 5)
_MERGE_4 = {"exc": "hap"}

_NUMBER = r"(\d+(?:\.\d*)?)"
_EVAL_LINE = re.compile(rf"\[\s*{_NUMBER}\s*-\s*{_NUMBER}\s*\]\s+(\S+)\s+(\S+)\s+\[([^\]]*)\]")
_TRANSCRIPT_LINE = re.compile(rf"(Ses\S+)\s+\[\s*{_NUMBER}\s*-\s*{_NUMBER}\s*\]:\s?(.*)")


def iemocap_label(code: str, classes: int) -> str | None:
    """The label of an IEMOCAP code in the 4- or 6-class setup, or ``None`` when that setup drops it."""
    labels = IEMOCAP4_LABELS if classes == 4 else IEMOCAP6_LABELS
    label = _MERGE_4.get(code, code) if classes == 4 else code
    return label if label in labels else None


def _speaker(turn_id: str) -> str:
    session = turn_id[:5]  # "Ses01"
    return f"{session}_{turn_id.rsplit('_', 1)[-1][:1]}"


def _lines(path: Path) -> Iterable[tuple[int, str]]:
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, line.strip()


def read_transcription(path: PathLike) -> list[tuple[str, float, float, str]]:
    """``(turn id, start, end, text)`` for each turn line, in file order."""
    path = Path(path)
    turns = []
    for number, line in _lines(path):
        if not line.startswith("Ses"):
            continue
        m = _TRANSCRIPT_LINE.fullmatch(line)
        if not m:
            raise UserError(f"{path}:{number}: expected 'TURN_ID [start-end]: text', got {line[:60]!r}; "
                            "fix that line")
        turn, start, end, text = m.groups()
        turns.append((turn, float(start), float(end), text.strip()))
    return turns


def read_evaluation(path: PathLike) -> list[tuple[int, str, float, float, str]]:
    """``(line number, turn id, start, end, code)`` for each summary line, in file order."""
    path = Path(path)
    rows = []
    for number, line in _lines(path):
        if not line.startswith("["):
            continue
        m = _EVAL_LINE.fullmatch(line)
        if not m:
            raise UserError(f"{path}:{number}: expected '[start - end]<TAB>TURN_ID<TAB>code<TAB>[v, a, d]', "
                            f"got {line[:60]!r}; fix that line")
        start, end, turn, code, _vad = m.groups()
        if code not in IEMOCAP_CODES:
            raise UserError(f"{path}:{number}: unknown emotion code {code!r} for {turn}; "
                            f"use one of {', '.join(IEMOCAP_CODES)}")
        rows.append((number, turn, float(start), float(end), code))
    return rows


def read_iemocap(root: PathLike, classes: int = 4, sessions: Iterable[int] = SESSIONS,
                 dropped: Counter | None = None) -> list[Utterance]:
    """The labelled turns of the given sessions, dialogue by dialogue in time order.

    ``dropped``, when given, is increased by the number of turns left out per original code.
    """
    if classes not in (4, 6):
        raise UserError(f"classes={classes} is not an IEMOCAP setup: use classes=4 or classes=6")
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root} not found: point the IEMOCAP path at the folder that holds Session1..Session5")
    counts: Counter = Counter()
    utterances: list[Utterance] = []
    for session in sessions:
        if session not in SESSIONS:
            raise UserError(f"session {session} does not exist in IEMOCAP: use sessions among 1..5")
        dialog = root / f"Session{session}" / "dialog"
        eval_dir = dialog / "EmoEvaluation"
        if not eval_dir.is_dir():
            raise UserError(f"{eval_dir} not found: point the IEMOCAP path at the folder that holds "
                            f"Session{session}/dialog/EmoEvaluation")
        files = sorted(p for p in eval_dir.glob("*.txt") if not p.name.startswith("."))
        for eval_file in files:
            utterances.extend(_dialogue(eval_file, dialog / "transcriptions" / eval_file.name, classes, counts))
    if counts:
        log.info("IEMOCAP %d-class: dropped %d turns (%s)", classes, sum(counts.values()),
                 ", ".join(f"{code} {n}" for code, n in sorted(counts.items())))
    if dropped is not None:
        dropped.update(counts)
    return utterances


def _dialogue(eval_file: Path, transcript_file: Path, classes: int, counts: Counter) -> list[Utterance]:
    if not transcript_file.is_file():
        raise UserError(f"{transcript_file} not found: every EmoEvaluation file needs the transcription "
                        f"of the same name ({eval_file.name})")
    # Time order over all turns of the dialogue (ties keep file order): index and context come from it.
    turns = sorted(read_transcription(transcript_file), key=lambda t: t[1])
    position = {turn: i for i, (turn, *_rest) in enumerate(turns)}
    out = []
    for number, turn, start, end, code in read_evaluation(eval_file):
        if turn not in position:
            raise UserError(f"{eval_file}:{number}: turn {turn} has no line in {transcript_file}; "
                            "add its transcription or remove the turn")
        label = iemocap_label(code, classes)
        if label is None:
            counts[code] += 1
            continue
        i = position[turn]
        out.append(Utterance(
            id=turn, text=turns[i][3], speaker=_speaker(turn), label=label, dialogue=eval_file.stem, index=i,
            start=start, end=end, context=tuple((_speaker(t[0]), t[3]) for t in turns[:i]),
        ))
    return sorted(out, key=lambda u: u.index)
