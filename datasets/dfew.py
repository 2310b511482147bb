"""DFEW annotation files: the official split csvs (labels 1..7) and the frame-list txts (labels 0..6).

DFEW's clips are named by five-digit numbers (``00001.mp4`` ... ``16372.mp4``, frame folders alike); a split
file that went through a spreadsheet says ``1`` (or ``1.0``) for ``00001``. The readers keep names as written;
:func:`match_padding` renames a sample to the padding of its name that the videos or features use.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import replace

from emotion_llama.datasets.common import PathLike, Sample, _csv_rows, _number, _text_lines, _write_csv
from emotion_llama.errors import UserError
from emotion_llama.fileio import atomic_write_text
from emotion_llama.labels import DFEW_LABELS

DFEW_NAME_DIGITS = 5
_NUMERIC_NAME = re.compile(r"^(\d+)(?:\.0+)?$")


def name_variants(name: str) -> list[str]:
    """``name`` and, for a number, the other ways it is written: ``1`` -> ``1``, ``00001``; ``00001`` -> ``00001``,
    ``1``; ``1.0`` -> ``1.0``, ``00001``, ``1`` (DFEW's five-digit form first)."""
    match = _NUMERIC_NAME.match(name.strip())
    if not match:
        return [name]
    number = str(int(match.group(1)))
    return list(dict.fromkeys([name, number.zfill(DFEW_NAME_DIGITS), number]))


def match_padding(samples: Iterable[Sample], known: Callable[[str], bool]) -> list[Sample]:
    """``samples`` with each numeric name replaced by its first variant (see :func:`name_variants`) that
    ``known`` accepts (a clip with that name has features or a video); names nothing matches stay as written."""
    out = []
    for s in samples:
        match = next((v for v in name_variants(s.name) if known(v)), s.name)
        out.append(s if match == s.name else replace(s, name=match))
    return out


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
