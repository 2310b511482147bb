"""Shared pieces of the annotation readers and writers (:mod:`.merr`, :mod:`.dfew`, :mod:`.mer`, :mod:`.emer`).

Every reader fails with a :class:`UserError` naming the file (and line) and the fix; every writer is atomic.
Labels are normalised to lower case without surrounding whitespace; clip names are kept as strings
(DFEW names look like numbers, ``"23"``, and must not become ints).

MER2023 uses a valence of -10 as "no valence" (MER-SEMI has none, nor have some MERR clips); readers turn it
into ``None`` so that it can never leak into a valence MSE, and the npz writer turns ``None`` back into -10.

Subtitles (``name,sentence``; MER2024: ``name,sentence_en``) are shared by MERR and MER, so they live here.

Text files are read as UTF-8 (a byte-order mark is skipped). A file that is not UTF-8 is read as GB18030, the
encoding of MER's Chinese subtitles and the superset of GBK/GB2312, with a warning naming the file; one that
is neither is refused, with the command that converts it.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from emotion_llama.errors import UserError
from emotion_llama.fileio import atomic_write_text

log = logging.getLogger(__name__)

PathLike = str | os.PathLike
FALLBACK_ENCODING = "gb18030"  # MER2023/2024's Chinese subtitles
MISSING_VALENCE = -10.0
SUBTITLE_COLUMNS = ("sentence", "sentence_en")


@dataclass(frozen=True)
class Sample:
    name: str
    label: str
    valence: float | None = None
    n_frames: int | None = None


# ---------------------------------------------------------------------------------------------- helpers


def _existing(path: PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found: point the {what} path at an existing file")
    return path


def read_text(path: PathLike, what: str) -> str:
    """The text of an existing file: UTF-8 (BOM skipped), else GB18030 with a warning, else a UserError."""
    path = _existing(path, what)
    data = path.read_bytes()
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise UserError(f"{path}:{line}: holds NUL bytes (a binary or UTF-16 file): save the {what} file as UTF-8 "
                        f"text, or point the {what} path at the right file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        utf8_error = err
    try:
        text = data.decode(FALLBACK_ENCODING)
    except UnicodeDecodeError:
        line = data[: utf8_error.start].count(b"\n") + 1
        raise UserError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[utf8_error.start]:02x}) nor {FALLBACK_ENCODING.upper()}; "
            f"convert the {what} file to UTF-8, e.g. iconv -f CP1252 -t UTF-8 {path.name} > utf8_{path.name}"
        ) from None
    log.warning("%s is not UTF-8: read as %s", path, FALLBACK_ENCODING.upper())
    return text


def _text_lines(path: PathLike, what: str) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, stripped line) for the non-blank lines of a text file."""
    text = read_text(path, what)
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, line.strip()


def csv_rows(path: PathLike, what: str, required: Sequence[str],
              text: str | None = None) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number, row) of a CSV file after checking its header has the ``required`` columns."""
    path = Path(path)
    reader = csv.reader(io.StringIO(read_text(path, what) if text is None else text, newline=""))
    try:
        header = [c.strip() for c in next(reader, [])]  # stripped: tolerate "name, label"
        missing = [c for c in required if c not in header]
        if missing:
            raise UserError(
                f"{path}: missing column(s) {', '.join(missing)} (found {_shown(', '.join(header)) or 'no header'}); "
                f"a {what} file needs the columns {', '.join(required)}"
            )
        for fields in reader:
            if not any(v.strip() for v in fields):
                continue
            if len(fields) != len(header):
                raise UserError(
                    f"{path}:{reader.line_num}: expected {len(header)} fields ({_shown(','.join(header))}), "
                    f"got {len(fields)}; fix that line (quote fields that contain commas)"
                )
            yield reader.line_num, {k: v.strip() for k, v in zip(header, fields, strict=True)}
    except csv.Error as err:
        raise UserError(f"{path}:{reader.line_num}: not a valid CSV line ({err}); fix that line") from None


def _shown(text: str, limit: int = 80) -> str:
    """``text`` for a one-line message: its line breaks as ``\\n``, cut to ``limit`` characters."""
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= limit else text[:limit] + "..."


def _label(raw: str, labels: Sequence[str], where: str) -> str:
    norm = raw.strip().lower()
    if norm not in labels:
        raise UserError(f"{where}: unknown label {raw!r}; use one of {', '.join(labels)}")
    return norm


def _number(raw: str, kind: Callable[[str], float | int], where: str, what: str) -> float | int:
    try:
        return kind(raw)
    except ValueError:
        raise UserError(f"{where}: {what} should be a number, got {raw!r}; fix that line") from None


def _valence(raw: str | float | None, where: str) -> float | None:
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "nan")):
        return None
    value = float(_number(raw, float, where, "valence")) if isinstance(raw, str) else float(raw)
    return None if math.isnan(value) or value == MISSING_VALENCE else value


def _write_csv(path: PathLike, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _fmt(value: float | None) -> str:
    return "" if value is None else repr(float(value))  # repr: exact round trip


# ---------------------------------------------------------------------------------------------- subtitles


def check_samples(samples: list[Sample], where: object) -> list[Sample]:
    """``samples`` as read from ``where``, refused in one line when empty or when a clip is listed twice (with
    two labels it would be counted as both; with one, twice)."""
    if not samples:
        raise UserError(f"{where} lists no clips: restore the file (an empty split or fold would silently leave "
                        "the average without it)")
    seen: dict[str, str] = {}
    for sample in samples:
        if sample.name in seen:
            labels = "the same label" if seen[sample.name] == sample.label else \
                f"labels {seen[sample.name]} and {sample.label}"
            raise UserError(f"{where} lists clip {sample.name} twice (with {labels}): keep one line per clip")
        seen[sample.name] = sample.label
    return samples


def check_subtitles(subtitles: Mapping[str, str], names: Iterable[str], where: object) -> float:
    """The fraction of the clips ``names`` that the subtitles file ``where`` has a line for. None of them is
    refused in one line (the clips' names and the file's do not match: everything would be judged without
    text); fewer than half is warned about."""
    names = list(names)
    matched = sum(name in subtitles for name in names)
    if names and subtitles and not matched:
        raise UserError(f"{where} has subtitles for none of the {len(names)} clips (e.g. {names[0]!r} is not in "
                        f"it; it names e.g. {next(iter(subtitles))!r}): give the subtitles file of this set")
    fraction = matched / len(names) if names else 1.0
    if fraction < 0.5:
        log.warning("%s has subtitles for only %d of %d clips; the others are judged without text",
                    where, matched, len(names))
    return fraction


def read_subtitles(path: PathLike, column: str | None = None) -> dict[str, str]:
    """Read ``name,sentence`` (MER2024: ``name,sentence_en``); a missing subtitle becomes ``""``."""
    text = read_text(path, "subtitle")
    column = column or _subtitle_column(text)
    subtitles = {}
    for _, row in csv_rows(path, "subtitle", ("name", column), text=text):
        text = row[column]
        subtitles[row["name"]] = "" if text.lower() == "nan" else text
    return subtitles


def _subtitle_column(text: str) -> str:
    first = text.partition("\n")[0]
    try:
        header = [c.strip() for c in next(csv.reader([first]), [])]
    except csv.Error:
        header = []  # reported with its line by csv_rows
    return next((c for c in SUBTITLE_COLUMNS if c in header), SUBTITLE_COLUMNS[0])


def write_subtitles(path: PathLike, subtitles: dict[str, str], column: str = "sentence") -> None:
    _write_csv(path, ("name", column), subtitles.items())
