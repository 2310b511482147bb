"""Inference on raw videos, frame folders and images: decode, encode, score the emotion labels and, if asked,
explain.

A frame folder (a folder of a clip's frames as images, e.g. DFEW's ``Clip/clip_224x224/00001/``) is a clip like
a video: its frames are sampled as a video's are, and without sidecar audio (``00001.wav`` beside the folder)
its HuBERT features are absent in the presence mask. Which folders are frame folders: :func:`expand_inputs`.

An image goes through the same model with EVA on the whole image, the face MAE on its largest face when one
is found, and no motion or audio (absent in the presence mask); its prompt is the image prompt
(:data:`~emotion_llama.model.prompts.IMAGE_TEMPLATE`, EmoVIT's instruction and answer format). A checkpoint
of the InstructBLIP backbone (EmoVIT's model) is given the image itself, as pixel values in its own image
processing, and no encoder runs; it answers still images only (a video or frame folder is a :class:`Failure`).

A :class:`Predictor` loads the checkpoint and its encoders once, then handles any number of videos in
batches. Closed-set scores are the model's label log-likelihoods (each label + EOS scored as the answer,
as the ``score`` evaluation protocol does) turned into probabilities with a softmax over the labels.
A video that cannot be decoded becomes a :class:`Failure`; the others are still processed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch.utils.data import DataLoader

from emotion_llama.datasets.media import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    clip_name,
    frame_files,
    sidecar_audio,
)
from emotion_llama.encoders.extract import VideoFolder
from emotion_llama.errors import UserError
from emotion_llama.fileio import atomic_files, atomic_path
from emotion_llama.inference.core import InferenceCore
from emotion_llama.inference.inputs import ClipInputs
from emotion_llama.labels import MERR_LABELS

log = logging.getLogger(__name__)

TASKS = ("emotion", "reason")
IMAGE_FOLDER_MODES = ("auto", "clip", "images")


@dataclass
class Prediction:
    video: str
    emotion: str
    scores: dict[str, float]  # label -> probability, summing to 1
    reasoning: str | None
    subtitle: str
    peak_frame: int
    face_found: bool
    audio_found: bool
    face_box: list[int]  # x0, y0, x1, y1 in the peak frame; a centred square when no face was found
    media: str = "video"  # video | image
    image: np.ndarray | None = field(default=None, repr=False)  # the peak frame, kept only for cards
    ok: ClassVar[bool] = True  # an answer (a Failure's is False)

    def to_dict(self) -> dict:
        out = {k: v for k, v in vars(self).items() if k != "image"}
        out["scores"] = {k: round(v, 4) for k, v in self.scores.items()}
        return out


@dataclass
class Failure:
    video: str
    reason: str
    ok: ClassVar[bool] = False

    def __str__(self) -> str:
        return f"{self.video}: {self.reason}"


def numbered_frames(folder: Path) -> bool:
    """Whether ``folder`` looks like one clip's frames: it holds images named by numbers alone (``00001.jpg``, as
    DFEW's frame folders and ``ffmpeg -i clip.mp4 %05d.jpg`` name them), and no videos or subfolders."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if any(p.is_dir() or p.suffix.lower() in VIDEO_EXTENSIONS for p in entries):
        return False
    images = frame_files(folder)
    return bool(images) and all(p.stem.isdigit() for p in images)


def is_frame_folder(folder: Path, image_folder: str = "auto") -> bool:
    """Whether a folder named on the command line is one clip (a frame folder) rather than a folder of inputs:
    ``image_folder=clip`` says so of any folder holding images, ``images`` of none, ``auto`` of a folder of
    numbered frames (:func:`numbered_frames`)."""
    if image_folder not in IMAGE_FOLDER_MODES:
        raise UserError(f"image_folder={image_folder}: use one of {', '.join(IMAGE_FOLDER_MODES)}")
    if image_folder == "images":
        return False
    if image_folder == "clip":
        return bool(frame_files(folder))
    return numbered_frames(folder)


def expand_inputs(args: Iterable[str | Path], image_folder: str = "auto") -> list[Path]:
    """Files as given; a frame folder (see :func:`is_frame_folder`) as one clip; other folders replaced by the
    video and image files inside them and their subfolders (frame folders, one clip each), sorted by name."""
    args, out = [Path(a) for a in args], []
    known = VIDEO_EXTENSIONS + IMAGE_EXTENSIONS
    for arg in args:
        if not arg.is_dir():
            out.append(arg)
        elif is_frame_folder(arg, image_folder):
            if image_folder == "auto":
                log.info("%s: %d numbered frames, read as one clip (image_folder=images reads each image alone)",
                         arg, len(frame_files(arg)))
            out.append(arg)
        else:
            entries = sorted(p for p in arg.iterdir() if not p.name.startswith("."))
            sidecars = {sidecar_audio(p) for p in entries if p.is_dir()}
            out += [p for p in entries if p.is_dir() or (p.suffix.lower() in known and p not in sidecars)]
    if not out:
        shown = " ".join(map(str, args))
        raise UserError(f"no videos, images or frame folders in {shown}: give videos ({', '.join(VIDEO_EXTENSIONS)}), "
                        f"images ({', '.join(IMAGE_EXTENSIONS)}), folders of a clip's frames or folders of these")
    return out


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """FFmpeg and decord write their own messages about a broken file straight to file descriptor 2;
    the user gets the reason as one line from the Failure instead."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class Transcriber:
    """Speech to text with a local Whisper folder, for videos that come without a subtitle."""

    def __init__(self, model_dir: str | Path, device: torch.device):
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise UserError(
                f"ASR model not found at {model_dir} (no config.json): set asr_model= to a local Whisper "
                "folder saved with save_pretrained, or give subtitles with subtitle= or subtitles="
            )
        from transformers import pipeline

        self.pipe = pipeline("automatic-speech-recognition", model=str(model_dir), device=device)

    def __call__(self, audio: np.ndarray, sample_rate: int = 16000) -> str:
        return self.pipe({"raw": audio, "sampling_rate": sample_rate})["text"].strip()


class Predictor:
    """A checkpoint and its encoders, loaded once; ``predict`` runs any number of videos through them."""

    def __init__(
        self,
        checkpoint: str | Path | InferenceCore,
        paths: Mapping[str, object] | None = None,
        device: str | torch.device | None = "auto",
        labels: Sequence[str] | None = None,
        batch_size: int = 8,
        max_new_tokens: int = 96,
        num_workers: int = 0,
        asr_model: str | Path | None = None,
        face_detector: str | None = None,
    ):
        """``checkpoint`` is a checkpoint folder (loaded with the user-named ``paths`` merged over its saved
        weight paths) or an already loaded :class:`InferenceCore`. ``labels``: the candidates scored; None: the
        label set the checkpoint was trained on (MERR's for a checkpoint that does not record one).
        ``face_detector``: mtcnn or haar (None: the default, mtcnn); use the one the training features were
        extracted with."""
        if isinstance(checkpoint, InferenceCore):
            self.core = checkpoint
        else:
            self.core = InferenceCore.load(checkpoint, paths, device)
        self.device = self.core.device
        self.inputs = ClipInputs(self.core)
        self.labels = list(labels if labels is not None else self.core.labels or MERR_LABELS)
        self.batch_size, self.max_new_tokens, self.num_workers = batch_size, max_new_tokens, num_workers
        self.asr = Transcriber(asr_model, self.device) if asr_model else None
        self.face_detector = face_detector

    def predict(self, paths: Iterable[str | Path], subtitles: Mapping[str, str] | str | None = None,
                task: str = "emotion", keep_image: bool = False) -> list[Prediction | Failure]:
        return list(self.predict_iter(paths, subtitles, task, keep_image))

    def predict_iter(self, paths: Iterable[str | Path], subtitles: Mapping[str, str] | str | None = None,
                     task: str = "emotion", keep_image: bool = False) -> Iterator[Prediction | Failure]:
        """Results in input order, one batch at a time (the first answers come before the last video is read)."""
        if task not in TASKS:
            raise UserError(f"unknown task {task!r}: use task=emotion or task=reason")
        paths = [Path(p) for p in paths]
        # The frame EVA saw in training, the faces found by the chosen detector.
        folder = VideoFolder(paths, eva_frame=self.core.config.eva_frame, face_detector=self.face_detector)
        loader = DataLoader(folder, batch_size=self.batch_size, num_workers=self.num_workers, collate_fn=list)
        batches = iter(loader)
        for start in range(0, len(paths), self.batch_size):
            with native_stderr_silenced():
                clips = next(batches)
            clips = [self._readable(c) for c in clips]
            yield from self._batch(paths[start:start + len(clips)], clips, subtitles, task, keep_image)

    def _batch(self, paths: list[Path], clips: list[dict], subtitles, task: str,
               keep_image: bool) -> Iterator[Prediction | Failure]:
        good = [i for i, c in enumerate(clips) if "error" not in c]
        results: dict[int, Prediction | Failure] = {
            i: Failure(str(paths[i]), c["error"] if paths[i].exists() else "file or folder not found")
            for i, c in enumerate(clips) if "error" in c
        }
        if good:
            ok = [clips[i] for i in good]
            texts = [self._subtitle(paths[i], clips[i], subtitles) for i in good]
            videos = [str(paths[i]) for i in good]
            for i, pred in zip(good, self._predict_clips(videos, ok, texts, task), strict=True):
                pred.image = clips[i]["frames"][clips[i]["peak"]] if keep_image else None
                results[i] = pred
        yield from (results[i] for i in range(len(clips)))

    def _readable(self, clip: dict) -> dict:
        """``clip``, or its failure when the model cannot take it: a model of still images (InstructBLIP) is
        given no video."""
        if self.core.reads_pixels and "error" not in clip and not clip.get("image"):
            return {"name": clip.get("name", ""), "error": "not a still image: this checkpoint's model "
                    f"(model.backbone={self.core.config.backbone}) answers images only"}
        return clip

    def _subtitle(self, path: Path, clip: dict, subtitles: Mapping[str, str] | str | None) -> str:
        if isinstance(subtitles, str):
            return subtitles
        text = (subtitles or {}).get(clip_name(path))
        if text is None and self.asr is not None and clip["audio_found"] and len(clip["audio"]):
            return self.asr(clip["audio"])
        return text or ""

    def _predict_clips(self, videos: list[str], clips: list[dict], texts: list[str], task: str) -> list[Prediction]:
        """Videos and images of a batch go through the model in one group per media (their prompts differ)."""
        media = ["image" if c.get("image") else "video" for c in clips]
        out: dict[int, Prediction] = {}
        for kind in dict.fromkeys(media):
            rows = [i for i, m in enumerate(media) if m == kind]
            group = [clips[i] for i in rows]
            group_texts = [texts[i] for i in rows]
            feats = self.inputs(group)
            probs = self.core.score(group_texts, feats, self.labels, media=kind).softmax(-1)  # (B, K)
            reasons = (self.core.generate(group_texts, feats, "reason", self.labels, self.max_new_tokens, media=kind)
                       if task == "reason" else [None] * len(group))
            for j, i in enumerate(rows):
                out[i] = self._prediction(videos[i], clips[i], texts[i], probs[j], reasons[j], kind)
        return [out[i] for i in range(len(clips))]

    def _prediction(self, video: str, clip: dict, subtitle: str, probs: torch.Tensor,
                    reasoning: str | None, media: str = "video") -> Prediction:
        scores = dict(zip(self.labels, probs.tolist(), strict=True))
        return Prediction(
            video=video, emotion=max(scores, key=scores.get), scores=scores, reasoning=reasoning,
            subtitle=subtitle, peak_frame=int(clip["peak_frame"]), face_found=bool(clip["face_found"]),
            audio_found=bool(clip["audio_found"]), face_box=[int(round(v)) for v in clip["face_box"]],
            media=media,
        )


def format_prediction(pred: Prediction) -> str:
    """A readable block: the label, every probability (largest first), the cues found, the reasoning."""
    lines = [pred.video, f"  emotion: {pred.emotion} ({pred.scores[pred.emotion]:.1%})"]
    for label, p in sorted(pred.scores.items(), key=lambda kv: -kv[1]):
        lines.append(f"    {label:<9} {p:6.1%} {'#' * round(p * 30)}")
    face = "found" if pred.face_found else "not found (centre crop used)"
    lines.append(f"  face: {face}; audio: {'found' if pred.audio_found else 'none'}; peak frame {pred.peak_frame}")
    lines.append(f"  subtitle: {pred.subtitle!r}")
    if pred.reasoning is not None:
        lines.append(f"  reasoning: {pred.reasoning}")
    return "\n".join(lines)


def card_paths(out: str | Path, videos: Sequence[str]) -> dict[str, Path]:
    """Where each video's card goes: ``out`` itself for one video and a ``.png`` name; otherwise
    ``OUT_<stem>.png`` beside it, or ``<stem>.png`` inside ``out`` when it is a folder (or has no suffix); a frame
    folder's name stands for the stem. Every card lands in the same folder. Inputs that share a stem
    (``a/x.mp4``, ``b/x.mp4``, ``x.mov``) get one card each: ``x.png``, then ``x_2.png``, ... in input order.

    A name with another suffix than ``.png``, or an existing file that is not a PNG image, is refused: a card
    never replaces a file of another kind."""
    out = Path(out)
    if out.suffix and not out.is_dir() and out.suffix.lower() != ".png":
        raise UserError(f"card={out}: cards are PNG images; name a .png file or a folder")
    if out.is_dir() or not out.suffix:
        paths = _unique([f"{clip_name(v)}.png" for v in videos], out)
    elif len(videos) == 1:
        paths = [out]
    else:
        paths = _unique([f"{out.stem}_{clip_name(v)}{out.suffix}" for v in videos], out.parent)
    for path in paths:
        if path.exists() and not (path.is_file() and _signature(path) == PNG_MAGIC):
            raise UserError(f"card={out}: {path} exists and is not a card (a PNG image); it is not replaced: "
                            "choose another card= path")
    return dict(zip(videos, paths, strict=True))


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _signature(path: Path) -> bytes:
    with open(path, "rb") as file:
        return file.read(len(PNG_MAGIC))


def _unique(names: Sequence[str], folder: Path) -> list[Path]:
    """``names`` in ``folder``, a repeated one numbered from its second use (``x.png``, ``x_2.png``, ...)."""
    seen: dict[str, int] = {}
    taken = {n.lower() for n in names}
    out = []
    for name in names:
        stem, suffix = Path(name).stem, Path(name).suffix
        seen[name] = seen.get(name, 0) + 1
        candidate, k = name, seen[name]
        while k > 1 and (candidate := f"{stem}_{k}{suffix}").lower() in taken:
            k += 1
        if k > 1:
            taken.add(candidate.lower())
        out.append(folder / candidate)
    return out


@contextlib.contextmanager
def card_set(cards: Mapping[str, Path]) -> Iterator[Callable[[Prediction], Path]]:
    """Save cards as one set: ``save(pred)`` draws a card into a staging folder, and the cards move into place
    together when the block ends without an error; an interrupted run leaves the cards of the run before."""
    folders = {path.parent for path in cards.values()}
    if not cards:
        yield lambda pred: None
        return
    if len(folders) != 1:
        raise ValueError(f"the cards of one run go into one folder, got {sorted(map(str, folders))}")
    with atomic_files(folders.pop()) as staging:
        yield lambda pred: save_card(pred, staging / cards[pred.video].name)


def save_card(pred: Prediction, path: str | Path) -> Path:
    """The peak frame with its face box and predicted label beside a bar chart of the label probabilities."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    if pred.image is None:
        raise ValueError("the prediction has no peak frame: predict with keep_image=True")
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4), gridspec_kw={"width_ratios": [1, 1.2]})
    left.imshow(pred.image)
    x0, y0, x1, y1 = pred.face_box
    left.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=2, color="lime",
                             ls="-" if pred.face_found else "--"))
    left.set_title(f"{pred.emotion} ({pred.scores[pred.emotion]:.0%})" + ("" if pred.face_found else ", no face"))
    left.axis("off")
    ranked = sorted(pred.scores.items(), key=lambda kv: kv[1])
    colours = ["tab:orange" if label == pred.emotion else "tab:blue" for label, _ in ranked]
    right.barh([label for label, _ in ranked], [p for _, p in ranked], color=colours)
    right.set_xlim(0, 1)
    right.set_xlabel("probability")
    fig.suptitle(Path(pred.video).name)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)
