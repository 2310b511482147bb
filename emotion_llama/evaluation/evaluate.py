"""Zero-shot evaluation on DFEW, MER2023, MER2024 and MERR-format test sets.

Two protocols:

- ``score``: the prompt lists the target dataset's labels; each label (+ EOS) is scored as a continuation
  of the prompt, all sharing one prefill per clip, and the most likely one is the prediction.
- ``generate``: greedy generation, the answer parsed robustly (synonyms and inflections); answers naming
  no label are counted as unparseable (wrong). The original release's protocol (last word, anything
  unparseable forced to "neutral") is reported beside it, labelled as such.

A MERR-trained model may answer with a MERR label the target set lacks; ``label_map`` (in the data
config) maps those to the target set for the generate protocol.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from emotion_llama.datasets.common import Sample, read_subtitles
from emotion_llama.datasets.dfew import read_dfew_split, read_dfew_txt
from emotion_llama.datasets.features import FeatureStore, LazyFeatures
from emotion_llama.datasets.mer import read_mer2023_csv, read_mer2023_npz, read_mer2024_csv
from emotion_llama.datasets.merr import read_merr_txt
from emotion_llama.datasets.noise import Corruption
from emotion_llama.encoders.extract import extract_folder
from emotion_llama.errors import UserError
from emotion_llama.evaluation.answers import parse_emotion, parse_like_original
from emotion_llama.evaluation.metrics import (
    SUMMARY_KEYS,
    classification_report,
    mean_over_folds,
    plot_confusion,
)
from emotion_llama.fileio import atomic_path, atomic_write_text
from emotion_llama.inference.core import InferenceCore, weight_paths
from emotion_llama.labels import MERR_LABELS

log = logging.getLogger(__name__)


def load_subsets(data: DictConfig) -> dict[str, list[Sample]]:
    """The test subsets of a dataset in its native format: DFEW folds, MER2023 test1-3, ..."""
    labels = tuple(data.labels)
    kind = data.kind
    if kind == "dfew":
        if data.get("split_txt"):
            return {f"fold{k}": read_dfew_txt(str(data.split_txt).format(fold=k)) for k in data.folds}
        return {f"fold{k}": read_dfew_split(str(data.split_csv).format(fold=k)) for k in data.folds}
    if kind == "mer2023":
        if str(data.label_file).endswith(".csv"):
            return {"test": read_mer2023_csv(data.label_file)}
        return {c: read_mer2023_npz(data.label_file, c) for c in data.corpora}
    if kind == "mer2024":
        return {"test": read_mer2024_csv(data.label_file)}
    if kind == "merr":
        return {"test": read_merr_txt(data.test, labels=labels)}
    raise UserError(f"unknown data.kind {kind!r}: expected dfew, mer2023, mer2024 or merr")


@dataclass
class ClipPrediction:
    name: str
    prediction: str | None  # None: unparseable (generate protocol)
    scores: dict[str, float] = field(default_factory=dict)
    answer: str = ""
    original: str | None = None  # the original protocol's reading of the same answer


class Evaluator:
    """Batched closed-set scoring or greedy generation over clips with cached features, on an
    :class:`~emotion_llama.inference.core.InferenceCore`."""

    task = "emotion"

    def __init__(self, core: InferenceCore, labels: Sequence[str], label_map: Mapping[str, str] | None = None,
                 batch_size: int = 16, max_new_tokens: int = 16):
        self.core = core
        self.labels = list(labels)
        self.label_map = dict(label_map or {})
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens

    @staticmethod
    def _inputs(names: Sequence[str], subtitles: Mapping[str, str], features: Mapping[str, dict]):
        clips = [features[n] for n in names]  # one read per clip: ``features`` may load lazily
        feats = {m: torch.stack([c[m] for c in clips]) for m in clips[0]}
        return [subtitles.get(n, "") for n in names], feats

    def score(self, names, subtitles, features) -> list[ClipPrediction]:
        texts, feats = self._inputs(names, subtitles, features)
        logp = self.core.score(texts, feats, self.labels)  # (B, K)
        out = []
        for name, row in zip(names, logp.tolist(), strict=True):
            best = max(range(len(row)), key=row.__getitem__)
            out.append(ClipPrediction(name, self.labels[best], dict(zip(self.labels, row, strict=True))))
        return out

    def generate(self, names, subtitles, features) -> list[ClipPrediction]:
        texts, feats = self._inputs(names, subtitles, features)
        answers = self.core.generate(texts, feats, self.task, self.labels, self.max_new_tokens)
        return [ClipPrediction(n, self._parse(t), answer=t, original=parse_like_original(t, self.labels))
                for n, t in zip(names, answers, strict=True)]

    def _parse(self, text: str) -> str | None:
        vocabulary = list(dict.fromkeys([*self.labels, *MERR_LABELS, *self.label_map]))
        label = parse_emotion(text, vocabulary)
        label = self.label_map.get(label, label)
        return label if label in self.labels else None

    def run(self, names: Sequence[str], subtitles, features, protocol: str) -> list[ClipPrediction]:
        step = {"score": self.score, "generate": self.generate}.get(protocol)
        if step is None:
            raise UserError(f"unknown protocol {protocol!r}: use protocol=score or protocol=generate")
        out = []
        starts = range(0, len(names), self.batch_size)
        for start in tqdm(starts, desc=f"{self.task} ({protocol})", unit="batch", disable=None, leave=False):
            out.extend(step(names[start:start + self.batch_size], subtitles, features))
        return out


def _features(cfg: DictConfig, store: FeatureStore, names: list[str], model_cfg) -> tuple[dict, list[str]]:
    """Cached features for ``names`` (extracting missing ones from the videos when possible)."""
    corruption = Corruption(**OmegaConf.to_container(cfg.eval.noise)) if cfg.eval.get("noise") else None
    missing = [n for n in names if not store.has(n)]
    videos = cfg.data.get("videos_dir")
    if (missing or (corruption and corruption.active)) and videos and Path(videos).is_dir() and cfg.eval.extract_missing:
        todo = names if corruption and corruption.active else missing
        extract_folder(videos, store.root, model_cfg, feature_dirs=store.dirs, names=todo,
                       corruption=corruption, progress=False, num_workers=cfg.eval.num_workers)
    have, lack = store.split_available(names)
    return LazyFeatures(store, have, list(cfg.eval.drop or [])), lack


def evaluate(cfg: DictConfig) -> dict:
    """Run the evaluation described by ``cfg`` and write metrics.json, predictions.csv, confusion.png."""
    core = InferenceCore.load(cfg.checkpoint, weight_paths(cfg.paths), cfg.device, layout=cfg.prompt_layout)
    subsets = load_subsets(cfg.data)
    labels = list(cfg.data.labels)
    names = sorted({s.name for samples in subsets.values() for s in samples})
    subtitles = read_subtitles(cfg.data.subtitles) if cfg.data.get("subtitles") and "text" not in (cfg.eval.drop or []) else {}
    features_dir = cfg.eval.get("features_dir") or cfg.data.features_dir
    store = FeatureStore(features_dir, cfg.data.feature_dirs)
    features, missing = _features(cfg, store, names, core.config)
    if not features:
        raise UserError(
            f"no test clip has features under {features_dir}: run tools/extract_features.py or set "
            "data.videos_dir with eval.extract_missing=true"
        )
    if missing:
        log.warning("%d of %d clips have no features and are reported as missing (e.g. %s)", len(missing), len(names), missing[0])
    evaluator = Evaluator(core, labels, cfg.data.get("label_map"), cfg.eval.batch_size, cfg.eval.max_new_tokens)
    preds = {p.name: p for p in evaluator.run([n for n in names if n in features], subtitles, features, cfg.protocol)}
    report = _report(subsets, preds, labels, cfg)
    report["missing"] = {"count": len(missing), "names": missing}
    _write_outputs(Path(cfg.run_dir), subsets, preds, labels, report)
    return report


def _subset_report(samples: list[Sample], preds: Mapping[str, ClipPrediction], labels: list[str], protocol: str) -> dict:
    scored = [s for s in samples if s.name in preds]
    truth = [s.label for s in scored]
    rep = classification_report(truth, [preds[s.name].prediction for s in scored], labels)
    rep["n_missing"] = len(samples) - len(scored)
    if protocol == "generate":
        rep["n_unparseable"] = sum(preds[s.name].prediction is None for s in scored)
        original = classification_report(truth, [preds[s.name].original for s in scored], labels)
        rep["original_protocol"] = {k: original[k] for k in SUMMARY_KEYS} | {"note": "last word, unparseable -> neutral"}
    return rep


def _report(subsets, preds, labels, cfg) -> dict:
    # A subset none of whose clips has features is only listed under "missing".
    per = {name: _subset_report(samples, preds, labels, cfg.protocol)
           for name, samples in subsets.items() if any(s.name in preds for s in samples)}
    report = {"data": cfg.data.kind, "protocol": cfg.protocol, "checkpoint": str(cfg.checkpoint),
              "drop": list(cfg.eval.drop or []), "labels": labels, "subsets": per}
    if len(per) > 1:
        report["mean"] = mean_over_folds(list(per.values()))
    first = next(iter(per.values()))
    for key in SUMMARY_KEYS:
        report[key] = report["mean"][key] if "mean" in report else first[key]
    return report


def _write_outputs(run_dir: Path, subsets, preds, labels, report) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "metrics.json", json.dumps(report, indent=2))
    with atomic_path(run_dir / "predictions.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["subset", "name", "truth", "prediction", *[f"score_{label}" for label in labels], "answer"])
        for subset, samples in subsets.items():
            for s in samples:
                p = preds.get(s.name)
                if p is None:
                    writer.writerow([subset, s.name, s.label, "<missing features>", *[""] * len(labels), ""])
                    continue
                scores = [f"{p.scores[label]:.4f}" if label in p.scores else "" for label in labels]
                writer.writerow([subset, s.name, s.label, p.prediction or "<unparseable>", *scores, p.answer])
    # One pooled confusion over the unique clips of all subsets (DFEW folds partition the test clips).
    seen = {s.name: s.label for samples in subsets.values() for s in samples if s.name in preds}
    pooled = classification_report(list(seen.values()), [preds[n].prediction for n in seen], labels)
    plot_confusion(pooled["confusion"], labels, run_dir / "confusion.png",
                   title=f"{report['data']} ({report['protocol']})", invalid=pooled["invalid"])


def format_table(report: dict) -> str:
    rows = [f"{'subset':<10} {'n':>5} " + " ".join(f"{k:>11}" for k in SUMMARY_KEYS)]
    for name, rep in report["subsets"].items():
        rows.append(f"{name:<10} {rep['n']:>5} " + " ".join(f"{rep[k]:>11.4f}" for k in SUMMARY_KEYS))
    if "mean" in report:
        rows.append(f"{'mean':<10} {'':>5} " + " ".join(f"{report['mean'][k]:>11.4f}" for k in SUMMARY_KEYS))
    if report["missing"]["count"]:
        rows.append(f"missing features: {report['missing']['count']} clips (see predictions.csv)")
    return "\n".join(rows)
