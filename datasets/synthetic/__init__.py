"""The synthetic MERR-style set: real mp4 clips of a drawn face and speech-like audio, with subtitles and captions.

Its design (the 3x3 label grid, in which only fusion identifies the emotion) is described in :mod:`.design`.
The parts: :mod:`.design` (label grid, cue vocabularies, clip plans), :mod:`.face` (drawn face and frames),
:mod:`.voice` (speech-like audio), :mod:`.text` (subtitles, captions, reasons), :mod:`.clip` (one clip),
:mod:`.writer` (the whole set: ``generate``, ``timed_generate``) and :mod:`.prepare` (set, tiny encoders and
features for a training config). Only scripts and tests import this package; library code reads what it
writes (e.g. ``cue_phrases.json``, see :mod:`emotion_llama.datasets.cues`).
"""

from emotion_llama.datasets.synthetic.clip import Clip, annotation, make_clip, synthesize_clip
from emotion_llama.datasets.synthetic.design import (
    CUE_PHRASES,
    FACE_PHRASES,
    GRID,
    TEXT_PHRASES,
    VOICE_PHRASES,
    WEAK_KINDS,
    ClipPlan,
    group_labels,
    label_groups,
    plan_clips,
)
from emotion_llama.datasets.synthetic.face import (
    N_EXPR,
    SIZE,
    render_background,
    render_frame,
    render_head,
)
from emotion_llama.datasets.synthetic.text import TEXT_POOLS, make_sentence
from emotion_llama.datasets.synthetic.voice import SAMPLE_RATE
from emotion_llama.datasets.synthetic.writer import GENERATOR_VERSION, generate, timed_generate

__all__ = [
    "CUE_PHRASES", "FACE_PHRASES", "GENERATOR_VERSION", "GRID", "N_EXPR", "SAMPLE_RATE", "SIZE", "TEXT_PHRASES",
    "TEXT_POOLS", "VOICE_PHRASES", "WEAK_KINDS", "Clip", "ClipPlan", "annotation", "generate", "group_labels",
    "label_groups", "make_clip", "make_sentence", "plan_clips", "render_background",
    "render_frame", "render_head", "synthesize_clip", "timed_generate",
]
