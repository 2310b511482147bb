"""Feature extraction over a folder of clips: decode in DataLoader workers, encode in batches, write the
official per-clip ``.npy`` layout plus a ``manifest.jsonl``; safe to interrupt, rerun and resume.

The clips of a folder are its video files, its images and its frame folders (subfolders of images, one clip
each, named by the subfolder: DFEW's ``Clip/clip_224x224/<id>/``; see :mod:`emotion_llama.datasets.media`).

Per clip: 16 frames spread over the video (or the frame folder's images) are decoded once. The largest face
is tracked over them and cropped (face MAE, mean over the crops; faces found by ``face_detector``, mtcnn or
haar), the 16 frames feed VideoMAE, and the audio (the video's track, else a sidecar ``.wav``) feeds HuBERT;
a video without audio gets a zero HuBERT vector, while a frame folder without a sidecar has no HuBERT
features at all (absent in the manifest's ``present``, as an image's motion and audio are). EVA sees one whole
frame, chosen by ``model.eva_frame``: ``peak``, the frame whose face deviates most from the clip's first and
last faces (the expression's apex), or ``first``, the video's first decoded frame (frame 0), which is what
the original release trains and evaluates on. The manifest's ``peak_frame`` is the apex either way.

A clip counts as done only when its manifest line says ``ok`` with the same fingerprint (encoders, face
detector, sampling, noise), it came from the same kind of input (video, frame folder or image) and all its
files exist; every file is written atomically, so an interrupted run leaves no half files. One
extraction at a time writes to an output folder (a lock file in it; a second one is refused), and the
decoding workers end with the process that started them. A sidecar ``NAME.wav`` beside ``NAME.mp4`` (or beside
the frame folder ``NAME``) is that clip's audio, not a clip.
"""

from __future__ import annotations

import ctypes
import fcntl
import functools
import hashlib
import json
import logging
import os
import signal
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from emotion_llama.datasets import faces
from emotion_llama.datasets.faces import crop_faces, select_peak_frame, track_face
from emotion_llama.datasets.features import FEATURE_DIRS, MODALITIES
from emotion_llama.datasets.media import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    clip_name,
    load_clip,
    read_frames,
    read_image,
    sidecar_audio,
)
from emotion_llama.datasets.noise import Corruption
from emotion_llama.encoders.build import build_encoders
from emotion_llama.errors import MediaError, UserError
from emotion_llama.fileio import atomic_save_npy
from emotion_llama.model.config import EVA_FRAMES, ModelConfig

log = logging.getLogger(__name__)

EXTRACT_VERSION = 1
PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h)
NUM_FRAMES = 16
FACE_CROP = 224  # crops are stored at this size and resized by the MAE preprocessing


@dataclass
class ManifestEntry:
    name: str
    status: str  # "ok" | "failed"
    reason: str | None = None
    face_found: bool | None = None
    audio_found: bool | None = None
    peak_frame: int | None = None
    n_frames: int | None = None
    fingerprint: str | None = None
    # The modalities written for a clip that lacks some (an image: eva, and mae when a face was found);
    # None: all four (every video).
    present: list[str] | None = None
    face_detector: str | None = None  # the detector behind the face crops (also part of the fingerprint)
    source: str | None = None  # "video" | "frames" (a frame folder) | "image"; None in manifests made before
    # The input's content stamp when it was extracted (see input_stamp): a replaced input is redone.
    stamp: str | None = None


@dataclass
class ExtractCounts:
    ok: int = 0
    failed: int = 0
    skipped: int = 0

    def __str__(self) -> str:
        return f"ok {self.ok} / failed {self.failed} / skipped {self.skipped}"


def fingerprint(
    cfg: ModelConfig, num_frames: int = NUM_FRAMES, seed: int = 0, corruption: Corruption | None = None,
    face_detector: str | None = None,
) -> str:
    """Identifies the encoders' weights, the face detector (None: the default), the sampling and any
    corruption; clips made with another fingerprint are redone."""
    key = {
        "corruption": corruption.key() if corruption and corruption.active else None,
        "version": EXTRACT_VERSION, "size": cfg.encoder_size, "num_frames": num_frames,
        # The modification time tells retrained weights at the same path apart.
        "paths": {k: [str(v), _mtime(v)] for k, v in sorted(cfg.encoder_paths.items())},
        "seed": seed if cfg.encoder_size == "tiny" and not cfg.encoder_paths else None,
    }
    if cfg.eva_frame != "peak":  # only then, so that caches made before the option existed stay valid
        key["eva_frame"] = cfg.eva_frame

    detector = faces.check_detector(face_detector or faces.DEFAULT_FACE_DETECTOR)
    if detector != "haar":  # the detector of the face crops; Haar before it was a choice
        key["face_detector"] = detector
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _mtime(path: str | None) -> int | None:
    return os.stat(path).st_mtime_ns if path and os.path.exists(path) else None


class Manifest:
    """Append-only JSON lines, one per processed clip; the last line for a name wins."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def load(self) -> dict[str, ManifestEntry]:
        entries: dict[str, ManifestEntry] = {}
        if not self.path.is_file():
            return entries
        known = {f.name for f in fields(ManifestEntry)}
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by an interrupted run; that clip is simply redone
            if not isinstance(data, dict) or not isinstance(data.get("name"), str) or "status" not in data:
                continue  # not a line of ours: its clip (if any) is redone
            entries[data["name"]] = ManifestEntry(**{k: v for k, v in data.items() if k in known})
        return entries

    def append(self, entry: ManifestEntry) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(asdict(entry)) + "\n"
        # One write of one line with O_APPEND: ranks writing concurrently never interleave within a line.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def input_stamp(path: str | Path) -> str:
    """A stamp of a clip's content as the file system sees it: the size and modification time (ns) of the file,
    or of every file of a frame folder, and of its sidecar audio. Any replaced, edited or added file changes it."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    audio = sidecar_audio(path)
    files += [audio] if audio.is_file() else []
    digest = hashlib.sha1()
    for file in files:
        stat = file.stat()
        digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def input_kind(path: str | Path) -> str:
    """``frames`` for a frame folder, ``image`` for an image file, else ``video``."""
    path = Path(path)
    if path.is_dir():
        return "frames"
    return "image" if path.suffix.lower() in IMAGE_EXTENSIONS else "video"


def decode_clip(
    path: str | Path, num_frames: int = NUM_FRAMES, corruption: Corruption | None = None, eva_frame: str = "peak",
    face_detector: str | None = None,
) -> dict:
    """Everything the encoders need from one video or frame folder, as uint8 frames and float audio (CPU,
    picklable).

    ``eva_image`` is the whole frame EVA encodes: the peak frame, or with ``eva_frame="first"`` the video's
    frame 0 (decoded on its own when the sampled frames do not include it; corrupted like the others).
    Faces are found by ``face_detector`` (None: the default). A frame folder without sidecar audio lists
    ``hubert`` under ``absent``.
    """
    if eva_frame not in EVA_FRAMES:
        raise ValueError(f"eva_frame must be one of {', '.join(EVA_FRAMES)}, got {eva_frame!r}")
    path = Path(path)
    try:
        clip = load_clip(path, num_frames=num_frames)
        first = None
        if eva_frame == "first" and (len(clip.frame_indices) == 0 or clip.frame_indices[0] != 0):
            first = read_frames(path, np.array([0]))  # (1, H, W, 3)
    except MediaError as err:
        return {"name": clip_name(path), "error": err.reason}
    if corruption is not None and corruption.active:
        frames = clip.frames if first is None else np.concatenate([first, clip.frames])
        frames, clip.audio = corruption.apply(clip.name, frames, clip.audio)  # frame by frame
        first, clip.frames = (None, frames) if first is None else (frames[:1], frames[1:])
    track = track_face(clip.frames, detector=face_detector)
    faces = crop_faces(clip.frames, track, FACE_CROP)  # (N, S, S, 3)
    peak = select_peak_frame(faces)
    if eva_frame == "peak":
        eva_image = clip.frames[peak]
    else:
        eva_image = clip.frames[0] if first is None else first[0]
    return {
        "name": clip.name,
        "frames": clip.frames,  # (N, H, W, 3)
        "faces": faces,
        "peak": peak,
        "eva_image": eva_image,  # (H, W, 3), the whole frame
        "peak_frame": int(clip.frame_indices[peak]),
        "face_box": track.boxes[peak].tolist(),
        "face_found": track.found,
        "audio": clip.audio,
        "audio_found": clip.audio_found,
        "n_frames": clip.n_frames,
        "source": input_kind(path),
        # A frame folder without sidecar audio has none to encode: absent, not a zero vector.
        "absent": ("hubert",) if path.is_dir() and not clip.audio_found else (),
    }


def decode_image(path: str | Path, corruption: Corruption | None = None, face_detector: str | None = None) -> dict:
    """What the encoders need from one still image: EVA sees it whole, the face MAE the largest face when
    one is found; there is no motion and no audio (their features are absent, not zero)."""
    path = Path(path)
    try:
        image = read_image(path)
    except MediaError as err:
        return {"name": path.stem, "error": err.reason}
    frames = image[None]  # (1, H, W, 3)
    if corruption is not None and corruption.active:
        frames, _ = corruption.apply(path.stem, frames, np.zeros(0, dtype=np.float32))
    track = track_face(frames, detector=face_detector)
    return {
        "name": path.stem,
        "image": True,
        "frames": frames,
        "faces": crop_faces(frames, track, FACE_CROP),
        "peak": 0,
        "eva_image": frames[0],
        "peak_frame": 0,
        "face_box": track.boxes[0].tolist(),
        "face_found": track.found,
        "audio": np.zeros(0, dtype=np.float32),
        "audio_found": False,
        "n_frames": 1,
        "source": "image",
    }


def decode_input(path: str | Path, num_frames: int = NUM_FRAMES, corruption: Corruption | None = None,
                 eva_frame: str = "peak", face_detector: str | None = None) -> dict:
    """:func:`decode_image` for an image file, else :func:`decode_clip` (a video or a frame folder)."""
    if input_kind(path) == "image":
        return decode_image(path, corruption, face_detector)
    return decode_clip(path, num_frames, corruption, eva_frame, face_detector)


def clip_modalities(clip: dict) -> tuple[str, ...]:
    """The modalities a decoded input has: all four for a video; EVA (and MAE with a face) for an image; a
    frame folder all but those it lacks (HuBERT without sidecar audio)."""
    if not clip.get("image"):
        return tuple(m for m in MODALITIES if m not in clip.get("absent", ()))
    return ("eva", "mae") if clip["face_found"] else ("eva",)


class VideoFolder(Dataset):
    """Decoded clips (videos, frame folders, images) for a DataLoader."""

    def __init__(self, paths: Sequence[Path], num_frames: int = NUM_FRAMES, corruption: Corruption | None = None,
                 eva_frame: str = "peak", face_detector: str | None = None):
        self.paths, self.num_frames, self.corruption = list(paths), num_frames, corruption
        self.eva_frame, self.face_detector = eva_frame, face_detector

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        return decode_input(self.paths[index], self.num_frames, self.corruption, self.eva_frame, self.face_detector)


class FeatureEncoders(nn.Module):
    """The four frozen encoders, batched over clips: decoded clips -> per-clip feature arrays."""

    def __init__(self, encoders: Mapping[str, nn.Module]):
        super().__init__()
        self.encoders = nn.ModuleDict(dict(encoders))

    @torch.no_grad()
    def forward(self, clips: Sequence[dict]) -> list[dict[str, np.ndarray]]:
        """Per-clip arrays of the modalities each clip has (:func:`clip_modalities`); every encoder runs once
        per batch on the clips that need it."""
        enc = self.encoders
        device = next(self.parameters()).device
        wanted = [clip_modalities(c) for c in clips]
        arrays: dict[str, dict[int, np.ndarray]] = {}

        def run(modality: str, encode) -> None:
            rows = [i for i, w in enumerate(wanted) if modality in w]
            if rows:
                out = encode([clips[i] for i in rows]).float().cpu().numpy()
                arrays[modality] = dict(zip(rows, out, strict=True))

        run("mae", lambda cs: self._faces(cs, device))
        run("videomae", lambda cs: enc["videomae"](
            torch.stack([enc["videomae"].preprocess(c["frames"]) for c in cs]).to(device)).pooled)
        run("eva", lambda cs: enc["eva"](  # (B, 1+P, D) after ln_vision
            torch.cat([enc["eva"].preprocess(_eva_image(c)[None]) for c in cs]).to(device)).tokens)
        run("hubert", lambda cs: self._audio(cs, device))
        return [
            {m: arrays[m][i].astype(np.float16 if m == "eva" else np.float32) for m in wanted[i]}
            for i in range(len(clips))
        ]

    def _faces(self, clips: Sequence[dict], device: torch.device) -> torch.Tensor:
        """Pooled face MAE features; an image's single crop is padded (and masked) to the videos' count."""
        mae = self.encoders["mae"]
        crops = [mae.preprocess(c["faces"]) for c in clips]  # (N_i, 3, S, S)
        width = max(len(c) for c in crops)
        if all(len(c) == width for c in crops):
            return mae(torch.stack(crops).to(device)).pooled
        batch = torch.zeros(len(crops), width, *crops[0].shape[1:])
        mask = torch.zeros(len(crops), width, dtype=torch.bool)
        for row, c in enumerate(crops):
            batch[row, : len(c)], mask[row, : len(c)] = c, True
        return mae(batch.to(device), mask.to(device)).pooled

    def _audio(self, clips: Sequence[dict], device: torch.device) -> torch.Tensor:
        hubert = self.encoders["hubert"]
        pooled = torch.zeros(len(clips), hubert.num_features, device=device)
        # Too short a track (under HuBERT's 400-sample receptive field) counts as no audio.
        have = [i for i, c in enumerate(clips) if c["audio_found"] and len(c["audio"]) >= 400]
        if have:
            waves = [hubert.preprocess(clips[i]["audio"]) for i in have]
            width = max(len(w) for w in waves)
            batch = torch.zeros(len(waves), width)
            mask = torch.zeros(len(waves), width, dtype=torch.long)
            for row, w in enumerate(waves):
                batch[row, : len(w)], mask[row, : len(w)] = w, 1
            pooled[have] = hubert(batch.to(device), mask.to(device)).pooled.float()
        for i, c in enumerate(clips):
            c["audio_found"] = i in have
        return pooled


def _eva_image(clip: dict) -> np.ndarray:
    """The whole frame EVA encodes (decode_clip chose it by eva_frame; older clip dicts: the peak frame)."""
    image = clip.get("eva_image")
    return clip["frames"][clip["peak"]] if image is None else image


class ExtractionModule(L.LightningModule):
    """Lightning's predict loop gives batching, bf16 autocast and one shard of clips per GPU rank."""

    def __init__(self, encoders: FeatureEncoders, output_dir: Path, dirs: Mapping[str, str], fp: str,
                 face_detector: str | None = None, stamps: Mapping[str, str] | None = None):
        super().__init__()
        self.encoders = encoders
        self.output_dir, self.dirs, self.fp = output_dir, dict(dirs), fp
        self.face_detector = face_detector
        self.stamps = dict(stamps or {})  # clip name -> input_stamp, recorded in the manifest
        self.manifest = Manifest(output_dir / "manifest.jsonl")

    def predict_step(self, batch: list[dict], batch_idx: int) -> list[ManifestEntry]:
        good = [c for c in batch if "error" not in c]
        entries = [ManifestEntry(c["name"], "failed", reason=c["error"], fingerprint=self.fp)
                   for c in batch if "error" in c]
        features = self.encoders(good) if good else []
        for clip, feats in zip(good, features, strict=True):
            bad = [m for m, array in feats.items() if not np.isfinite(array).all()]
            if bad:  # never cached: every later reader would refuse the file
                entries.append(ManifestEntry(clip["name"], "failed", fingerprint=self.fp, reason=(
                    f"the {', '.join(bad)} encoder gave NaN or infinite values (a corrupt or blank input?)")))
                continue
            for modality, array in feats.items():
                atomic_save_npy(self.output_dir / self.dirs[modality] / f"{clip['name']}.npy", array)
            present = clip_modalities(clip)
            entries.append(ManifestEntry(
                clip["name"], "ok", face_found=bool(clip["face_found"]), audio_found=bool(clip["audio_found"]),
                peak_frame=clip["peak_frame"], n_frames=clip["n_frames"], fingerprint=self.fp,
                present=None if present == MODALITIES else list(present), face_detector=self.face_detector,
                source=clip.get("source"), stamp=self.stamps.get(clip["name"]),
            ))
        for entry in entries:
            self.manifest.append(entry)
        return entries


def list_inputs(input_dir: Path, skip: Iterable[Path] = ()) -> list[Path]:
    """The clips of ``input_dir``: its files and its subfolders (frame folders), less hidden ones, the folders
    in ``skip`` (an output folder inside it) and the sidecar audio of a clip beside it (``NAME.wav`` next to
    ``NAME.mp4`` or to the frame folder ``NAME`` is that clip's audio, read with it, not a clip of its own)."""
    if not input_dir.is_dir():
        raise UserError(f"{input_dir} is not a folder: set input_dir to the folder holding your videos")
    skipped = {Path(p).resolve() for p in skip}
    entries = sorted(p for p in input_dir.iterdir() if not p.name.startswith(".") and (p.is_file() or p.is_dir()))
    entries = [p for p in entries if not (p.is_dir() and p.resolve() in skipped)]
    sidecars = {sidecar_audio(p) for p in entries if p.is_dir() or p.suffix.lower() in VIDEO_EXTENSIONS}
    return [p for p in entries if p not in sidecars]


LOCK_FILE = ".extract.lock"


@contextmanager
def output_lock(output_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``output_dir`` (``flock`` on its lock file) for one extraction; a second
    extraction into the same folder is refused instead of interleaving its writes. The ranks a multi-GPU
    run starts share their launcher's lock (they write disjoint shards)."""
    if os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0":
        yield
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / LOCK_FILE
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another extraction is writing to {output_dir} (it holds {path}): wait for it to "
                            "finish or choose another output_dir") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _locked_output(fn):
    """Run ``fn(input_dir, output_dir, ...)`` holding :func:`output_lock` on ``output_dir``."""
    @functools.wraps(fn)
    def locked(input_dir, output_dir, *args, **kwargs):
        with output_lock(Path(output_dir)):
            return fn(input_dir, output_dir, *args, **kwargs)
    return locked


def end_with_parent(worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: the decoding worker is killed when the process that started it dies
    (Linux ``PR_SET_PDEATHSIG``), instead of decoding on for tens of seconds after a killed extraction."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        log.warning("decoding worker %d: cannot ask to end with its parent (errno %d)", worker_id, ctypes.get_errno())
    elif os.getppid() == 1:  # the parent died before the request took effect
        os._exit(1)


def _is_done(entry: ManifestEntry | None, fp: str, output_dir: Path, dirs: Mapping[str, str],
             kind: str | None = None, stamp: str | None = None) -> bool:
    if entry is None or entry.status != "ok" or entry.fingerprint != fp:
        return False
    if stamp is not None and entry.stamp != stamp:
        return False  # the input was replaced or edited since (or extracted before stamps were kept)
    if kind is not None and entry.source is not None and entry.source != kind:
        return False  # e.g. made from a video, now the clip is a frame folder
    present = MODALITIES if entry.present is None else entry.present
    return all((output_dir / dirs[m] / f"{entry.name}.npy").is_file() for m in present)


@_locked_output
def extract_folder(
    input_dir: str | Path,
    output_dir: str | Path,
    cfg: ModelConfig,
    feature_dirs: Mapping[str, str] | None = None,
    batch_size: int = 4,
    num_workers: int = 0,
    accelerator: str = "auto",
    devices: int | str = 1,
    progress: bool = True,
    encoders: Mapping[str, nn.Module] | None = None,
    limit: int | None = None,
    names: Iterable[str] | None = None,
    corruption: Corruption | None = None,
    face_detector: str | None = None,
) -> ExtractCounts:
    """Extract features for every clip in ``input_dir`` (videos, images, frame folders; or only those named
    ``names``) not done yet, or whose input changed since (see :func:`input_stamp`); faces are found by
    ``face_detector`` (None: the default, mtcnn). Inputs that share a clip name (``a.mp4`` and ``a.mov``) would
    share one set of feature files: both fail, naming each other."""
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    dirs = {**FEATURE_DIRS, **(feature_dirs or {})}

    face_detector = faces.check_detector(face_detector or faces.DEFAULT_FACE_DETECTOR)
    fp = fingerprint(cfg, corruption=corruption, face_detector=face_detector)
    manifest = Manifest(output_dir / "manifest.jsonl")
    done = manifest.load()
    counts = ExtractCounts()
    todo = []
    inputs = list_inputs(input_dir, skip=[output_dir])
    if names is not None:
        wanted = set(names)
        inputs = [p for p in inputs if clip_name(p) in wanted]
    inputs = inputs[:limit]
    by_name: dict[str, list[Path]] = {}
    for path in inputs:
        by_name.setdefault(clip_name(path), []).append(path)
    stamps = {}
    for path in inputs:
        name = clip_name(path)
        if len(by_name[name]) > 1:
            shared = " and ".join(p.name for p in by_name[name])
            reason = f"{shared} share the clip name {name} (one set of feature files): rename all but one"
            manifest.append(ManifestEntry(name, "failed", reason=reason, fingerprint=fp))
            counts.failed += 1
            continue
        stamps[name] = input_stamp(path)
        if _is_done(done.get(name), fp, output_dir, dirs, input_kind(path), stamps[name]):
            counts.skipped += 1
        elif not path.is_dir() and path.suffix.lower() not in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS:
            known = ", ".join(VIDEO_EXTENSIONS + IMAGE_EXTENSIONS)
            reason = f"unsupported extension {path.suffix or '(none)'} (expected {known}, or a folder of frames)"
            manifest.append(ManifestEntry(name, "failed", reason=reason, fingerprint=fp))
            counts.failed += 1
        else:
            todo.append(path)
    if todo:
        encoders = encoders or build_encoders(cfg, random_tiny_ok=True)
        module = ExtractionModule(FeatureEncoders(encoders), output_dir, dirs, fp, face_detector, stamps)
        folder = VideoFolder(todo, corruption=corruption, eva_frame=cfg.eva_frame, face_detector=face_detector)
        loader = DataLoader(folder, batch_size=batch_size, num_workers=num_workers, collate_fn=list,
                            worker_init_fn=end_with_parent if num_workers else None)
        trainer = L.Trainer(
            accelerator=accelerator, devices=devices, logger=False, enable_checkpointing=False,
            enable_model_summary=False, enable_progress_bar=progress,
            precision="bf16-mixed" if _on_gpu(accelerator) else "32-true",
        )
        results = trainer.predict(module, loader, return_predictions=True) or []
        for entry in (e for batch in results for e in batch):
            counts.ok += entry.status == "ok"
            counts.failed += entry.status == "failed"
            if entry.status == "failed":
                log.warning("%s: %s", entry.name, entry.reason)
    return counts


def _on_gpu(accelerator: str) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def iter_failures(output_dir: str | Path) -> Iterable[ManifestEntry]:
    return (e for e in Manifest(Path(output_dir) / "manifest.jsonl").load().values() if e.status == "failed")
