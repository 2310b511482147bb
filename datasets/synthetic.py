"""A synthetic MERR-style dataset: real mp4 clips (drawn face + speech-like audio) with subtitles and captions.

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

import json
import multiprocessing
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from emotion_llama.datasets.formats import (
    Sample,
    write_dfew_split,
    write_dfew_txt,
    write_mer2023_csv,
    write_mer2023_npz,
    write_mer2024_csv,
    write_merr_json,
    write_merr_txt,
    write_subtitles,
)
from emotion_llama.datasets.video_io import write_mp4
from emotion_llama.errors import UserError
from emotion_llama.fileio import atomic_write_text
from emotion_llama.labels import DFEW_LABELS, MER_LABELS, MERR_LABELS

GENERATOR_VERSION = 2
SIZE = 160
SAMPLE_RATE = 16000
N_DFEW_FOLDS = 5

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


# ---------------------------------------------------------------------------------------------- sentences

_T0 = {
    "templates": ["{open} the {result} came back {time}, and it was {outcome}.",
                  "I just heard that the {thing} was {changed} {time}.",
                  "{open} it turned out the {thing} was {changed} after all.",
                  "So the {result} is finally out, and it is {outcome}.",
                  "Did you see the {result} {time}? It is {outcome}."],
    "open": ["Well,", "So,", "Honestly,", "Look,", "You know,", "Apparently"],
    "result": ["test result", "letter", "message", "report", "answer", "email", "phone call", "verdict"],
    "thing": ["plan", "old house", "shop on the corner", "wedding", "job offer", "deal", "contract", "concert"],
    "changed": ["cancelled", "changed", "sold", "moved", "called off", "replaced", "gone"],
    "outcome": ["not what I expected", "totally different", "not what we thought", "a different story",
                "a turn nobody saw coming"],
    "time": ["this morning", "last night", "an hour ago", "yesterday", "just now", "today"],
}
_T1 = {
    "templates": ["{open} tomorrow we go to the {event}.",
                  "Next week I have the {event}, {tail}.",
                  "We are going to {activity} {future}.",
                  "{open} the {event} starts {future}.",
                  "{future_cap} I will {activity}, {tail}."],
    "open": ["Well,", "So,", "Honestly,", "Look,", "You know,", "Okay,"],
    "event": ["interview", "trip", "exam", "party", "flight", "performance", "match", "appointment"],
    "activity": ["travel to the coast", "meet the new team", "move to the city", "start the new job",
                 "see the doctor", "give the speech"],
    "future": ["tomorrow", "next week", "in a few days", "on Monday", "tonight", "soon"],
    "future_cap": ["Tomorrow", "Next week", "In a few days", "On Monday", "Tonight", "Soon"],
    "tail": ["and everything depends on it", "and I keep thinking about it", "and it will be a big day",
             "and there is no way back now"],
}
_T2 = {
    "templates": ["{open} {person} {did} again.",
                  "{person_cap} keeps {doing} every single day.",
                  "Why does {person} always {do}?",
                  "{open} {person} said it was my fault that {person} {did}.",
                  "And once more {person} {did}, as usual."],
    "open": ["Well,", "So,", "Honestly,", "Look,", "You know,", "Again,"],
    "person": ["my neighbour", "the manager", "my brother", "that guy", "your friend", "the landlord",
               "my colleague", "the driver"],
    "person_cap": ["My neighbour", "The manager", "My brother", "That guy", "Your friend", "The landlord",
                   "My colleague", "The driver"],
    "did": ["took my parking spot", "ignored my message", "broke the rules", "left the mess",
            "moved my desk", "borrowed my car without asking"],
    "doing": ["playing loud music", "leaving the door open", "taking my things", "coming in late",
              "talking over everyone"],
    "do": ["do that", "interrupt me", "blame other people", "make the same mistake",
           "ignore what we agreed"],
}
_NEUTRAL = {
    "templates": ["The {obj} is on the {place}.", "I will take the {transport} at {hour}.",
                  "The {room} has two windows and a {color} door.", "We bought {item} at the {store}.",
                  "It is {hour} and the {obj} is {color}.", "Put the {obj} next to the {obj2}, please."],
    "obj": ["cup", "book", "chair", "bag", "key", "lamp", "folder", "pencil"],
    "obj2": ["window", "plant", "printer", "radio", "sofa"],
    "place": ["table", "shelf", "desk", "floor", "counter"],
    "transport": ["bus", "train", "tram", "subway"],
    "hour": ["nine", "ten", "noon", "half past two", "four", "seven"],
    "room": ["kitchen", "office", "hallway", "living room"],
    "color": ["blue", "white", "grey", "green", "brown"],
    "item": ["bread", "paper", "rice", "a new pen", "some apples"],
    "store": ["market", "corner shop", "supermarket", "station kiosk"],
}
TEXT_POOLS = {0: _T0, 1: _T1, 2: _T2, None: _NEUTRAL}


def make_sentence(text_group: int | None, rng: np.random.Generator) -> str:
    """A subtitle from the group's pool (``None``: the neutral pool); slots are filled independently."""
    pool = TEXT_POOLS[text_group]
    template = pool["templates"][rng.integers(len(pool["templates"]))]
    # Draw every slot (used or not) so the stream of draws does not depend on the template.
    slots = {k: v[rng.integers(len(v))] for k, v in pool.items() if k != "templates"}
    return template.format(**slots)


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


# ---------------------------------------------------------------------------------------------- face

# Expression vector: brow raise, brow knit, eye opening, mouth opening, mouth curve (+ up), asymmetry.
N_EXPR = 6


def peak_expression(face_group: int, weak: bool, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """The expression at its peak and the face cues it shows."""
    if weak:
        # Same tiny, random movement whatever the label, so the face carries no evidence.
        return rng.uniform(-0.04, 0.04, N_EXPR), ["face_still"]
    k = rng.uniform(0.65, 1.0)
    if face_group == 0:
        return k * np.array([1.0, 0.0, 1.0, rng.uniform(0.7, 1.0), 0.0, 0.0]), [
            "brows_raised", "eyes_wide", "mouth_open"]
    if face_group == 1:
        one_sided = rng.random() < 0.5
        asym = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 0.9) if one_sided else 0.0
        cues = ["smile", "brows_relaxed"] + (["smile_one_sided"] if one_sided else [])
        return k * np.array([0.0, 0.0, -0.25, 0.1, 1.0, asym]), cues
    down = rng.random() < 0.5
    curve = -rng.uniform(0.6, 1.0) if down else 0.0
    cues = ["brows_knitted", "eyes_narrowed", "mouth_down" if down else "mouth_flat"]
    return k * np.array([-0.7, 1.0, -0.65, 0.0, curve, 0.0]), cues


def expression_curve(n_frames: int, peak: int, width: float) -> np.ndarray:
    """(N,) rise from relaxed to 1 at ``peak`` and back: a Gaussian bump ``width`` frames wide."""
    t = np.arange(n_frames, dtype=np.float64)
    return np.exp(-0.5 * ((t - peak) / width) ** 2)


@dataclass(frozen=True)
class Appearance:
    """A speaker's look and the scene around them (RGB colours)."""

    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    shirt: tuple[float, float, float]
    iris: tuple[float, float, float]
    lip: tuple[float, float, float]
    bg_top: tuple[float, float, float]
    bg_bottom: tuple[float, float, float]
    bg_shapes: tuple[tuple[int, float, float, float, tuple[float, float, float]], ...]
    head_axes: tuple[float, float]
    eye_dx: float
    eye_y: float
    mouth_y: float
    light: float
    side_light: float


SKIN_TONES = np.array([[224, 182, 150], [198, 146, 110], [240, 200, 170], [165, 115, 85], [230, 180, 140]])


def _colour(rng: np.random.Generator, lo: float, hi: float) -> tuple[float, float, float]:
    return tuple(float(v) for v in rng.uniform(lo, hi, 3))


def sample_appearance(rng: np.random.Generator) -> Appearance:
    skin = np.clip(SKIN_TONES[rng.integers(len(SKIN_TONES))] + rng.uniform(-12, 12, 3), 0, 255)
    shapes = tuple(
        (int(rng.integers(0, 2)), float(rng.uniform(0, SIZE)), float(rng.uniform(0, SIZE)),
         float(rng.uniform(8, 30)), _colour(rng, 50, 240))
        for _ in range(int(rng.integers(2, 6)))
    )
    return Appearance(
        skin=tuple(float(v) for v in skin),
        hair=tuple(float(v) for v in rng.uniform(15, 90, 3) * np.array([1.0, 0.8, 0.6])),
        shirt=_colour(rng, 30, 220),
        iris=_colour(rng, 20, 110),
        lip=tuple(float(v) for v in skin * np.array([0.8, 0.5, 0.5])),
        bg_top=_colour(rng, 60, 230),
        bg_bottom=_colour(rng, 60, 230),
        bg_shapes=shapes,
        head_axes=(float(rng.uniform(40, 46)), float(rng.uniform(52, 58))),
        eye_dx=float(rng.uniform(17, 20)),
        eye_y=float(rng.uniform(-10, -6)),
        mouth_y=float(rng.uniform(26, 30)),
        light=float(rng.uniform(0.8, 1.1)),
        side_light=float(rng.uniform(-0.2, 0.2)),
    )


_SHIFT = 4  # sub-pixel bits for OpenCV drawing
_CENTRE = (SIZE / 2, SIZE / 2 + 4)


def _pt(x: float, y: float) -> tuple[int, int]:
    """Face coordinates (origin at the head centre) -> fixed-point pixel coordinates."""
    return int(round((_CENTRE[0] + x) * 2**_SHIFT)), int(round((_CENTRE[1] + y) * 2**_SHIFT))


def _ellipse(img: np.ndarray, x: float, y: float, ax: float, ay: float, colour: object,
             start: float = 0, end: float = 360, thickness: int = -1) -> None:
    axes = (int(ax * 2**_SHIFT), int(ay * 2**_SHIFT))
    cv2.ellipse(img, _pt(x, y), axes, 0, start, end, colour, thickness, cv2.LINE_AA, _SHIFT)


def render_background(app: Appearance) -> np.ndarray:
    t = np.linspace(0, 1, SIZE)[:, None, None]
    bg = (1 - t) * np.array(app.bg_top) + t * np.array(app.bg_bottom)
    bg = np.ascontiguousarray(np.repeat(bg, SIZE, axis=1).astype(np.uint8))
    for kind, x, y, r, colour in app.bg_shapes:
        if kind == 0:
            cv2.circle(bg, (int(x), int(y)), int(r), colour, -1, cv2.LINE_AA)
        else:
            cv2.rectangle(bg, (int(x - r), int(y - r / 2)), (int(x + r), int(y + r / 2)), colour, -1)
    return cv2.GaussianBlur(bg, (0, 0), 2.0)


def render_head(app: Appearance) -> tuple[np.ndarray, np.ndarray]:
    """The still part of the person: (RGB uint8, alpha float32) with shoulders, hair, ears and shading."""
    img = np.zeros((SIZE, SIZE, 3), np.uint8)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    ax, ay = app.head_axes
    darker_skin = tuple(v * 0.9 for v in app.skin)
    parts = [(0, ay + 40, ax * 1.8, 30, app.shirt), (0, -8, ax * 1.08, ay * 0.98, app.hair),
             (-ax * 0.98, -2, 6, 11, darker_skin), (ax * 0.98, -2, 6, 11, darker_skin)]
    for x, y, a, b, colour in parts:
        _ellipse(img, x, y, a, b, colour)
        _ellipse(mask, x, y, a, b, 255)
    neck = (_pt(-ax * 0.35, ay * 0.5), _pt(ax * 0.35, ay + 20))
    cv2.rectangle(img, *neck, app.skin, -1, cv2.LINE_AA, _SHIFT)
    cv2.rectangle(mask, *neck, 255, -1, cv2.LINE_AA, _SHIFT)
    _ellipse(img, 0, 0, ax, ay, app.skin)
    _ellipse(mask, 0, 0, ax, ay, 255)
    _ellipse(img, 0, -ay * 0.62, ax * 1.02, ay * 0.45, app.hair, 180, 360)  # fringe
    shaded = img.astype(np.float32) * np.where(mask > 0, _shading(app), 1.0)[..., None]
    return np.clip(shaded, 0, 255).astype(np.uint8), mask.astype(np.float32) / 255.0


def _shading(app: Appearance) -> np.ndarray:
    """Multiplicative light map: darker rim, eye sockets and nose shadow, which Haar features key on."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    x, y = xx - _CENTRE[0], yy - _CENTRE[1]
    ax, ay = app.head_axes
    shade = 1.0 - 0.35 * np.clip(np.sqrt((x / ax) ** 2 + (y / ay) ** 2) - 0.55, 0, 1) ** 1.2
    for side in (-1, 1):
        shade -= 0.35 * np.exp(-(((x - side * app.eye_dx) / 11) ** 2 + ((y - app.eye_y) / 8) ** 2))
    shade -= 0.22 * np.exp(-(((x - 3) / 3) ** 2 + ((y - 8) / 9) ** 2))
    shade -= 0.3 * np.exp(-((x / 7) ** 2 + ((y - 17) / 2.5) ** 2))
    return shade


def draw_expression(img: np.ndarray, app: Appearance, expr: np.ndarray) -> None:
    """Draw eyes, brows, nostrils and mouth for expression vector ``expr`` onto ``img`` in place."""
    brow_raise, knit, eye_open, mouth_open, curve, asym = (float(v) for v in expr)
    brow_colour = tuple(v * 0.7 for v in app.hair)
    for side in (-1, 1):
        ex, ey = side * app.eye_dx, app.eye_y
        h = max(4.2 * (1 + 0.55 * eye_open), 0.8)
        _ellipse(img, ex, ey, 8.5, h, (240, 240, 235))
        _ellipse(img, ex, ey, 4.0, min(4.0, h), app.iris)
        _ellipse(img, ex, ey, 1.8, min(1.8, h), (10, 10, 10))
        _ellipse(img, ex, ey, 8.5, h, (25, 20, 20), 180, 360, 2)  # upper lid
        by = ey - 10 - 6 * brow_raise
        brow = [(ex - side * (7 - 2.5 * knit), by + 5 * knit - 1), (ex, by - 2 - 1.5 * brow_raise),
                (ex + side * 9, by + 1)]
        cv2.polylines(img, [np.array([_pt(*p) for p in brow], np.int32)], False, brow_colour, 4,
                      cv2.LINE_AA, _SHIFT)
    for side in (-1, 1):
        _ellipse(img, side * 3.5, 15, 2.2, 1.4, (60, 40, 40))
        if curve > 0:
            # Cheek raiser (AU6) with the smile: a lit bulge under each eye and a pushed-up lower lid.
            _ellipse(img, side * (app.eye_dx + 2), app.eye_y + 13, 9, 5,
                     tuple(min(255.0, v * (1 + 0.25 * curve)) for v in app.skin))
            _ellipse(img, side * app.eye_dx, app.eye_y + 4, 8.5, 3.0 * curve, (25, 20, 20), 200, 340, 2)
    mouth = _mouth_polygon(app.mouth_y, mouth_open, curve, asym)
    cv2.fillPoly(img, [mouth], (70, 20, 25), cv2.LINE_AA, _SHIFT)
    if curve > 0:
        # A smile parts the lips over the upper teeth: the mouth's inside turns white as the corners rise.
        teeth = tuple(70 + (v - 70) * min(1.0, 1.5 * curve) for v in (235, 230, 215))
        cv2.fillPoly(img, [_mouth_polygon(app.mouth_y - 1, mouth_open, 0.8 * curve, asym)], teeth,
                     cv2.LINE_AA, _SHIFT)
    cv2.polylines(img, [mouth], True, app.lip, 3, cv2.LINE_AA, _SHIFT)


def _mouth_polygon(my: float, mouth_open: float, curve: float, asym: float) -> np.ndarray:
    w = 13 - 2 * mouth_open + 4 * max(curve, 0)
    opening = 9 * max(mouth_open, 0)
    smile = max(curve, 0)
    upper = [(x, my - 0.6 * opening - 1.5 * (1 - abs(x) / w) * smile) for x in np.linspace(-0.6 * w, 0.6 * w, 5)]
    lower = [(x, my + opening + 6 * (1 - (x / w) ** 2) * smile + 1) for x in np.linspace(0.6 * w, -0.6 * w, 5)]
    corners = [(-w, my - 8 * curve - 3 * asym), (w, my - 8 * curve + 3 * asym)]
    points = [corners[0], *upper, corners[1], *lower]
    return np.array([_pt(*p) for p in points], np.int32)


def render_frame(app: Appearance, expr: np.ndarray, pose: np.ndarray, background: np.ndarray,
                 head: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """One (SIZE, SIZE, 3) uint8 RGB frame; ``pose`` = (dx, dy, degrees, light gain)."""
    dx, dy, angle, gain = (float(v) for v in pose)
    face = head[0].copy()
    draw_expression(face, app, expr)
    m = cv2.getRotationMatrix2D(_CENTRE, angle, 1.0)
    m[:, 2] += (dx, dy)
    face = cv2.warpAffine(face, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR).astype(np.float32)
    alpha = cv2.warpAffine(head[1], m, (SIZE, SIZE), flags=cv2.INTER_LINEAR)[..., None]
    out = face * alpha + background.astype(np.float32) * (1 - alpha)
    side = 1 + app.side_light * np.linspace(-1, 1, SIZE, dtype=np.float32)[None, :, None]
    return np.clip(out * gain * side, 0, 255).astype(np.uint8)


def head_motion(n_frames: int, fps: float, light: float, rng: np.random.Generator) -> np.ndarray:
    """(N, 4) smooth random pose track: dx, dy (pixels), rotation (degrees), light gain."""
    t = np.arange(n_frames) / fps
    amp = rng.uniform([1, 1, 1, 0.0], [6, 5, 7, 0.06])
    freq = rng.uniform(0.2, 0.9, 4)
    phase = rng.uniform(0, 2 * np.pi, 4)
    offset = rng.uniform([-5, -4, -3, 0], [5, 4, 3, 0])
    track = offset + amp * np.sin(2 * np.pi * freq * t[:, None] + phase)
    track[:, 3] += light
    return track


# ---------------------------------------------------------------------------------------------- voice


@dataclass(frozen=True)
class Voice:
    f0: float  # Hz
    level: float  # RMS of the voiced signal
    rate: float  # syllables per second
    contour: str  # "swings", "falling", "rising_end" or "flat"


def sample_voice(voice_group: int, weak: bool, rng: np.random.Generator) -> tuple[Voice, list[str]]:
    # Speakers differ less than the groups' pitch levels do, so a high or low pitch is a cue, not a speaker trait.
    speaker_f0 = rng.uniform(110, 150)
    if weak:
        # Same monotone whatever the label: mid level, a syllable rate anywhere in the range of all groups.
        return Voice(speaker_f0, rng.uniform(0.09, 0.13), rng.uniform(2.5, 6.5), "flat"), ["voice_flat"]
    if voice_group == 0:
        voice = Voice(speaker_f0 * 1.6, rng.uniform(0.2, 0.28), rng.uniform(5.5, 7.0), "swings")
        return voice, ["loud", "high_pitch", "fast", "pitch_swings"]
    if voice_group == 1:
        voice = Voice(speaker_f0 * 0.7, rng.uniform(0.035, 0.055), rng.uniform(2.2, 3.2), "falling")
        return voice, ["soft", "low_pitch", "slow", "falling"]
    voice = Voice(speaker_f0, rng.uniform(0.09, 0.13), rng.uniform(3.8, 4.6), "rising_end")
    return voice, ["medium_level", "steady_pitch", "rising_end"]


def pitch_contour(voice: Voice, t: np.ndarray, duration: float, rng: np.random.Generator) -> np.ndarray:
    """(T,) f0 in Hz over time ``t`` (seconds)."""
    x = t / duration
    jitter = 1 + 0.01 * np.sin(2 * np.pi * rng.uniform(4, 6) * t)
    if voice.contour == "swings":
        shape = 1 + 0.3 * np.sin(2 * np.pi * voice.rate / 2 * t + rng.uniform(0, 2 * np.pi))
    elif voice.contour == "falling":
        shape = 1.15 - 0.4 * x
    elif voice.contour == "rising_end":
        shape = 1 + 0.6 * np.clip((x - 0.65) / 0.35, 0, 1) ** 1.5
    else:
        shape = np.ones_like(x)
    return voice.f0 * shape * jitter


# (F1, F2) of a few vowels; each syllable picks one at random, independent of the label.
VOWELS = ((730, 1090), (270, 2290), (300, 870), (530, 1840), (570, 840), (660, 1720))


def _resonator_response(freqs: np.ndarray, centre: float, bandwidth: float) -> np.ndarray:
    """Frequency response of a two-pole resonator (a formant) at ``freqs`` Hz."""
    r = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
    z = np.exp(-2j * np.pi * freqs / SAMPLE_RATE)
    return (1 - r) / (1 - 2 * r * np.cos(2 * np.pi * centre / SAMPLE_RATE) * z + r * r * z * z)


def formant_bank(source: np.ndarray) -> list[np.ndarray]:
    """``source`` through each vowel's F1/F2 resonators, each normalised to unit RMS.

    Filtering in the frequency domain (zero-padded, so nothing wraps around) keeps scipy out of the import.
    """
    n_fft = source.size + SAMPLE_RATE // 10
    spectrum = np.fft.rfft(source, n_fft)
    freqs = np.fft.rfftfreq(n_fft, 1 / SAMPLE_RATE)
    bank = []
    for f1, f2 in VOWELS:
        response = _resonator_response(freqs, f1, 90) * _resonator_response(freqs, f2, 120)
        x = np.fft.irfft(spectrum * response, n_fft)[: source.size]
        bank.append(x / (np.sqrt(np.mean(x**2)) + 1e-9))
    return bank


def syllables(duration: float, rate: float, rng: np.random.Generator) -> list[tuple[float, float, int]]:
    """(start s, length s, vowel index) of each syllable, with jittered timing and one pause."""
    out, t = [], rng.uniform(0.05, 0.2)
    pause_at = rng.uniform(0.3, 0.7) * duration
    while t < duration - 0.1:
        length = rng.uniform(0.55, 0.8) / rate
        out.append((t, min(length, duration - 0.05 - t), int(rng.integers(len(VOWELS)))))
        t += rng.uniform(0.9, 1.1) / rate
        if pause_at <= t < pause_at + 1 / rate:
            t += rng.uniform(0.15, 0.3)
    return out


def synthesize_audio(voice: Voice, duration: float, energy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(T,) float32 mono speech-like signal: harmonic source, vowel formants, syllable envelope.

    ``energy`` (T,) multiplies the loudness so that the voice swells around the visual peak.
    """
    n = int(round(duration * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    phase = np.cumsum(pitch_contour(voice, t, duration, rng) / SAMPLE_RATE)
    source = 2 * (phase % 1.0) - 1  # sawtooth: glottal-like, all harmonics falling as 1/k
    vowels = formant_bank(source)
    voiced, consonants = np.zeros(n), np.zeros(n)
    burst = np.diff(rng.standard_normal(int(0.03 * SAMPLE_RATE) + 1))  # high-passed noise
    for start, length, vowel in syllables(duration, voice.rate, rng):
        i0, i1 = int(start * SAMPLE_RATE), int((start + length) * SAMPLE_RATE)
        env = np.sin(np.linspace(0, np.pi, i1 - i0)) ** 0.7 * rng.uniform(0.8, 1.0)
        voiced[i0:i1] += env * vowels[vowel][i0:i1]
        j1 = min(i0 + burst.size, n)
        consonants[i0:j1] += 0.25 * burst[: j1 - i0] * rng.uniform(0, 1)
    audio = voice.level * (voiced + consonants) * energy + rng.uniform(0.002, 0.006) * rng.standard_normal(n)
    return np.clip(audio, -1, 1).astype(np.float32)


# ---------------------------------------------------------------------------------------------- captions


def _join(phrases: Sequence[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _candidates(modality: str, group: int) -> str:
    return _join([ADJECTIVE[lab] for lab in group_labels(modality, group)]).replace(" and ", " or ")


def coarse_caption(face_cues: list[str], voice_cues: list[str], sentence: str) -> str:
    face = ("The " + FACE_PHRASES["face_still"][4:] if face_cues == ["face_still"]
            else "The person shows " + _join([FACE_PHRASES[c] for c in face_cues]))
    voice = (VOICE_PHRASES["voice_flat"] if voice_cues == ["voice_flat"]
             else "the voice has " + _join([VOICE_PHRASES[c] for c in voice_cues]))
    return f"{face}; {voice}; the person says: \"{sentence}\""


def reason_caption(label: str, weak: str | None, face_cues: list[str], voice_cues: list[str],
                   sentence: str) -> str:
    """A reasoning text citing the informative cues and ending with the label."""
    r, c, t = label_groups(label)
    face = _join([FACE_PHRASES[k] for k in face_cues])
    voice = _join([VOICE_PHRASES[k] for k in voice_cues])
    parts = [
        "The " + FACE_PHRASES["face_still"][4:] + ", so the expression gives little evidence."
        if weak == "face" else f"The face shows {face}, which points to {_candidates('face', r)}.",
        "Besides, " + VOICE_PHRASES["voice_flat"] + " and gives little evidence."
        if weak == "voice" else f"The speech has {voice}, which fits {_candidates('voice', c)}.",
        f"The subtitle \"{sentence}\" {TEXT_PHRASES[None]}."
        if weak == "text" else f"The subtitle \"{sentence}\" {TEXT_PHRASES[t]}, "
        f"which fits {_candidates('text', t)}.",
    ]
    evidence = {"face": _face_summary(r, face_cues), "voice": VOICE_SUMMARY[c], "text": TEXT_SUMMARY[t]}
    first, second = [evidence[m] for m in ("face", "voice", "text") if m != weak][:2]
    parts.append(f"{first[0].upper()}{first[1:]} together with {second} suggest {label}.")
    return " ".join(parts)


def _face_summary(face_group: int, face_cues: list[str]) -> str:
    if face_group == 1 and "smile_one_sided" in face_cues:
        return "the one-sided smile"
    return FACE_SUMMARY[face_group]


# ---------------------------------------------------------------------------------------------- one clip


@dataclass(frozen=True)
class Clip:
    """Everything drawn for one clip before it is written."""

    plan: ClipPlan
    fps: int
    frames: np.ndarray  # (N, SIZE, SIZE, 3) uint8 RGB
    audio: np.ndarray  # (T,) float32 at SAMPLE_RATE
    expression: np.ndarray  # (N, N_EXPR) expression vector per frame
    appearance: Appearance
    peak: int
    valence: float
    sentence: str
    face_cues: list[str]
    voice_cues: list[str]


def synthesize_clip(plan: ClipPlan) -> Clip:
    """Draw ``plan``'s clip from its own seed: the same plan always gives the same clip."""
    rng = np.random.default_rng(plan.seed)
    r, c, t = label_groups(plan.label)
    fps = int(rng.integers(12, 16))
    n_frames = int(round(rng.uniform(1.5, 3.0) * fps))
    peak = int(round(rng.uniform(0.3, 0.7) * (n_frames - 1)))
    # Held over much of the utterance, as expressions are in speech, yet relaxing towards both ends: a face
    # shown only at a brief apex would be lost in the utterance-level average the face features take.
    curve = expression_curve(n_frames, peak, width=min(peak, n_frames - 1 - peak) / rng.uniform(1.5, 1.9))
    peak_expr, face_cues = peak_expression(r, plan.weak == "face", rng)
    voice, voice_cues = sample_voice(c, plan.weak == "voice", rng)
    sentence = make_sentence(None if plan.weak == "text" else t, rng)
    app = sample_appearance(rng)
    expression = curve[:, None] * peak_expr[None, :]
    frames = render_video(app, expression, fps, rng)
    duration = n_frames / fps
    audio_t = np.arange(int(round(duration * SAMPLE_RATE))) / SAMPLE_RATE
    energy = 0.65 + 0.35 * np.interp(audio_t * fps, np.arange(n_frames), curve)
    audio = synthesize_audio(voice, duration, energy, rng)
    valence = float(np.clip(np.round(VALENCE[plan.label] + rng.normal(0, 0.5), 1), -5, 5))
    return Clip(plan, fps, frames, audio, expression, app, peak, valence, sentence, face_cues, voice_cues)


def make_clip(plan: ClipPlan, video_dir: Path) -> dict:
    """Render ``plan`` to ``video_dir/NAME.mp4`` and return its annotation record."""
    clip = synthesize_clip(plan)
    write_mp4(video_dir / f"{plan.name}.mp4", clip.frames, clip.fps, clip.audio, SAMPLE_RATE)
    return annotation(clip)


def render_video(app: Appearance, expression: np.ndarray, fps: float, rng: np.random.Generator) -> np.ndarray:
    """(N, SIZE, SIZE, 3) frames of ``expression`` (N, N_EXPR) with random head motion and lighting."""
    background, head = render_background(app), render_head(app)
    pose = head_motion(len(expression), fps, app.light, rng)
    return np.stack([render_frame(app, e, p, background, head) for e, p in zip(expression, pose, strict=True)])


def annotation(clip: Clip) -> dict:
    """The clip's MERR-style record; ``cues`` lists what was drawn so explanations can be checked."""
    plan, face_cues, voice_cues, sentence = clip.plan, clip.face_cues, clip.voice_cues, clip.sentence
    r, c, t = label_groups(plan.label)
    aus = [au for cue in face_cues for au in FACE_AUS.get(cue, [])]
    return {
        "name": plan.name, "label": plan.label, "n_frames": len(clip.frames), "valence": clip.valence,
        "caption": coarse_caption(face_cues, voice_cues, sentence),
        "smp_reason_caption": reason_caption(plan.label, plan.weak, face_cues, voice_cues, sentence),
        "AU_list": aus, "peak_AU_list": aus,
        "visual_prior_list": [FACE_PHRASES[k] for k in face_cues],
        "audio_prior_list": [VOICE_PHRASES[k] for k in voice_cues],
        "peak_index": str(clip.peak), "text": sentence, "pseu_emotion": plan.label,
        "cues": {"face_group": r, "voice_group": c, "text_group": t, "weak": plan.weak,
                 "face_cues": face_cues, "voice_cues": voice_cues},
    }


def _make_clip_star(args: tuple[ClipPlan, Path]) -> dict:
    cv2.setNumThreads(1)
    return make_clip(*args)


# ---------------------------------------------------------------------------------------------- dataset


def split_names(records: list[dict], fractions: Sequence[float], seed: int) -> dict[str, list[str]]:
    """Stratified train/val/test names: each label's clips shuffled and cut by ``fractions``.

    With at least three clips of a label, val and test each get at least one of them.
    """
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for k, label in enumerate(MERR_LABELS):
        names = sorted(r["name"] for r in records if r["label"] == label)
        names = [names[i] for i in np.random.default_rng([seed, k, 11]).permutation(len(names))]
        n_val = max(int(round(fractions[1] * len(names))), int(len(names) >= 3))
        n_test = max(int(round(fractions[2] * len(names))), int(len(names) >= 3))
        n_train = len(names) - n_val - n_test
        out["train"] += names[:n_train]
        out["val"] += names[n_train:n_train + n_val]
        out["test"] += names[n_train + n_val:]
    return {k: sorted(v) for k, v in out.items()}


def _sample(record: dict) -> Sample:
    return Sample(record["name"], record["label"], record["valence"], record["n_frames"])


def write_annotations(out_dir: Path, records: list[dict], splits: dict[str, list[str]]) -> None:
    by_name = {r["name"]: r for r in records}
    samples = [_sample(r) for r in records]
    common = ("AU_list", "peak_AU_list", "visual_prior_list", "audio_prior_list", "peak_index", "text",
              "pseu_emotion", "cues")
    for stage, key in (("coarse", "caption"), ("fine", "smp_reason_caption")):
        write_merr_txt(out_dir / f"MERR_{stage}_grained.txt", samples)
        data = {r["name"]: {key: r[key], **{k: r[k] for k in common}} for r in records}
        write_merr_json(out_dir / f"MERR_{stage}_grained.json", data)
    write_subtitles(out_dir / "subtitles.csv", {r["name"]: r["text"] for r in records})
    for split, names in splits.items():
        write_merr_txt(out_dir / "splits" / f"{split}.txt", [_sample(by_name[n]) for n in names])
    test = [_sample(by_name[n]) for n in splits["test"]]
    write_dfew(out_dir / "dfew", [s for s in test if s.label in DFEW_LABELS])
    mer = [s for s in test if s.label in MER_LABELS]
    train_mer = [_sample(by_name[n]) for n in splits["train"] if by_name[n]["label"] in MER_LABELS]
    write_mer2023_npz(out_dir / "mer2023" / "label-6way.npz",
                      {"train": train_mer, "test1": mer, "test2": mer, "test3": mer})
    write_mer2023_csv(out_dir / "mer2023" / "test-label.csv", mer)
    write_mer2024_csv(out_dir / "mer2024" / "label-disdim.csv", mer)


def write_dfew(root: Path, samples: list[Sample]) -> None:
    """The DFEW-label test clips dealt round-robin into five folds, in both DFEW layouts."""
    for k in range(N_DFEW_FOLDS):
        fold = samples[k::N_DFEW_FOLDS]
        write_dfew_split(root / "EmoLabel_DataSplit" / "test(single-labeled)" / f"set_{k + 1}.csv", fold)
        write_dfew_txt(root / f"test_set_{k + 1}.txt", fold)


def _meta(clips_per_label: int, seed: int, splits: Sequence[float]) -> dict:
    return {"generator_version": GENERATOR_VERSION, "seed": seed, "clips_per_label": clips_per_label,
            "splits": [float(s) for s in splits], "labels": list(MERR_LABELS),
            "grid": [list(row) for row in GRID], "text_group": "(face_row + voice_column) % 3",
            "weak_kinds": list(WEAK_KINDS), "size": SIZE, "sample_rate": SAMPLE_RATE}


def generate(out_dir: str | os.PathLike, clips_per_label: int, seed: int,
             splits: Sequence[float] = (0.7, 0.1, 0.2), workers: int = 1) -> Path:
    """Write the synthetic set under ``out_dir`` and return its path; ``meta.json`` is written last.

    A folder that already holds a complete set made with the same arguments is left as it is.
    """
    out_dir = Path(out_dir)
    meta = _meta(clips_per_label, seed, splits)
    _check_existing(out_dir, meta)
    if (out_dir / "meta.json").is_file():
        return out_dir
    if clips_per_label < 1 or len(splits) != 3 or abs(sum(splits) - 1) > 1e-6:
        raise UserError(f"clips_per_label={clips_per_label}, splits={list(splits)}: "
                        "use clips_per_label >= 1 and three split fractions summing to 1")
    video_dir = out_dir / "videos"
    video_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(plan, video_dir) for plan in plan_clips(clips_per_label, seed)]
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            records = pool.map(_make_clip_star, jobs, chunksize=4)
    else:
        records = [make_clip(*job) for job in jobs]
    write_annotations(out_dir, records, split_names(records, splits, seed))
    atomic_write_text(out_dir / "meta.json", json.dumps(meta, indent=1) + "\n")
    return out_dir


def _check_existing(out_dir: Path, meta: dict) -> None:
    path = out_dir / "meta.json"
    if path.is_file() and json.loads(path.read_text(encoding="utf-8")) != meta:
        raise UserError(f"{out_dir} already holds a synthetic set made with other arguments "
                        "(see its meta.json): pick another out_dir or delete that folder")


def timed_generate(out_dir: str | os.PathLike, clips_per_label: int, seed: int, workers: int = 1) -> str:
    """Generate and return a one-line summary with counts and time (for the command-line tool)."""
    start = time.perf_counter()
    done_before = (Path(out_dir) / "meta.json").is_file()
    path = generate(out_dir, clips_per_label, seed, workers=workers)
    seconds = time.perf_counter() - start
    if done_before:
        return f"synthetic set at {path} is already complete (seed {seed}, {clips_per_label} per label); nothing to do"
    n = clips_per_label * len(MERR_LABELS)
    return (f"synthetic set at {path}: {n} clips ({clips_per_label} per label x {len(MERR_LABELS)} labels), "
            f"seed {seed}, {seconds:.1f} s ({seconds / n:.3f} s/clip, {workers} worker(s))")


