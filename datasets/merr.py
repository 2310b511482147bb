"""MERR annotation files: ``name n_frames label [valence]`` lists and the caption json files."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from emotion_llama.datasets.common import (
    PathLike,
    Sample,
    _existing,
    _fmt,
    _label,
    _number,
    _text_lines,
    _valence,
    read_text,
)
from emotion_llama.errors import UserError
from emotion_llama.fileio import atomic_write_text
from emotion_llama.labels import MERR_LABELS


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
        data = json.loads(read_text(path, "MERR json"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); fix or re-download the file") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise UserError(f"{path}: expected a JSON object mapping clip names to objects; use the MERR json")
    return data


def write_merr_json(path: PathLike, data: dict[str, dict]) -> None:
    atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=1) + "\n")
