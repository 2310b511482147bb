"""Cached per-clip features on disk, in the layout of the official pre-extracted features.

One ``.npy`` per clip and modality under ``root``::

    mae_340_UTT/NAME.npy    face MAE, utterance level (D,)
    maeV_399_UTT/NAME.npy   VideoMAE, utterance level (D,)
    HL-UTT/NAME.npy         HuBERT, utterance level (D,)
    eva_448/NAME.npy        EVA tokens after ln_vision, float16 (1 + patches, D)

MER2024's release names the first three ``mae_340_23_UTT``, ``maeVideo_399_23_UTT`` and ``HL_23_UTT``;
pass ``dirs=MER2024_DIRS`` (or any mapping) to read those.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from emotion_llama.errors import UserError

FEATURE_DIRS: dict[str, str] = {
    "mae": "mae_340_UTT", "videomae": "maeV_399_UTT", "hubert": "HL-UTT", "eva": "eva_448",
}
MER2024_DIRS: dict[str, str] = {
    **FEATURE_DIRS, "mae": "mae_340_23_UTT", "videomae": "maeVideo_399_23_UTT", "hubert": "HL_23_UTT",
}
MODALITIES: tuple[str, ...] = ("eva", "mae", "videomae", "hubert")
# Which cached features each evaluation "drop" study zeroes.
DROP_GROUPS: dict[str, tuple[str, ...]] = {"visual": ("eva", "mae", "videomae"), "audio": ("hubert",), "text": ()}


class MissingFeaturesError(UserError):
    pass


class FeatureStore:
    def __init__(self, root: str | Path, dirs: Mapping[str, str] | None = None):
        self.root = Path(root)
        self.dirs = dict(dirs or FEATURE_DIRS)
        unknown = set(self.dirs) - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown feature modalities {sorted(unknown)}; expected {MODALITIES}")

    def path(self, modality: str, name: str) -> Path:
        return self.root / self.dirs[modality] / f"{name}.npy"

    def missing(self, name: str) -> list[str]:
        return [m for m in MODALITIES if not self.path(m, name).is_file()]

    def has(self, name: str) -> bool:
        return not self.missing(name)

    def load(self, name: str) -> dict[str, torch.Tensor]:
        """All modalities of one clip as float32 tensors."""
        missing = self.missing(name)
        if missing:
            raise MissingFeaturesError(
                f"{name}: no {', '.join(missing)} features under {self.root}; run tools/extract_features.py "
                f"input_dir=<videos> output_dir={self.root}"
            )
        return {m: torch.from_numpy(np.load(self.path(m, name)).astype(np.float32)) for m in MODALITIES}

    def split_available(self, names: Iterable[str]) -> tuple[list[str], list[str]]:
        """(names with every feature, names missing some)."""
        have, lack = [], []
        for n in names:
            (have if self.has(n) else lack).append(n)
        return have, lack


def drop_modalities(features: dict[str, torch.Tensor], drop: Iterable[str]) -> dict[str, torch.Tensor]:
    """Zero the features of the dropped modality groups (``visual``, ``audio``; ``text`` is in the prompt)."""
    out = dict(features)
    for group in drop:
        if group not in DROP_GROUPS:
            raise ValueError(f"unknown modality {group!r} to drop; expected one of {', '.join(DROP_GROUPS)}")
        for m in DROP_GROUPS[group]:
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
