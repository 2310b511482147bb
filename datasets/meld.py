"""MELD: the ``*_sent_emo.csv`` annotation files and the ``dia{D}_utt{U}.mp4`` clips.

Columns: ``Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime``
(quoted fields, commas inside utterances; times like ``00:14:38,127``). Only ``Utterance``, ``Speaker``,
``Emotion``, ``Dialogue_ID`` and ``Utterance_ID`` are required.

Text encoding: the released CSVs are UTF-8, but some of their apostrophes and quotes went through a Windows
code page on the way and arrive as C1 control characters (``"\\x92"`` for ``’``) or as UTF-8 read as Latin-1
(``"â\\x80\\x99"``). A file that is not valid UTF-8 is read as Windows-1252 (bytes that code page leaves
undefined as Latin-1). In every field, a run of such mis-decoded characters is turned back into what it
stood for and a remaining C1 character is read as the Windows-1252 character of that byte; any other text,
accents included, is kept exactly as written.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from emotion_llama.datasets.common import PathLike
from emotion_llama.datasets.dialogue import Utterance, with_context
from emotion_llama.errors import UserError
from emotion_llama.labels import MELD_LABELS

MELD_COLUMNS = ("Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID",
                "Season", "Episode", "StartTime", "EndTime")
REQUIRED_COLUMNS = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")
SPLIT_FILES = {"train": "train_sent_emo.csv", "dev": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}
SENTIMENTS = ("positive", "negative", "neutral")

_C1 = re.compile("[\x80-\x9f]")
# A whole multi-byte UTF-8 sequence read as Latin-1: a lead byte and its continuation bytes.
_MOJIBAKE = re.compile("[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")
_TIME = re.compile(r"(\d+):(\d{1,2}):(\d{1,2})(?:[,.](\d{1,3}))?")


def meld_id(dialogue: int | str, utterance: int | str) -> str:
    return f"dia{dialogue}_utt{utterance}"


def decode_text(raw: bytes) -> str:
    """UTF-8 (a BOM dropped), else Windows-1252 with Latin-1 for the bytes it leaves undefined."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return _C1.sub(_cp1252_char, raw.decode("latin-1"))


def repair_text(text: str) -> str:
    """Undo the mis-decodings described in the module doc; text without them is returned unchanged."""
    if not (_C1.search(text) or _MOJIBAKE.search(text)):
        return text
    return _C1.sub(_cp1252_char, _MOJIBAKE.sub(_utf8_sequence, text))


def _utf8_sequence(match: re.Match) -> str:
    try:
        return match.group().encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        return match.group()  # not a valid sequence after all: left to the C1 mapping or kept


def _cp1252_char(match: re.Match) -> str:
    try:
        return bytes([ord(match.group())]).decode("cp1252")
    except UnicodeDecodeError:
        return match.group()  # 0x81, 0x8d, 0x8f, 0x90, 0x9d: undefined there too, kept


def parse_time(raw: str, where: str) -> float | None:
    """``HH:MM:SS,mmm`` -> seconds; an empty field -> ``None``."""
    raw = raw.strip()
    if not raw:
        return None
    m = _TIME.fullmatch(raw)
    if not m:
        raise UserError(f"{where}: time {raw!r} is not HH:MM:SS,mmm; fix that line")
    h, mi, s, ms = m.groups()
    return int(h) * 3600 + int(mi) * 60 + int(s) + (int(ms.ljust(3, "0")) / 1000 if ms else 0.0)


def _int(raw: str, where: str, column: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise UserError(f"{where}: {column} should be a whole number, got {raw!r}; fix that line") from None
    if value < 0:
        raise UserError(f"{where}: {column} should not be negative, got {raw!r}; fix that line")
    return value


def read_meld(csv_path: PathLike) -> list[Utterance]:
    """The utterances of one MELD CSV in file order, each with the earlier turns of its dialogue as context."""
    path = Path(csv_path)
    if not path.is_file():
        raise UserError(f"{path} not found: point the MELD csv path at an existing *_sent_emo.csv file")
    reader = csv.reader(io.StringIO(decode_text(path.read_bytes()), newline=""))
    header = [repair_text(c).strip() for c in next(reader, [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise UserError(
            f"{path}: missing column(s) {', '.join(missing)} (found {', '.join(header) or 'no header'}); "
            f"a MELD csv needs the columns {', '.join(REQUIRED_COLUMNS)}"
        )
    utterances: list[Utterance] = []
    seen: dict[str, int] = {}
    consumed = reader.line_num
    for fields in reader:
        first, consumed = consumed + 1, reader.line_num  # a quoted field may span lines: report its first
        where = f"{path}:{first}"
        if not any(v.strip() for v in fields):
            continue
        if len(fields) != len(header):
            raise UserError(f"{where}: expected {len(header)} fields ({','.join(header)}), got {len(fields)}; "
                            "fix that line (quote fields that contain commas)")
        row = {k: repair_text(v) for k, v in zip(header, fields, strict=True)}
        dialogue = _int(row["Dialogue_ID"], where, "Dialogue_ID")
        index = _int(row["Utterance_ID"], where, "Utterance_ID")
        uid = meld_id(dialogue, index)
        if uid in seen:
            raise UserError(f"{where}: {uid} (Dialogue_ID {dialogue}, Utterance_ID {index}) is already on "
                            f"line {seen[uid]}; remove the duplicate")
        seen[uid] = first
        label = row["Emotion"].strip().lower()
        if label not in MELD_LABELS:
            raise UserError(f"{where}: unknown Emotion {row['Emotion']!r}; use one of {', '.join(MELD_LABELS)}")
        sentiment = row.get("Sentiment", "").strip().lower() or None
        if sentiment is not None and sentiment not in SENTIMENTS:
            raise UserError(f"{where}: unknown Sentiment {row['Sentiment']!r}; use one of {', '.join(SENTIMENTS)}")
        utterances.append(Utterance(
            id=uid, text=row["Utterance"].strip(), speaker=row["Speaker"].strip(), label=label,
            dialogue=f"dia{dialogue}", index=index, sentiment=sentiment,
            start=parse_time(row.get("StartTime", ""), where), end=parse_time(row.get("EndTime", ""), where),
        ))
    return with_context(utterances)


def read_meld_split(root: PathLike, split: str = "test") -> list[Utterance]:
    """``root/{train,dev,test}_sent_emo.csv`` by split name."""
    if split not in SPLIT_FILES:
        raise UserError(f"split={split} is not a MELD split: use one of {', '.join(SPLIT_FILES)}")
    return read_meld(Path(root) / SPLIT_FILES[split])


def meld_clip_path(video_dir: PathLike, utterance: Utterance | str) -> Path | None:
    """``video_dir/dia{D}_utt{U}.mp4`` for an utterance (or its id) when that file exists, else ``None``."""
    uid = utterance if isinstance(utterance, str) else utterance.id
    path = Path(video_dir) / f"{uid}.mp4"
    return path if path.is_file() else None
