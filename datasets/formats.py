"""Readers and writers of the annotation files of MERR, MER2023/2024, DFEW and EMER.

Every reader fails with a :class:`UserError` naming the file (and line) and the fix; every writer is atomic.
Labels are normalised to lower case without surrounding whitespace; clip names are kept as strings
(DFEW names look like numbers, ``"23"``, and must not become ints).

MER2023 uses a valence of -10 as "no valence" (MER-SEMI has none, nor have some MERR clips); readers turn it
into ``None`` so that it can never leak into a valence MSE, and the npz writer turns ``None`` back into -10.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import pickle
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emotion_llama.errors import UserError
from emotion_llama.fileio import atomic_path, atomic_write_text
from emotion_llama.labels import DFEW_LABELS, MER_LABELS, MERR_LABELS

PathLike = str | os.PathLike
MISSING_VALENCE = -10.0
MER2023_CORPORA = ("train", "test1", "test2", "test3")
SUBTITLE_COLUMNS = ("sentence", "sentence_en")
EMER_COLUMNS = ("names", "emotions", "subtitles", "reasons")


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


def _dfew_index(raw: str, where: str, base: int) -> str:
    value = _number(raw, float, where, "the DFEW label")
    if value != int(value) or not base <= value < base + len(DFEW_LABELS):
        raise UserError(
            f"{where}: DFEW label {raw!r} is outside {base}..{base + len(DFEW_LABELS) - 1} "
            f"({', '.join(DFEW_LABELS)}); fix that line"
        )
    return DFEW_LABELS[int(value) - base]


def _dfew_number(label: str) -> int:
    """0-based DFEW index of ``label``."""
    if label not in DFEW_LABELS:
        raise ValueError(f"{label!r} is not a DFEW label; expected one of {', '.join(DFEW_LABELS)}")
    return DFEW_LABELS.index(label)


def _write_csv(path: PathLike, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _fmt(value: float | None) -> str:
    return "" if value is None else repr(float(value))  # repr: exact round trip


# ---------------------------------------------------------------------------------------------- MERR


def read_merr_txt(path: PathLike, labels: Sequence[str] = MERR_LABELS) -> list[Sample]:
    """Read ``name n_frames label [valence]`` lines (e.g. ``samplenew_00006611 125 sad -10``)."""
    samples = []
    for number, line in _text_lines(path, "MERR annotation"):
        where = f"{path}:{number}"
        fields = line.split()
        if len(fields) not in (3, 4):
            raise UserError(f"{where}: expected 'name n_frames label [valence]', got {line!r}; fix that line")
        n_frames = int(_number(fields[1], int, where, "n_frames"))
        valence = _valence(fields[3], where) if len(fields) == 4 else None
        samples.append(Sample(fields[0], _label(fields[2], labels, where), valence, n_frames))
    return samples


def write_merr_txt(path: PathLike, samples: Iterable[Sample]) -> None:
    """Write one ``name n_frames label [valence]`` line per sample; an unknown n_frames is written as 0."""
    lines = []
    for s in samples:
        fields = [s.name, str(s.n_frames or 0), s.label] + ([] if s.valence is None else [_fmt(s.valence)])
        lines.append(" ".join(fields) + "\n")
    atomic_write_text(path, "".join(lines))


def read_merr_json(path: PathLike) -> dict[str, dict]:
    """Read a MERR json keyed by clip name (coarse: ``caption``; fine: ``smp_reason_caption``)."""
    path = _existing(path, "MERR json")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); fix or re-download the file") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise UserError(f"{path}: expected a JSON object mapping clip names to objects; use the MERR json")
    return data


def write_merr_json(path: PathLike, data: dict[str, dict]) -> None:
    atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=1) + "\n")


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


# ---------------------------------------------------------------------------------------------- DFEW


def read_dfew_split(path: PathLike) -> list[Sample]:
    """Read an official split file (``video_name,label``, labels 1..7 in DFEW_LABELS order)."""
    return [
        Sample(row["video_name"], _dfew_index(row["label"], f"{path}:{line}", base=1))
        for line, row in _csv_rows(path, "DFEW split", ("video_name", "label"))
    ]


def write_dfew_split(path: PathLike, samples: Iterable[Sample]) -> None:
    _write_csv(path, ("video_name", "label"), ((s.name, _dfew_number(s.label) + 1) for s in samples))


def read_dfew_txt(path: PathLike) -> list[Sample]:
    """Read ``<frame_dir> <n_frames> <label-1>`` lines; the name is the last component of frame_dir."""
    samples = []
    for number, line in _text_lines(path, "DFEW list"):
        where = f"{path}:{number}"
        fields = line.split()
        if len(fields) != 3:
            raise UserError(
                f"{where}: expected '<frame_dir> <n_frames> <label-1>', got {line!r}; fix that line"
            )
        name = fields[0].replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
        n_frames = int(_number(fields[1], int, where, "n_frames"))
        samples.append(Sample(name, _dfew_index(fields[2], where, base=0), n_frames=n_frames))
    return samples


def write_dfew_txt(path: PathLike, samples: Iterable[Sample], frame_root: str = "") -> None:
    lines = [
        f"{os.path.join(frame_root, s.name) if frame_root else s.name} {s.n_frames or 0} "
        f"{_dfew_number(s.label)}\n"
        for s in samples
    ]
    atomic_write_text(path, "".join(lines))


# ---------------------------------------------------------------------------------------------- MER2023/2024


def read_mer2023_npz(path: PathLike, corpus: str = "test3") -> list[Sample]:
    """Read one corpus (``train``, ``test1`` MULTI, ``test2`` NOISE, ``test3`` SEMI) of ``label-6way.npz``."""
    path = _existing(path, "MER2023 label")
    key = corpus if corpus.endswith("_corpus") else f"{corpus}_corpus"
    entries = _npz_dict(path, key)
    return [_mer2023_sample(path, key, name, entry) for name, entry in entries.items()]


def _npz_dict(path: Path, key: str) -> dict:
    broken = UserError(f"{path}: not a label-6way.npz of pickled dicts; re-download label-6way.npz")
    try:
        npz = np.load(path, allow_pickle=True)
    except (ValueError, OSError, pickle.UnpicklingError, EOFError):
        raise broken from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise broken
    with npz:
        if key not in npz.files:
            raise UserError(f"{path}: no corpus {key!r} (found {', '.join(npz.files)}); pick one of those")
        array = npz[key]
    if array.shape != () or not isinstance(array.item(), dict):
        raise broken
    return array.item()


def _mer2023_sample(path: Path, key: str, name: str, entry: dict) -> Sample:
    where = f"{path} [{key}][{name!r}]"
    if not isinstance(entry, dict) or "emo" not in entry:
        raise UserError(f"{where}: expected a dict with 'emo' and 'val'; re-download label-6way.npz")
    return Sample(str(name), _label(str(entry["emo"]), MER_LABELS, where), _valence(entry.get("val"), where))


def write_mer2023_npz(path: PathLike, corpora: dict[str, list[Sample]]) -> None:
    """Write ``label-6way.npz`` like the official file: each ``<corpus>_corpus`` a dict in an object array."""
    unknown = set(corpora) - set(MER2023_CORPORA)
    if unknown:
        raise ValueError(f"unknown MER2023 corpora {sorted(unknown)}; expected {MER2023_CORPORA}")
    arrays = {
        f"{c}_corpus": np.array({s.name: _mer2023_entry(s) for s in corpora.get(c, [])}, dtype=object)
        for c in MER2023_CORPORA
    }
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.savez_compressed(f, **arrays)


def _mer2023_entry(s: Sample) -> dict:
    return {"emo": s.label, "val": MISSING_VALENCE if s.valence is None else float(s.valence)}


def read_mer2023_csv(path: PathLike) -> list[Sample]:
    """Read ``train-label.csv`` (``name,discrete,valence``)."""
    return [
        Sample(
            row["name"],
            _label(row["discrete"], MER_LABELS, f"{path}:{line}"),
            _valence(row["valence"], f"{path}:{line}"),
        )
        for line, row in _csv_rows(path, "MER2023 label", ("name", "discrete", "valence"))
    ]


def write_mer2023_csv(path: PathLike, samples: Iterable[Sample]) -> None:
    _write_csv(path, ("name", "discrete", "valence"), ((s.name, s.label, _fmt(s.valence)) for s in samples))


def read_mer2024_csv(path: PathLike) -> list[Sample]:
    """Read ``label-disdim.csv`` (``name,discrete``; a ``valence`` column is used when present)."""
    return [
        Sample(
            row["name"],
            _label(row["discrete"], MER_LABELS, f"{path}:{line}"),
            _valence(row.get("valence"), f"{path}:{line}"),
        )
        for line, row in _csv_rows(path, "MER2024 label", ("name", "discrete"))
    ]


def write_mer2024_csv(path: PathLike, samples: Iterable[Sample]) -> None:
    _write_csv(path, ("name", "discrete"), ((s.name, s.label) for s in samples))


# ---------------------------------------------------------------------------------------------- EMER


def read_emer_csv(path: PathLike) -> list[dict]:
    """Read the EMER ground truth: one dict with ``names, emotions, subtitles, reasons`` per clip."""
    return [
        {c: ("" if row[c].lower() == "nan" else row[c]) for c in EMER_COLUMNS}
        for _, row in _csv_rows(path, "EMER ground-truth", EMER_COLUMNS)
    ]


def write_emer_predictions(path: PathLike, rows: dict[str, str]) -> None:
    """Write generated reasons in the EMER submission layout (``names,chi_reasons``)."""
    _write_csv(path, ("names", "chi_reasons"), rows.items())
