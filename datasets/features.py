"""Cached per-clip features on disk, in the layout of the official pre-extracted features.

One ``.npy`` per clip and modality under ``root``::

    mae_340_UTT/NAME.npy    face MAE, utterance level (D,)
    maeV_399_UTT/NAME.npy   VideoMAE, utterance level (D,)
    HL-UTT/NAME.npy         HuBERT, utterance level (D,)
    eva_448/NAME.npy        EVA tokens after ln_vision, float16 (1 + patches, D)

MER2024's release names the first three ``mae_340_23_UTT``, ``maeVideo_399_23_UTT`` and ``HL_23_UTT``;
pass ``dirs=MER2024_DIRS`` (or any mapping) to read those.

Clips without every modality (an image has no motion or audio, and a face only when one was found): the
extraction manifest (``manifest.jsonl``) lists the modalities it wrote for such a clip (``present``); only
those are read and the clip's features carry the presence mask (``features["present"]``, see
:mod:`emotion_llama.model.fusion`). A clip the manifest does not restrict (every video, and caches made
elsewhere) needs all four.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from emotion_llama.errors import UserError
from emotion_llama.model.fusion import IMAGE, PRESENT

FEATURE_DIRS: dict[str, str] = {
    "mae": "mae_340_UTT", "videomae": "maeV_399_UTT", "hubert": "HL-UTT", "eva": "eva_448",
}
MER2024_DIRS: dict[str, str] = {
    **FEATURE_DIRS, "mae": "mae_340_23_UTT", "videomae": "maeVideo_399_23_UTT", "hubert": "HL_23_UTT",
}
MODALITIES: tuple[str, ...] = ("eva", "mae", "videomae", "hubert")
# Which cached features (and, for a backbone that reads them, pixel values) each evaluation "drop" study zeroes.
DROP_GROUPS: dict[str, tuple[str, ...]] = {
    "visual": ("eva", "mae", "videomae", IMAGE), "audio": ("hubert",), "text": (),
}


class MissingFeaturesError(UserError):
    pass


class StaleFeaturesError(UserError):
    """Cached features made by another extraction (other encoders, another corruption) than the one asked for."""


class FeatureFileError(UserError):
    """A cached feature file that cannot be read."""


class FeatureStore:
    """``fingerprint``: the extraction fingerprint (see :func:`emotion_llama.encoders.extract.fingerprint`:
    encoders and corruption) the features must have been made with, checked against ``manifest.jsonl`` on
    every read; a clip made with another one is *stale* and counts as missing. Files the manifest does not
    list (features made elsewhere, e.g. the official release's) are taken as they are, unless
    ``verified_only`` (a corrupted study's cache must come from its own extraction). None: no check.

    Every file read must hold finite numbers and, when ``shapes`` (modality -> array shape, the model's
    ``feature_shapes``) is given, have that shape: a bad file is refused naming it, never fed to the model."""

    def __init__(self, root: str | Path, dirs: Mapping[str, str] | None = None, fingerprint: str | None = None,
                 verified_only: bool = False, shapes: Mapping[str, tuple[int, ...]] | None = None):
        self.root = Path(root)
        self.shapes = dict(shapes or {})
        self.dirs = dict(dirs or FEATURE_DIRS)
        self.fingerprint, self.verified_only = fingerprint, verified_only
        self._made_by: dict[str, str | None] | None = None
        unknown = set(self.dirs) - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown feature modalities {sorted(unknown)}; expected {MODALITIES}")

        self._present: dict[str, tuple[str, ...]] | None = None

    def path(self, modality: str, name: str) -> Path:
        return self.root / self.dirs[modality] / f"{name}.npy"

    def present(self, name: str) -> tuple[str, ...]:
        """The modalities a clip has: those its manifest line lists, else all four."""
        if self._present is None:
            self._present = _manifest_presence(self.root / "manifest.jsonl")
        return self._present.get(name, MODALITIES)

    def missing(self, name: str) -> list[str]:
        if self.stale(name):
            return list(self.present(name))
        return [m for m in self.present(name) if not self.path(m, name).is_file()]

    def made_by(self, name: str) -> str | None:
        """The fingerprint of the extraction that last wrote ``name`` ("failed" when it failed; None when the
        manifest does not list it)."""
        if self._made_by is None:
            self._made_by = _manifest_fingerprints(self.root / "manifest.jsonl")
        return self._made_by.get(name)

    def stale(self, name: str) -> bool:
        """Whether ``name``'s files are there but not from an extraction with this store's fingerprint."""
        if self.fingerprint is None or not all(self.path(m, name).is_file() for m in self.present(name)):
            return False
        made = self.made_by(name)
        return self.verified_only if made is None else made != self.fingerprint

    def refresh(self) -> None:
        """Forget what was read of the manifest (after an extraction has written to the store)."""
        self._made_by = None
        self._present = None

    def has(self, name: str) -> bool:
        return not self.missing(name)

    def load(self, name: str) -> dict[str, torch.Tensor]:
        """All modalities of one clip as float32 tensors."""
        if self.stale(name):
            raise StaleFeaturesError(
                f"{name}: its features under {self.root} were made by another extraction (fingerprint "
                f"{self.made_by(name)}, expected {self.fingerprint}: other encoders or another corruption); rerun "
                f"tools/extract_features.py input_dir=<videos> output_dir={self.root}"
            )
        missing = self.missing(name)
        if missing:
            raise MissingFeaturesError(
                f"{name}: no {', '.join(missing)} features under {self.root}; run tools/extract_features.py "
                f"input_dir=<videos> output_dir={self.root}"
            )
        present = self.present(name)
        out = {m: torch.from_numpy(_read_npy(self.path(m, name), self.root, self.shapes.get(m))) for m in present}
        if len(present) < len(MODALITIES):
            out[PRESENT] = torch.tensor([m in present for m in MODALITIES])
        return out

    def split_available(self, names: Iterable[str]) -> tuple[list[str], list[str]]:
        """(names with every feature, names missing some)."""
        have, lack = [], []
        for n in names:
            (have if self.has(n) else lack).append(n)
        return have, lack


def _read_npy(path: Path, root: Path, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A feature file as float32: numbers only (no pickles), finite, of ``shape`` when given."""
    redo = (f"delete it and rerun tools/extract_features.py input_dir=<videos> output_dir={root} (clips with a "
            "missing file are redone)")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise FeatureFileError(f"{path} is corrupt or truncated ({detail}): {redo}") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiu":
        raise FeatureFileError(f"{path} holds {getattr(array, 'dtype', type(array).__name__)} values, not numbers: "
                               f"{redo}")
    if shape is not None and array.shape != tuple(shape):
        raise FeatureFileError(f"{path} has shape {tuple(array.shape)} where this model reads {tuple(shape)} (made "
                               f"by other encoders?): {redo}")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise FeatureFileError(f"{path} holds NaN or infinite values: {redo}")
    return array


def _manifest_fingerprints(path: Path) -> dict[str, str | None]:
    """name -> the fingerprint of the latest manifest line of each clip ("failed" for a failed one)."""
    out: dict[str, str | None] = {}
    if not path.is_file():
        return out
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a killed writer
            if isinstance(entry, dict) and "name" in entry:
                out[str(entry["name"])] = entry.get("fingerprint") if entry.get("status") == "ok" else "failed"
    return out


def _manifest_presence(path: Path) -> dict[str, tuple[str, ...]]:
    """name -> modalities, for the clips whose latest manifest line restricts them (``present``)."""
    if not path.is_file():
        return {}
    out: dict[str, tuple[str, ...]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a killed writer; its clip is redone by the next extraction
            if entry.get("status") != "ok":
                continue
            present = entry.get("present")
            if present is None:
                out.pop(entry["name"], None)
            else:
                out[entry["name"]] = tuple(m for m in MODALITIES if m in present)
    return out


def stack_features(clips: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """One batch from per-clip features that may lack modalities: each modality some clip has is stacked
    (zeros for the clips without it, which the presence mask marks absent); the mask is added when a clip
    lacks something. A clip's pixel values (``image``, for a backbone that encodes images itself) are stacked
    the same way; such a clip carries its own mask (the image is the ``eva`` column)."""
    keys = [m for m in (*MODALITIES, IMAGE) if any(m in c for c in clips)]
    out = {}
    for m in keys:
        like = next(c[m] for c in clips if m in c)
        out[m] = torch.stack([c[m] if m in c else torch.zeros_like(like) for c in clips])
    if any(PRESENT in c or any(m not in c for m in MODALITIES) for c in clips):
        out[PRESENT] = torch.stack([c[PRESENT] if PRESENT in c else torch.tensor([m in c for m in MODALITIES])
                                    for c in clips])
    return out


def drop_modalities(features: dict[str, torch.Tensor], drop: Iterable[str]) -> dict[str, torch.Tensor]:
    """Zero the features of the dropped modality groups (``visual``, ``audio``; ``text`` is in the prompt)."""
    out = dict(features)
    for group in drop:
        if group not in DROP_GROUPS:
            raise ValueError(f"unknown modality {group!r} to drop; expected one of {', '.join(DROP_GROUPS)}")
        for m in DROP_GROUPS[group]:
            if m in out:
                out[m] = torch.zeros_like(out[m])
    return out


class LazyFeatures(Mapping):
    """Clip features read from the cache when a batch asks for them.

    Holding a whole test set in memory does not scale: real EVA tokens are about 6 MB a clip in float32.
    """

    def __init__(self, store: FeatureStore, names: Sequence[str], drop: Sequence[str] = ()):
        self.store, self.names, self.drop = store, list(names), list(drop)
        self._known = set(self.names)

    def __getitem__(self, name: str) -> dict[str, torch.Tensor]:
        if name not in self._known:
            raise KeyError(name)
        return drop_modalities(self.store.load(name), self.drop)

    def __iter__(self):
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)
