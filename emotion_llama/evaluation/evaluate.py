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
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from emotion_llama.answers import ORIGINAL_FALLBACK, parse_emotion, parse_like_original
from emotion_llama.datasets.common import Sample, check_samples, check_subtitles, read_subtitles
from emotion_llama.datasets.dfew import check_clip_folder, match_padding, read_dfew_split, read_dfew_txt
from emotion_llama.datasets.emoset import read_emoset, read_image_folders
from emotion_llama.datasets.features import FeatureStore, LazyFeatures, StaleFeaturesError, stack_features
from emotion_llama.datasets.media import clip_name
from emotion_llama.datasets.mer import read_mer2023_csv, read_mer2023_npz, read_mer2024_csv
from emotion_llama.datasets.merr import read_merr_txt
from emotion_llama.datasets.noise import Corruption
from emotion_llama.datasets.pixels import ImagePixels
from emotion_llama.encoders.extract import extract_folder, fingerprint
from emotion_llama.errors import UserError
from emotion_llama.evaluation.metrics import (
    SUMMARY_KEYS,
    classification_report,
    mean_over_folds,
    plot_confusion,
)
from emotion_llama.fileio import atomic_files, json_text
from emotion_llama.inference.core import InferenceCore
from emotion_llama.labels import MERR_LABELS
from emotion_llama.model.checkpoint import read_config

log = logging.getLogger(__name__)


def load_subsets(data: DictConfig) -> dict[str, list[Sample]]:
    """The test subsets of a dataset in its native format: DFEW folds, MER2023 test1-3, ..., each checked as a
    whole (:func:`check_samples`: no empty subset, no clip listed twice)."""
    return {name: check_samples(samples, where) for name, (samples, where) in _read_subsets(data).items()}


def _read_subsets(data: DictConfig) -> dict[str, tuple[list[Sample], str]]:
    """Each subset's samples and the file (or folder) they were read from."""
    labels = tuple(data.labels)
    kind = data.kind
    if kind == "dfew":
        key = "split_txt" if data.get("split_txt") else "split_csv"
        pattern, read = str(data[key]), read_dfew_txt if key == "split_txt" else read_dfew_split
        if len(data.folds) > 1 and "{fold}" not in pattern:
            raise UserError(f"data.{key}={pattern} has no {{fold}}: every fold would read this one file; write the "
                            "fold number's place as {fold}, or give data.folds=[N] for one fold")
        # Only {fold} is filled in: any other brace in the path (data.root) is part of the name.
        paths = {k: pattern.replace("{fold}", str(k)) for k in data.folds}
        return {f"fold{k}": (read(path), path) for k, path in paths.items()}
    if kind == "mer2023" and str(data.label_file).endswith(".csv"):
        return {"test": (read_mer2023_csv(data.label_file), data.label_file)}
    if kind == "mer2023":
        return {c: (read_mer2023_npz(data.label_file, c), f"{data.label_file} ({c})") for c in data.corpora}
    if kind == "mer2024":
        return {"test": (read_mer2024_csv(data.label_file), data.label_file)}
    if kind == "merr":
        return {"test": (read_merr_txt(data.test, labels=labels), data.test)}
    if kind == "emoset":  # images are named by their file stem, as feature extraction names them
        records = read_emoset(data.root, data.splits.test, labels=labels, load_annotations=False)
        return {"test": ([Sample(Path(r.image).stem, r.label) for r in records], f"{data.root} ({data.splits.test})")}
    if kind == "image_folders":  # FI, Emotion6, WEBEmo: root[/split]/<class>/*.jpg
        records = read_image_folders(data.root, labels=labels, split=data.get("split"))
        return {"test": ([Sample(Path(r.image).stem, r.label) for r in records], data.root)}
    raise UserError(f"unknown data.kind {kind!r}: expected dfew, mer2023, mer2024, merr, emoset or image_folders")


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
                 batch_size: int = 16, max_new_tokens: int = 16, media: str = "video"):
        self.core = core
        self.media = media  # video, or image (text alone) for the image prompt
        self.labels = list(labels)
        self.label_map = dict(label_map or {})
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens

    @staticmethod
    def _inputs(names: Sequence[str], subtitles: Mapping[str, str], features: Mapping[str, dict]):
        clips = [features[n] for n in names]  # one read per clip: ``features`` may load lazily
        feats = stack_features(clips)
        return [subtitles.get(n, "") for n in names], feats

    def score(self, names, subtitles, features) -> list[ClipPrediction]:
        texts, feats = self._inputs(names, subtitles, features)
        logp = self.core.score(texts, feats, self.labels, media=self.media)  # (B, K)
        out = []
        for name, row in zip(names, logp.tolist(), strict=True):
            best = max(range(len(row)), key=row.__getitem__)
            out.append(ClipPrediction(name, self.labels[best], dict(zip(self.labels, row, strict=True))))
        return out

    def generate(self, names, subtitles, features) -> list[ClipPrediction]:
        texts, feats = self._inputs(names, subtitles, features)
        answers = self.core.generate(texts, feats, self.task, self.labels, self.max_new_tokens, media=self.media)
        fallback = ORIGINAL_FALLBACK if ORIGINAL_FALLBACK in self.labels else None
        return [ClipPrediction(n, self._parse(t), answer=t, original=parse_like_original(t, self.labels, fallback))
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


def corruption_of(cfg: DictConfig) -> Corruption | None:
    """``eval.noise`` as a Corruption (None when unset or inactive)."""
    noise = cfg.eval.get("noise")
    corruption = Corruption(**OmegaConf.to_container(noise)) if noise else None
    return corruption if corruption is not None and corruption.active else None


def dropped(cfg: DictConfig) -> list[str]:
    drop = cfg.eval.get("drop") or []
    return [drop] if isinstance(drop, str) else list(drop)  # eval.drop=audio: one group, not five letters


def noisy_features_dir(clean_dir: str | Path, corruption: Corruption) -> Path:
    """Where a corrupted study's features go unless ``eval.features_dir`` says otherwise: a sibling of the
    clean cache named after the corruption, so the clean cache is never written with noisy features."""
    clean_dir = Path(clean_dir)
    key = "_".join(f"{k}{v:g}" if isinstance(v, float) else f"{k}{v}"
                   for k, v in corruption.key().items() if v is not None)
    return clean_dir.with_name(f"{clean_dir.name}.noise_{key}")


def features_dir(cfg: DictConfig) -> Path:
    """The feature cache this evaluation reads: ``eval.features_dir``, else ``data.features_dir``, else (with
    ``eval.noise``) the noisy sibling of ``data.features_dir``. A noisy study needs the videos and never
    writes into the clean cache; both are refused here, before the model loads."""
    corruption = corruption_of(cfg)
    chosen = cfg.eval.get("features_dir")
    if corruption is None:
        return Path(chosen or cfg.data.features_dir)
    videos = cfg.data.get("videos_dir")
    if not videos or not Path(videos).is_dir():
        raise UserError(f"eval.noise needs the test videos (their features are recomputed from the corrupted "
                        f"videos) but data.videos_dir={videos or 'null'} is not a folder: set data.videos_dir=DIR")
    if chosen and Path(chosen).resolve() == Path(cfg.data.features_dir).resolve():
        raise UserError(f"eval.features_dir={chosen} is the clean cache (data.features_dir): noisy features would "
                        "replace the clean ones; leave eval.features_dir unset (a sibling folder named after the "
                        "noise is used) or choose another folder")
    return Path(chosen) if chosen else noisy_features_dir(cfg.data.features_dir, corruption)


def feature_inputs(cfg: DictConfig, store: FeatureStore, names: list[str], model_cfg) -> tuple[dict, list[str]]:
    """Cached features for ``names`` (extracting missing and stale ones from the videos when possible); a
    clip whose cached features were made by another extraction and cannot be redone is refused."""
    corruption = corruption_of(cfg)
    missing = [n for n in names if not store.has(n)]
    videos = cfg.data.get("videos_dir")
    if missing and videos and Path(videos).is_dir() and cfg.eval.extract_missing:
        extract_folder(videos, store.root, model_cfg, feature_dirs=store.dirs, names=missing,
                       corruption=corruption, progress=False, num_workers=cfg.eval.num_workers,
                       face_detector=cfg.get("face_detector"))
        store.refresh()
    have, lack = store.split_available(names)
    stale = [n for n in lack if store.stale(n)]
    if stale:
        raise StaleFeaturesError(
            f"{len(stale)} clips under {store.root} (e.g. {stale[0]}) were extracted with other encoders, another "
            f"face detector or another noise than this evaluation's (manifest.jsonl fingerprint "
            f"{store.made_by(stale[0])}, expected {store.fingerprint}): set data.videos_dir with "
            "eval.extract_missing=true to recompute them, or "
            "point eval.features_dir at features made for this checkpoint"
        )
    return LazyFeatures(store, have, dropped(cfg)), lack


def _known_clip(cfg: DictConfig, cache: Path):
    """Whether a clip name has cached features or a video or frame folder (to match names across zero-padding)."""
    store = FeatureStore(cache, cfg.data.feature_dirs)
    videos = Path(cfg.data.videos_dir) if cfg.data.get("videos_dir") else None
    stems = {clip_name(p) for p in videos.iterdir()} if videos is not None and videos.is_dir() else set()
    return lambda name: name in stems or any(store.path(m, name).is_file() for m in store.dirs)


IMAGE_KINDS = ("emoset", "image_folders")


def check_image_model(cfg: DictConfig) -> None:
    """A checkpoint whose model reads pixels (InstructBLIP) is evaluated on an image set, without eval.noise
    (which recomputes features from corrupted videos); refused before the model loads."""
    model_cfg = read_config(cfg.checkpoint)
    if not model_cfg.reads_pixels:
        return
    if cfg.data.kind not in IMAGE_KINDS:
        raise UserError(f"{cfg.checkpoint} holds a model of still images (model.backbone={model_cfg.backbone}): "
                        f"evaluate it on an image set (data=emoset, data=synthetic_images or data.kind=image_folders), "
                        f"not data.kind={cfg.data.kind}")
    if corruption_of(cfg) is not None:
        raise UserError("eval.noise recomputes features from corrupted videos, and this checkpoint's model "
                        f"(model.backbone={model_cfg.backbone}) reads the images themselves: leave eval.noise unset")


def _image_inputs(cfg: DictConfig, names: Sequence[str], core: InferenceCore) -> tuple[ImagePixels, list[str]]:
    """The test images as pixel values, read when a batch asks for them (no feature cache); none is missing: the
    readers have checked that every file exists."""
    labels = tuple(cfg.data.labels)
    if cfg.data.kind == "emoset":
        records = read_emoset(cfg.data.root, cfg.data.splits.test, labels=labels, load_annotations=False)
    else:
        records = read_image_folders(cfg.data.root, labels=labels, split=cfg.data.get("split"))
    wanted = set(names)
    paths = {Path(r.image).stem: r.image for r in records if Path(r.image).stem in wanted}
    return ImagePixels(paths, core.image_transform, dropped(cfg)), []


def evaluate(cfg: DictConfig, paths: Mapping[str, object] | None = None) -> dict:
    """Run the evaluation described by ``cfg`` and write metrics.json, predictions.csv, confusion.png (as one
    unit: an interrupted run leaves the previous outputs, never a mix). ``paths``: the ``paths.*`` the user named
    (``Call.named_paths``; never a config's defaults), which replace the checkpoint's saved weight paths."""
    # The inputs first: a bad split file or setting is reported before the model loads.
    check_image_model(cfg)
    cache = features_dir(cfg)
    subsets = load_subsets(cfg.data)
    if cfg.data.kind == "dfew":  # a split file's "1" is clip 00001
        check_clip_folder(cfg.data.get("videos_dir"), cfg.data.get("layout", "auto"))  # videos or frame folders
        subsets = {k: match_padding(v, _known_clip(cfg, cache)) for k, v in subsets.items()}
    labels = list(cfg.data.labels)
    names = sorted({s.name for samples in subsets.values() for s in samples})
    subtitles = read_subtitles(cfg.data.subtitles) if cfg.data.get("subtitles") and "text" not in dropped(cfg) else {}
    # Refused when none of the clips has a line: the whole set would be judged without text.
    with_text = check_subtitles(subtitles, names, cfg.data.subtitles) if subtitles else None
    core = InferenceCore.load(cfg.checkpoint, paths, cfg.device, layout=cfg.prompt_layout)
    corruption = corruption_of(cfg)
    fp = fingerprint(core.config, corruption=corruption, face_detector=cfg.get("face_detector"))
    store = FeatureStore(cache, cfg.data.feature_dirs, fingerprint=fp, verified_only=corruption is not None,
                         shapes=core.model.feature_shapes)
    features, missing = (_image_inputs(cfg, names, core) if core.reads_pixels  # no feature cache: the pixels
                         else feature_inputs(cfg, store, names, core.config))
    if not features:
        raise UserError(
            f"no test clip has features under {cache}: run tools/extract_features.py or set "
            "data.videos_dir with eval.extract_missing=true"
        )
    if missing:
        log.warning("%d of %d clips have no features and are reported as missing (e.g. %s)", len(missing), len(names), missing[0])
    evaluator = Evaluator(core, labels, cfg.data.get("label_map"), cfg.eval.batch_size, cfg.eval.max_new_tokens,
                          media=cfg.data.get("media", "video"))
    preds = {p.name: p for p in evaluator.run([n for n in names if n in features], subtitles, features, cfg.protocol)}
    report = _report(subsets, preds, labels, cfg)
    report["missing"] = {"count": len(missing), "names": missing}
    report["subtitled_fraction"] = with_text  # of the test clips; None: evaluated without subtitles
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
              "drop": dropped(cfg), "labels": labels, "subsets": per}
    if len(per) > 1:
        report["mean"] = mean_over_folds(list(per.values()))
    first = next(iter(per.values()))
    for key in SUMMARY_KEYS:
        report[key] = report["mean"][key] if "mean" in report else first[key]
    return report


def _write_outputs(run_dir: Path, subsets, preds, labels, report) -> None:
    with atomic_files(run_dir) as out:  # the three files land together, or none of them
        _write_into(out, subsets, preds, labels, report)


def _write_into(run_dir: Path, subsets, preds, labels, report) -> None:
    (run_dir / "metrics.json").write_text(json_text(report, indent=2), encoding="utf-8")
    with open(run_dir / "predictions.csv", "w", newline="") as f:
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
