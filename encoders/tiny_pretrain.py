"""Perception pre-training of the tiny encoders on the synthetic set, standing in for real pre-training.

The real encoders arrive pretrained (MAE on faces, HuBERT on speech): their features already describe
expressions and prosody, and Emotion-LLaMA only learns to fuse them. Tiny random encoders describe
almost nothing (a linear probe on their features finds the face or voice cue group of a synthetic clip
about two times in three), so the tiny preset gets a short pre-training of its own:

- face MAE and EVA learn to detect the clip's facial action cues (raised brows, knitted brows,
  smile, ...: a multi-label task, like facial action-unit detection),
- HuBERT learns to detect its prosody cues (high or low pitch, fast or slow syllables, falling or
  rising contour, ...),

from the cue lists the generator stores in ``MERR_coarse_grained.json`` (``cues``). The encoders never
see an emotion label, and every cue is shared by three emotions, so telling emotions apart still needs
the fusion model. The weights are saved in the real formats (Hugging Face folders and an EVA state dict
with ``visual_encoder.`` keys) and loaded through the real loaders.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from emotion_llama.datasets.formats import read_merr_json, read_merr_txt
from emotion_llama.datasets.synthetic import FACE_PHRASES, VOICE_PHRASES
from emotion_llama.encoders import ENCODERS
from emotion_llama.encoders.extract import decode_clip

log = logging.getLogger(__name__)

FACE_CUES = tuple(FACE_PHRASES)
VOICE_CUES = tuple(VOICE_PHRASES)
FILES = {"eva": "eva.pth", "mae": "mae", "videomae": "videomae", "hubert": "hubert"}
# Pre-training sees the last 1.5 s of audio (pitch level, rate and contour, the rising end included) and
# four face crops around the peak: a third of the cost of whole clips, for the same cues.
AUDIO_SECONDS = 1.5
FACE_CROPS = 4


def tiny_encoder_paths(root: str | Path) -> dict[str, str]:
    return {name: str(Path(root) / f) for name, f in FILES.items()}


def _targets(cues: dict) -> tuple[np.ndarray, np.ndarray]:
    face = np.array([c in cues["face_cues"] for c in FACE_CUES], dtype=np.float32)
    voice = np.array([c in cues["voice_cues"] for c in VOICE_CUES], dtype=np.float32)
    return face, voice


def _inputs(encoders: dict, clip: dict) -> dict[str, torch.Tensor]:
    audio = clip["audio"][-int(AUDIO_SECONDS * 16000):]
    wave = torch.zeros(int(AUDIO_SECONDS * 16000))
    if len(audio) >= 400:
        wave[: len(audio)] = encoders["hubert"].preprocess(audio)
    start = min(max(clip["peak"] - FACE_CROPS // 2, 0), len(clip["faces"]) - FACE_CROPS)
    return {
        "mae": encoders["mae"].preprocess(clip["faces"][start:start + FACE_CROPS]),
        "eva": encoders["eva"].preprocess(clip["frames"][clip["peak"]][None])[0],
        "hubert": wave,
        "hubert_mask": (torch.arange(len(wave)) < len(audio)).long(),
    }


def load_split(root: Path, split: str, encoders: dict, workers: int) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Decoded, preprocessed inputs of one split, held in memory (the synthetic clips are small)."""
    names = [s.name for s in read_merr_txt(root / "splits" / f"{split}.txt")]
    cues = read_merr_json(root / "MERR_coarse_grained.json")
    paths = [root / "videos" / f"{n}.mp4" for n in names]
    with mp.get_context("spawn").Pool(workers) if workers > 1 else _Serial() as pool:
        clips = pool.map(decode_clip, paths)
    bad = [c["name"] for c in clips if "error" in c]
    if bad:
        raise RuntimeError(f"cannot decode synthetic clips {bad[:3]} under {root}")
    inputs = [_inputs(encoders, c) for c in clips]
    stacked = {k: torch.stack([x[k] for x in inputs]) for k in inputs[0]}
    face, voice = zip(*(_targets(cues[n]["cues"]) for n in names), strict=True)
    return stacked, torch.from_numpy(np.stack(face)), torch.from_numpy(np.stack(voice))


class _Serial:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def map(self, fn, items):
        return [fn(x) for x in items]


class CueModel(nn.Module):
    """The four tiny encoders with a cue-detection head each."""

    def __init__(self, encoders: dict):
        super().__init__()
        self.encoders = nn.ModuleDict({n: e for n, e in encoders.items() if n != "videomae"})
        dims = {n: e.num_features for n, e in encoders.items()}
        self.heads = nn.ModuleDict({
            "mae": nn.Linear(dims["mae"], len(FACE_CUES)),
            # CLS and mean patch token: the fusion model reads EVA's patch tokens too.
            "eva": nn.Linear(2 * dims["eva"], len(FACE_CUES)),
            "hubert": nn.Linear(dims["hubert"], len(VOICE_CUES)),
        })

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        eva = self.encoders["eva"](batch["eva"]).tokens  # (B, 1+P, D)
        return {
            "mae": self.heads["mae"](self.encoders["mae"](batch["mae"]).pooled),
            "eva": self.heads["eva"](torch.cat([eva[:, 0], eva[:, 1:].mean(1)], -1)),
            "hubert": self.heads["hubert"](self.encoders["hubert"](batch["hubert"], batch["hubert_mask"]).pooled),
        }


def _loss_and_accuracy(logits: dict, face: torch.Tensor, voice: torch.Tensor) -> tuple[torch.Tensor, dict]:
    loss, acc = 0.0, {}
    for name, out in logits.items():
        target = voice if name == "hubert" else face
        loss = loss + nn.functional.binary_cross_entropy_with_logits(out, target)
        # A clip counts as right only if every one of its cues is detected correctly.
        acc[name] = float(((out > 0).float() == target).all(-1).float().mean())
    return loss, acc


def _index(batch: dict, idx: torch.Tensor) -> dict:
    return {k: v[idx] for k, v in batch.items()}


def pretrain_tiny_encoders(
    synthetic_dir: str | Path, out_dir: str | Path, epochs: int = 10, batch_size: int = 8, lr: float = 2e-3,
    seed: int = 0, workers: int = 2,
) -> dict:
    """Train the tiny encoders on cue detection and save them under ``out_dir`` (no-op when present)."""
    root, out_dir = Path(synthetic_dir), Path(out_dir)
    if (out_dir / "meta.json").is_file():
        return json.loads((out_dir / "meta.json").read_text())
    torch.manual_seed(seed)
    encoders = {n: cls.tiny(seed=seed, frozen=False) for n, cls in ENCODERS.items()}
    # VideoMAE keeps its random weights: at 16 frames it would double the cost, and the face MAE and
    # EVA already learn the expression cues.
    # As in HuBERT fine-tuning, the convolutional front end stays fixed: most of the cost, little to gain.
    encoders["hubert"].model.feature_extractor._freeze_parameters()
    train, face, voice = load_split(root, "train", encoders, workers)
    val, vface, vvoice = load_split(root, "val", encoders, workers)
    model = CueModel(encoders)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    n = len(face)
    for epoch in range(epochs):
        model.train()
        for idx in torch.randperm(n, generator=g).split(batch_size):
            loss, _ = _loss_and_accuracy(model(_index(train, idx)), face[idx], voice[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        log.info("tiny encoder pre-training epoch %d/%d: loss %.4f", epoch + 1, epochs, float(loss))
    model.eval()
    with torch.no_grad():
        _, val_acc = _loss_and_accuracy(model(val), vface, vvoice)
    meta = {"epochs": epochs, "seed": seed, "train_clips": n, "val_cue_accuracy": val_acc,
            "face_cues": list(FACE_CUES), "voice_cues": list(VOICE_CUES)}
    _save(encoders, out_dir, meta)
    return meta


def _save(encoders: dict, out_dir: Path, meta: dict) -> None:
    """Real formats, written to a temporary folder and moved into place whole."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for name in ("mae", "videomae", "hubert"):
            encoders[name].model.save_pretrained(tmp / FILES[name])
        eva = encoders["eva"]
        state = {f"visual_encoder.{k}": v for k, v in eva.model.state_dict().items()}
        state |= {f"ln_vision.{k}": v for k, v in eva.ln_vision.state_dict().items()}
        torch.save(state, tmp / FILES["eva"])
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def cue_names(modality: str) -> Sequence[str]:
    return VOICE_CUES if modality == "hubert" else FACE_CUES
