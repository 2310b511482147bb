"""Perception pre-training of the tiny encoders on the synthetic set, standing in for real pre-training.

The real encoders arrive pretrained (MAE on faces, HuBERT on speech): their features already describe
expressions and prosody, and Emotion-LLaMA only learns to fuse them. Tiny random encoders describe
almost nothing (a linear probe on their features finds the face or voice cue group of a synthetic clip
about two times in three), so the tiny preset gets a short pre-training of its own:

- face MAE and EVA learn to detect the clip's facial action cues (raised brows, knitted brows,
  smile, ...: a multi-label task, like facial action-unit detection),
- HuBERT learns to detect its prosody cues (high or low pitch, fast or slow syllables, falling or
  rising contour, ...),

from the cue lists the generator stores in ``MERR_coarse_grained.json`` (``cues``); the cue keys, in order,
come from the set's ``cue_phrases.json`` (the generator's vocabulary, read as data). The encoders never
see an emotion label, and every cue is shared by three emotions, so telling emotions apart still needs
the fusion model. The weights are saved in the real formats (Hugging Face folders and an EVA state dict
with ``visual_encoder.`` keys) and loaded through the real loaders.

Choices, each measured with a linear probe on the extracted features (face group from pooled MAE, voice
group from pooled HuBERT, weak clips a 4th class):

- Every encoder trains on exactly the vector extraction gives the fusion model: the face MAE on the mean
  over all 16 crops, HuBERT on the whole clip pooled over its frames. The detected peak frame is a
  few frames off the true apex (8 % of the clip, median), so crops "around the peak" would teach less
  than the mean over all crops.
- Next to the multi-label cue head, a 4-way cue-group head (the group's defining cue, or the "weak" cue)
  gives a direct, linearly separable target; both come from the cue lists only.
- HuBERT's random conv front end, frozen, keeps almost nothing (a probe on its pooled output: 0.3-0.4),
  so it trains; only its first layer, a fixed random filter bank, stays frozen and is computed once.
- The encoders train in eval mode: HuBERT's attention dropout alone took over half of a step on a CPU.
- VideoMAE keeps its random weights: the face MAE and EVA already learn the expression cues.
- EVA learns least: one whole frame per clip, the face a small part of it, 252 training images.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from emotion_llama.datasets.cues import read_cue_phrases
from emotion_llama.datasets.faces import DEFAULT_FACE_DETECTOR, check_detector
from emotion_llama.datasets.merr import read_merr_json, read_merr_txt
from emotion_llama.encoders import ENCODERS
from emotion_llama.encoders.extract import decode_clip
from emotion_llama.errors import UserError
from emotion_llama.fileio import atomic_dir
from emotion_llama.runtime import TINY_ENCODER_FILES

log = logging.getLogger(__name__)

# The defining cue of each group; every other cue of the list says the same group. Index 3 is the "weak"
# cue (a still face, a flat voice), so a group head has four classes and never needs the emotion label.
FACE_GROUP_CUES = ("brows_raised", "smile", "brows_knitted", "face_still")
VOICE_GROUP_CUES = ("loud", "soft", "medium_level", "voice_flat")


def _group(cues: list[str], defining: tuple[str, ...]) -> int:
    found = {i for i, c in enumerate(defining) if c in cues}
    if len(found) != 1:
        raise ValueError(f"cue list {cues} names {len(found)} of the groups {defining}")
    return found.pop()


def cue_keys(root: str | Path) -> dict[str, tuple[str, ...]]:
    """The face and voice cue keys of the synthetic set under ``root``, from its ``cue_phrases.json``."""
    phrases = read_cue_phrases(root)
    keys = {kind: tuple(phrases[kind]) for kind in ("face", "voice")}
    for kind, defining in (("face", FACE_GROUP_CUES), ("voice", VOICE_GROUP_CUES)):
        unknown = [c for c in defining if c not in keys[kind]]
        if unknown:
            raise UserError(f"{root}: its cue vocabulary has no {kind} cue {', '.join(unknown)}; "
                            "regenerate the set with tools/make_synthetic.py")
    return keys


def _targets(cues: dict, keys: dict[str, tuple[str, ...]]) -> dict[str, np.ndarray | int]:
    return {
        "face": np.array([c in cues["face_cues"] for c in keys["face"]], dtype=np.float32),
        "voice": np.array([c in cues["voice_cues"] for c in keys["voice"]], dtype=np.float32),
        "face_group": _group(cues["face_cues"], FACE_GROUP_CUES),
        "voice_group": _group(cues["voice_cues"], VOICE_GROUP_CUES),
    }


def _inputs(encoders: dict, clip: dict) -> dict[str, torch.Tensor]:
    return {
        "mae": encoders["mae"].preprocess(clip["faces"]),  # all crops, as extraction averages them
        "eva": encoders["eva"].preprocess(clip["frames"][clip["peak"]][None])[0],
        "hubert": encoders["hubert"].preprocess(clip["audio"]),  # the whole clip, as extraction reads it
    }


def load_splits(root: Path, splits: Sequence[str], encoders: dict, workers: int,
                keys: dict[str, tuple[str, ...]], face_detector: str | None = None) -> list[tuple[dict, dict]]:
    """Decoded, preprocessed inputs and cue targets (over the cue ``keys``) of each split, held in memory; the face
    crops are those of ``face_detector`` (None: the default), as extraction will cut them.

    One process pool for all splits: each spawned worker pays the import of torch and OpenCV once.
    """
    cues = read_merr_json(root / "MERR_coarse_grained.json")
    names = {s: [x.name for x in read_merr_txt(root / "splits" / f"{s}.txt")] for s in splits}
    paths = [root / "videos" / f"{n}.mp4" for s in splits for n in names[s]]
    with mp.get_context("spawn").Pool(workers) if workers > 1 else _Serial() as pool:
        clips = pool.map(partial(decode_clip, face_detector=face_detector), paths)
    bad = [c["name"] for c in clips if "error" in c]
    if bad:
        raise RuntimeError(f"cannot decode synthetic clips {bad[:3]} under {root}")
    out, i = [], 0
    for s in splits:
        part, i = clips[i:i + len(names[s])], i + len(names[s])
        inputs = [_inputs(encoders, c) for c in part]
        waves = [x.pop("hubert") for x in inputs]
        batch = {k: torch.stack([x[k] for x in inputs]) for k in inputs[0]}
        batch["hubert"], batch["hubert_mask"] = _pad(waves)
        targets = [_targets(cues[n]["cues"], keys) for n in names[s]]
        out.append((batch, {k: torch.as_tensor(np.stack([t[k] for t in targets])) for k in targets[0]}))
    return out


def _pad(waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    wave = torch.zeros(len(waves), max(len(w) for w in waves))
    mask = torch.zeros(wave.shape, dtype=torch.long)
    for row, w in enumerate(waves):
        wave[row, : len(w)], mask[row, : len(w)] = w, 1
    return wave, mask


class _Serial:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def map(self, fn, items):
        return [fn(x) for x in items]


class CueModel(nn.Module):
    """Face MAE, EVA and HuBERT with two heads each: multi-label cues and the 4-way cue group."""

    def __init__(self, encoders: dict, n_face_cues: int, n_voice_cues: int):
        super().__init__()
        self.encoders = nn.ModuleDict({n: encoders[n] for n in ("mae", "eva", "hubert")})
        dims = {n: e.num_features for n, e in self.encoders.items()}
        # EVA: CLS and mean patch token, since the fusion model reads EVA's patch tokens too.
        dims["eva"] *= 2
        self.cue_heads = nn.ModuleDict({
            n: nn.Linear(d, n_voice_cues if n == "hubert" else n_face_cues) for n, d in dims.items()
        })
        self.group_heads = nn.ModuleDict({n: nn.Linear(d, 4) for n, d in dims.items()})

    def features(self, batch: dict[str, torch.Tensor], hubert_front: torch.Tensor) -> dict[str, torch.Tensor]:
        faces = batch["mae"]  # (B, N, 3, S, S)
        eva = self.encoders["eva"](batch["eva"]).tokens  # (B, 1+P, D)
        return {
            "mae": self.encoders["mae"](faces).pooled,
            "eva": torch.cat([eva[:, 0], eva[:, 1:].mean(1)], -1),
            "hubert": _hubert_pooled(self.encoders["hubert"], hubert_front, batch["hubert_mask"]),
        }

    def forward(self, batch: dict, hubert_front: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {n: (self.cue_heads[n](h), self.group_heads[n](h)) for n, h in self.features(batch, hubert_front).items()}


def _hubert_front(hubert: nn.Module, wave: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """The fixed first conv layer's output (B, C, T0), computed once for all epochs."""
    layer = hubert.model.feature_extractor.conv_layers[0]
    with torch.no_grad():
        return torch.cat([layer(wave[i:i + batch_size, None]) for i in range(0, len(wave), batch_size)])


def _hubert_pooled(hubert: nn.Module, front: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """HubertModel.forward from the second conv layer on, pooled over valid frames like HubertEncoder."""
    model = hubert.model
    x = front
    for layer in model.feature_extractor.conv_layers[1:]:
        x = layer(x)
    features = x.transpose(1, 2)  # (B, T, C)
    frames = model._get_feature_vector_attention_mask(features.shape[1], mask)  # (B, T)
    hidden = model.feature_projection(features)
    tokens = model.encoder(hidden, attention_mask=frames)[0]
    weights = frames.unsqueeze(-1).to(tokens.dtype)
    return (tokens * weights).sum(1) / weights.sum(1).clamp(min=1)


def _loss_and_accuracy(logits: dict, targets: dict) -> tuple[torch.Tensor, dict]:
    loss, acc = 0.0, {}
    for name, (cues, groups) in logits.items():
        kind = "voice" if name == "hubert" else "face"
        loss = loss + nn.functional.binary_cross_entropy_with_logits(cues, targets[kind])
        loss = loss + nn.functional.cross_entropy(groups, targets[f"{kind}_group"])
        acc[f"{name}_group"] = float((groups.argmax(-1) == targets[f"{kind}_group"]).float().mean())
        acc[f"{name}_cue"] = float(((cues > 0).float() == targets[kind]).float().mean())
    return loss, acc


def _index(batch: dict, idx: torch.Tensor) -> dict:
    return {k: v[idx] for k, v in batch.items()}


def _trim(batch: dict, front: torch.Tensor, kernel: int, stride: int) -> tuple[dict, torch.Tensor]:
    """Cut a batch's audio padding to its longest clip."""
    width = int(batch["hubert_mask"].sum(1).max())
    batch = {**batch, "hubert": batch["hubert"][:, :width], "hubert_mask": batch["hubert_mask"][:, :width]}
    return batch, front[..., : (width - kernel) // stride + 1]


def pretrain_tiny_encoders(
    synthetic_dir: str | Path, out_dir: str | Path, epochs: int = 24, batch_size: int = 16, lr: float = 2e-3,
    seed: int = 0, workers: int = 2, face_detector: str | None = None,
) -> dict:
    """Train the tiny encoders on cue detection, on the face crops of ``face_detector`` (None: the default), and
    save them under ``out_dir``; a no-op when they are there, refused when they learnt another detector's crops."""
    root, out_dir = Path(synthetic_dir), Path(out_dir)
    face_detector = check_detector(face_detector or DEFAULT_FACE_DETECTOR)
    if (out_dir / "meta.json").is_file():
        meta = json.loads((out_dir / "meta.json").read_text())
        learnt = meta.get("face_detector")
        if learnt != face_detector:
            what = f"face_detector={learnt} crops" if learnt else "the crops of an unrecorded face detector"
            raise UserError(f"{out_dir}: these tiny encoders were pre-trained on {what}, not face_detector="
                            f"{face_detector}: remove the folder to pre-train them again, or set paths.output_dir "
                            "to another folder")
        return meta
    start = time.time()
    keys = cue_keys(root)
    torch.manual_seed(seed)
    encoders = {n: cls.tiny(seed=seed, frozen=False) for n, cls in ENCODERS.items()}
    hubert = encoders["hubert"]
    # The first conv layer stays as drawn, a fixed random filter bank (its output is computed once); the rest
    # of HuBERT's front end trains, since a frozen random one keeps almost no pitch or rhythm.
    hubert.model.feature_extractor.conv_layers[0].requires_grad_(False)
    kernel, stride = hubert.model.config.conv_kernel[0], hubert.model.config.conv_stride[0]
    (train, targets), (val, vtargets) = load_splits(root, ("train", "val"), encoders, workers, keys, face_detector)
    front, vfront = _hubert_front(hubert, train["hubert"]), _hubert_front(hubert, val["hubert"])
    decoded = time.time() - start
    model = CueModel(encoders, len(keys["face"]), len(keys["voice"]))
    # Eval mode while training: no dropout, LayerDrop or SpecAugment; the random masks cost more than
    # the tiny models on a CPU, and the cue heads see 252 clips, not enough to need them.
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    n = len(targets["face"])
    steps = epochs * math.ceil(n / batch_size)
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    g = torch.Generator().manual_seed(seed)
    bar = tqdm(range(epochs), desc="tiny encoder pre-training", unit="epoch", disable=None)
    for _ in bar:
        total = 0.0
        for idx in torch.randperm(n, generator=g).split(batch_size):
            batch, f = _trim(_index(train, idx), front[idx], kernel, stride)
            loss, _ = _loss_and_accuracy(model(batch, f), _index(targets, idx))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        bar.set_postfix(loss=f"{total / n:.4f}")
    with torch.no_grad():
        _, val_acc = _loss_and_accuracy(model(val, vfront), vtargets)
    meta = {"epochs": epochs, "seed": seed, "train_clips": n, "val_accuracy": val_acc,
            "decode_seconds": round(decoded, 1), "seconds": round(time.time() - start, 1),
            "face_cues": list(keys["face"]), "voice_cues": list(keys["voice"]), "face_detector": face_detector}
    _save(encoders, out_dir, meta)
    accuracy = ", ".join(f"{k} {float(v):.2f}" for k, v in val_acc.items())
    log.info("tiny encoders pre-trained in %.0f s (final loss %.4f; val accuracy %s) -> %s",
             meta["seconds"], total / n, accuracy, out_dir)
    return meta


def _save(encoders: dict, out_dir: Path, meta: dict) -> None:
    """Real formats, written to a temporary folder and moved into place whole."""
    with atomic_dir(out_dir) as tmp:
        for name in ("mae", "videomae", "hubert"):
            encoders[name].model.save_pretrained(tmp / TINY_ENCODER_FILES[name])
        eva = encoders["eva"]
        state = {f"visual_encoder.{k}": v for k, v in eva.model.state_dict().items()}
        state |= {f"ln_vision.{k}": v for k, v in eva.ln_vision.state_dict().items()}
        torch.save(state, tmp / TINY_ENCODER_FILES["eva"])
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))

