"""Synthetic MER-UniBench label files in the released layouts (see :mod:`emotion_llama.datasets.unibench`).

:func:`write_unibench_set` writes one set's files from given samples; :func:`write_unibench_sets` lays out
all nine with made-up names, labels and scores; :func:`write_synthetic_unibench` lays out all nine on the
synthetic set's test clips (their features exist), with a small emotion-wheel folder to score them with.
The ``.npz`` files hold pickled dicts in object arrays, as the released files do, written byte for byte the
same on every run (fixed zip timestamps, entries in the given order), so the same call gives the same files.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from emotion_llama.datasets.common import (
    MISSING_VALENCE,
    PathLike,
    Sample,
    _write_csv,
    read_subtitles,
    write_subtitles,
)
from emotion_llama.datasets.merr import read_merr_txt
from emotion_llama.datasets.synthetic.wheel import write_wheel_folder
from emotion_llama.datasets.unibench import (
    BASIC,
    CLIP_NAMES_FILE,
    OPENSET,
    UNIBENCH_SETS,
    WHEEL_FILES,
    WHEEL_FORMAT_FILE,
    WHEEL_SYNONYM_FILE,
    OpenSample,
    unibench_set,
)
from emotion_llama.errors import UserError
from emotion_llama.fileio import atomic_path, atomic_write_text

# The other corpora of each released .npz, written empty beside the test one.
_NPZ_KEYS = {
    "label-6way.npz": ("train_corpus", "test1_corpus", "test2_corpus", "test3_corpus"),
    "label.npz": ("train_corpus", "val_corpus", "test_corpus"),
    "label_4way.npz": ("whole_corpus",),
}
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_OPEN_WORDS = ("happy", "worried", "tense", "angry", "sad", "surprised", "relieved", "confused", "calm", "proud")
_SENTENCES = ("I did not expect that at all.", "We finally made it.", "Why would you say that?",
              "It is fine, really.", "I can't stop thinking about it.")


def write_npz_dicts(path: PathLike, corpora: Mapping[str, dict]) -> None:
    """``path`` as an ``.npz`` with each dict of ``corpora`` pickled in a 0-d object array under its key, as
    numpy's ``savez_compressed`` writes it, but with fixed timestamps so that the bytes are reproducible."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for key, value in corpora.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.array(value, dtype=object), allow_pickle=True)


def write_unibench_set(set_name: str, root: PathLike, samples: Iterable | Mapping,
                       subtitles: Mapping[str, str] | None = None) -> Path:
    """Write a set's label file (and OV-MERD+'s subtitle file) into the folder ``root``; return the label file.

    ``samples``: :class:`Sample`/:class:`OpenSample` objects, or a mapping ``name -> value``:
    basic sets a label word (MELD and IEMOCAP store its index) or an int written as the index unchecked;
    sentiment sets a score (a ``Sample``'s ``valence``), written unchecked so that broken files can be made;
    OV-MERD+ a list of words (``[]`` is written as the empty cell) or the raw cell text.
    IEMOCAP's names go into ``whole_corpus`` as given (the reader keeps those of Session 5, ``Ses05...``).
    """
    key, spec = unibench_set(set_name)
    root = Path(root)
    items = list(samples.items()) if isinstance(samples, Mapping) else [(s.name, s) for s in samples]
    if spec.kind == OPENSET:
        _write_csv(root / spec.label_file, ("name", "openset"), ((n, _openset_cell(v)) for n, v in items))
        subs = {n: "" for n, _ in items} if subtitles is None else dict(subtitles)
        write_subtitles(root / spec.subtitle_file, subs)
        return root / spec.label_file
    if subtitles is not None:
        raise ValueError(f"no subtitle file is known for {spec.title}")
    entry = _basic_entry if spec.kind == BASIC else _sentiment_entry
    test = {str(n): entry(key, v) for n, v in items}
    corpora = {k: test if k == spec.key else {} for k in _NPZ_KEYS[spec.label_file]}
    write_npz_dicts(root / spec.label_file, corpora)
    return root / spec.label_file


def _basic_entry(key: str, value: Sample | str | int) -> dict:
    spec = UNIBENCH_SETS[key]
    valence = value.valence if isinstance(value, Sample) else None
    label = value.label if isinstance(value, Sample) else value
    if isinstance(label, str) and label not in spec.labels:
        raise ValueError(f"{label!r} is not a {spec.title} label ({', '.join(spec.labels)})")
    if key in ("mer2023", "mer2024"):  # words, with the valence (-10: none), as label-6way.npz stores them
        return {"emo": label, "val": MISSING_VALENCE if valence is None else float(valence)}
    return {"emo": spec.labels.index(label) if isinstance(label, str) else int(label)}


def _sentiment_entry(key: str, value: Sample | float) -> dict:
    score = value.valence if isinstance(value, Sample) else value
    if score is None:
        raise ValueError(f"sample {value.name} has no score (valence) for {UNIBENCH_SETS[key].title}")
    return {"val": float(score)}


def _openset_cell(value: OpenSample | Sequence[str] | str) -> str:
    if isinstance(value, str):
        return value
    words = value.labels if isinstance(value, OpenSample) else tuple(value)
    return f"[{', '.join(words)}]" if words else ""


def write_unibench_sets(root: PathLike, n: int = 8, seed: int = 0) -> dict[str, Path]:
    """All nine sets under ``root/<set key>/`` with ``n`` test samples each (IEMOCAP: ``n`` of Session 5 plus
    ``n // 2`` of sessions 1-4; OV-MERD+: the first sample's set empty); returns ``{set key: folder}``."""
    folders = {}
    for k, (key, spec) in enumerate(UNIBENCH_SETS.items()):
        rng = np.random.default_rng([seed, k, 2025])
        folder = Path(root) / key
        if spec.kind == BASIC:
            samples = _basic_samples(key, n, rng)
            write_unibench_set(key, folder, samples)
        elif spec.kind == OPENSET:
            words = {f"samplenew3_{i:08d}": [] if i == 0 else [
                _OPEN_WORDS[int(j)] for j in rng.choice(len(_OPEN_WORDS), int(rng.integers(1, 4)), replace=False)]
                for i in range(n)}
            subs = {name: _SENTENCES[int(rng.integers(len(_SENTENCES)))] for name in words}
            write_unibench_set(key, folder, words, subs)
        else:
            low, high = spec.value_range
            write_unibench_set(key, folder, {
                f"{key}_video{i // 3:03d}_{i % 3}": 0.0 if i == 0 else round(float(rng.uniform(low, high)), 4)
                for i in range(n)})
        folders[key] = folder
    return folders


def _basic_samples(key: str, n: int, rng: np.random.Generator) -> list[Sample]:
    labels = UNIBENCH_SETS[key].labels
    offset = int(rng.integers(len(labels)))
    picks = [labels[(i + offset) % len(labels)] for i in range(n)]
    if key == "meld":
        return [Sample(f"dia{i // 4}_utt{i % 4}", label) for i, label in enumerate(picks)]
    if key == "iemocap4":
        others = [Sample(f"Ses0{1 + i % 4}{'FM'[i % 2]}_impro0{1 + i % 8}_{'MF'[i % 2]}{i:03d}",
                         labels[int(rng.integers(len(labels)))]) for i in range(n // 2)]
        test = [Sample(f"Ses05{'FM'[i % 2]}_script0{1 + i % 3}_{'FM'[i // 2 % 2]}{i:03d}", label)
                for i, label in enumerate(picks)]
        return [s for pair in zip(test, others, strict=False) for s in pair] + test[len(others):]
    return [Sample(f"sample_{i:08d}", label, round(float(rng.uniform(-5, 5)), 2)) for i, label in enumerate(picks)]


# ---------------------------------------------------------------------------------------------- the synthetic sets

SYNTHETIC_UNIBENCH_DIR = "unibench"  # <synthetic_dir>/unibench/<set key>/: the nine sets on the synthetic test clips
SYNTHETIC_WHEEL_DIR = "wheel"        # <synthetic_dir>/wheel/: a small emotion-wheel folder (see .wheel)
SYNTHETIC_UNIBENCH_VERSION = 1
SET_SUBTITLES_FILE = "subtitles.csv"  # name,sentence of each set but OV-MERD+ (which has subtitle_eng.csv)
# A MERR label's sentiment: the synthetic sentiment scores' sign (0: the metric drops the clip).
SYNTHETIC_POLARITY: dict[str, int] = {
    "happy": 1, "neutral": 0, "surprise": 0, "doubt": 0,
    "sad": -1, "angry": -1, "worried": -1, "fear": -1, "contempt": -1,
}
MELD_FROM_MERR = {"angry": "anger", "happy": "joy", "sad": "sadness", "neutral": "neutral", "fear": "fear",
                  "surprise": "surprise", "contempt": "disgust"}
IEMOCAP_FROM_MERR = {"happy": "happy", "sad": "sad", "neutral": "neutral", "angry": "anger"}
IEMOCAP_TEST_PREFIX = "Ses05_"  # IEMOCAP's test set is Session 5: its sample names start with Ses05
# Words written beside a clip's label in the synthetic OV-MERD+ set: surface forms of the synthetic wheel's
# format.csv (.wheel.FORMS), most in the label's sector ("upset" is sad and angry: angry comes first).
RELATED_WORDS: dict[str, tuple[str, ...]] = {
    "happy": ("joyful", "cheerful"), "sad": ("sorrowful", "upset"), "angry": ("furious", "upset"),
    "worried": ("anxious", "nervous", "tense"), "surprise": ("amazed", "astonished"),
    "fear": ("scared", "terrified", "afraid"), "contempt": ("disdain", "scornful"),
    "doubt": ("skeptical", "suspicious"), "neutral": (),
}


def _crc(*parts: str) -> int:
    return zlib.crc32("/".join(parts).encode())


def synthetic_openset(name: str, label: str) -> list[str]:
    """A clip's OV-MERD+-style words: its label and one or two related words chosen by the clip's name (crc32:
    the same on every machine); a neutral clip has none (the empty set, OV-MERD+'s ``[neutral]``)."""
    related = RELATED_WORDS.get(label, ())
    if not related:
        return []
    h = _crc(name, "openset")
    start = (h // 2) % len(related)
    extra = [related[(start + i) % len(related)] for i in range(min(1 + h % 2, len(related)))]
    return [label, *extra]


def synthetic_sentiment(name: str, label: str, high: float) -> float:
    """A clip's sentiment score in [-high, high]: the sign of its label (:data:`SYNTHETIC_POLARITY`), a
    magnitude of 0.2..1 x ``high`` chosen by the clip's name."""
    sign = SYNTHETIC_POLARITY.get(label, 0)
    return round(sign * high * (0.2 + 0.8 * (_crc(name, "sentiment") % 1000) / 1000), 3)


def _link(folder: Path, name: str, target: str) -> None:
    """``folder/name`` -> ``target`` (relative), unless something is there already."""
    link = folder / name
    if not link.exists() and not link.is_symlink():
        link.symlink_to(target, target_is_directory=True)


def write_synthetic_unibench(synthetic_dir: PathLike) -> Path:
    """MER-UniBench's nine sets on the synthetic set's test clips, under ``<synthetic_dir>/unibench/<set key>/``,
    and the small emotion-wheel folder ``<synthetic_dir>/wheel/`` they are scored with; returns the unibench root.

    Each set folder holds its released label file (with the synthetic clip names, so their features exist), a
    ``subtitles.csv`` (OV-MERD+: ``subtitle_eng.csv``) and the links ``features`` and ``videos`` to the
    synthetic set's own folders, as a real set's folder holds its features and videos. MER2023/MER2024: the clips
    with a MER label; MELD and IEMOCAP: those whose label has a counterpart there (IEMOCAP's names start with
    ``Ses05_``, its test session; ``clip_names.csv`` maps them to the clips); the four sentiment sets: every
    clip, scored by its label's polarity (:data:`SYNTHETIC_POLARITY`); OV-MERD+: each clip's label plus one or
    two related words (:func:`synthetic_openset`). Written only when missing or made from another test split
    (``unibench/meta.json``): the videos and features are never redone for it.
    """
    synthetic_dir = Path(synthetic_dir)
    test_file = synthetic_dir / "splits" / "test.txt"
    if not (synthetic_dir / "meta.json").is_file() or not test_file.is_file():
        raise UserError(f"no synthetic set at {synthetic_dir} (no meta.json or splits/test.txt): make it first "
                        f"with python tools/make_synthetic.py out_dir={synthetic_dir} (training on data=synthetic "
                        "makes it too)")
    root, wheel = synthetic_dir / SYNTHETIC_UNIBENCH_DIR, synthetic_dir / SYNTHETIC_WHEEL_DIR
    stamp = {"version": SYNTHETIC_UNIBENCH_VERSION,
             "test_split": hashlib.sha256(test_file.read_bytes()).hexdigest()[:16]}
    wheel_files = (WHEEL_FORMAT_FILE, WHEEL_SYNONYM_FILE, *WHEEL_FILES)
    try:
        done = json.loads((root / "meta.json").read_text(encoding="utf-8")) == stamp
    except (OSError, ValueError):
        done = False
    if done and all((wheel / f).is_file() for f in wheel_files):
        return root

    write_wheel_folder(wheel)
    samples = read_merr_txt(test_file)
    subs_file = synthetic_dir / "subtitles.csv"
    subtitles = read_subtitles(subs_file) if subs_file.is_file() else {}
    for key, spec in UNIBENCH_SETS.items():
        folder = root / key
        folder.mkdir(parents=True, exist_ok=True)
        clips: dict[str, str] = {}  # sample name -> clip name
        if spec.kind == OPENSET:
            words = {s.name: synthetic_openset(s.name, s.label) for s in samples}
            write_unibench_set(key, folder, words, {s.name: subtitles.get(s.name, "") for s in samples})
        else:
            if key in ("mer2023", "mer2024"):
                chosen = [s for s in samples if s.label in spec.labels]
            elif key == "meld":
                chosen = [Sample(s.name, MELD_FROM_MERR[s.label]) for s in samples if s.label in MELD_FROM_MERR]
            elif key == "iemocap4":
                chosen = [Sample(IEMOCAP_TEST_PREFIX + s.name, IEMOCAP_FROM_MERR[s.label]) for s in samples
                          if s.label in IEMOCAP_FROM_MERR]
                clips = {c.name: c.name.removeprefix(IEMOCAP_TEST_PREFIX) for c in chosen}
            else:
                chosen = {s.name: synthetic_sentiment(s.name, s.label, spec.value_range[1]) for s in samples}
            write_unibench_set(key, folder, chosen)
            names = list(chosen) if isinstance(chosen, dict) else [c.name for c in chosen]
            write_subtitles(folder / SET_SUBTITLES_FILE, {n: subtitles.get(clips.get(n, n), "") for n in names})
        if clips:
            _write_csv(folder / CLIP_NAMES_FILE, ("name", "clip"), clips.items())
        _link(folder, "features", "../../features")
        _link(folder, "videos", "../../videos")
    atomic_write_text(root / "meta.json", json.dumps(stamp, indent=1) + "\n")
    return root
