"""Face detectors side by side: detection rate, false alarms and milliseconds per frame.

    python tools/bench_faces.py [synthetic_dir=DIR] [detectors=[haar,mtcnn,dlib]] ['search=[DIR,...]']
                                [repeats=N] [json=FILE]

The keys are Hydra overrides of conf/bench_faces.yaml (``--help`` lists them), run through the project's one
launcher (:func:`emotion_llama.cli.run`): a bad value is one ``error:`` line naming the key, exit code 2.

Every detector runs through ``datasets.faces.detect_faces`` as feature extraction calls it (frames shrunk to
DETECT_SIDE, faces under MIN_FACE_FRACTION of the shorter side left out); ``dlib`` (the HOG detector of the
optional ``dlib-bin`` package, upsampled once) is measured with the same shrinking for comparison only.
Frames are taken in turn and every detector sees each frame before the next one, so a busy machine slows
all of them alike. A face counts as found when a detection lies within half a face side of the true centre
and is 0.5-2 times its size (the small faces cut from the group photo have the neighbours' faces beside
them, so the largest detection is not always the one asked for).

Sets: ``synthetic`` (frames of the generated clips: ``synthetic_dir``, else 27 clips made in a temporary
folder), and the real photographs that installed packages ship, looked up by their path inside the
``search`` folders and sys.path (nothing is downloaded): scikit-image's astronaut and cameraman (a near
profile), matplotlib's Grace Hopper, insightface's group photo t1 (six faces, one three-quarter view) and
Tom Hanks aligned crop, and scikit-image's 100 LFW faces (25 x 25 px). From the 10 real faces: close-ups,
the close-ups rotated by +-25 degrees, small faces (22 % of a 240 px frame) and a simulated yaw (the close-up
turned ~50 degrees as a plane: a real head turn hides more of the face). Faceless sets count false alarms
(any detection): 100 LFW non-face patches, 23 photographs without a person, 27 synthetic backgrounds.
``pip install --no-deps --target DIR scikit-image insightface`` gives the files that matplotlib lacks
(only their image files are read; neither package is imported).
"""

from __future__ import annotations

import datetime
import glob
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from omegaconf import DictConfig

from emotion_llama.cli import Call, UsageError, run
from emotion_llama.datasets import faces
from emotion_llama.datasets.media import load_clip
from emotion_llama.datasets.synthetic import timed_generate
from emotion_llama.datasets.synthetic.face import SIZE, render_background, sample_appearance
from emotion_llama.errors import UserError
from emotion_llama.fileio import atomic_write_text

CLOSEUP, SMALL_FRACTION, SMALL_SIDE, CLOSEUP_SIDE, ROTATION = 2.5, 0.22, 240, 360, 25
# name, file inside an installed package, hand-checked face box x0, y0, x1, y1 (brows to chin)
REAL_FACES = [
    ("astronaut", "skimage/data/astronaut.png", (181, 62, 268, 172)),
    ("cameraman (near profile)", "skimage/data/camera.png", (199, 119, 254, 192)),
    ("grace hopper", "matplotlib/mpl-data/sample_data/grace_hopper.jpg", (174, 120, 356, 340)),
    ("t1 rachel", "insightface/data/images/t1.jpg", (55, 263, 165, 397)),
    ("t1 monica", "insightface/data/images/t1.jpg", (268, 150, 375, 272)),
    ("t1 ross", "insightface/data/images/t1.jpg", (465, 262, 570, 405)),
    ("t1 chandler", "insightface/data/images/t1.jpg", (743, 346, 844, 474)),
    ("t1 joey (three-quarter)", "insightface/data/images/t1.jpg", (908, 62, 1014, 202)),
    ("t1 phoebe", "insightface/data/images/t1.jpg", (1135, 276, 1228, 395)),
    ("tom hanks (aligned crop)", "insightface/data/images/Tom_Hanks_54745.png", (4, 6, 108, 112)),
]
LFW = "skimage/data/lfw_subset.npy"  # 100 faces then 100 non-faces, 25 x 25 grey in [0, 1]
NO_FACE = [f"skimage/data/{n}" for n in (
    "brick.png", "cell.png", "chelsea.png", "clock_motion.png", "coffee.png", "coins.png", "color.png", "grass.png",
    "gravel.png", "horse.png", "hubble_deep_field.jpg", "ihc.png", "logo.png", "moon.png", "motorcycle_left.png",
    "page.png", "retina.jpg", "rocket.jpg", "text.png",
)] + [f"insightface/data/images/mask_{c}.jpg" for c in ("black", "blue", "green", "white")]


@dataclass
class Sample:
    image: np.ndarray  # RGB uint8
    truth: tuple[float, float, float] | None  # centre x, y and side; None on a faceless image


@dataclass
class Tally:
    n: int = 0
    hits: int = 0
    seconds: float = 0.0
    scales: list[float] = field(default_factory=list)


def find(relative: str, roots: list[str]) -> Path | None:
    for root in roots:
        path = Path(root) / relative
        if path.is_file():
            return path
    return None


def read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def window(image: np.ndarray, box: tuple[float, ...], side: float, out: int) -> tuple[np.ndarray, tuple]:
    """A square of ``side`` px holding the face, moved inside the image where it fits (grey beyond), resized
    to ``out`` px -> (image, truth centre and side in the new image)."""
    height, width = image.shape[:2]
    cx, cy, face = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, max(box[2] - box[0], box[3] - box[1])
    x0 = cx - side / 2 if side > width else min(max(cx - side / 2, 0), width - side)
    y0 = cy - side / 2 if side > height else min(max(cy - side / 2, 0), height - side)
    scale = out / side
    m = np.float32([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]])
    grey = tuple(int(v) for v in image.reshape(-1, 3).mean(axis=0))
    resized = cv2.warpAffine(image, m, (out, out), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=grey)
    return resized, ((cx - x0) * scale, (cy - y0) * scale, face * scale)


def rotate(sample: Sample, degrees: float) -> Sample:
    side = sample.image.shape[0]
    m = cv2.getRotationMatrix2D((side / 2, side / 2), degrees, 1.0)
    image = cv2.warpAffine(sample.image, m, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    cx, cy, face = sample.truth
    x, y = m @ np.array([cx, cy, 1.0])
    return Sample(image, (float(x), float(y), face))


def yaw(sample: Sample) -> Sample:
    """The close-up as a plane turned ~50 degrees about the vertical axis through the face."""
    side = sample.image.shape[0]
    cx, cy, face = sample.truth
    src = np.float32([[0, 0], [side, 0], [side, side], [0, side]])
    near, far = 0.5 * side - 0.32 * side, 0.5 * side + 0.32 * side  # the plane's edges after the turn
    dst = np.float32([[near, 0], [far, 0.12 * side], [far, 0.88 * side], [near, side]])
    m = cv2.getPerspectiveTransform(src, dst)
    image = cv2.warpPerspective(sample.image, m, (side, side), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REFLECT_101)
    x, y, w = m @ np.array([cx, cy, 1.0])
    return Sample(image, (float(x / w), float(y / w), face * 0.64))


def real_sets(roots: list[str]) -> dict[str, list[Sample]]:
    closeup, small = [], []
    for name, relative, box in REAL_FACES:
        path = find(relative, roots)
        if path is None:
            print(f"skipped {name}: {relative} not found (see the module docstring)", file=sys.stderr)
            continue
        image = read_rgb(path)
        face = max(box[2] - box[0], box[3] - box[1])
        if "aligned" in name:  # the face fills the image: used as it is, only resized
            s = CLOSEUP_SIDE / image.shape[0]
            image = cv2.resize(image, (CLOSEUP_SIDE, CLOSEUP_SIDE), interpolation=cv2.INTER_LINEAR)
            closeup.append(Sample(image, ((box[0] + box[2]) / 2 * s, (box[1] + box[3]) / 2 * s, face * s)))
            continue
        closeup.append(Sample(*window(image, box, CLOSEUP * face, CLOSEUP_SIDE)))
        small.append(Sample(*window(image, box, face / SMALL_FRACTION, SMALL_SIDE)))
    sets = {
        "real close-up": closeup,
        f"real close-up rotated +-{ROTATION} deg": [rotate(s, d) for s in closeup for d in (ROTATION, -ROTATION)],
        "real small (face 22 % of a 240 px frame)": small,
        "real close-up, simulated ~50 deg yaw": [yaw(s) for s in closeup],
    }
    lfw = find(LFW, roots)
    if lfw is not None:
        patches = (np.load(lfw) * 255).round().astype(np.uint8)
        sets["LFW faces, 25 px, upscaled"] = [lfw_sample(p, True) for p in patches[:100]]
        sets["no face: LFW non-face patches"] = [lfw_sample(p, False) for p in patches[100:]]
    else:
        print(f"skipped the LFW sets: {LFW} not found", file=sys.stderr)
    scenes = [read_rgb(p) for p in (find(r, roots) for r in NO_FACE) if p is not None]
    sets["no face: photographs"] = [Sample(image, None) for image in scenes]
    return sets


def lfw_sample(patch: np.ndarray, face: bool) -> Sample:
    """A 25 px patch with a border of its own edge pixels (half a patch each side), upscaled to 120 px."""
    padded = cv2.copyMakeBorder(patch, 12, 13, 12, 13, cv2.BORDER_REPLICATE)
    image = cv2.cvtColor(cv2.resize(padded, (120, 120), interpolation=cv2.INTER_CUBIC), cv2.COLOR_GRAY2RGB)
    return Sample(image, (60.0, 60.0, 60.0) if face else None)


def synthetic_sets(video_dir: Path) -> dict[str, list[Sample]]:
    frames = [f for p in sorted(video_dir.glob("*.mp4")) for f in load_clip(p, num_frames=16).frames]
    # The drawn head is centred (+-10 px of motion); its face is about 0.6 of the frame.
    centre = (SIZE / 2, SIZE / 2 + 4, 0.6 * SIZE)
    rng = np.random.default_rng(0)
    backgrounds = [render_background(sample_appearance(rng)) for _ in range(27)]
    return {
        "synthetic clips (16 frames each)": [Sample(f, centre) for f in frames],
        "no face: synthetic backgrounds": [Sample(b, None) for b in backgrounds],
    }


def dlib_detector() -> Callable[[np.ndarray], np.ndarray] | None:
    try:
        import dlib
    except ImportError:
        print("skipped dlib: pip install dlib-bin to compare it", file=sys.stderr)
        return None
    hog = dlib.get_frontal_face_detector()

    def detect(frame: np.ndarray) -> np.ndarray:
        scale = min(1.0, faces.DETECT_SIDE / min(frame.shape[:2]))
        small = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else frame
        side = max(1, int(min(small.shape[:2]) * faces.MIN_FACE_FRACTION))
        rects = hog(np.ascontiguousarray(small), 1)  # upsampled once: its window is 80 px
        boxes = np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects], np.float32).reshape(-1, 4)
        return boxes[np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= side] / scale

    return detect


def detectors(names: list[str]) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    out = {}
    for name in names:
        if name == "dlib":
            fn = dlib_detector()
            if fn is not None:
                out[name] = fn
        else:
            out[name] = lambda frame, name=name: faces.detect_faces(frame, detector=name)
    return out


def correct(boxes: np.ndarray, truth: tuple[float, float, float]) -> tuple[bool, float]:
    """Whether a box matches the true face -> (found, its side / the true side)."""
    cx, cy, side = truth
    sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / side
    near = np.hypot((boxes[:, 0] + boxes[:, 2]) / 2 - cx, (boxes[:, 1] + boxes[:, 3]) / 2 - cy) <= 0.5 * side
    match = near & (sides >= 0.5) & (sides <= 2.0)
    return (True, float(sides[match][0])) if match.any() else (False, float("nan"))


def run_set(samples: list[Sample], fns: dict[str, Callable], repeats: int) -> dict[str, Tally]:
    tallies = {name: Tally() for name in fns}
    for sample in samples:
        for name, fn in fns.items():  # interleaved: every detector sees this frame before the next one
            start = time.perf_counter()
            for _ in range(repeats):
                boxes = fn(sample.image)
            tally = tallies[name]
            tally.seconds += (time.perf_counter() - start) / repeats
            tally.n += 1
            if sample.truth is None:
                tally.hits += bool(len(boxes))
            else:
                hit, ratio = correct(boxes, sample.truth)
                tally.hits += hit
                if hit:
                    tally.scales.append(ratio)
    return tallies


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"{cpu}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"


def rows(results: dict[str, dict[str, Tally]], names: list[str]) -> Iterator[str]:
    yield "| set | frames | " + " | ".join(f"{n} found | {n} ms/frame" for n in names) + " |"
    yield "|---|---|" + "---|---|" * len(names)
    for set_name, tallies in results.items():
        n = next(iter(tallies.values())).n
        label = "false alarms" if set_name.startswith("no face") else "found"
        cells = []
        for name in names:
            t = tallies[name]
            cells += [f"{t.hits}/{t.n} ({100 * t.hits / max(t.n, 1):.0f} %)", f"{1000 * t.seconds / max(t.n, 1):.1f}"]
        yield f"| {set_name} ({label}) | {n} | " + " | ".join(cells) + " |"


def bench_faces(cfg: DictConfig, call: Call) -> int:
    """The benchmark of ``conf/bench_faces.yaml`` as composed and checked (settings) by the launcher."""
    if not cfg.detectors:
        raise UsageError("detectors=[]: name at least one, e.g. detectors=[haar,mtcnn]")
    video_dir = Path(cfg.synthetic_dir) / "videos" if cfg.synthetic_dir else None
    if video_dir is not None and not any(video_dir.glob("*.mp4")):
        raise UserError(f"synthetic_dir={cfg.synthetic_dir} holds no videos/*.mp4: make a set with "
                        f"python tools/make_synthetic.py out_dir={cfg.synthetic_dir}, or leave synthetic_dir unset")
    site = glob.glob(sys.prefix + "/lib/python3*/site-packages")
    roots = [*map(str, cfg.search or [])] + [p for p in sys.path if p] + site
    fns = detectors(list(cfg.detectors))
    for fn in fns.values():  # load weights and warm up before anything is timed
        fn(np.zeros((160, 160, 3), np.uint8))
    with tempfile.TemporaryDirectory() as tmp:
        if video_dir is None:
            timed_generate(tmp, 3, 0, 1)
            video_dir = Path(tmp) / "videos"
        sets = {**synthetic_sets(video_dir), **real_sets(roots)}
        started = time.perf_counter()
        results = {name: run_set(samples, fns, int(cfg.repeats)) for name, samples in sets.items() if samples}
    names = list(fns)
    lines = [json.dumps({"set": s, "detector": d, "frames": t.n, "hits": t.hits, "ms_per_frame": 1000 * t.seconds / t.n,
                         "median_box_scale": statistics.median(t.scales) if t.scales else None})
             for s, tallies in results.items() for d, t in tallies.items()]
    if cfg.json:
        atomic_write_text(cfg.json, "\n".join(lines) + "\n")
    print(f"{datetime.date.today()} | {machine()} | {time.perf_counter() - started:.0f} s")
    print("\n".join(rows(results, names)))
    scales = {d: [round(statistics.median(t.scales), 2) if t.scales else None for t in (r[d] for r in results.values())]
              for d in names}
    print("median side of the found box / true face side, per set:", json.dumps(scales))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python tools/bench_faces.py [key=value ...]``; see ``--help`` (conf/bench_faces.yaml)."""
    return run("bench_faces", bench_faces, argv, literal=("synthetic_dir", "json"))


if __name__ == "__main__":
    sys.exit(main())
