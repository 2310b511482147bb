"""Image emotion datasets: EmoSet's split files and the folder-per-class sets (FI, Emotion6, WEBEmo).

EmoSet (``root`` is the folder holding the split files)::

    info.json                      optional here; {"emotion": {"label2idx": {...}, "idx2label": {...}}, ...}
    train.json val.json test.json  [[label, id, image_path, annotation_path], ...]   (official)
                                   [[label, image_path, annotation_path], ...]       (EmoVIT's copies)
    image/<emotion>/<id>.jpg
    annotation/<emotion>/<id>.json {"brightness": 0.4, "colorfulness": 0.6, "scene": ..., "object": [...],
                                    "facial_expression": ..., "human_action": ...}   (every key optional)

Paths in the split files are relative to ``root``. :func:`read_emoset` checks every entry (shape, label, a
unique id, that its image and annotation files exist) and loads every annotation eagerly. To keep that cheap
for EmoSet's 118k entries, the split file is parsed once, existence is answered from one listing per folder
(not one ``stat`` per file), paths stay strings until the records are built, and the small annotation files
are read by a pool of threads (which hides the latency of network and cold disks). On a busy 2-core machine
118k entries (EmoSet's size) took 6 s of CPU without the annotations and 12 s with them, about half of
it in building the ``Path`` objects. ``load_annotations=False`` checks that the files exist but leaves
``ImageRecord.annotation`` empty; :func:`load_annotation` reads one later from
``ImageRecord.annotation_path``.

Folder-per-class sets (:func:`read_image_folders`): ``root/<class>/*.jpg|jpeg|png|webp`` (optionally
``root/<split>/<class>/...``), class folder names matched case-insensitively against the label set.

Every problem is a :class:`UserError` whose one line names the file (and the entry) and the fix.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emotion_llama.errors import UserError
from emotion_llama.labels import EMOSET_LABELS

PathLike = str | os.PathLike
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
# The attributes an annotation may carry; ``caption`` is not in EmoSet (the synthetic set writes it).
NUMBER_ATTRIBUTES = ("brightness", "colorfulness")
TEXT_ATTRIBUTES = ("scene", "facial_expression", "human_action", "caption")
LIST_ATTRIBUTES = ("object",)
ATTRIBUTES = (*NUMBER_ATTRIBUTES, "scene", "object", "facial_expression", "human_action", "caption")
_CHUNK = 1024  # split entries per thread task
# Hasler and Suesstrunk's colourfulness M of an "extremely colourful" image (their scale: 15 slightly,
# 33 moderately, 45 averagely, 59 quite, 82 highly, 109 extremely): M / 109, capped at 1, is the 0-1 value.
EXTREMELY_COLOURFUL = 109.0


@dataclass(frozen=True)
class ImageRecord:
    """One labelled image. ``annotation`` holds the attributes present (see :data:`ATTRIBUTES`)."""

    id: str
    label: str
    image: Path
    annotation: dict = field(default_factory=dict, compare=False)
    annotation_path: Path | None = None


# ---------------------------------------------------------------------------------------------- EmoSet


def read_emoset(root: PathLike, split: str = "train", labels: Sequence[str] = EMOSET_LABELS,
                load_annotations: bool = True, threads: int = 8) -> list[ImageRecord]:
    """The records of ``root/{split}.json`` in file order (either entry form, see the module docstring).

    ``labels``: the label set the entries must use (matched case-insensitively; records carry it in lower
    case). ``info.json``, when present, must list the same labels (in any order).
    """
    root = Path(os.path.abspath(root))
    root_text = str(root)
    labels = tuple(label.lower() for label in labels)
    split_file = root / f"{split}.json"
    if not split_file.is_file():
        found = sorted(p.stem for p in root.glob("*.json") if p.stem in SPLITS) if root.is_dir() else []
        hint = f"splits here: {', '.join(found)}" if found else "point root at the folder holding train.json"
        raise UserError(f"{split_file} not found: {hint}")
    _check_info(root, labels)
    entries = _read_json(split_file, "EmoSet split")
    if not isinstance(entries, list):
        raise UserError(f"{split_file}: expected a JSON list of [label, id, image_path, annotation_path] "
                        f"entries, got {type(entries).__name__}; use EmoSet's split file")
    parsed = [_parse_entry(split_file, root_text, labels, entry, index)
              for index, entry in enumerate(entries)]
    listing = _DirListing()
    for index, (_, _, image, annotation) in enumerate(parsed):
        for kind, path in (("image", image), ("annotation file", annotation)):
            if not listing.has_file(path):
                raise UserError(f"{split_file}: entry {index}: {kind} {path} not found; restore the file or "
                                "remove the entry")
    seen: dict[str, int] = {}
    for index, (record_id, *_) in enumerate(parsed):
        first = seen.setdefault(record_id, index)
        if first != index:
            raise UserError(f"{split_file}: entry {index} repeats the id {record_id!r} of entry {first}; "
                            "give every image its own id")
    annotations: list[dict] = [{} for _ in parsed]
    if load_annotations:
        jobs = [(split_file, k, [p[3] for p in parsed[k:k + _CHUNK]]) for k in range(0, len(parsed), _CHUNK)]
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            annotations = [a for chunk in pool.map(_load_chunk, jobs) for a in chunk]
    return [ImageRecord(record_id, label, Path(image), annotation, Path(annotation_file))
            for (record_id, label, image, annotation_file), annotation
            in zip(parsed, annotations, strict=True)]


def read_emoset_info(root: PathLike) -> dict:
    """``root/info.json`` ({} when there is none)."""
    path = Path(root) / "info.json"
    if not path.is_file():
        return {}
    info = _read_json(path, "EmoSet info")
    if not isinstance(info, dict):
        raise UserError(f"{path}: expected a JSON object (emotion, scene, object, ... each with label2idx); "
                        "use EmoSet's info.json or delete it")
    return info


def _check_info(root: Path, labels: tuple[str, ...]) -> None:
    """``info.json``'s emotion labels, when it lists them, must be the label set (in any order: records carry
    label names, not indices)."""
    info = read_emoset_info(root)
    emotion = info.get("emotion")
    label2idx = emotion.get("label2idx") if isinstance(emotion, dict) else None
    if label2idx is None:
        return
    path = root / "info.json"
    if not isinstance(label2idx, dict):
        raise UserError(f"{path}: emotion.label2idx should map labels to indices; use EmoSet's info.json")
    given = sorted(label2idx, key=lambda k: str(label2idx[k]))
    if {str(k).lower() for k in given} != set(labels):
        raise UserError(f"{path}: emotion.label2idx ({', '.join(map(str, given))}) is not the label set "
                        f"({', '.join(labels)}); pass labels= with the labels of info.json")


def _parse_entry(split_file: Path, root: str, labels: tuple[str, ...], entry: object,
                 index: int) -> tuple[str, str, str, str]:
    """(id, label, image path, annotation path) of one split entry, paths as absolute strings (pathlib is
    too slow for 118k entries)."""
    well_formed = isinstance(entry, list) and len(entry) in (3, 4)
    if not (well_formed and all(isinstance(v, str) and v for v in entry)):
        shown = json.dumps(entry)[:120]
        raise UserError(f"{split_file}: entry {index}: expected [label, id, image_path, annotation_path] or "
                        f"[label, image_path, annotation_path] (non-empty strings), got {shown}; "
                        "fix that entry")
    label = entry[0].strip().lower()
    if label not in labels:
        raise UserError(f"{split_file}: entry {index}: unknown label {entry[0]!r}; "
                        f"use one of {', '.join(labels)}")
    image, annotation = (os.path.join(root, p.replace("\\", "/")) for p in entry[-2:])
    if len(entry) == 4:
        return entry[1], label, image, annotation
    return os.path.splitext(os.path.basename(image))[0], label, image, annotation


class _DirListing:
    """Whether files exist, answered from one listing per folder instead of one stat per file."""

    def __init__(self) -> None:
        self._files: dict[str, frozenset[str]] = {}

    def has_file(self, path: str) -> bool:
        folder, _, name = path.rpartition("/")
        files = self._files.get(folder)
        if files is None:
            try:
                with os.scandir(folder or "/") as it:
                    files = frozenset(e.name for e in it if e.is_file())
            except OSError:
                files = frozenset()
            self._files[folder] = files
        return name in files


def _load_chunk(job: tuple[Path, int, list[str]]) -> list[dict]:
    split_file, start, paths = job
    out = []
    for index, path in enumerate(paths, start=start):
        try:
            out.append(load_annotation(path))
        except UserError as err:  # name the entry too
            text = str(err)
            head, sep, rest = text.partition(": ")
            raise UserError(f"{head} (entry {index} of {split_file}){sep}{rest}") from None
    return out


def load_annotation(path: PathLike) -> dict:
    """The attributes of one annotation file, checked and normalised: brightness/colorfulness floats in
    [0, 1], object a list of strings, the others strings; other keys (e.g. ``emotion``) are left out."""
    data = _read_json(path, "EmoSet annotation")
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object of attributes, got {type(data).__name__}; "
                        "fix the file")
    return normalise_attributes(data, str(path))


def normalise_attributes(data: Mapping, where: str) -> dict:
    """The known attributes of ``data`` in :data:`ATTRIBUTES` order; null or empty values count as absent."""
    out: dict = {}
    for key in ATTRIBUTES:
        value = data.get(key)
        if value is None or value == "" or value == []:
            continue
        if key in NUMBER_ATTRIBUTES:
            out[key] = _unit_number(value, key, where)
        elif key in LIST_ATTRIBUTES:
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
                raise UserError(f"{where}: {key} should be a list of names, got {json.dumps(value)[:80]}; "
                                "fix the file")
            out[key] = list(items)
        else:
            if not isinstance(value, str):
                raise UserError(f"{where}: {key} should be a string, got {json.dumps(value)[:80]}; "
                                "fix the file")
            out[key] = value
    return out


def _unit_number(value: object, key: str, where: str) -> float:
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not 0.0 <= number <= 1.0:
        raise UserError(f"{where}: {key} should be a number from 0 to 1, got {json.dumps(value)[:40]}; "
                        "fix the file")
    return number


def _read_json(path: PathLike, what: str) -> object:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise UserError(f"{path}: cannot read the {what} file ({err.strerror}); check the path") from None
    try:
        return json.loads(data)  # bytes: UTF-8 with or without a byte-order mark
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        where = f"{path}:{err.lineno}" if isinstance(err, json.JSONDecodeError) else str(path)
        reason = err.msg if isinstance(err, json.JSONDecodeError) else "not UTF-8 text"
        raise UserError(f"{where}: not valid JSON ({reason}); fix or re-download the {what} file") from None


# ---------------------------------------------------------------------------------------------- folders


def read_image_folders(root: PathLike, labels: Sequence[str] | None = None,
                       split: str | None = None) -> list[ImageRecord]:
    """The images of a folder-per-class set: ``root/<class>/*`` (or ``root/<split>/<class>/*``).

    ``labels``: the label set the class folders must belong to (names matched case-insensitively); None
    takes the folders' names, lower-cased. Images directly in each class folder count (.jpg, .jpeg, .png,
    .webp, any case); hidden files and folders are skipped. Records come sorted by label set order, then
    file name. An id is the file stem, prefixed with ``<label>_`` unless it already starts so, and with the
    suffix added when two files of a class share a stem.
    """
    root = Path(os.path.abspath(root))
    base = root / split if split else root
    if not base.is_dir():
        raise UserError(f"{base} is not a folder: point root at a folder of class folders"
                        + (f" holding {split}/" if split else ""))
    folders = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise UserError(f"{base} has no class folders: expected {base}/<class>/<image>.jpg")
    if labels is None:
        labels = tuple(sorted({p.name.lower() for p in folders}))
    labels = tuple(label.lower() for label in labels)
    by_label: dict[str, list[Path]] = {}
    for folder in folders:
        label = folder.name.lower()
        if label not in labels:
            raise UserError(f"{folder}: class folder {folder.name!r} is not in the label set "
                            f"({', '.join(labels)}); rename or move the folder, or pass labels=")
        by_label.setdefault(label, []).append(folder)
    records = []
    for label in labels:
        files = sorted((f for folder in by_label.get(label, ()) for f in folder.iterdir()
                        if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".") and f.is_file()),
                       key=lambda f: (f.name, str(f)))
        records += _folder_records(label, files)
    if not records:
        raise UserError(f"{base}: no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders")
    return records


def _folder_records(label: str, files: list[Path]) -> list[ImageRecord]:
    def base_id(f: Path) -> str:
        return f.stem if f.stem.lower().startswith(f"{label}_") else f"{label}_{f.stem}"

    counts: dict[str, int] = {}
    for f in files:
        counts[base_id(f)] = counts.get(base_id(f), 0) + 1
    records, seen = [], set()
    for f in files:
        record_id = base_id(f) if counts[base_id(f)] == 1 else f"{base_id(f)}_{f.suffix.lstrip('.').lower()}"
        if record_id in seen:
            raise UserError(f"{f}: its id {record_id!r} is taken by another file of class {label}; "
                            "rename one of them")
        seen.add(record_id)
        records.append(ImageRecord(record_id, label, f))
    return records


# ---------------------------------------------------------------------------------------------- helpers


def image_ids(records: Iterable[ImageRecord]) -> dict[str, ImageRecord]:
    """The records keyed by id (in EmoSet the id is also the image's file stem: ``amusement_12865``, as
    EmoVIT's instruction records name images ``amusement_12865.jpg``); an id seen twice is an error."""
    out: dict[str, ImageRecord] = {}
    for record in records:
        if record.id in out:
            raise UserError(f"{record.image}: id {record.id!r} is also the id of {out[record.id].image}; "
                            "give every image its own id")
        out[record.id] = record
    return out


def label_counts(records: Iterable[ImageRecord], labels: Sequence[str] = EMOSET_LABELS) -> dict[str, int]:
    """Images per label, in label set order (labels without images included, with 0)."""
    counts = dict.fromkeys(labels, 0)
    for record in records:
        counts[record.label] = counts.get(record.label, 0) + 1
    return counts


# ---------------------------------------------------------------------------------------------- attributes


def brightness(rgb: np.ndarray) -> float:
    """Mean luma of a uint8 RGB image (ITU-R BT.601 weights), from 0 (black) to 1 (white)."""
    luma = np.asarray(rgb, np.float32)[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    return float(np.clip(luma.mean() / 255.0, 0.0, 1.0))


def colorfulness(rgb: np.ndarray) -> float:
    """Hasler and Suesstrunk's colourfulness of a uint8 RGB image, divided by :data:`EXTREMELY_COLOURFUL`
    and capped at 1: 0 for a grey image, about 0.3 for a moderately colourful one, 1 from extremely."""
    pixels = np.asarray(rgb, np.float32)
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    rg, yb = r - g, 0.5 * (r + g) - b
    m = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())
    return float(min(m / EXTREMELY_COLOURFUL, 1.0))


def attribute_level(value: float) -> float:
    """A 0-1 attribute rounded to EmoSet's eleven levels (0.0, 0.1, ..., 1.0), as its annotations store
    brightness and colorfulness (and its ``info.json`` indexes them)."""
    return round(min(max(float(value), 0.0), 1.0) * 10) / 10
