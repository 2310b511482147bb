"""One clip: everything drawn from its plan's seed, written as an mp4, and its annotation record."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from emotion_llama.datasets.synthetic.design import (
    FACE_AUS,
    FACE_PHRASES,
    VALENCE,
    VOICE_PHRASES,
    ClipPlan,
    label_groups,
)
from emotion_llama.datasets.synthetic.face import (
    Appearance,
    expression_curve,
    peak_expression,
    render_video,
    sample_appearance,
)
from emotion_llama.datasets.synthetic.text import coarse_caption, make_sentence, reason_caption
from emotion_llama.datasets.synthetic.voice import SAMPLE_RATE, sample_voice, synthesize_audio
from emotion_llama.datasets.video_io import write_mp4


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
