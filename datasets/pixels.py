"""Pixel inputs for a backbone that encodes images itself (EmoVIT's InstructBLIP): no feature cache.

An image file becomes the per-clip features the training collate, evaluation and inference batch with
:func:`~emotion_llama.datasets.features.stack_features`::

    {"image": (3, S, S) float pixel values, "present": (4,) bool, only the image's column (``eva``) set}

:class:`ImagePixels` reads them on demand (``read_image``, then the model's image transform, e.g.
:class:`~emotion_llama.model.instructblip.ImageTransform`); it answers ``load(name)`` like a
:class:`~emotion_llama.datasets.features.FeatureStore`, so the image instruction dataset takes either, and it is
a mapping ``name -> features`` like :class:`~emotion_llama.datasets.features.LazyFeatures`, so evaluation takes
either. Images are named by their file stem, as everywhere else (the readers check that the files exist; an
unreadable one is a one-line MediaError naming it when it is read).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from emotion_llama.datasets.features import MODALITIES, drop_modalities, stack_features
from emotion_llama.datasets.media import read_image
from emotion_llama.errors import UserError
from emotion_llama.model.fusion import IMAGE, PRESENT

# The presence mask of an image read as pixels: the image stands in the EVA column.
IMAGE_PRESENT: tuple[bool, ...] = tuple(m == "eva" for m in MODALITIES)


def image_features(pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    """One image's features: its pixel values and the mask that marks the image present."""
    return {IMAGE: pixels, PRESENT: torch.tensor(IMAGE_PRESENT)}


def pixel_batch(images: Sequence[np.ndarray], transform: Callable[[np.ndarray], torch.Tensor]) -> dict:
    """A batch of features from decoded HxWx3 uint8 RGB images."""
    return stack_features([image_features(transform(image)) for image in images])


class ImagePixels(Mapping):
    """``name`` (file stem) -> the features of its image, read and transformed when asked.

    ``paths``: the image files by name (or a sequence of files, named by their stems); ``transform``: HxWx3
    uint8 RGB array -> (3, S, S) pixel values (picklable, for DataLoader workers); ``drop``: evaluation's
    ``eval.drop`` groups (``visual`` zeroes the pixels, as it zeroes the visual features of the fusion model).
    """

    def __init__(self, paths: Mapping[str, str | Path] | Iterable[str | Path],
                 transform: Callable[[np.ndarray], torch.Tensor], drop: Sequence[str] = ()):
        if not isinstance(paths, Mapping):
            by_stem: dict[str, Path] = {}
            for path in map(Path, paths):
                other = by_stem.setdefault(path.stem, path)
                if other != path:
                    raise UserError(f"{other} and {path} have the same file stem, which names an image here: "
                                    "rename one of them")
            paths = by_stem
        self.paths = {str(k): Path(v) for k, v in paths.items()}
        self.transform = transform
        self.drop = list(drop)

    def load(self, name: str) -> dict[str, torch.Tensor]:
        """The image's features; an unreadable file is a MediaError naming it."""
        if name not in self.paths:
            raise KeyError(name)
        return drop_modalities(image_features(self.transform(read_image(self.paths[name]))), self.drop)

    def __getitem__(self, name: str) -> dict[str, torch.Tensor]:
        return self.load(name)

    def __iter__(self):
        return iter(self.paths)

    def __len__(self) -> int:
        return len(self.paths)
