"""The drawn face: expression cues, a speaker's appearance, head motion and the rendered frames."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SIZE = 160

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


def render_video(app: Appearance, expression: np.ndarray, fps: float, rng: np.random.Generator) -> np.ndarray:
    """(N, SIZE, SIZE, 3) frames of ``expression`` (N, N_EXPR) with random head motion and lighting."""
    background, head = render_background(app), render_head(app)
    pose = head_motion(len(expression), fps, app.light, rng)
    return np.stack([render_frame(app, e, p, background, head) for e, p in zip(expression, pose, strict=True)])
