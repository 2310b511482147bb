"""Shared pieces of the annotation readers and writers (:mod:`.merr`, :mod:`.dfew`, :mod:`.mer`, :mod:`.emer`).

Every reader fails with a :class:`UserError` naming the file (and line) and the fix; every writer is atomic.
Labels are normalised to lower case without surrounding whitespace; clip names are kept as strings
(DFEW names look like numbers, ``"23"``, and must not become ints).

MER2023 uses a valence of -10 as "no valence" (MER-SEMI has none, nor have some MERR clips); readers turn it
into ``None`` so that it can never leak into a valence MSE, and the npz writer turns ``None`` back into -10.

Subtitles (``name,sentence``; MER2024: ``name,sentence_en``) are shared by MERR and MER, so they live here.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from emotion_llama.errors import UserError
from emotion_llama.fileio import atomic_write_text

PathLike = str | os.PathLike
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


def _text_lines(path: PathLike, what: str) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, stripped line) for the non-blank lines of a text file."""
    text = _existing(path, what).read_text(encoding="utf-8-sig")
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, line.strip()


def _csv_rows(path: PathLike, what: str, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number, row) of a CSV file after checking its header has the ``required`` columns."""
    path = _existing(path, what)
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [c.strip() for c in next(reader, [])]  # stripped: tolerate "name, label"
        missing = [c for c in required if c not in header]
        if missing:
            raise UserError(
                f"{path}: missing column(s) {', '.join(missing)} (found {', '.join(header) or 'no header'}); "
                f"a {what} file needs the columns {', '.join(required)}"
            )
        for fields in reader:
            if not any(v.strip() for v in fields):
                continue
            if len(fields) != len(header):
                raise UserError(
                    f"{path}:{reader.line_num}: expected {len(header)} fields ({','.join(header)}), "
                    f"got {len(fields)}; fix that line (quote fields that contain commas)"
                )
            yield reader.line_num, {k: v.strip() for k, v in zip(header, fields, strict=True)}


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


def read_subtitles(path: PathLike, column: str | None = None) -> dict[str, str]:
    """Read ``name,sentence`` (MER2024: ``name,sentence_en``); a missing subtitle becomes ``""``."""
    column = column or _subtitle_column(path)
    subtitles = {}
    for _, row in _csv_rows(path, "subtitle", ("name", column)):
        text = row[column]
        subtitles[row["name"]] = "" if text.lower() == "nan" else text
    return subtitles


def _subtitle_column(path: PathLike) -> str:
    with _existing(path, "subtitle").open(newline="", encoding="utf-8-sig") as f:
        header = [c.strip() for c in next(csv.reader(f), [])]
    return next((c for c in SUBTITLE_COLUMNS if c in header), SUBTITLE_COLUMNS[0])


def write_subtitles(path: PathLike, subtitles: dict[str, str], column: str = "sentence") -> None:
    _write_csv(path, ("name", column), subtitles.items())
