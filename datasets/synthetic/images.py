"""A synthetic image emotion set in EmoSet's layout, for the EmoVIT pipeline's tests and tiny experiments.

Layout under ``out_dir`` (what :func:`emotion_llama.datasets.emoset.read_emoset` reads)::

    image/<emotion>/<emotion>_<NNNNN>.jpg        224x224 JPEG by default
    annotation/<emotion>/<emotion>_<NNNNN>.json  brightness, colorfulness, scene, object, [facial_expression,
                                                 human_action,] caption
    info.json                                    EmoSet's vocabularies: label2idx / idx2label per attribute
    train.json val.json test.json                [label, id, image_path, annotation_path] entries, 80/5/15
                                                 per label (val and test get at least one image each from
                                                 three images of a label on)
    meta.json                                    the generator's arguments (written first, checked on reruns)

The design. Each of the eight labels has a *look* that survives any reasonable image encoder: a global
brightness level, a palette (hues and saturation) and its own drawn objects.

=========== ======================================== ================================ ========== ==========
label       palette                                  objects (first one always drawn) brightness colourful
=========== ======================================== ================================ ========== ==========
amusement   pastel yellow and pink                   balloons, confetti               0.77       0.71
awe         deep blue and purple sky, snowy peaks    mountains, stars, moon           0.29       0.45
contentment soft warm green meadow, pale warm sky    sun, flowers, trees              0.72       0.45
excitement  saturated red, orange and magenta        fireworks, stars, confetti       0.46       0.96
anger       red and black                            jagged shards, lightning, flames 0.11       0.63
disgust     sickly olive, mustard and brown          slime blobs, flies, garbage bags 0.36       0.33
fear        near black, dark blue-grey               shadow figures, dead trees, moon 0.07       0.08
sadness     desaturated grey-blue                    rain, clouds, umbrella           0.36       0.10
=========== ======================================== ================================ ========== ==========

(Mean brightness and colorfulness of 40 images per label, seed 0; the spread within a label is 0.01-0.05
in brightness and 0.01-0.11 in colorfulness.)

A scene (two or three per label, e.g. ``amusement_park`` or ``playroom``) picks a layout (open land, a room
with a window, a street of buildings, a forest) and sometimes scene objects (a ferris wheel, tombstones,
spotlights, buildings). Half of the images (``person_fraction``) show the drawn person of the video set
(:mod:`.face`) with the label's expression (a laugh, a gaze of awe, a gentle smile, a cheer, a shout, a
grimace, a scream, tears), lit like the scene; only those annotations carry ``facial_expression`` and
``human_action``. Nuisance variation keeps it from being memorisation: every palette colour is jittered
(hue +-8 degrees, saturation and value +-12 %), layouts, object counts, positions and sizes are random, the
person's looks are random, and Gaussian pixel noise is added. Some objects are shared (stars, the moon,
confetti, tombstones) and some scenes appear under two labels (``street``), so objects alone do not give the
label away; the palette and brightness do, so a linear model on colour histograms, or on the mean tokens of
a small random ViT, separates the labels.

Brightness and colorfulness are measured on the written JPEG (mean luma; Hasler and Suesstrunk's measure,
see :mod:`emotion_llama.datasets.emoset`) and stored at EmoSet's 0.1 steps. ``caption`` is one sentence
naming what was drawn (light, colours, scene, objects with counts, the person's action and face); it feeds
the instruction-data generator and is not part of real EmoSet.

Every image is drawn from its own seed (``[seed, label index, image index]``), so a set is the same whatever
the number of workers, and a larger ``images_per_label`` keeps the first images. The run is resumable: an
image whose JPEG and annotation both exist is kept (each file is written atomically, the JPEG first).
"""

from __future__ import annotations

import colorsys
import json
import multiprocessing
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from emotion_llama.datasets.emoset import attribute_level, brightness, colorfulness
from emotion_llama.datasets.synthetic.face import N_EXPR, draw_expression, render_head, sample_appearance
from emotion_llama.datasets.synthetic.face import SIZE as FACE_SIZE
from emotion_llama.errors import UserError
from emotion_llama.fileio import atomic_path, atomic_write_text
from emotion_llama.labels import EMOSET_LABELS

GENERATOR_VERSION = 1
IMAGE_SIZE = 224
SPLIT_FRACTIONS = (0.80, 0.05, 0.15)
JPEG_QUALITY = 92

HSV = tuple[float, float, float]  # hue in degrees, saturation and value in 0-1
RGB = tuple[float, float, float]  # 0-255


# ---------------------------------------------------------------------------------------------- design


@dataclass(frozen=True)
class Scene:
    name: str
    layout: str  # "land", "room", "street" or "forest"
    objects: tuple[str, ...] = ()  # scene objects drawn with the label's


@dataclass(frozen=True)
class Style:
    """How one label looks."""

    sky: tuple[HSV, HSV]  # top and bottom of the sky (of the wall, in a room)
    ground: tuple[HSV, HSV]  # near and far ground (the floor, in a room)
    accents: tuple[HSV, ...]  # object colours
    colour_words: tuple[str, ...]
    scenes: tuple[Scene, ...]
    objects: tuple[str, ...]  # the first is always drawn, each other one with probability 0.6
    # face.N_EXPR values: brow raise, brow knit, eye opening, mouth opening, mouth curve, asymmetry
    expression: tuple[float, ...]
    facial_expression: str
    actions: tuple[str, ...]
    face_words: str
    person_light: RGB  # gain on the drawn person's colours


STYLES: dict[str, Style] = {
    "amusement": Style(
        sky=((55, 0.45, 1.0), (330, 0.35, 1.0)), ground=((50, 0.55, 0.95), (40, 0.5, 0.9)),
        accents=((330, 0.7, 1.0), (55, 0.85, 1.0), (190, 0.55, 1.0), (25, 0.7, 1.0), (290, 0.45, 1.0)),
        colour_words=("pink", "yellow", "pastel"),
        scenes=(Scene("amusement_park", "land", ("ferris wheel",)), Scene("playroom", "room"),
                Scene("beach", "land")),
        objects=("balloon", "confetti"),
        expression=(0.3, 0.0, -0.2, 0.7, 1.0, 0.0), facial_expression="happy",
        actions=("laughing", "playing"), face_words="a wide open smile", person_light=(1.05, 1.05, 1.0),
    ),
    "awe": Style(
        sky=((252, 0.8, 0.35), (222, 0.65, 0.75)), ground=((235, 0.5, 0.3), (240, 0.45, 0.2)),
        accents=((230, 0.55, 0.45), (260, 0.5, 0.4), (210, 0.1, 1.0), (55, 0.15, 1.0)),
        colour_words=("deep blue", "purple", "violet"),
        scenes=(Scene("mountain", "land"), Scene("valley", "land"), Scene("glacier", "land")),
        objects=("mountain", "star", "moon"),
        expression=(1.0, 0.0, 1.0, 0.55, 0.1, 0.0), facial_expression="surprised",
        actions=("gazing upward", "looking at the view"), face_words="raised brows and wide eyes",
        person_light=(0.55, 0.6, 0.8),
    ),
    "contentment": Style(
        sky=((75, 0.15, 0.95), (50, 0.25, 0.98)), ground=((95, 0.45, 0.7), (105, 0.5, 0.55)),
        accents=((48, 0.65, 1.0), (100, 0.55, 0.55), (30, 0.35, 0.95), (340, 0.3, 0.95)),
        colour_words=("soft green", "warm", "golden"),
        scenes=(Scene("meadow", "land"), Scene("garden", "land", ("flower",)), Scene("park", "forest")),
        objects=("sun", "flower", "tree"),
        expression=(0.0, 0.0, -0.35, 0.0, 0.7, 0.0), facial_expression="happy",
        actions=("relaxing", "resting"), face_words="a gentle smile", person_light=(1.0, 0.97, 0.88),
    ),
    "excitement": Style(
        sky=((345, 0.9, 0.95), (25, 1.0, 1.0)), ground=((10, 0.85, 0.85), (0, 0.9, 0.7)),
        accents=((50, 0.9, 1.0), (30, 1.0, 1.0), (0, 0.0, 1.0), (320, 0.8, 1.0)),
        colour_words=("red", "orange", "magenta"),
        scenes=(Scene("stadium", "land", ("spotlight",)), Scene("stage", "room", ("spotlight",)),
                Scene("festival", "land")),
        objects=("firework", "star", "confetti"),
        expression=(0.7, 0.0, 0.6, 0.9, 1.0, 0.0), facial_expression="happy",
        actions=("cheering", "celebrating"), face_words="an open-mouthed grin", person_light=(1.1, 0.85, 0.7),
    ),
    "anger": Style(
        sky=((0, 0.9, 0.12), (5, 0.95, 0.5)), ground=((0, 0.4, 0.1), (0, 0.2, 0.04)),
        accents=((0, 1.0, 0.85), (0, 0.0, 0.05), (12, 1.0, 0.7), (350, 0.9, 0.55)),
        colour_words=("red", "black", "blood-red"),
        scenes=(Scene("street", "street"), Scene("alley", "street"), Scene("factory", "room")),
        objects=("jagged shard", "lightning bolt", "flame"),
        expression=(-0.7, 1.0, -0.5, 0.6, -0.5, 0.0), facial_expression="angry",
        actions=("shouting", "yelling"), face_words="knitted brows and bared teeth",
        person_light=(0.75, 0.35, 0.3),
    ),
    "disgust": Style(
        sky=((62, 0.5, 0.45), (52, 0.55, 0.55)), ground=((38, 0.6, 0.32), (30, 0.55, 0.22)),
        accents=((75, 0.75, 0.5), (40, 0.7, 0.35), (85, 0.6, 0.4), (0, 0.0, 0.06)),
        colour_words=("olive", "brown", "mustard"),
        scenes=(Scene("swamp", "land"), Scene("garbage_dump", "land", ("garbage bag",)),
                Scene("kitchen", "room")),
        objects=("slime blob", "fly", "garbage bag"),
        expression=(-0.4, 0.8, -0.7, 0.15, -0.8, 0.8), facial_expression="disgusted",
        actions=("grimacing", "recoiling"), face_words="a wrinkled, lopsided frown",
        person_light=(0.7, 0.7, 0.45),
    ),
    "fear": Style(
        sky=((220, 0.4, 0.06), (210, 0.35, 0.2)), ground=((215, 0.2, 0.05), (0, 0.0, 0.02)),
        accents=((0, 0.0, 0.02), (220, 0.2, 0.12), (55, 0.5, 0.9), (210, 0.1, 0.6)),
        colour_words=("black", "navy", "inky"),
        scenes=(Scene("forest_path", "forest"), Scene("corridor", "room"),
                Scene("graveyard", "land", ("tombstone",))),
        objects=("shadow figure", "dead tree", "moon"),
        expression=(0.9, 0.7, 1.0, 0.8, -0.3, 0.0), facial_expression="fearful",
        actions=("screaming", "hiding"), face_words="wide eyes and raised, drawn brows",
        person_light=(0.28, 0.3, 0.38),
    ),
    "sadness": Style(
        sky=((210, 0.12, 0.45), (212, 0.15, 0.55)), ground=((215, 0.15, 0.32), (220, 0.12, 0.22)),
        accents=((210, 0.1, 0.75), (215, 0.08, 0.5), (220, 0.3, 0.3), (200, 0.15, 0.65)),
        colour_words=("grey", "pale blue", "washed-out"),
        scenes=(Scene("street", "street"), Scene("cemetery", "land", ("tombstone",)),
                Scene("bedroom", "room")),
        objects=("rain", "cloud", "umbrella"),
        expression=(-0.2, 0.6, -0.5, 0.0, -1.0, 0.0), facial_expression="sad",
        actions=("crying", "weeping"), face_words="tears and a downturned mouth",
        person_light=(0.6, 0.65, 0.75),
    ),
}
assert tuple(STYLES) == EMOSET_LABELS

# Singular and plural of every object; None: a mass noun ("rain"), named without a count.
OBJECT_NOUNS: dict[str, str | None] = {
    "balloon": "balloons", "confetti": None, "ferris wheel": "ferris wheels", "mountain": "mountains",
    "star": "stars", "moon": "moons", "sun": "suns", "flower": "flowers", "tree": "trees",
    "firework": "fireworks", "spotlight": "spotlights", "jagged shard": "jagged shards",
    "lightning bolt": "lightning bolts", "flame": "flames", "slime blob": "slime blobs", "fly": "flies",
    "garbage bag": "garbage bags", "shadow figure": "shadow figures", "dead tree": "dead trees", "rain": None,
    "cloud": "clouds", "umbrella": "umbrellas", "tombstone": "tombstones", "building": "buildings",
    "window": "windows", "person": "people",
}
LAYOUT_OBJECTS = {"room": ("window",), "street": ("building",), "forest": ("tree",), "land": ()}


def vocabulary() -> dict[str, list[str]]:
    """Every value each attribute can take in this set (``info.json``'s vocabularies)."""
    styles = STYLES.values()
    return {
        "scene": sorted({s.name for st in styles for s in st.scenes}),
        "object": sorted(OBJECT_NOUNS),
        "facial_expression": sorted({st.facial_expression for st in styles}),
        "human_action": sorted({a for st in styles for a in st.actions}),
    }


# ---------------------------------------------------------------------------------------------- colours


class Palette:
    """A label's colours after this image's jitter (hue shift, saturation and value gains)."""

    def __init__(self, style: Style, rng: np.random.Generator):
        self.style = style
        self.hue = float(rng.uniform(-8, 8))
        self.sat = float(rng.uniform(0.88, 1.12))
        self.val = float(rng.uniform(0.88, 1.12))

    def rgb(self, hsv: HSV, value_gain: float = 1.0) -> RGB:
        h, s, v = hsv
        r, g, b = colorsys.hsv_to_rgb(((h + self.hue) % 360) / 360, min(s * self.sat, 1.0),
                                      min(v * self.val * value_gain, 1.0))
        return (255 * r, 255 * g, 255 * b)

    def accent(self, rng: np.random.Generator, value_gain: float = 1.0) -> RGB:
        h, s, v = self.style.accents[int(rng.integers(len(self.style.accents)))]
        return self.rgb((h + float(rng.uniform(-5, 5)), s, v), value_gain)


def _gradient(rows: int, width: int, top: RGB, bottom: RGB) -> np.ndarray:
    t = np.linspace(0.0, 1.0, max(rows, 1), dtype=np.float32)[:, None]
    column = (1 - t) * np.array(top, np.float32) + t * np.array(bottom, np.float32)
    return np.repeat(column[:, None, :], width, axis=1)[:rows]


# ---------------------------------------------------------------------------------------------- drawing


class Canvas:
    """The image being drawn (uint8 RGB) and the scene's geometry; coordinates are fractions of the size."""

    def __init__(self, size: int, palette: Palette, rng: np.random.Generator):
        self.size, self.palette, self.rng = size, palette, rng
        self.img = np.zeros((size, size, 3), np.uint8)
        self.horizon = 0.65  # the ground (floor) starts here

    def u(self, low: float, high: float) -> float:
        return float(self.rng.uniform(low, high))

    def n(self, low: int, high: int) -> int:
        """An integer in [low, high)."""
        return int(self.rng.integers(low, high))

    def px(self, v: float) -> int:
        return int(round(v * self.size))

    def pt(self, x: float, y: float) -> tuple[int, int]:
        return self.px(x), self.px(y)

    def colour(self, hsv: HSV, value_gain: float = 1.0) -> RGB:
        return self.palette.rgb(hsv, value_gain)

    def poly(self, points: Sequence[tuple[float, float]], colour: RGB) -> None:
        cv2.fillPoly(self.img, [np.array([self.pt(x, y) for x, y in points], np.int32)], colour, cv2.LINE_AA)

    def circle(self, x: float, y: float, r: float, colour: RGB) -> None:
        cv2.circle(self.img, self.pt(x, y), max(1, self.px(r)), colour, -1, cv2.LINE_AA)

    def ellipse(self, x: float, y: float, rx: float, ry: float, colour: RGB, start: float = 0,
                end: float = 360, angle: float = 0, thickness: int = -1) -> None:
        axes = (max(1, self.px(rx)), max(1, self.px(ry)))
        cv2.ellipse(self.img, self.pt(x, y), axes, angle, start, end, colour, thickness, cv2.LINE_AA)

    def line(self, x0: float, y0: float, x1: float, y1: float, colour: RGB, width: float = 0.008) -> None:
        cv2.line(self.img, self.pt(x0, y0), self.pt(x1, y1), colour, max(1, self.px(width)), cv2.LINE_AA)

    def rect(self, x0: float, y0: float, x1: float, y1: float, colour: RGB, width: float = 0.0) -> None:
        thickness = max(1, self.px(width)) if width else -1
        cv2.rectangle(self.img, self.pt(x0, y0), self.pt(x1, y1), colour, thickness)

    def blend(self, layer: np.ndarray, alpha: np.ndarray | float) -> None:
        """Mix ``layer`` (float RGB) over the image with opacity ``alpha`` (scalar or (H, W, 1))."""
        out = self.img.astype(np.float32) * (1 - alpha) + layer * alpha
        self.img[:] = np.clip(out, 0, 255).astype(np.uint8)


def draw_layout(c: Canvas, layout: str) -> None:
    sky, ground = c.palette.style.sky, c.palette.style.ground
    c.horizon = c.u(0.6, 0.75) if layout == "room" else c.u(0.55, 0.72)
    h = c.px(c.horizon)
    c.img[:h] = _gradient(h, c.size, c.colour(sky[0]), c.colour(sky[1]))
    c.img[h:] = _gradient(c.size - h, c.size, c.colour(ground[0]), c.colour(ground[1]))
    if layout == "room":  # a window with its frame and cross bar, and the skirting line
        x0, w, y0, hh = c.u(0.08, 0.6), c.u(0.22, 0.32), c.u(0.1, 0.2), c.u(0.25, 0.35)
        frame = c.colour(ground[0], 0.6)
        c.rect(x0, y0, x0 + w, y0 + hh, c.colour(sky[1], 1.2))
        c.rect(x0, y0, x0 + w, y0 + hh, frame, 0.012)
        c.line(x0 + w / 2, y0, x0 + w / 2, y0 + hh, frame)
        c.line(0, c.horizon, 1, c.horizon, frame)
    elif layout == "street":  # a row of buildings with some lit windows
        x = c.u(-0.1, 0.0)
        while x < 1.0:
            w, top = c.u(0.12, 0.24), c.horizon - c.u(0.18, 0.45)
            c.rect(x, top, x + w, c.horizon, c.colour(sky[0], c.u(0.45, 0.7)))
            lit = c.colour(sky[1], 0.9)
            for wy in np.arange(top + 0.04, c.horizon - 0.05, 0.07):
                for wx in np.arange(x + 0.025, x + w - 0.04, 0.06):
                    if c.rng.random() < 0.4:
                        c.rect(wx, wy, wx + 0.025, wy + 0.03, lit)
            x += w + c.u(0.0, 0.04)
    elif layout == "forest":  # trunks and crowns in the ground's colours
        for _ in range(c.n(4, 8)):
            x, w, top = c.u(0, 1), c.u(0.025, 0.05), c.horizon - c.u(0.25, 0.5)
            c.rect(x - w / 2, top, x + w / 2, c.horizon + 0.02, c.colour(ground[1], 0.55))
            crown = c.colour(ground[0], c.u(0.6, 0.9))
            c.ellipse(x, top, c.u(0.07, 0.12), c.u(0.08, 0.13), crown)


def _sky_point(c: Canvas, margin: float = 0.08) -> tuple[float, float]:
    return c.u(margin, 1 - margin), c.u(margin, max(c.horizon - 0.15, margin + 0.01))


def _ground_point(c: Canvas) -> tuple[float, float]:
    return c.u(0.05, 0.95), c.u(c.horizon + 0.03, 0.97)


def _balloon(c: Canvas) -> int:
    n = c.n(2, 7)
    for _ in range(n):
        (x, y), r = _sky_point(c), c.u(0.04, 0.07)
        colour = c.palette.accent(c.rng)
        c.line(x, y + 1.1 * r, x + c.u(-0.03, 0.03), y + 3.2 * r, (90, 90, 90), 0.004)
        c.ellipse(x, y, r, 1.2 * r, colour)
        c.circle(x - 0.35 * r, y - 0.45 * r, 0.25 * r, tuple(min(255.0, v + 60) for v in colour))
    return n


def _confetti(c: Canvas) -> int:
    for _ in range(c.n(25, 60)):
        centre, shape = (c.u(0, 1) * c.size, c.u(0, 1) * c.size), (c.px(0.018), c.px(0.009))
        box = cv2.boxPoints((centre, shape, c.u(0, 180)))
        cv2.fillPoly(c.img, [np.round(box).astype(np.int32)], c.palette.accent(c.rng), cv2.LINE_AA)
    return 1


def _ferris_wheel(c: Canvas) -> int:
    r = c.u(0.14, 0.2)
    x, y = c.u(0.2, 0.8), c.horizon - 1.05 * r
    colour = c.palette.accent(c.rng, 0.8)
    c.ellipse(x, y, r, r, colour, thickness=max(2, c.px(0.012)))
    for a in np.linspace(0, np.pi, 6, endpoint=False) + c.u(0, np.pi):
        dx, dy = r * np.cos(a), r * np.sin(a)
        c.line(x - dx, y - dy, x + dx, y + dy, colour)
    for side in (-1, 1):
        c.line(x, y, x + side * 0.6 * r, c.horizon, colour, 0.012)
    return 1


def _mountain(c: Canvas) -> int:
    n = c.n(2, 5)
    for _ in range(n):
        x, w, hgt = c.u(0.0, 1.0), c.u(0.25, 0.45), c.u(0.2, 0.42)
        top, cap = c.horizon - hgt, 0.28  # the snow covers the top 28 %
        c.poly([(x - w, c.horizon + 0.01), (x, top), (x + w, c.horizon + 0.01)], c.palette.accent(c.rng))
        c.poly([(x - w * cap, top + hgt * cap), (x, top), (x + w * cap, top + hgt * cap)],
               c.colour((215, 0.08, 0.95)))
    return n


def _star(c: Canvas) -> int:
    n = c.n(12, 35)
    for _ in range(n):
        cv2.circle(c.img, c.pt(c.u(0, 1), c.u(0, c.horizon * 0.7)), c.n(1, 3), c.colour((55, 0.1, 1.0)), -1,
                   cv2.LINE_AA)
    return n


def _moon(c: Canvas) -> int:
    c.circle(c.u(0.1, 0.9), c.u(0.07, 0.25), c.u(0.035, 0.06), c.colour((50, 0.12, 0.92)))
    return 1


def _sun(c: Canvas) -> int:
    (x, y), r = _sky_point(c, 0.15), c.u(0.07, 0.1)
    small = max(c.size // 4, 8)  # the glow is smooth: blurred at a quarter of the size, then enlarged
    glow = np.zeros((small, small), np.float32)
    cv2.circle(glow, (int(x * small), int(y * small)), max(1, int(2.2 * r * small)), 1.0, -1)
    glow = cv2.resize(cv2.GaussianBlur(glow, (0, 0), small * r), (c.size, c.size))[..., None]
    c.blend(np.array(c.colour((45, 0.35, 1.0)), np.float32), 0.5 * glow)
    c.circle(x, y, r, c.colour((48, 0.7, 1.0)))
    return 1


def _flower(c: Canvas) -> int:
    n = c.n(5, 14)
    for _ in range(n):
        x, y = _ground_point(c)
        petals = c.colour(c.palette.style.accents[c.n(2, 4)])
        for a in np.linspace(0, 2 * np.pi, 5, endpoint=False):
            c.circle(x + 0.012 * np.cos(a), y + 0.012 * np.sin(a), 0.012, petals)
        c.circle(x, y, 0.008, c.colour((48, 0.8, 1.0)))
    return n


def _tree(c: Canvas) -> int:
    n = c.n(1, 4)
    for _ in range(n):
        x, base, hgt = c.u(0.05, 0.95), c.horizon + c.u(0.0, 0.05), c.u(0.15, 0.28)
        c.rect(x - 0.015, base - hgt, x + 0.015, base, c.colour((30, 0.5, 0.4)))
        c.circle(x, base - hgt, c.u(0.06, 0.09), c.colour((100, 0.55, 0.5)))
    return n


def _firework(c: Canvas) -> int:
    n = c.n(2, 5)
    for _ in range(n):
        (x, y), r = _sky_point(c), c.u(0.08, 0.15)
        colour = c.palette.accent(c.rng)
        for a in np.linspace(0, 2 * np.pi, c.n(12, 20), endpoint=False):
            c.line(x + 0.25 * r * np.cos(a), y + 0.25 * r * np.sin(a), x + r * np.cos(a), y + r * np.sin(a),
                   colour, 0.007)
            c.circle(x + r * np.cos(a), y + r * np.sin(a), 0.008, colour)
    return n


def _spotlight(c: Canvas) -> int:
    n = c.n(2, 4)
    mask = np.zeros(c.img.shape[:2], np.float32)
    for _ in range(n):
        x, spread, foot = c.u(0.1, 0.9), c.u(0.1, 0.2), c.u(-0.3, 0.3)
        corners = [(x - 0.02, 0), (x + 0.02, 0), (x + foot + spread, 1), (x + foot - spread, 1)]
        cv2.fillPoly(mask, [np.array([c.pt(*p) for p in corners], np.int32)], 1.0, cv2.LINE_AA)
    c.blend(np.array(c.colour((45, 0.25, 1.0)), np.float32), 0.3 * mask[..., None])
    return n


def _jagged_shard(c: Canvas) -> int:
    n = c.n(3, 7)
    for _ in range(n):
        x, y, k = c.u(0.05, 0.95), c.u(0.05, 0.95), c.n(5, 9)
        angles = np.sort(c.rng.uniform(0, 2 * np.pi, 2 * k))
        tips, notches = c.rng.uniform(0.07, 0.16, 2 * k), c.rng.uniform(0.015, 0.04, 2 * k)
        radii = np.where(np.arange(2 * k) % 2 == 0, tips, notches)
        c.poly([(x + r * np.cos(a), y + r * np.sin(a)) for a, r in zip(angles, radii, strict=True)],
               c.palette.accent(c.rng))
    return n


def _lightning_bolt(c: Canvas) -> int:
    n = c.n(1, 3)
    for _ in range(n):
        x, y, points = c.u(0.1, 0.9), 0.0, []
        while y < c.horizon:
            points.append(c.pt(x, y))
            x, y = x + c.u(-0.08, 0.08), y + c.u(0.05, 0.12)
        points.append(c.pt(x, y))
        cv2.polylines(c.img, [np.array(points, np.int32)], False, c.colour((15, 0.8, 1.0)),
                      max(2, c.px(0.012)), cv2.LINE_AA)
    return n


def _flame(c: Canvas) -> int:
    n = c.n(3, 8)
    for _ in range(n):
        x, w, hgt, base = c.u(0, 1), c.u(0.04, 0.08), c.u(0.15, 0.35), 1.02
        for s, hsv in ((1.0, (8, 1.0, 0.9)), (0.55, (35, 1.0, 1.0))):  # red outside, yellow inside
            tip = (x + c.u(-0.3, 0.3) * w, base - hgt * s)
            c.poly([(x - w * s, base), (x - 0.3 * w * s, base - 0.6 * hgt * s), tip,
                    (x + 0.4 * w * s, base - 0.5 * hgt * s), (x + w * s, base)], c.colour(hsv))
    return n


def _slime_blob(c: Canvas) -> int:
    n = c.n(3, 7)
    a = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    for _ in range(n):
        x, y, r = c.u(0.05, 0.95), c.u(0.2, 0.95), c.u(0.05, 0.11)
        wobble = 1 + sum(c.u(0, 0.18) * np.sin(k * a + c.u(0, 6.3)) for k in (2, 3, 5))
        c.poly([(x + r * w * np.cos(t), y + 0.8 * r * w * np.sin(t)) for t, w in zip(a, wobble, strict=True)],
               c.palette.accent(c.rng))
        for _ in range(c.n(1, 4)):
            c.circle(x + c.u(-0.5, 0.5) * r, y + c.u(-0.4, 0.4) * r, 0.15 * r, c.colour((50, 0.6, 0.25)))
    return n


def _fly(c: Canvas) -> int:
    n = c.n(4, 13)
    for _ in range(n):
        x, y = c.u(0.05, 0.95), c.u(0.05, 0.95)
        for side in (-1, 1):
            c.ellipse(x + side * 0.008, y - 0.006, 0.007, 0.004, (150, 150, 140), angle=30 * side)
        c.circle(x, y, 0.006, (15, 15, 10))
    return n


def _garbage_bag(c: Canvas) -> int:
    n = c.n(2, 5)
    for _ in range(n):
        (x, y), r = _ground_point(c), c.u(0.05, 0.08)
        bag = c.colour((70, 0.35, 0.2))
        c.ellipse(x, y, r, 0.8 * r, bag)
        c.poly([(x - 0.2 * r, y - 0.75 * r), (x, y - 1.15 * r), (x + 0.2 * r, y - 0.75 * r)], bag)
    return n


def _shadow_figure(c: Canvas) -> int:
    n = c.n(1, 3)
    for _ in range(n):
        x, hgt = c.u(0.15, 0.85), c.u(0.35, 0.6)
        feet, head = c.horizon + 0.05, c.horizon + 0.05 - hgt
        dark = c.colour((230, 0.3, 0.02))
        shoulders = head + 0.25 * hgt
        c.poly([(x - 0.16 * hgt, feet), (x - 0.12 * hgt, shoulders), (x + 0.12 * hgt, shoulders),
                (x + 0.16 * hgt, feet)], dark)
        c.circle(x, head + 0.1 * hgt, 0.1 * hgt, dark)
        for side in (-1, 1):  # glowing eyes
            c.circle(x + side * 0.035 * hgt, head + 0.09 * hgt, 0.012 * hgt, c.colour((55, 0.6, 0.9)))
    return n


def _dead_tree(c: Canvas) -> int:
    n = c.n(1, 4)
    bark = c.colour((220, 0.2, 0.03))

    def branch(x: float, y: float, angle: float, length: float, width: float, depth: int) -> None:
        x1, y1 = x + length * np.cos(angle), y - length * np.sin(angle)
        c.line(x, y, x1, y1, bark, width)
        if depth > 0:
            for turn in (-1, 1):
                branch(x1, y1, angle + turn * c.u(0.3, 0.7), length * 0.65, width * 0.6, depth - 1)

    for _ in range(n):
        branch(c.u(0.05, 0.95), c.horizon + 0.05, np.pi / 2 + c.u(-0.2, 0.2), c.u(0.15, 0.25), 0.03, 3)
    return n


def _rain(c: Canvas) -> int:
    streaks = np.zeros(c.img.shape[:2], np.float32)
    slant = c.u(-0.3, 0.3)
    for _ in range(c.n(120, 260)):
        x, y, length = c.u(-0.1, 1.1), c.u(0, 1), c.u(0.03, 0.07)
        cv2.line(streaks, c.pt(x, y), c.pt(x + slant * length, y + length), 1.0, 1, cv2.LINE_AA)
    c.blend(np.array(c.colour((210, 0.1, 0.8)), np.float32), 0.55 * streaks[..., None])
    return 1


def _cloud(c: Canvas) -> int:
    n = c.n(2, 5)
    for _ in range(n):
        x, y = c.u(0.05, 0.95), c.u(0.05, 0.25)
        grey = c.colour((212, 0.08, c.u(0.5, 0.65)))
        for _ in range(c.n(4, 7)):
            c.ellipse(x + c.u(-0.1, 0.1), y + c.u(-0.03, 0.03), c.u(0.05, 0.09), c.u(0.03, 0.05), grey)
    return n


def _umbrella(c: Canvas) -> int:
    x, y, r = c.u(0.15, 0.85), c.horizon + c.u(-0.2, 0.1), c.u(0.07, 0.1)
    handle = (40, 40, 45)
    c.ellipse(x, y, r, 0.7 * r, c.colour((220, 0.3, 0.22)), 180, 360)
    c.line(x, y, x, y + 1.2 * r, handle)
    c.ellipse(x - 0.12 * r, y + 1.2 * r, 0.12 * r, 0.12 * r, handle, 0, 180, thickness=max(1, c.px(0.008)))
    return 1


def _tombstone(c: Canvas) -> int:
    n = c.n(2, 6)
    for _ in range(n):
        x, y, w, hgt = c.u(0.05, 0.95), c.horizon + c.u(0.02, 0.15), c.u(0.04, 0.06), c.u(0.07, 0.11)
        grey = c.colour((215, 0.05, 0.45))
        c.rect(x - w, y - hgt + w, x + w, y, grey)
        c.ellipse(x, y - hgt + w, w, w, grey, 180, 360)
    return n


OBJECT_DRAWERS = {
    "balloon": _balloon, "confetti": _confetti, "ferris wheel": _ferris_wheel, "mountain": _mountain,
    "star": _star, "moon": _moon, "sun": _sun, "flower": _flower, "tree": _tree, "firework": _firework,
    "spotlight": _spotlight, "jagged shard": _jagged_shard, "lightning bolt": _lightning_bolt,
    "flame": _flame, "slime blob": _slime_blob, "fly": _fly, "garbage bag": _garbage_bag,
    "shadow figure": _shadow_figure, "dead tree": _dead_tree, "rain": _rain, "cloud": _cloud,
    "umbrella": _umbrella, "tombstone": _tombstone,
}
# Drawn first (behind the rest) when present.
BACKDROP = ("mountain", "star", "moon", "sun", "cloud", "ferris wheel", "spotlight", "tree", "dead tree",
            "tombstone")
# Drawn last (over the person): weather and flying things.
FOREGROUND = ("rain", "confetti", "fly")
TEAR = (150, 190, 235)


def draw_person(c: Canvas, style: Style) -> None:
    """The video set's drawn person, head and shoulders, with the label's expression, lit like the scene."""
    rng = c.rng
    app = sample_appearance(rng)
    face, alpha = render_head(app)
    expression = np.array(style.expression) * rng.uniform(0.8, 1.0) + rng.uniform(-0.05, 0.05, N_EXPR)
    draw_expression(face, app, expression)
    if style.facial_expression == "sad":  # tears under both eyes (face.py centres the head at (S/2, S/2 + 4))
        for side in (-1, 1):
            x, y = int(FACE_SIZE / 2 + side * app.eye_dx), int(FACE_SIZE / 2 + 4 + app.eye_y + 9)
            cv2.ellipse(face, (x, y), (2, 4), 0, 0, 360, TEAR, -1, cv2.LINE_AA)
            cv2.ellipse(face, (x + side, y + 9), (2, 3), 0, 0, 360, TEAR, -1, cv2.LINE_AA)
    size = c.px(c.u(0.45, 0.62))
    face = cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    alpha = cv2.resize(alpha, (size, size), interpolation=cv2.INTER_AREA)[..., None]
    face *= np.array(style.person_light, np.float32) * c.u(0.9, 1.1)
    x0 = int(np.clip(c.u(0.05, 0.95) * c.size - size / 2, -0.15 * size, c.size - 0.85 * size))
    y0 = c.size - size + int(c.u(0.0, 0.12) * size)
    xs, ys = slice(max(x0, 0), min(x0 + size, c.size)), slice(max(y0, 0), min(y0 + size, c.size))
    fx, fy = slice(xs.start - x0, xs.stop - x0), slice(ys.start - y0, ys.stop - y0)
    a = alpha[fy, fx]
    mixed = face[fy, fx] * a + c.img[ys, xs].astype(np.float32) * (1 - a)
    c.img[ys, xs] = np.clip(mixed, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- one image


@dataclass(frozen=True)
class ImagePlan:
    label: str
    index: int
    seed: int  # the set's seed
    size: int = IMAGE_SIZE
    person_fraction: float = 0.5

    @property
    def id(self) -> str:
        return f"{self.label}_{self.index:05d}"


def render(plan: ImagePlan) -> tuple[np.ndarray, dict]:
    """The image (uint8 RGB) and what was drawn: scene, objects (with counts) and the person, if any."""
    style = STYLES[plan.label]
    rng = np.random.default_rng([plan.seed, EMOSET_LABELS.index(plan.label), plan.index, 23])
    c = Canvas(plan.size, Palette(style, rng), rng)
    scene = style.scenes[int(rng.integers(len(style.scenes)))]
    draw_layout(c, scene.layout)
    kinds = [style.objects[0]] + [o for o in style.objects[1:] if rng.random() < 0.6]
    kinds += [o for o in scene.objects if o not in kinds]
    order = sorted(kinds, key=lambda k: (k not in BACKDROP, k in FOREGROUND))
    counts: dict[str, int] = {}
    person = rng.random() < plan.person_fraction
    for kind in order:
        if person and kind in FOREGROUND and "person" not in counts:
            draw_person(c, style)
            counts["person"] = 1
        counts[kind] = OBJECT_DRAWERS[kind](c)
    if person and "person" not in counts:
        draw_person(c, style)
        counts["person"] = 1
    for name in LAYOUT_OBJECTS[scene.layout]:
        counts.setdefault(name, 1)
    noise = rng.standard_normal(c.img.shape, dtype=np.float32) * np.float32(rng.uniform(2.0, 5.0))
    img = np.clip(c.img + noise, 0, 255).astype(np.uint8)
    drawn = {"scene": scene.name, "objects": counts}
    if person:
        drawn["facial_expression"] = style.facial_expression
        drawn["human_action"] = style.actions[int(rng.integers(len(style.actions)))]
        drawn["face_words"] = style.face_words
    drawn["colour_words"] = [str(w) for w in rng.permutation(style.colour_words)[:2]]
    return img, drawn


def encode_jpeg(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def make_image(plan: ImagePlan) -> tuple[bytes, dict]:
    """The JPEG bytes and the EmoSet-style annotation, attributes measured on the decoded JPEG."""
    img, drawn = render(plan)
    data = encode_jpeg(img)
    decoded = decode_jpeg(data)
    bright, colourful = brightness(decoded), colorfulness(decoded)
    annotation = {
        "brightness": attribute_level(bright),
        "colorfulness": attribute_level(colourful),
        "scene": drawn["scene"],
        "object": sorted(drawn["objects"]),
    }
    for key in ("facial_expression", "human_action"):
        if key in drawn:
            annotation[key] = drawn[key]
    annotation["caption"] = caption(drawn, bright)
    return data, annotation


_NUMBERS = ("no", "a", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def _counted(noun: str, n: int) -> str:
    plural = OBJECT_NOUNS[noun]
    if plural is None:
        return noun
    if n == 1:
        return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"
    return f"{_NUMBERS[n] if n < len(_NUMBERS) else 'many'} {plural}"


def _light_word(value: float) -> str:
    for limit, word in ((0.15, "very dark"), (0.3, "dark"), (0.45, "dim"), (0.62, "softly lit")):
        if value < limit:
            return word
    return "bright"


def caption(drawn: dict, bright: float) -> str:
    """One sentence naming what was drawn, e.g. "A bright pink and yellow amusement park with three balloons,
    confetti and a ferris wheel, and a person laughing with a wide open smile."."""
    counts = {k: v for k, v in drawn["objects"].items() if k != "person"}
    parts = [_counted(k, v) for k, v in counts.items()]
    things = parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
    light = _light_word(bright)
    text = (f"{'An' if light[0] in 'aeiou' else 'A'} {light} {' and '.join(drawn['colour_words'])} "
            f"{drawn['scene'].replace('_', ' ')} with {things}")
    if "person" in drawn["objects"]:
        text += f", and a person {drawn['human_action']} with {drawn['face_words']}"
    return text + "."


# ---------------------------------------------------------------------------------------------- the set


def image_path(out_dir: Path, plan: ImagePlan) -> Path:
    return out_dir / "image" / plan.label / f"{plan.id}.jpg"


def annotation_path(out_dir: Path, plan: ImagePlan) -> Path:
    return out_dir / "annotation" / plan.label / f"{plan.id}.json"


def write_image(plan: ImagePlan, out_dir: Path) -> str:
    """Render and write one image and its annotation (JPEG first, both atomically); returns the id."""
    data, annotation = make_image(plan)
    with atomic_path(image_path(out_dir, plan)) as tmp:
        tmp.write_bytes(data)
    atomic_write_text(annotation_path(out_dir, plan), json.dumps(annotation, ensure_ascii=False) + "\n")
    return plan.id


def _write_image_star(args: tuple[ImagePlan, Path]) -> str:
    cv2.setNumThreads(1)
    return write_image(*args)


def split_ids(ids_by_label: dict[str, list[str]], seed: int,
              fractions: Sequence[float] = SPLIT_FRACTIONS) -> dict[str, list[str]]:
    """Train/val/test ids, stratified: each label's ids shuffled (seeded) and cut by ``fractions``; from
    three images of a label on, val and test get at least one each. A split lists the labels in the order of
    ``ids_by_label``, each label's ids sorted."""
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for k, label in enumerate(ids_by_label):
        ids = sorted(ids_by_label[label])
        ids = [ids[i] for i in np.random.default_rng([seed, k, 17]).permutation(len(ids))]
        enough = int(len(ids) >= 3)
        n_val = max(int(round(fractions[1] * len(ids))), enough)
        n_test = max(int(round(fractions[2] * len(ids))), enough)
        n_train = len(ids) - n_val - n_test
        out["train"] += sorted(ids[:n_train])
        out["val"] += sorted(ids[n_train:n_train + n_val])
        out["test"] += sorted(ids[n_train + n_val:])
    return out


def info(labels: Sequence[str] = EMOSET_LABELS) -> dict:
    """``info.json`` in EmoSet's form: per attribute a ``label2idx`` and an ``idx2label`` (string keys)."""
    levels = [f"{k / 10:.1f}" for k in range(11)]
    vocab = {"emotion": list(labels), "brightness": levels, "colorfulness": levels, **vocabulary()}
    return {key: {"label2idx": {v: i for i, v in enumerate(values)},
                  "idx2label": {str(i): v for i, v in enumerate(values)}} for key, values in vocab.items()}


def _meta(images_per_label: int, seed: int, size: int, person_fraction: float) -> dict:
    return {"generator": "synthetic_images", "generator_version": GENERATOR_VERSION, "seed": seed,
            "images_per_label": images_per_label, "size": size, "person_fraction": person_fraction,
            "labels": list(EMOSET_LABELS), "splits": list(SPLIT_FRACTIONS), "jpeg_quality": JPEG_QUALITY}


def _plans(images_per_label: int, seed: int, size: int, person_fraction: float) -> list[ImagePlan]:
    return [ImagePlan(label, i, seed, size, float(person_fraction))
            for label in EMOSET_LABELS for i in range(images_per_label)]


def _done(out_dir: Path, plan: ImagePlan) -> bool:
    return image_path(out_dir, plan).is_file() and annotation_path(out_dir, plan).is_file()


def is_complete(out_dir: str | os.PathLike, images_per_label: int) -> bool:
    """Whether ``out_dir`` holds a finished set of ``images_per_label`` (the split files are written last)."""
    out_dir = Path(out_dir)
    if not all((out_dir / f"{s}.json").is_file() for s in ("train", "val", "test", "info")):
        return False
    return all(_done(out_dir, p) for p in _plans(images_per_label, 0, IMAGE_SIZE, 0.0))


def generate_images(out_dir: str | os.PathLike, images_per_label: int = 40, seed: int = 0,
                    size: int = IMAGE_SIZE, person_fraction: float = 0.5, workers: int = 1,
                    progress: bool | None = None) -> Path:
    """Write the synthetic image set under ``out_dir`` (see the module docstring) and return its path.

    Images already written (JPEG and annotation both present) are kept, so an interrupted run resumes; a
    folder made with other arguments is refused. ``progress``: a bar over the images (None: on a terminal).
    """
    if images_per_label < 1 or size < 32 or not 0.0 <= person_fraction <= 1.0 or workers < 1:
        raise UserError(f"images_per_label={images_per_label}, size={size}, "
                        f"person_fraction={person_fraction}, workers={workers}: use images_per_label >= 1, "
                        "size >= 32, person_fraction in [0, 1] and workers >= 1")
    out_dir = Path(out_dir)
    meta = _meta(images_per_label, seed, size, float(person_fraction))
    meta_path = out_dir / "meta.json"
    if meta_path.is_file():
        try:
            old = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            old = None
        if old != meta:
            raise UserError(f"{out_dir} already holds a synthetic image set made with other arguments "
                            "(see its meta.json): pick another out_dir or delete that folder")
    elif out_dir.is_dir() and any(out_dir.iterdir()):
        raise UserError(f"{out_dir} is not empty and holds no synthetic image set (no meta.json): "
                        "pick another out_dir or empty that folder")
    else:
        atomic_write_text(meta_path, json.dumps(meta, indent=1) + "\n")
    plans = _plans(images_per_label, seed, size, person_fraction)
    todo = [p for p in plans if not _done(out_dir, p)]
    disable = None if progress is None else not progress
    with tqdm(total=len(plans), initial=len(plans) - len(todo), desc="synthetic images", unit="image",
              disable=disable) as bar:
        if workers > 1 and len(todo) > 1:
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                for _ in pool.imap_unordered(_write_image_star, [(p, out_dir) for p in todo], chunksize=8):
                    bar.update()
        else:
            for plan in todo:
                write_image(plan, out_dir)
                bar.update()
    splits = split_ids({label: [p.id for p in plans if p.label == label] for label in EMOSET_LABELS}, seed)
    by_id = {p.id: p for p in plans}
    atomic_write_text(out_dir / "info.json", json.dumps(info(), indent=1) + "\n")
    for split, ids in splits.items():
        entries = [[by_id[i].label, i, image_path(Path(), by_id[i]).as_posix(),
                    annotation_path(Path(), by_id[i]).as_posix()] for i in ids]
        atomic_write_text(out_dir / f"{split}.json", json.dumps(entries) + "\n")
    return out_dir


def timed_generate_images(out_dir: str | os.PathLike, images_per_label: int = 40, seed: int = 0,
                          size: int = IMAGE_SIZE, person_fraction: float = 0.5, workers: int = 1,
                          progress: bool | None = None) -> str:
    """Generate and return a one-line summary with counts and time (for the command-line tool)."""
    start = time.perf_counter()
    done_before = is_complete(out_dir, images_per_label)
    path = generate_images(out_dir, images_per_label, seed, size, person_fraction, workers, progress)
    seconds = time.perf_counter() - start
    n = images_per_label * len(EMOSET_LABELS)
    if done_before:
        return f"synthetic image set at {path} is already complete ({n} images, seed {seed}); nothing to do"
    return (f"synthetic image set at {path}: {n} images ({images_per_label} per label x "
            f"{len(EMOSET_LABELS)} labels, {size}x{size}), seed {seed}, {seconds:.1f} s "
            f"({1000 * seconds / n:.0f} ms/image, {workers} worker(s))")
