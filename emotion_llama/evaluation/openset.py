"""MER-UniBench's open-vocabulary metrics: emotion-wheel normalisation, the set metric, hit rate and sentiment.

An answer's emotion words are compared through five emotion wheels (the user's own copies of the benchmark's
files, in one folder given with ``paths.emotion_wheel=DIR``; their licence forbids shipping them):

- ``format.csv`` (columns ``name``, ``format``): surface form -> base word (``happily`` -> ``happy``);
- ``synonym.xlsx`` (column pairs ``word_runK``/``synonym_runK``, K = 1..8): base word -> synonym parent;
- ``wheel1.xlsx`` .. ``wheel5.xlsx`` (columns ``level1``, ``level2``, ``level3``; a blank cell takes the value
  above it): each wheel's sectors.

A word is lower-cased and stripped; its base words (the word itself when ``format.csv`` does not list it) give
their synonym parents (a base word without parent stands for itself); those candidates, sorted alphabetically,
are looked up in the wheel and the first one found gives the word's sector: its level-1 ancestor (or level-2
on request). A word found nowhere is dropped, so ``neutral`` maps to nothing.

- **Set metric** (OV-MERD+, MER2025 Track 2), per wheel: over the samples whose true set G maps to something,
  precision |G n P| / |P| and recall |G n P| / |G| of the predicted set P (both 0 when P is empty) are
  averaged, and F = 2PR / (P + R) is taken from the averages; F, P and R are then averaged over the wheels.
- **Hit rate** (MER2023, MER2024, MELD, IEMOCAP), per wheel: 1 when the true label's sector is among the
  predicted sectors, averaged over the samples whose label maps to something; then averaged over the wheels.
- **Sentiment** (CMU-MOSI/MOSEI, CH-SIMS): ``positive`` -> 1, ``negative`` -> -1, anything else 0; samples whose
  true value is 0 are dropped; both sides are binarised as ``> 0``; weighted F1 and accuracy.

Predictions are read from ``name,openset`` CSV files or the original code's ``*-openset.npz``. This module
imports no torch.
"""

from __future__ import annotations

import csv
import io
import math
import re
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from emotion_llama.datasets.common import csv_rows, read_text
from emotion_llama.datasets.plain_npz import read_plain_npz
from emotion_llama.datasets.unibench import (
    WHEEL_FILES,
    WHEEL_FORMAT_FILE,
    WHEEL_LEVELS,
    WHEEL_SYNONYM_FILE,
    parse_openset,
)
from emotion_llama.errors import UserError

WHEEL_HINT = ("the emotion wheels (format.csv, synonym.xlsx, wheel1.xlsx..wheel5.xlsx) are your own copy of "
              "MER-UniBench's files, given with paths.emotion_wheel=DIR")
_RUN_COLUMN = re.compile(r"^(word|synonym)_run(\d+)$")

Row = tuple[str, str, str]


def normalise(word: object) -> str:
    """A word as the wheels spell it: lower case, no surrounding whitespace."""
    return str(word).strip().lower()


def fill_down(rows: Iterable[Sequence[str | None]], where: str = "the wheel", first: int = 1) -> list[Row]:
    """Rows of (level1, level2, level3) with each blank cell (None or "") taken from the row above; rows
    blank throughout are skipped. A blank with nothing above it is a :class:`UserError` naming its row
    (``first``: the number of the first row, 2 in a sheet under its header)."""
    filled: list[Row] = []
    last: list[str | None] = [None, None, None]
    for number, row in enumerate(rows, start=first):
        cells = [None if c is None or not str(c).strip() else normalise(c) for c in row]
        if not any(cells):
            continue
        for i, cell in enumerate(cells):
            if cell is not None:
                last[i] = cell
            elif last[i] is None:
                raise UserError(f"{where}: row {number} has a blank {WHEEL_LEVELS[i]} with nothing above it to "
                                f"fill it from; {WHEEL_HINT}")
        filled.append((last[0], last[1], last[2]))
    return filled


def _sector_map(rows: Sequence[Row], level: int) -> dict[str, str]:
    """Word -> its sector at ``level`` (1 or 2): a word at that level or below maps to the row's level-``level``
    cell (the first row that has it wins); a word only found above that level (a level-1 word at level 2)
    stands for itself."""
    sectors: dict[str, str] = {}
    for row in rows:
        for word in row[level - 1:]:
            sectors.setdefault(word, row[level - 1])
    for row in rows:
        for word in row[: level - 1]:
            sectors.setdefault(word, word)
    return sectors


@dataclass
class EmotionWheels:
    """The normalisation tables and the wheels' rows (blank cells already filled)."""

    forms: Mapping[str, Sequence[str]]        # surface form -> base words (format.csv)
    parents: Mapping[str, Sequence[str]]      # base word -> synonym parents (synonym.xlsx)
    wheels: Sequence[Sequence[Row]]           # each wheel's (level1, level2, level3) rows
    names: Sequence[str] = ()                 # the wheels' names (default wheel1, wheel2, ...)
    _maps: dict[tuple[int, int], dict[str, str]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.forms = {normalise(k): tuple(normalise(v) for v in vs) for k, vs in self.forms.items()}
        self.parents = {normalise(k): tuple(normalise(v) for v in vs) for k, vs in self.parents.items()}
        self.wheels = tuple(tuple(tuple(normalise(c) for c in row) for row in rows) for rows in self.wheels)
        if not self.wheels:
            raise ValueError("EmotionWheels needs at least one wheel")
        if any(len(row) != 3 for rows in self.wheels for row in rows):
            raise ValueError("each wheel row is (level1, level2, level3)")
        self.names = tuple(self.names) or tuple(f"wheel{k}" for k in range(1, len(self.wheels) + 1))
        if len(self.names) != len(self.wheels):
            raise ValueError(f"{len(self.names)} names for {len(self.wheels)} wheels")

    @classmethod
    def load(cls, folder: str | Path) -> EmotionWheels:
        """Read ``format.csv``, ``synonym.xlsx`` and ``wheel1.xlsx``..``wheel5.xlsx`` from ``folder``; a missing
        or ill-formed file is a one-line :class:`UserError` naming it."""
        folder = Path(folder)
        if not folder.is_dir():
            what = "is a file" if folder.exists() else "not found"
            raise UserError(f"paths.emotion_wheel={folder} {what}: {WHEEL_HINT}")
        forms = read_format(folder / WHEEL_FORMAT_FILE)
        parents = read_synonyms(folder / WHEEL_SYNONYM_FILE)
        wheels = [fill_down(_xlsx_columns(folder / name, WHEEL_LEVELS), str(folder / name), first=2)
                  for name in WHEEL_FILES]
        for name, rows in zip(WHEEL_FILES, wheels, strict=True):
            if not rows:
                raise UserError(f"{folder / name}: no rows under level1, level2, level3; {WHEEL_HINT}")
        return cls(forms, parents, wheels, names=[Path(n).stem for n in WHEEL_FILES])

    def candidates(self, word: str) -> list[str]:
        """The words looked up in a wheel for ``word``, in order: its base words' synonym parents, sorted."""
        word = normalise(word)
        found: set[str] = set()
        for base in self.forms.get(word, (word,)):
            found.update(self.parents.get(base, (base,)))
        return sorted(found)

    def sector_map(self, wheel: int, level: int = 1) -> dict[str, str]:
        """Word -> sector of wheel number ``wheel`` (0-based) at ``level`` (1 or 2)."""
        if level not in (1, 2):
            raise ValueError(f"level={level}: use 1 or 2")
        key = (wheel, level)
        if key not in self._maps:
            self._maps[key] = _sector_map(self.wheels[wheel], level)
        return self._maps[key]

    def sector(self, word: str, wheel: int, level: int = 1) -> str | None:
        """``word``'s sector in wheel ``wheel`` (0-based) at ``level``; None when no candidate is in the wheel."""
        sectors = self.sector_map(wheel, level)
        return next((sectors[c] for c in self.candidates(word) if c in sectors), None)

    def sectors(self, words: Iterable[str], wheel: int, level: int = 1) -> set[str]:
        """The sectors of ``words`` (the words that map to nothing dropped)."""
        found = (self.sector(w, wheel, level) for w in words)
        return {s for s in found if s is not None}


# ---------------------------------------------------------------------------------------------- wheel files


def _wheel_file(path: Path) -> Path:
    if not path.is_file():
        raise UserError(f"{path} not found: {WHEEL_HINT}")
    return path


def read_format(path: str | Path) -> dict[str, list[str]]:
    """``format.csv``: surface form -> its base words (a form listed on several rows has several)."""
    path = _wheel_file(Path(path))
    forms: dict[str, list[str]] = {}
    try:
        for _, row in csv_rows(path, "emotion-wheel format.csv", ("name", "format")):
            name, base = normalise(row["name"]), normalise(row["format"])
            if name and base and base not in forms.setdefault(name, []):
                forms[name].append(base)
    except UserError as err:
        raise UserError(f"{err}; {WHEEL_HINT}") from None
    return forms


def read_synonyms(path: str | Path) -> dict[str, list[str]]:
    """``synonym.xlsx``: word -> its synonym parents, from every run of ``word_runK``/``synonym_runK`` columns
    (a pair with a blank cell is skipped)."""
    path = _wheel_file(Path(path))
    header, rows = _xlsx_rows(path)
    runs: dict[int, dict[str, int]] = {}
    for index, name in enumerate(header):
        match = _RUN_COLUMN.match(name)
        if match:
            runs.setdefault(int(match.group(2)), {})[match.group(1)] = index
    unpaired = sorted(f"{'synonym' if 'word' in cols else 'word'}_run{k}"
                      for k, cols in runs.items() if len(cols) < 2)
    if not runs or unpaired:
        missing = f"no column {', '.join(unpaired)}" if unpaired else "no word_runK/synonym_runK columns"
        raise UserError(f"{path}: {missing} (found {', '.join(h for h in header if h) or 'no header'}); "
                        f"{WHEEL_HINT}")
    parents: dict[str, list[str]] = {}
    for row in rows:
        for k in sorted(runs):
            word, parent = (_cell(row, runs[k][c]) for c in ("word", "synonym"))
            if word and parent and parent not in parents.setdefault(word, []):
                parents[word].append(parent)
    return parents


def _cell(row: Sequence[object], index: int) -> str:
    value = row[index] if index < len(row) else None
    return "" if value is None else normalise(value)


def _xlsx_rows(path: Path) -> tuple[list[str], list[tuple]]:
    """The first sheet's header (normalised) and its other rows, as cell values."""
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        book = load_workbook(path, read_only=True, data_only=True)
        try:
            rows = list(book.worksheets[0].iter_rows(values_only=True)) if book.worksheets else []
        finally:
            book.close()
    except (InvalidFileException, zipfile.BadZipFile, KeyError, ValueError, OSError, zlib.error) as err:
        raise UserError(f"{path}: not a readable .xlsx workbook ({type(err).__name__}: {err}); "
                        f"{WHEEL_HINT}") from None
    if not rows:
        raise UserError(f"{path}: the first sheet is empty; {WHEEL_HINT}")
    return [_cell(rows[0], i) for i in range(len(rows[0]))], rows[1:]


def _xlsx_columns(path: Path, columns: Sequence[str]) -> list[list[object]]:
    """The cells of ``columns`` (named in the header row) of every other row of the first sheet."""
    path = _wheel_file(path)
    header, rows = _xlsx_rows(path)
    missing = [c for c in columns if c not in header]
    if missing:
        found = ", ".join(h for h in header if h) or "no header"
        raise UserError(f"{path}: missing column(s) {', '.join(missing)} (found {found}); {WHEEL_HINT}")
    indices = [header.index(c) for c in columns]
    return [[row[i] if i < len(row) else None for i in indices] for row in rows]


# ---------------------------------------------------------------------------------------------- metrics


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _over_wheels(per_wheel: dict[str, dict], keys: Sequence[str], what: str) -> dict:
    scored = [v for v in per_wheel.values() if v["scored"]]
    if not scored:
        raise UserError(f"no {what} maps onto any emotion wheel (every word was dropped): check the gold labels and "
                        "paths.emotion_wheel")
    return {k: _mean([v[k] for v in scored]) for k in keys}


def sample_precision_recall(gold: Sequence[str], pred: Sequence[str], wheels: EmotionWheels, wheel: int,
                            level: int = 1) -> tuple[float, float] | None:
    """One sample's precision and recall of its predicted sectors in wheel number ``wheel`` (both 0 when nothing
    predicted maps); None when its true words map to nothing there (the sample is not scored in that wheel)."""
    truth = wheels.sectors(gold, wheel, level)
    if not truth:
        return None
    guess = wheels.sectors(pred, wheel, level)
    common = len(truth & guess)
    return (common / len(guess) if guess else 0.0), common / len(truth)


def sample_hit(label: str, pred: Sequence[str], wheels: EmotionWheels, wheel: int, level: int = 1) -> float | None:
    """1.0 when the true label's sector in wheel number ``wheel`` is among the predicted ones, else 0.0; None when
    the label maps to nothing there (the sample is not scored in that wheel)."""
    truth = wheels.sector(label, wheel, level)
    return None if truth is None else float(truth in wheels.sectors(pred, wheel, level))


def set_scores(gold: Mapping[str, Sequence[str]], pred: Mapping[str, Sequence[str]], wheels: EmotionWheels,
               level: int = 1) -> dict:
    """The set metric: ``fscore``, ``precision``, ``recall`` (means over the wheels) and ``per_wheel`` (each with
    the number of samples ``scored``). ``gold``/``pred``: sample name -> words; a gold name missing from
    ``pred`` counts as an empty prediction, a ``pred`` name not in ``gold`` is ignored. A wheel where no true
    set maps to anything has NaN scores and is left out of the means."""
    per_wheel: dict[str, dict] = {}
    for index, name in enumerate(wheels.names):
        pairs = [sample_precision_recall(words, pred.get(sample, ()), wheels, index, level)
                 for sample, words in gold.items()]
        precisions = [pr[0] for pr in pairs if pr is not None]
        recalls = [pr[1] for pr in pairs if pr is not None]
        p, r = _mean(precisions), _mean(recalls)
        f = 2 * p * r / (p + r) if p + r > 0 else (0.0 if precisions else math.nan)
        per_wheel[name] = {"fscore": f, "precision": p, "recall": r, "scored": len(precisions)}
    return {**_over_wheels(per_wheel, ("fscore", "precision", "recall"), "true emotion set"), "per_wheel": per_wheel}


def hit_rate(gold: Mapping[str, str], pred: Mapping[str, Sequence[str]], wheels: EmotionWheels,
             level: int = 1) -> dict:
    """Hit rate: ``hit`` (the mean over the wheels) and ``per_wheel`` (each with the samples ``scored``).
    ``gold``: sample name -> its label word; samples whose label maps to nothing in a wheel are left out of
    that wheel; a gold name missing from ``pred`` counts as an empty prediction (a miss)."""
    per_wheel: dict[str, dict] = {}
    for index, name in enumerate(wheels.names):
        found = (sample_hit(label, pred.get(sample, ()), wheels, index, level) for sample, label in gold.items())
        hits = [h for h in found if h is not None]
        per_wheel[name] = {"hit": _mean(hits), "scored": len(hits)}
    return {**_over_wheels(per_wheel, ("hit",), "true label"), "per_wheel": per_wheel}


def sentiment_value(answer: object) -> int:
    """``positive`` -> 1, ``negative`` -> -1, anything else -> 0."""
    return {"positive": 1, "negative": -1}.get(normalise(answer), 0) if answer is not None else 0


def sentiment_scores(true_values: Sequence[float], answers: Sequence[object]) -> dict:
    """Weighted F1 and accuracy of sentiment answers (``positive``/``negative``/other) against true scores:
    samples whose true value is 0 are dropped and both sides binarised as ``> 0`` (a neutral answer counts as
    negative). Returns ``weighted_f1``, ``accuracy`` and ``samples`` (kept)."""
    from sklearn.metrics import accuracy_score, f1_score

    if len(true_values) != len(answers):
        raise ValueError(f"{len(true_values)} true values for {len(answers)} answers")
    kept = [(float(t), sentiment_value(a)) for t, a in zip(true_values, answers, strict=True) if float(t) != 0]
    if not kept:
        raise UserError("no sample with a non-zero true sentiment: nothing to score")
    truth = [t > 0 for t, _ in kept]
    guess = [p > 0 for _, p in kept]
    return {"weighted_f1": float(f1_score(truth, guess, average="weighted")),
            "accuracy": float(accuracy_score(truth, guess)), "samples": len(kept)}


# ---------------------------------------------------------------------------------------------- prediction files


def read_openset_csv(path: str | Path, columns: Sequence[str] = ("openset",),
                     what: str = "openset") -> dict[str, list[str]]:
    """A ``name,openset`` CSV: sample name -> its words (:func:`~emotion_llama.datasets.unibench.parse_openset`;
    an empty set gives none). ``columns``: the word column,
    the first of these the header has. A name given twice is a :class:`UserError`."""
    path = Path(path)
    text = read_text(path, what)
    try:
        header = [c.strip() for c in next(csv.reader(io.StringIO(text, newline="")), [])]
    except csv.Error:
        header = []  # reported with its line by csv_rows
    column = next((c for c in columns if c in header), columns[0])
    found: dict[str, list[str]] = {}
    for line, row in csv_rows(path, what, ("name", column), text=text):
        name = row["name"]
        if not name:
            raise UserError(f"{path}:{line}: empty name; give each row its sample name")
        if name in found:
            raise UserError(f"{path}:{line}: sample {name!r} appears twice; keep one row per sample")
        found[name] = list(parse_openset(row[column], empty=()))
    return found


def read_openset_npz(path: str | Path) -> dict[str, list[str]]:
    """The original code's ``*-openset.npz``: ``filenames`` (the sample names) and ``fileitems`` (each one's
    ``[a, b]`` text or list of words), read as plain data (a pickle that would call anything is refused)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found: point pred= at an existing file")
    arrays = read_plain_npz(path, "prediction data", "write it again from the predictions")
    missing = [k for k in ("filenames", "fileitems") if k not in arrays]
    if missing:
        raise UserError(f"{path}: no {', '.join(missing)} (found {', '.join(arrays) or 'nothing'}); an openset .npz "
                        "holds filenames and fileitems")
    names, items = (_as_list(arrays[k]) for k in ("filenames", "fileitems"))
    if names is None or items is None or len(names) != len(items):
        raise UserError(f"{path}: filenames and fileitems must be two lists of the same length (found "
                        f"{arrays['filenames'].shape} and {arrays['fileitems'].shape}); write it again")
    found: dict[str, list[str]] = {}
    for name, item in zip(names, items, strict=True):
        name = str(name).strip()
        if name in found:
            raise UserError(f"{path}: sample {name!r} appears twice in filenames; keep one entry per sample")
        found[name] = _words(item)
    return found


def _as_list(array) -> list | None:
    """A 1-D array as a list; a 0-d object array holding a list, tuple or 1-D array as that list."""
    import numpy as np

    if array.ndim == 1:
        return array.tolist()
    if array.ndim == 0:
        value = array.item()
        if isinstance(value, (list, tuple)):
            return list(value)
        if isinstance(value, np.ndarray) and value.ndim == 1:
            return value.tolist()
    return None


def _words(item: object) -> list[str]:
    if isinstance(item, (list, tuple, set, frozenset)):
        return [w for w in (normalise(x) for x in item) if w]
    if hasattr(item, "tolist"):  # a numpy array or scalar
        return _words(item.tolist())
    return list(parse_openset(item, empty=()))


def read_openset(path: str | Path, what: str = "openset") -> dict[str, list[str]]:
    """Sample name -> words from a ``name,openset`` CSV or an ``*-openset.npz`` (by the file's suffix)."""
    return read_openset_npz(path) if Path(path).suffix.lower() == ".npz" else read_openset_csv(path, what=what)
