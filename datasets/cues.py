"""The cue vocabulary of a synthetic-style set: ``cue_phrases.json`` next to its annotation files.

The file maps each modality to its cue keys and the phrase captions and reasons use for them,
``{"face": {"smile": "mouth corners pulled up", ...}, "voice": {"loud": "a loud voice", ...}}``, in the
order the generator defines them. The generator writes it; the reasoning evaluation's cue check and the tiny
encoders' cue pre-training read it from the set, so no library module needs the generator itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from emotion_llama.datasets.common import PathLike
from emotion_llama.errors import UserError
from emotion_llama.fileio import atomic_write_text

CUE_PHRASES_FILE = "cue_phrases.json"
CUE_MODALITIES = ("face", "voice")


def cue_phrases_path(root: PathLike) -> Path:
    """Where the set under ``root`` keeps its cue vocabulary."""
    return Path(root) / CUE_PHRASES_FILE


def write_cue_phrases(root: PathLike, phrases: Mapping[str, Mapping[str, str]]) -> Path:
    path = cue_phrases_path(root)
    data = {m: dict(phrases[m]) for m in CUE_MODALITIES}
    atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=1) + "\n")
    return path


def read_cue_phrases(root: PathLike) -> dict[str, dict[str, str]]:
    """The ``{"face": {key: phrase}, "voice": {key: phrase}}`` vocabulary of the set under ``root``."""
    path = cue_phrases_path(root)
    fix = "run tools/make_synthetic.py on that folder with its arguments (see meta.json): it adds the file"
    if not path.is_file():
        raise UserError(f"{path} not found: {fix}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); {fix}") from None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(m), dict) and all(isinstance(p, str) for p in data[m].values()) for m in CUE_MODALITIES
    ):
        raise UserError(f"{path}: expected {{\"face\": {{key: phrase}}, \"voice\": {{key: phrase}}}}; {fix}")
    return {m: data[m] for m in CUE_MODALITIES}
