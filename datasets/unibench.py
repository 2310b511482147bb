"""MER-UniBench (AffectGPT, ICML 2025): the label files of its nine test sets, in their released layouts.

:data:`UNIBENCH_SETS` is the one place the facts of each set live (kind, label file, ``.npz`` key, labels and
their index order, value range, subtitle file, published test size, primary metric); :func:`read_unibench`
reads any set's test samples from the folder that holds its files (AffectGPT's dataset folder of that set):

- **basic** sets give :class:`~.common.Sample` ``(name, label)``. MER2023 / MER2024: ``label-6way.npz`` ->
  ``test1_corpus``, ``emo`` a label word (read like :func:`.mer.read_mer2023_npz`, ``val`` kept as valence).
  MELD: ``label.npz`` -> ``test_corpus``, ``emo`` an index 0-6. IEMOCAP (4 classes): ``label_4way.npz`` ->
  ``whole_corpus``, of which Session 5 (names starting ``Ses05``) is the test set, ``emo`` an index 0-3. An
  index set also accepts the label word itself (the stored type of IEMOCAP's ``emo`` is not documented).
- **sentiment** sets (CMU-MOSI, CMU-MOSEI in [-3, 3]; CH-SIMS, CH-SIMS v2 in [-1, 1]): ``label.npz`` ->
  ``test_corpus``, ``val`` a float. They give ``Sample(name, polarity, valence=score)`` with the polarity
  ``positive`` / ``negative`` / ``neutral`` from the score's sign (the metric drops the 0s and binarises ``> 0``).
- **openset** (OV-MERD+): ``ovlabel.csv`` (``name``, ``openset`` like ``[worried, tense]``; an empty set reads as
  ``[neutral]``) gives :class:`OpenSample` ``(name, labels)``; its subtitles ``subtitle_eng.csv`` (``name,sentence``)
  are read by :func:`read_unibench_subtitles`.

The ``.npz`` files hold pickled dicts; they are read by :mod:`.plain_npz`, which refuses a pickle that names
anything but plain data before it can run. Every problem (a missing file, key or column, an unknown label or
index, a score out of range, an empty test set) is a one-line :class:`UserError` naming the file and the fix.
The labels and score files are the user's own copies; nothing here ships them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emotion_llama.datasets.common import (
    PathLike,
    Sample,
    check_samples,
    check_subtitles,
    csv_rows,
    read_subtitles,
)
from emotion_llama.datasets.mer import _mer2023_sample
from emotion_llama.datasets.plain_npz import read_plain_npz
from emotion_llama.errors import UserError
from emotion_llama.labels import MER_LABELS

BASIC, SENTIMENT, OPENSET = "basic", "sentiment", "openset"
SENTIMENT_LABELS: tuple[str, ...] = ("positive", "negative", "neutral")
OPENSET_EMPTY: tuple[str, ...] = ("neutral",)  # what an empty ``openset`` cell stands for
# The data.kind of a MER-UniBench evaluation: one set (conf/data/unibench_<set>.yaml) or all (mer_unibench.yaml).
UNIBENCH_KINDS: tuple[str, ...] = ("unibench", "mer_unibench")
# The emotion wheels' folder (the user's own copy, paths.emotion_wheel): its files and the wheels' columns.
WHEEL_FORMAT_FILE = "format.csv"
WHEEL_SYNONYM_FILE = "synonym.xlsx"
WHEEL_FILES: tuple[str, ...] = tuple(f"wheel{k}.xlsx" for k in range(1, 6))
WHEEL_LEVELS: tuple[str, ...] = ("level1", "level2", "level3")
# name,clip: beside a label file, the clip names a set's samples are stored under (features, videos) where these
# differ from the sample names (the synthetic IEMOCAP set's Ses05_ names); optional.
CLIP_NAMES_FILE = "clip_names.csv"


@dataclass(frozen=True)
class UniBenchSet:
    """What is known of one MER-UniBench test set.

    ``labels``: a basic set's labels in the order of its stored indices. ``value_range``: a sentiment set's
    inclusive score range. ``name_prefix``: only names starting with it are the test set (IEMOCAP: Session 5).
    ``test_size``: the published number of test samples. ``metric``: ``hit_rate``, ``weighted_f1`` or ``set_f``.
    """

    title: str
    kind: str
    label_file: str
    key: str | None = None
    labels: tuple[str, ...] = ()
    value_range: tuple[float, float] | None = None
    subtitle_file: str | None = None
    name_prefix: str = ""
    test_size: int = 0
    metric: str = "hit_rate"


UNIBENCH_SETS: dict[str, UniBenchSet] = {
    "mer2023": UniBenchSet("MER2023", BASIC, "label-6way.npz", "test1_corpus", MER_LABELS, test_size=411),
    "mer2024": UniBenchSet("MER2024", BASIC, "label-6way.npz", "test1_corpus", MER_LABELS, test_size=1169),
    "meld": UniBenchSet("MELD", BASIC, "label.npz", "test_corpus",
                        ("anger", "joy", "sadness", "neutral", "disgust", "fear", "surprise"), test_size=2610),
    "iemocap4": UniBenchSet("IEMOCAP", BASIC, "label_4way.npz", "whole_corpus", ("happy", "sad", "neutral", "anger"),
                            name_prefix="Ses05", test_size=1241),
    "cmumosi": UniBenchSet("CMU-MOSI", SENTIMENT, "label.npz", "test_corpus", value_range=(-3.0, 3.0),
                           test_size=686, metric="weighted_f1"),
    "cmumosei": UniBenchSet("CMU-MOSEI", SENTIMENT, "label.npz", "test_corpus", value_range=(-3.0, 3.0),
                            test_size=4659, metric="weighted_f1"),
    "sims": UniBenchSet("CH-SIMS", SENTIMENT, "label.npz", "test_corpus", value_range=(-1.0, 1.0),
                        test_size=457, metric="weighted_f1"),
    "simsv2": UniBenchSet("CH-SIMS v2", SENTIMENT, "label.npz", "test_corpus", value_range=(-1.0, 1.0),
                          test_size=1034, metric="weighted_f1"),
    "ovmerdplus": UniBenchSet("OV-MERD+", OPENSET, "ovlabel.csv", subtitle_file="subtitle_eng.csv",
                              test_size=532, metric="set_f"),
}


@dataclass(frozen=True)
class OpenSample:
    """An open-vocabulary sample: its name and its true emotion words (lower case, in file order, no repeats)."""

    name: str
    labels: tuple[str, ...]

    @property
    def label(self) -> str:
        """The words as one string, ``"worried, tense"``."""
        return ", ".join(self.labels)


# ---------------------------------------------------------------------------------------------- set names


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower().replace("+", "plus"))


_ALIASES = {_norm(alias): key for key, spec in UNIBENCH_SETS.items() for alias in (key, spec.title)}
_ALIASES.update({"iemocapfour": "iemocap4", "iemocap4way": "iemocap4", "mosi": "cmumosi", "mosei": "cmumosei",
                 "chsims2": "simsv2"})


def unibench_set(set_name: str) -> tuple[str, UniBenchSet]:
    """The key and facts of a set named by its key (``cmumosi``) or title (``CMU-MOSI``, case and punctuation
    ignored); an unknown name is one UserError listing the sets."""
    key = _ALIASES.get(_norm(str(set_name)))
    if key is None:
        raise UserError(f"unknown MER-UniBench set {set_name!r}: use one of {', '.join(UNIBENCH_SETS)}")
    return key, UNIBENCH_SETS[key]


def _set_file(spec: UniBenchSet, root: PathLike, file_name: str) -> Path:
    """``root/file_name``; ``root`` may also be the label file itself (its folder then holds the others)."""
    root = Path(root)
    folder = root.parent if root.is_file() else root
    path = root if root.is_file() and file_name == spec.label_file else folder / file_name
    if not path.is_file():
        raise UserError(f"{path} not found: put {spec.title}'s released {file_name} (from its MER-UniBench "
                        f"dataset folder) there, or point the {spec.title} root at the folder that holds it")
    return path


def unibench_label_path(set_name: str, root: PathLike) -> Path:
    """The existing label file of a set under ``root`` (or ``root`` itself when it is that file)."""
    _, spec = unibench_set(set_name)
    return _set_file(spec, root, spec.label_file)


# ---------------------------------------------------------------------------------------------- readers


def read_unibench(set_name: str, root: PathLike) -> list[Sample] | list[OpenSample]:
    """The test samples of a MER-UniBench set, from ``root``, the folder of its released files, in file order.

    basic -> ``Sample(name, label)``; sentiment -> ``Sample(name, positive|negative|neutral, valence=score)``;
    openset -> ``OpenSample(name, labels)``. See the module doc for the layouts.
    """
    _, spec = unibench_set(set_name)
    path = _set_file(spec, root, spec.label_file)
    if spec.kind == OPENSET:
        samples: list = _read_openset(path, spec)
    elif spec.labels == MER_LABELS:
        samples = [_mer2023_sample(path, spec.key, name, entry) for name, entry in _corpus(path, spec).items()]
    elif spec.kind == BASIC:
        samples = _read_indexed(path, spec)
    else:
        samples = _read_sentiment(path, spec)
    return check_samples(samples, path if spec.key is None else f"{path} [{spec.key!r}]")


def read_unibench_subtitles(set_name: str, root: PathLike, names=None) -> dict[str, str] | None:
    """The subtitles of a set (``name -> sentence``, a missing one ``""``), or ``None`` for a set whose subtitle
    file is not known here (all but OV-MERD+). With ``names``, a file that matches none of them is refused."""
    _, spec = unibench_set(set_name)
    if spec.subtitle_file is None:
        return None
    path = _set_file(spec, root, spec.subtitle_file)
    subtitles = read_subtitles(path)
    if names is not None:
        check_subtitles(subtitles, names, path)
    return subtitles


def _corpus(path: Path, spec: UniBenchSet) -> dict:
    """The dict under ``spec.key`` of an ``.npz`` label file, read as plain data (a pickle that would call
    anything is refused, never run)."""
    fix = f"re-download {spec.label_file} of {spec.title}"
    arrays = read_plain_npz(path, "label data", fix)
    if spec.key not in arrays:
        found = ", ".join(arrays) or "no arrays"
        raise UserError(f"{path}: no {spec.key!r} (found {found}); give the released {spec.label_file} of "
                        f"{spec.title}, which holds its test set under {spec.key!r}")
    array = arrays[spec.key]
    if array.shape != () or not isinstance(array.item(), dict):
        raise UserError(f"{path}: {spec.key!r} is not a pickled dict of samples (a {array.dtype} array of shape "
                        f"{array.shape}); {fix}")
    return array.item()


def _field(path: Path, spec: UniBenchSet, name: object, entry: object, field: str) -> tuple[str, object]:
    where = f"{path} [{spec.key!r}][{str(name)!r}]"
    if not isinstance(entry, dict) or field not in entry:
        raise UserError(f"{where}: expected a dict with {field!r}; re-download {spec.label_file} of {spec.title}")
    return where, entry[field]


def _read_indexed(path: Path, spec: UniBenchSet) -> list[Sample]:
    corpus = _corpus(path, spec)
    samples = []
    for name, entry in corpus.items():
        if not str(name).startswith(spec.name_prefix):
            continue
        where, raw = _field(path, spec, name, entry, "emo")
        samples.append(Sample(str(name), _indexed_label(raw, spec, where)))
    if not samples and corpus and spec.name_prefix:
        raise UserError(f"{path} [{spec.key!r}] has none of the {spec.title} test samples (names starting "
                        f"{spec.name_prefix!r}; it names e.g. {str(next(iter(corpus)))!r}): give the released "
                        f"{spec.label_file} of {spec.title}")
    return samples


def _indexed_label(raw: object, spec: UniBenchSet, where: str) -> str:
    """A label stored as an index into ``spec.labels`` (or as the label word itself)."""
    labels, last = spec.labels, len(spec.labels) - 1
    expected = f"{spec.label_file} of {spec.title} stores an index 0-{last} into {', '.join(labels)}"
    if isinstance(raw, np.ndarray) and raw.shape == ():
        raw = raw.item()
    if isinstance(raw, str | np.str_):
        word = str(raw).strip().lower()
        if word in labels:
            return word
        if not re.fullmatch(r"[+-]?\d+", word):
            raise UserError(f"{where}: unknown label {str(raw)!r}; {expected} (or one of those words): fix the "
                            "entry or re-download the file")
        raw = int(word)
    if isinstance(raw, bool | np.bool_) or not isinstance(raw, int | np.integer | float | np.floating) or (
            isinstance(raw, float | np.floating) and not float(raw).is_integer()):
        raise UserError(f"{where}: 'emo' is {_shown_value(raw)}, not a label index; {expected}: re-download it")
    index = int(raw)
    if not 0 <= index <= last:
        raise UserError(f"{where}: label index {index} is out of range; {expected}: give that set's own file "
                        "or fix the entry")
    return labels[index]


def _shown_value(raw: object) -> str:
    text = " ".join(repr(raw).split())
    return text if len(text) <= 40 else text[:40] + "..."


def _read_sentiment(path: Path, spec: UniBenchSet) -> list[Sample]:
    samples = []
    for name, entry in _corpus(path, spec).items():
        where, raw = _field(path, spec, name, entry, "val")
        value = _score(raw, spec, where)
        polarity = "positive" if value > 0 else "negative" if value < 0 else "neutral"
        samples.append(Sample(str(name), polarity, value))
    return samples


def _score(raw: object, spec: UniBenchSet, where: str) -> float:
    low, high = spec.value_range
    if isinstance(raw, np.ndarray) and raw.shape == ():
        raw = raw.item()
    value = None
    if not isinstance(raw, bool | np.bool_) and isinstance(raw, int | float | str | np.integer | np.floating):
        try:
            value = float(raw)
        except ValueError:
            pass
    if value is None:
        raise UserError(f"{where}: 'val' is {_shown_value(raw)}, not a number; re-download {spec.label_file} of "
                        f"{spec.title}")
    if not (math.isfinite(value) and low <= value <= high):
        raise UserError(f"{where}: 'val' {value!r} is outside [{low:g}, {high:g}], the {spec.title} sentiment "
                        f"score range: give the released {spec.label_file} of {spec.title} (another set's scores?) "
                        "or fix that entry")
    return value


def parse_openset(raw: object, empty: tuple[str, ...] = OPENSET_EMPTY) -> tuple[str, ...]:
    """``"[worried, tense]"`` -> ``("worried", "tense")``: the outer brackets removed (each where present), split
    on commas, each word stripped (of quotes too) and lower-cased, empty ones and repeats dropped. An empty set
    (``""``, ``"[]"``, None, or a float NaN, how a spreadsheet's empty cell can come back) gives ``empty``:
    by default ``("neutral",)``, what OV-MERD+'s label file means by it; predictions pass ``empty=()``.

    The one parser of ``[a, b]`` word lists in the project (labels, predictions, an extractor's reply)."""
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return tuple(empty)
    text = str(raw).strip()
    if text.startswith("["):
        text = text[1:]
    if text.endswith("]"):
        text = text[:-1]
    words: list[str] = []
    for item in text.split(","):
        word = item.strip().strip("'\"").strip().lower()
        if word and word not in words:
            words.append(word)
    return tuple(words) or tuple(empty)


def _read_openset(path: Path, spec: UniBenchSet) -> list[OpenSample]:
    samples = []
    for line, row in csv_rows(path, f"{spec.title} label", ("name", "openset")):
        if not row["name"]:
            raise UserError(f"{path}:{line}: no sample name; fill in the name column or remove that line")
        samples.append(OpenSample(row["name"], parse_openset(row["openset"])))
    return samples


def read_clip_names(folder: PathLike, names: Iterable[str]) -> dict[str, str]:
    """Sample name -> the clip name its features and video are stored under: from the set folder's
    ``clip_names.csv`` (``name,clip``) where it has one and lists the sample, else the sample name itself."""
    clips = {n: n for n in names}
    path = Path(folder) / CLIP_NAMES_FILE
    if path.is_file():
        for _, row in csv_rows(path, "clip name", ("name", "clip")):
            if row["name"] in clips and row["clip"]:
                clips[row["name"]] = row["clip"]
    return clips
