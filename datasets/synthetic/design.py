"""The design of the synthetic set: the label grid, the cue vocabularies and the plan of each clip.

A synthetic MERR-style dataset: real mp4 clips (drawn face + speech-like audio) with subtitles and captions.

Every test, the demo and the benchmarks run on it, so the emotion must be recoverable only by FUSING
modalities. The 9 MERR labels sit on a 3x3 grid: the row is the FACE group, the column the VOICE group, and
the TEXT group is ``(row + col) % 3`` (a Latin square). Any two modalities identify the label; any one alone
leaves three candidates:

==========================  ======================  =========================  =======================
face row \\ voice column    c0 loud, high, fast,     c1 soft, low, slow,        c2 medium, steady,
                            wide pitch swings        falling pitch              rising end
==========================  ======================  =========================  =======================
r0 raised brows, wide       surprise (text t0)      fear (text t1)             worried (text t2)
eyes, open mouth
r1 mouth corners up,        happy (text t1)         contempt (text t2)         doubt (text t0)
teeth, raised cheeks,
relaxed brows
r2 lowered knitted brows,   angry (text t2)         sad (text t0)              neutral (text t1)
narrowed lids, flat/down
mouth
==========================  ======================  =========================  =======================

Text groups (the words hint at a topic, never at the exact label): t0 "news that turned out differently"
(surprise, doubt, sad), t1 "something coming up" (fear, happy, neutral), t2 "what other people keep doing"
(worried, contempt, angry). What each modality alone confuses:

- face: {surprise, fear, worried}, {happy, contempt, doubt}, {angry, sad, neutral}
- voice: {surprise, happy, angry}, {fear, contempt, sad}, {worried, doubt, neutral}
- text: {surprise, doubt, sad}, {fear, happy, neutral}, {worried, contempt, angry}

Within a group the cue distribution is the same for its three labels; intensity, timing, speaker (pitch,
face colours and shape), head motion, lighting and background vary at random per clip. In a quarter of the
clips each, the face, the voice or the text is "weak" (the face barely moves, the voice is a flat monotone,
the subtitle is an everyday sentence with no topic), so the label then rests on the other two and the
subtitle carries the emotion only sometimes. Captions and reasons are written from the cues actually drawn,
and each clip stores them machine-readably under ``cues`` in the json files.

Every clip draws from its own generator seeded by ``(seed, index)``, so clips can be made in any order or in
parallel and a seed always gives the same files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emotion_llama.labels import MERR_LABELS

GRID: tuple[tuple[str, ...], ...] = (
    ("surprise", "fear", "worried"),
    ("happy", "contempt", "doubt"),
    ("angry", "sad", "neutral"),
)
WEAK_KINDS: tuple[str | None, ...] = (None, "face", "voice", "text")
# Mean valence per label on MER2023's -5..5 scale; each clip adds noise.
VALENCE = {"happy": 3.0, "surprise": 1.0, "neutral": 0.0, "doubt": -0.5, "contempt": -1.5,
           "worried": -2.0, "fear": -2.5, "sad": -3.0, "angry": -3.5}


def label_groups(label: str) -> tuple[int, int, int]:
    """(face row, voice column, text group) of ``label``."""
    for r, row in enumerate(GRID):
        if label in row:
            c = row.index(label)
            return r, c, (r + c) % 3
    raise ValueError(f"{label!r} is not a MERR label; expected one of {', '.join(MERR_LABELS)}")


def group_labels(modality: str, group: int) -> list[str]:
    """The three labels that ``modality`` ("face", "voice" or "text") cannot tell apart in ``group``."""
    index = {"face": 0, "voice": 1, "text": 2}[modality]
    return [label for row in GRID for label in row if label_groups(label)[index] == group]


# ---------------------------------------------------------------------------------------------- cue phrases

FACE_PHRASES = {
    "brows_raised": "raised brows",
    "eyes_wide": "wide-open eyes",
    "mouth_open": "an open mouth",
    "smile": "mouth corners pulled up",
    "smile_one_sided": "a one-sided smile",
    "brows_relaxed": "relaxed brows",
    "brows_knitted": "lowered, knitted brows",
    "eyes_narrowed": "narrowed eyelids",
    "mouth_flat": "a flat, pressed mouth",
    "mouth_down": "down-turned mouth corners",
    "face_still": "the face stays almost still",
}
VOICE_PHRASES = {
    "loud": "a loud voice",
    "high_pitch": "a high pitch",
    "fast": "fast syllables",
    "pitch_swings": "wide pitch swings",
    "soft": "a soft voice",
    "low_pitch": "a low pitch",
    "slow": "slow syllables",
    "falling": "a falling pitch",
    "medium_level": "medium loudness",
    "steady_pitch": "a steady pitch",
    "rising_end": "a rise in pitch at the end",
    "voice_flat": "the voice is flat",
}
TEXT_PHRASES = {
    0: "talks about news that turned out differently",
    1: "talks about something that is coming up",
    2: "complains about what another person keeps doing",
    None: "is an everyday remark with no emotional words",
}
# Facial action units behind the face cues, as MERR's AU lists name them.
FACE_AUS = {
    "brows_raised": ["AU01", "AU02"], "eyes_wide": ["AU05"], "mouth_open": ["AU26"], "smile": ["AU12"],
    "smile_one_sided": ["AU14"], "brows_knitted": ["AU04"], "eyes_narrowed": ["AU07"], "mouth_down": ["AU15"],
    "mouth_flat": ["AU23"],
}
# Short forms for the concluding sentence of a reason.
FACE_SUMMARY = {0: "the raised brows and wide eyes", 1: "the smile", 2: "the knitted brows and narrowed eyes"}
VOICE_SUMMARY = {0: "a loud, high, fast voice", 1: "a soft, low, falling voice",
                 2: "a steady voice that rises at the end"}
TEXT_SUMMARY = {0: "the words about unexpected news", 1: "the words about something coming up",
                2: "the complaint about another person"}
ADJECTIVE = {"happy": "happiness", "sad": "sadness", "neutral": "a neutral state", "angry": "anger",
             "worried": "worry", "surprise": "surprise", "fear": "fear", "contempt": "contempt",
             "doubt": "doubt"}

# The vocabulary written next to the data (``cue_phrases.json``) for readers that must not import the generator.
CUE_PHRASES = {"face": FACE_PHRASES, "voice": VOICE_PHRASES}


# ---------------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class ClipPlan:
    """What one clip must show; everything else (speaker, timing, intensity) comes from ``seed``."""

    index: int
    name: str
    label: str
    weak: str | None
    seed: int


def plan_clips(clips_per_label: int, seed: int) -> list[ClipPlan]:
    """Labels interleaved by index; each label's clips spread evenly over the four weak kinds."""
    plans = []
    for index in range(clips_per_label * len(MERR_LABELS)):
        label = MERR_LABELS[index % len(MERR_LABELS)]
        j = index // len(MERR_LABELS)
        order = np.random.default_rng([seed, MERR_LABELS.index(label), 7]).permutation(clips_per_label)
        weak = WEAK_KINDS[int(order[j]) % len(WEAK_KINDS)]
        clip_seed = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
        plans.append(ClipPlan(index, f"synth_{index:05d}", label, weak, clip_seed))
    return plans
