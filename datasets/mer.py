"""MER2023 (``label-6way.npz``, ``train-label.csv``) and MER2024 (``label-disdim.csv``) label files."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from emotion_llama.datasets.common import (
    MISSING_VALENCE,
    PathLike,
    Sample,
    _existing,
    _fmt,
    _label,
    _valence,
    _write_csv,
    csv_rows,
)
from emotion_llama.datasets.plain_npz import read_plain_npz
from emotion_llama.errors import UserError
from emotion_llama.fileio import atomic_path
from emotion_llama.labels import MER_LABELS

MER2023_CORPORA = ("train", "test1", "test2", "test3")


def read_mer2023_npz(path: PathLike, corpus: str = "test3") -> list[Sample]:
    """Read one corpus (``train``, ``test1`` MULTI, ``test2`` NOISE, ``test3`` SEMI) of ``label-6way.npz``."""
    path = _existing(path, "MER2023 label")
    key = corpus if corpus.endswith("_corpus") else f"{corpus}_corpus"
    entries = _npz_dict(path, key)
    return [_mer2023_sample(path, key, name, entry) for name, entry in entries.items()]


# What numpy raises on a truncated or corrupt .npz (a zip of .npy files) or a member that is no array.


def _npz_dict(path: Path, key: str) -> dict:
    """The dict stored under ``key``, read as plain data (see :mod:`.plain_npz`): a pickle in the file that would
    call anything is refused, never run."""
    broken = UserError(f"{path}: not a label-6way.npz of pickled dicts; re-download label-6way.npz")
    arrays = read_plain_npz(path, "label data", "re-download label-6way.npz")
    if not arrays:
        raise broken
    if key not in arrays:
        raise UserError(f"{path}: no corpus {key!r} (found {', '.join(arrays)}); pick one of those")
    array = arrays[key]
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
        for line, row in csv_rows(path, "MER2023 label", ("name", "discrete", "valence"))
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
        for line, row in csv_rows(path, "MER2024 label", ("name", "discrete"))
    ]


def write_mer2024_csv(path: PathLike, samples: Iterable[Sample]) -> None:
    _write_csv(path, ("name", "discrete"), ((s.name, s.label) for s in samples))
