"""Inference on raw videos and images: decode, encode, score the emotion labels and, if asked, explain.

An image goes through the same model with EVA on the whole image, the face MAE on its largest face when one
is found, and no motion or audio (absent in the presence mask); its prompt is the image prompt
(:data:`~emotion_llama.model.prompts.IMAGE_TEMPLATE`, EmoVIT's instruction and answer format).

A :class:`Predictor` loads the checkpoint and its encoders once, then handles any number of videos in
batches. Closed-set scores are the model's label log-likelihoods (each label + EOS scored as the answer,
as the ``score`` evaluation protocol does) turned into probabilities with a softmax over the labels.
A video that cannot be decoded becomes a :class:`Failure`; the others are still processed.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from emotion_llama.datasets.features import stack_features
from emotion_llama.datasets.media import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from emotion_llama.encoders.build import build_encoders
from emotion_llama.encoders.extract import FeatureEncoders, VideoFolder
from emotion_llama.errors import UserError
from emotion_llama.inference.core import InferenceCore
from emotion_llama.labels import MERR_LABELS

TASKS = ("emotion", "reason")


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

    def to_dict(self) -> dict:
        out = {k: v for k, v in vars(self).items() if k != "image"}
        out["scores"] = {k: round(v, 4) for k, v in self.scores.items()}
        return out


@dataclass
class Failure:
    video: str
    reason: str

    def __str__(self) -> str:
        return f"{self.video}: {self.reason}"


def expand_inputs(args: Iterable[str | Path]) -> list[Path]:
    """Files as given; folders replaced by the video and image files inside them, sorted by name."""
    args, out = [Path(a) for a in args], []
    known = VIDEO_EXTENSIONS + IMAGE_EXTENSIONS
    for arg in args:
        if arg.is_dir():
            out += sorted(p for p in arg.iterdir() if p.is_file() and p.suffix.lower() in known)
        else:
            out.append(arg)
    if not out:
        shown = " ".join(map(str, args))
        raise UserError(f"no video or image files in {shown}: give videos ({', '.join(VIDEO_EXTENSIONS)}), "
                        f"images ({', '.join(IMAGE_EXTENSIONS)}) or folders of them")
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
        labels: Sequence[str] = MERR_LABELS,
        batch_size: int = 8,
        max_new_tokens: int = 96,
        num_workers: int = 0,
        asr_model: str | Path | None = None,
    ):
        """``checkpoint`` is a checkpoint folder (loaded with the user-named ``paths`` merged over its saved
        weight paths) or an already loaded :class:`InferenceCore`."""
        if isinstance(checkpoint, InferenceCore):
            self.core = checkpoint
        else:
            self.core = InferenceCore.load(checkpoint, paths, device)
        self.device = self.core.device
        # The encoders feature extraction used for training: seeded tiny ones or those at the saved paths.
        self.encoders = FeatureEncoders(build_encoders(self.core.config)).to(self.device).eval()
        self.labels = list(labels)
        self.batch_size, self.max_new_tokens, self.num_workers = batch_size, max_new_tokens, num_workers
        self.asr = Transcriber(asr_model, self.device) if asr_model else None

    def predict(self, paths: Iterable[str | Path], subtitles: Mapping[str, str] | str | None = None,
                task: str = "emotion", keep_image: bool = False) -> list[Prediction | Failure]:
        return list(self.predict_iter(paths, subtitles, task, keep_image))

    def predict_iter(self, paths: Iterable[str | Path], subtitles: Mapping[str, str] | str | None = None,
                     task: str = "emotion", keep_image: bool = False) -> Iterator[Prediction | Failure]:
        """Results in input order, one batch at a time (the first answers come before the last video is read)."""
        if task not in TASKS:
            raise UserError(f"unknown task {task!r}: use task=emotion or task=reason")
        paths = [Path(p) for p in paths]
        folder = VideoFolder(paths, eva_frame=self.core.config.eva_frame)  # the frame EVA saw in training
        loader = DataLoader(folder, batch_size=self.batch_size, num_workers=self.num_workers, collate_fn=list)
        batches = iter(loader)
        for start in range(0, len(paths), self.batch_size):
            with native_stderr_silenced():
                clips = next(batches)
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

    def _subtitle(self, path: Path, clip: dict, subtitles: Mapping[str, str] | str | None) -> str:
        if isinstance(subtitles, str):
            return subtitles
        text = (subtitles or {}).get(path.stem)
        if text is None and self.asr is not None and clip["audio_found"] and len(clip["audio"]):
            return self.asr(clip["audio"])
        return text or ""

    def _features(self, clips: list[dict]) -> dict[str, torch.Tensor]:
        with self.core.autocast():
            per_clip = self.encoders(clips)  # also sets audio_found=False for tracks too short to use
        return stack_features([{m: torch.from_numpy(a.astype(np.float32)) for m, a in f.items()} for f in per_clip])

    def _predict_clips(self, videos: list[str], clips: list[dict], texts: list[str], task: str) -> list[Prediction]:
        """Videos and images of a batch go through the model in one group per media (their prompts differ)."""
        media = ["image" if c.get("image") else "video" for c in clips]
        out: dict[int, Prediction] = {}
        for kind in dict.fromkeys(media):
            rows = [i for i, m in enumerate(media) if m == kind]
            group = [clips[i] for i in rows]
            group_texts = [texts[i] for i in rows]
            feats = self._features(group)
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
    ``OUT_<stem>.png`` beside it, or ``<stem>.png`` inside ``out`` when it is a folder (or has no suffix)."""
    out = Path(out)
    if out.is_dir() or not out.suffix:
        return {v: out / f"{Path(v).stem}.png" for v in videos}
    if len(videos) == 1:
        return {videos[0]: out}
    return {v: out.with_name(f"{out.stem}_{Path(v).stem}{out.suffix}") for v in videos}


def save_card(pred: Prediction, path: str | Path) -> Path:
    """The peak frame with its face box and predicted label beside a bar chart of the label probabilities."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from emotion_llama.fileio import atomic_path

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
