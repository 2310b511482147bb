"""DFEW annotation files: the official split csvs (labels 1..7) and the frame-list txts (labels 0..6).

DFEW's clips are named by five-digit numbers (``00001.mp4`` ... ``16372.mp4``, frame folders alike); a split
file that went through a spreadsheet says ``1`` (or ``1.0``) for ``00001``. The readers keep names as written;
:func:`match_padding` renames a sample to the padding of its name that the videos or features use.

The clips come in two layouts (``data.layout``, :func:`check_clip_folder`): ``original``, the videos of
``Clip/original/`` (``00001.avi``, with their audio), and ``frames``, the aligned face frames of
``Clip/clip_224x224/<id>/`` (``00001/00001.jpg ...``, no audio: their HuBERT features are absent). Either folder
is ``data.videos_dir``; a clip's name is the video's stem or the frame folder's name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import replace

from emotion_llama.datasets.common import PathLike, Sample, _number, _text_lines, _write_csv, csv_rows
from emotion_llama.datasets.media import VIDEO_EXTENSIONS
from emotion_llama.errors import UserError
from emotion_llama.fileio import atomic_write_text
from emotion_llama.labels import DFEW_LABELS

DFEW_NAME_DIGITS = 5
DFEW_LAYOUTS = ("auto", "original", "frames")
CLIP_FOLDERS = {"original": "Clip/original", "frames": "Clip/clip_224x224"}  # under the DFEW root
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
        for line, row in csv_rows(path, "DFEW split", ("video_name", "label"))
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


def check_clip_folder(videos_dir: PathLike | None, layout: str = "auto") -> str | None:
    """Which DFEW layout the clip folder ``videos_dir`` holds: ``original`` (videos) or ``frames`` (frame folders);
    None when it is unset, not a folder, empty or holds both. ``layout`` ``original`` or ``frames`` must be what it
    holds, and DFEW's own folders above the clips (the root, ``Clip/``) are refused naming the folder to use."""
    if layout not in DFEW_LAYOUTS:
        raise UserError(f"data.layout={layout}: use one of {', '.join(DFEW_LAYOUTS)}")
    if not videos_dir or not os.path.isdir(videos_dir):
        return None
    folder = str(videos_dir).rstrip("/")
    entries = [e for e in os.scandir(folder) if not e.name.startswith(".")]
    names = {e.name for e in entries if e.is_dir()}
    above = "Clip/" if "Clip" in names else "" if {"original", "clip_224x224"} & names else None
    if above is not None:
        raise UserError(
            f"data.videos_dir={folder} holds DFEW's clip folders, not clips: set data.videos_dir="
            f"{folder}/{above}original (the videos) or {folder}/{above}clip_224x224 (the frame folders)"
        )
    video = next((e.name for e in entries if e.is_file() and os.path.splitext(e.name)[1].lower() in VIDEO_EXTENSIONS),
                 None)
    frames = next((e.name for e in entries if e.is_dir()), None)
    wanted = {"original": (video, "videos", "frames", frames, "frame folders"),
              "frames": (frames, "frame folders", "original", video, "videos")}
    if layout in wanted:
        have, what, other, other_example, other_what = wanted[layout]
        if have is None:
            held = f"{other_what} (e.g. {other_example})" if other_example else "no clips"
            raise UserError(
                f"data.layout={layout} but data.videos_dir={folder} holds {held}, no {what}: set data.layout={other} "
                f"(or auto), or point data.videos_dir at DFEW's {CLIP_FOLDERS[layout]}"
            )
    if video and frames:
        return None
    return "original" if video else "frames" if frames else None
