"""MER-UniBench (AffectGPT, ICML 2025): a checkpoint's open-vocabulary answers on the benchmark's nine test sets,
scored as the benchmark scores them.

``tools/eval.py data=unibench_<set> data.root=DIR`` runs one set (``data.kind: unibench``),
``data=mer_unibench data.root=DIR`` every set whose label file is under ``DIR/<set key>/`` and writes one table
(``data.kind: mer_unibench``); the sets, their label files and their metrics are
:data:`~emotion_llama.datasets.unibench.UNIBENCH_SETS`.

1. **Answer.** Each clip is asked :data:`OPEN_INSTRUCTION` in the project's usual user template under the
   ``emotion`` task tag (:meth:`~emotion_llama.inference.core.InferenceCore.generate` with ``instruction=``),
   greedily, ``eval.max_new_tokens`` long (64 in the set configs). A clip is read from the set's feature cache
   (``data.features_dir``, extracted from ``data.videos_dir`` when missing, as every evaluation does) and
   subtitle file. Within one run a clip asked the same question with the same subtitle from the same cache is
   answered once (the synthetic sets share their clips).
2. **Answer -> words** (and, for a sentiment set, -> positive / negative / neutral): ``extractor=rule``
   (default, no model), ``local`` or ``openai``; see :mod:`emotion_llama.evaluation.extraction`.
3. **Metric** (:mod:`emotion_llama.evaluation.openset`), through the user's own emotion wheels
   (``paths.emotion_wheel=DIR``, at ``eval.level``, 1 by default): basic sets (MER2023, MER2024, MELD, IEMOCAP)
   the hit rate of the true label; sentiment sets (CMU-MOSI, CMU-MOSEI, CH-SIMS, CH-SIMS v2) weighted F1 and
   accuracy (no wheel needed); OV-MERD+ the set F-score, precision and recall. A set that needs the wheels is
   refused in one line without them, before the model loads. Clips without features are left out of the
   score and listed (``missing``).

Outputs (written together, atomically): one set: ``metrics.json`` and ``predictions.csv`` (``name, answer,
labels, sentiment, truth, result``; ``result``: basic, the fraction of the wheels whose sector of the true
label is among the predicted ones; sentiment, 1 when the binarised prediction matches the binarised truth, 0
when not, empty for a true 0, which the metric drops; OV-MERD+, the mean over the wheels of the clip's own F of
precision and recall). ``mer_unibench``: the same in ``<set key>/`` for each set scored, and ``unibench.json``,
``unibench.csv`` and ``unibench.md``: each set's primary score and the mean over the sets scored (x100, with
how many), beside the published A+V+T rows of AffectGPT and Emotion-LLaMA (:data:`PUBLISHED`). The extractor's
cache (``extractor_cache.json``) stays in ``run_dir`` across runs.

What differs from AffectGPT's harness: it keeps, per set, the best of all saved checkpoints (selected on that
set's test data), here one checkpoint is scored on every set; its extraction samples Qwen2.5-7B-Instruct at
temperature 0.7, here extraction is deterministic by default (rule-based, or a model with greedy decoding).
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from emotion_llama.datasets.common import check_subtitles, read_subtitles
from emotion_llama.datasets.features import FeatureStore, stack_features
from emotion_llama.datasets.unibench import (
    BASIC,
    OPENSET,
    SENTIMENT,
    UNIBENCH_SETS,
    UniBenchSet,
    read_clip_names,
    read_unibench,
    unibench_set,
)
from emotion_llama.encoders.extract import fingerprint
from emotion_llama.errors import UserError
from emotion_llama.evaluation.evaluate import (
    check_image_model,
    corruption_of,
    dropped,
    feature_inputs,
    features_dir,
)
from emotion_llama.evaluation.extraction import as_list_text, build_extractor
from emotion_llama.evaluation.openset import (
    WHEEL_HINT,
    EmotionWheels,
    hit_rate,
    sample_hit,
    sample_precision_recall,
    sentiment_scores,
    sentiment_value,
    set_scores,
)
from emotion_llama.fileio import atomic_files, json_text
from emotion_llama.inference.core import InferenceCore

log = logging.getLogger(__name__)

OPEN_INSTRUCTION = "Please recognize all possible emotional states of the character."
TASK = "emotion"
CACHE_FILE = "extractor_cache.json"
PREDICTION_COLUMNS = ("name", "answer", "labels", "sentiment", "truth", "result")
METRIC_NAMES = {"hit_rate": "hit rate", "weighted_f1": "weighted F1", "set_f": "set F-score"}
# MER-UniBench, Table 2 of AffectGPT (arXiv 2501.16566), A+V+T, x100: per set and the mean of the nine.
PUBLISHED: dict[str, dict[str, float]] = {
    "AffectGPT": {"mer2023": 78.54, "mer2024": 78.80, "meld": 55.65, "iemocap4": 60.54, "cmumosi": 81.30,
                  "cmumosei": 80.90, "sims": 88.49, "simsv2": 86.18, "ovmerdplus": 62.52, "mean": 74.77},
    "Emotion-LLaMA": {"mer2023": 59.38, "mer2024": 73.62, "meld": 46.76, "iemocap4": 55.47, "cmumosi": 66.13,
                      "cmumosei": 67.66, "sims": 78.32, "simsv2": 77.23, "ovmerdplus": 52.97, "mean": 64.17},
}
SELECTION_NOTE = ("the published figures keep, per set, the best of all saved checkpoints (selected on that set's "
                  "test data); ours is one checkpoint on every set, without selection")
REPORT_DETAILS = ("sets", "per_wheel", "published", "missing")  # left out of the command's one-line JSON


@dataclass
class SetJob:
    """One set to score: its samples and where their inputs are."""

    key: str
    spec: UniBenchSet
    folder: Path
    samples: list
    clips: dict[str, str]                 # sample name -> clip name (features, video)
    subtitles: dict[str, str]             # sample name -> sentence ({} when none)
    subtitle_file: str | None
    features_dir: str
    videos_dir: str | None
    feature_dirs: dict
    answers: dict[str, str] = field(default_factory=dict)  # sample name -> answer (clips with features)
    missing: list[str] = field(default_factory=list)       # sample names without features


# ---------------------------------------------------------------------------------------------- the sets


def _fill(value: object, key: str) -> str | None:
    """A path setting with ``{set}`` standing for the set's key (mer_unibench's per-set layout)."""
    return None if value is None else str(value).replace("{set}", key)


def _subtitles(data: DictConfig, key: str, spec: UniBenchSet, folder: Path, names: Sequence[str],
               drop_text: bool) -> tuple[dict[str, str], str | None]:
    """The set's subtitles (sample name -> sentence): ``data.subtitles`` when that file exists, else the set's
    own subtitle file (OV-MERD+: ``subtitle_eng.csv``), else none (with a warning)."""
    if drop_text:
        return {}, None
    configured = _fill(data.get("subtitles"), key)
    candidates = [configured] if configured else []
    if spec.subtitle_file:
        candidates.append(str(folder / spec.subtitle_file))
    path = next((c for c in candidates if Path(c).is_file()), None)
    if path is None:
        log.warning("%s: no subtitle file (%s): answered without subtitles", spec.title,
                    " or ".join(candidates) or "data.subtitles=null")
        return {}, None
    subtitles = read_subtitles(path)
    check_subtitles(subtitles, names, path)
    return subtitles, path


def _job(cfg: DictConfig, key: str, folder: Path) -> SetJob:
    _, spec = unibench_set(key)
    samples = read_unibench(key, folder)
    names = [s.name for s in samples]
    subtitles, subtitle_file = _subtitles(cfg.data, key, spec, folder, names, "text" in dropped(cfg))
    feature_dirs = cfg.data.get("feature_dirs")
    return SetJob(key, spec, folder, samples, read_clip_names(folder, names), subtitles, subtitle_file,
                  _fill(cfg.data.features_dir, key), _fill(cfg.data.get("videos_dir"), key),
                  dict(OmegaConf.to_container(feature_dirs)) if feature_dirs is not None else {})


def plan_sets(cfg: DictConfig) -> tuple[list[SetJob], list[str]]:
    """The sets to score (their label files read and checked) and, for ``mer_unibench``, the keys of the sets
    asked for whose label file is missing."""
    data = cfg.data
    if data.kind == "unibench":
        key, _ = unibench_set(data.set)
        return [_job(cfg, key, Path(data.root))], []
    root = Path(data.root)
    if not root.is_dir():
        raise UserError(f"data.root={root} is not a folder: point it at the folder holding one folder per "
                        f"MER-UniBench set ({', '.join(UNIBENCH_SETS)}); see docs/mer-unibench.md")
    jobs, missing = [], []
    for key in dict.fromkeys(data.sets):
        key, spec = unibench_set(key)
        folder = Path(_fill(data.set_dir, key))
        if (folder / spec.label_file).is_file():
            jobs.append(_job(cfg, key, folder))
        else:
            missing.append(key)
    if missing:
        log.warning("MER-UniBench: %d of the %d sets asked for have no label file under %s and are left out: %s",
                    len(missing), len(jobs) + len(missing), root,
                    ", ".join(f"{k} ({Path(_fill(data.set_dir, k)) / UNIBENCH_SETS[k].label_file})"
                              for k in missing))
    if not jobs:
        raise UserError(f"no MER-UniBench set under data.root={root}: each set's label file goes in its own folder, "
                        f"e.g. {root}/mer2023/label-6way.npz, {root}/ovmerdplus/ovlabel.csv; see docs/mer-unibench.md")
    return jobs, missing


def load_wheels(cfg: DictConfig, jobs: Sequence[SetJob]) -> EmotionWheels | None:
    """The emotion wheels (``paths.emotion_wheel``), required when a set is scored through them; loaded (and
    so checked) before the model."""
    folder = cfg.paths.get("emotion_wheel")
    need = [j.spec.title for j in jobs if j.spec.kind in (BASIC, OPENSET)]
    if folder:
        return EmotionWheels.load(folder)
    if need:
        alone = ("; or leave them out: data.sets=[cmumosi,cmumosei,sims,simsv2] needs no wheels"
                 if cfg.data.kind == "mer_unibench" else "")
        raise UserError(f"{', '.join(need)} {'is' if len(need) == 1 else 'are'} scored through the emotion wheels "
                        f"and paths.emotion_wheel is not set: {WHEEL_HINT}{alone}")
    return None


# ---------------------------------------------------------------------------------------------- answering


def _set_cfg(cfg: DictConfig, job: SetJob) -> DictConfig:
    """What the feature helpers of :mod:`.evaluate` read, for one set's folders."""
    return OmegaConf.create({
        "data": {"features_dir": job.features_dir, "videos_dir": job.videos_dir, "feature_dirs": job.feature_dirs},
        "eval": OmegaConf.to_container(cfg.eval, resolve=True), "face_detector": cfg.get("face_detector"),
    })


def generate_answers(core: InferenceCore, items: Sequence[tuple[str, str]], features: Mapping[str, dict],
                     batch_size: int, max_new_tokens: int, desc: str = "answers") -> list[str]:
    """Greedy answers to :data:`OPEN_INSTRUCTION` for ``items`` ``(clip, subtitle)``, in batches."""
    out: list[str] = []
    starts = range(0, len(items), batch_size)
    for start in tqdm(starts, desc=desc, unit="batch", disable=None, leave=False):
        chunk = items[start:start + batch_size]
        feats = stack_features([features[clip] for clip, _ in chunk])
        out += core.generate([sub for _, sub in chunk], feats, TASK, max_new_tokens=max_new_tokens,
                             instruction=OPEN_INSTRUCTION)
    return out


def answer_sets(cfg: DictConfig, core: InferenceCore, jobs: Sequence[SetJob], caches: Mapping[str, Path]) -> None:
    """Fill each job's ``answers`` (and ``missing``): features first for every set (a set none of whose clips
    has features is refused before anything is generated), then the answers, each distinct clip, subtitle and
    cache once."""
    corruption = corruption_of(cfg)
    fp = fingerprint(core.config, corruption=corruption, face_detector=cfg.get("face_detector"))
    found = {}
    for job in jobs:
        store = FeatureStore(caches[job.key], job.feature_dirs or None, fingerprint=fp,
                             verified_only=corruption is not None, shapes=core.model.feature_shapes)
        features, lacking = feature_inputs(_set_cfg(cfg, job), store, sorted(set(job.clips.values())), core.config)
        if not features:
            raise UserError(f"{job.spec.title}: no test clip has features under {caches[job.key]}: run "
                            f"tools/extract_features.py input_dir=<its videos> output_dir={caches[job.key]}, or "
                            f"put its videos in data.videos_dir ({job.videos_dir}) with eval.extract_missing=true")
        found[job.key] = (store, features, set(features))
    memo: dict[tuple[str, str, str], str] = {}
    batch, max_new = int(cfg.eval.batch_size), int(cfg.eval.max_new_tokens)
    for job in jobs:
        store, features, have = found[job.key]
        root = str(store.root.resolve())
        keys = {}
        for s in job.samples:
            clip = job.clips[s.name]
            if clip in have:
                keys[s.name] = (root, clip, job.subtitles.get(s.name, ""))
            else:
                job.missing.append(s.name)
        todo = list(dict.fromkeys(k for k in keys.values() if k not in memo))
        answers = generate_answers(core, [(clip, sub) for _, clip, sub in todo], features, batch, max_new,
                                   desc=f"{job.spec.title} answers")
        memo.update(zip(todo, answers, strict=True))
        job.answers = {name: memo[k] for name, k in keys.items()}
        if job.missing:
            log.warning("%s: %d of %d clips have no features and are left out of the score (e.g. %s)",
                        job.spec.title, len(job.missing), len(job.samples), job.missing[0])


# ---------------------------------------------------------------------------------------------- scoring


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _sample_hit(label: str, words: Sequence[str], wheels: EmotionWheels, level: int) -> float | None:
    """The clip's hit, averaged over the wheels where its label maps."""
    found = (sample_hit(label, words, wheels, w, level) for w in range(len(wheels.wheels)))
    return _mean([h for h in found if h is not None])


def _sample_f(gold: Sequence[str], words: Sequence[str], wheels: EmotionWheels, level: int) -> float | None:
    """The clip's own F of precision and recall, averaged over the wheels where its true words map."""
    pairs = (sample_precision_recall(gold, words, wheels, w, level) for w in range(len(wheels.wheels)))
    return _mean([2 * p * r / (p + r) if p + r else 0.0 for p, r in (pr for pr in pairs if pr is not None)])


def score_set(job: SetJob, labels: Mapping[str, Sequence[str]], sentiments: Mapping[str, str],
              wheels: EmotionWheels | None, level: int) -> tuple[dict, list[list[object]]]:
    """The set's report (``score``: its primary metric, 0-1) and its prediction rows."""
    spec = job.spec
    answered = [s for s in job.samples if s.name in job.answers]
    results: dict[str, float | None] = {}
    if spec.kind == BASIC:
        metric = hit_rate({s.name: s.label for s in answered}, labels, wheels, level)
        score = metric["hit"]
        results = {s.name: _sample_hit(s.label, labels[s.name], wheels, level) for s in answered}
    elif spec.kind == SENTIMENT:
        metric = sentiment_scores([s.valence for s in answered], [sentiments[s.name] for s in answered])
        score = metric["weighted_f1"]
        results = {s.name: None if s.valence == 0  # a true 0 is dropped by the metric
                   else float((s.valence > 0) == (sentiment_value(sentiments[s.name]) > 0)) for s in answered}
    else:
        metric = set_scores({s.name: s.labels for s in answered}, labels, wheels, level)
        score = metric["fscore"]
        results = {s.name: _sample_f(s.labels, labels[s.name], wheels, level) for s in answered}
    rows = []
    for s in job.samples:
        truth = as_list_text(s.labels) if spec.kind == OPENSET else s.valence if spec.kind == SENTIMENT else s.label
        if s.name not in job.answers:
            rows.append([s.name, "<missing features>", "", "", truth, ""])
            continue
        result = results.get(s.name)
        rows.append([s.name, job.answers[s.name], as_list_text(labels[s.name]),
                     sentiments.get(s.name, "") if spec.kind == SENTIMENT else "", truth,
                     "" if result is None else f"{result:.4f}"])
    subtitled = (sum(bool(job.subtitles.get(s.name)) for s in job.samples) / len(job.samples)
                 if job.subtitle_file else None)
    report = {"set": job.key, "title": spec.title, "kind": spec.kind, "metric": spec.metric, "score": score,
              **metric, "n": len(job.samples), "answered": len(answered),
              "missing": {"count": len(job.missing), "names": job.missing},
              "label_file": str(job.folder / spec.label_file), "subtitles": job.subtitle_file,
              "subtitled_fraction": subtitled}
    return report, rows


# ---------------------------------------------------------------------------------------------- the run


def check_unibench(cfg: DictConfig) -> None:
    if cfg.data.kind == "mer_unibench" and cfg.eval.get("features_dir"):
        raise UserError(f"eval.features_dir={cfg.eval.features_dir} would be every set's feature cache: leave it "
                        "unset with data=mer_unibench (each set's is data.features_dir, {set} standing for its key)")


def evaluate_unibench(cfg: DictConfig, paths: Mapping[str, object] | None = None) -> dict:
    """Run MER-UniBench as ``cfg`` describes (see the module doc) and write its outputs into ``run_dir``.
    ``paths``: the ``paths.*`` the user named (weights replacing the checkpoint's)."""
    # Everything that can be refused is, before the model loads: settings, label files, wheels, extractor.
    check_unibench(cfg)
    if cfg.data.get("generate"):  # the synthetic sets: written on first use, from the synthetic set's files
        instantiate(cfg.data.generate)()
    jobs, missing_sets = plan_sets(cfg)
    wheels = load_wheels(cfg, jobs)
    run_dir = Path(cfg.run_dir)
    extractor = build_extractor(cfg, wheels, run_dir / CACHE_FILE)
    check_image_model(cfg)
    caches = {job.key: features_dir(_set_cfg(cfg, job)) for job in jobs}
    level = int(cfg.eval.get("level", 1))

    core = InferenceCore.load(cfg.checkpoint, paths, cfg.device, layout=cfg.prompt_layout)
    answer_sets(cfg, core, jobs, caches)
    answers = {(job.key, name): text for job in jobs for name, text in job.answers.items()}
    found = extractor.emotions({f"{k}\t{n}": a for (k, n), a in answers.items()})
    polar = [(job.key, n) for job in jobs if job.spec.kind == SENTIMENT for n in job.answers]
    moods = extractor.sentiments({f"{k}\t{n}": found[f"{k}\t{n}"] for k, n in polar})

    reports, rows = {}, {}
    for job in jobs:
        labels = {n: found[f"{job.key}\t{n}"] for n in job.answers}
        sentiments = {n: moods[f"{job.key}\t{n}"] for n in job.answers if f"{job.key}\t{n}" in moods}
        reports[job.key], rows[job.key] = score_set(job, labels, sentiments, wheels, level)
    common = {"checkpoint": str(cfg.checkpoint), "instruction": OPEN_INSTRUCTION,
              "max_new_tokens": int(cfg.eval.max_new_tokens), "level": level,
              "emotion_wheel": cfg.paths.get("emotion_wheel"), "extractor": {**extractor.settings(), **extractor.stats()},
              "drop": dropped(cfg)}
    if cfg.data.kind == "unibench":
        (key,) = reports
        report = {"data": "unibench", **reports[key], **common}
        with atomic_files(run_dir) as out:
            _write_set(out, reports[key], rows[key])
        return report
    report = table_report(reports, missing_sets, [k for k in UNIBENCH_SETS if k not in set(cfg.data.sets)])
    report = {"data": "mer_unibench", "root": str(cfg.data.root), **report, **common, "sets": reports}
    with atomic_files(run_dir) as out:
        for key in reports:
            _write_set(out / key, reports[key], rows[key])
        (out / "unibench.json").write_text(json_text(report, indent=2), encoding="utf-8")
        _write_table_csv(out / "unibench.csv", report)
        (out / "unibench.md").write_text(markdown_table(report), encoding="utf-8")
    return report


def _write_set(folder: Path, report: dict, rows: list[list[object]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json_text(report, indent=2), encoding="utf-8")
    with open(folder / "predictions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(PREDICTION_COLUMNS)
        writer.writerows(rows)


# ---------------------------------------------------------------------------------------------- the table


def table_report(reports: Mapping[str, dict], missing_sets: Sequence[str], skipped: Sequence[str] = ()) -> dict:
    """The table's figures: each set's primary score x100 (None when not scored), the mean over the sets scored
    and how many, the missing and skipped sets, the published rows and their means over the same sets."""
    scores = {k: (100 * reports[k]["score"] if k in reports else None) for k in UNIBENCH_SETS}
    scored = [k for k in UNIBENCH_SETS if scores[k] is not None and math.isfinite(scores[k])]
    mean = _mean([scores[k] for k in scored])
    same = {name: _mean([row[k] for k in scored]) for name, row in PUBLISHED.items()}
    return {"scores": scores, "mean": mean, "sets_scored": len(scored), "sets_total": len(UNIBENCH_SETS),
            "missing_sets": list(missing_sets), "skipped_sets": list(skipped),
            "published": PUBLISHED, "published_mean_over_scored": same, "note": SELECTION_NOTE}


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _short(checkpoint: str) -> str:
    """A checkpoint folder as the table names it: its last two parts (``tiny_fine/model``)."""
    return "/".join(Path(checkpoint).parts[-2:]) or "checkpoint"


def markdown_table(report: dict) -> str:
    keys = list(UNIBENCH_SETS)
    head = "| | " + " | ".join(UNIBENCH_SETS[k].title for k in keys) + " | mean |"
    rule = "|---|" + "---:|" * (len(keys) + 1)
    k, total = report["sets_scored"], report["sets_total"]
    ours = (f"| ours ({_short(report.get('checkpoint', 'checkpoint'))}) | "
            + " | ".join(_cell(report["scores"][key]) for key in keys)
            + f" | {_cell(report['mean'])} ({k} of {total} sets) |")
    lines = ["# MER-UniBench", "", head, rule, ours]
    for name, row in PUBLISHED.items():
        lines.append(f"| {name} (published, A+V+T) | " + " | ".join(_cell(row[key]) for key in keys)
                     + f" | {_cell(row['mean'])} |")
    metrics = "; ".join(f"{UNIBENCH_SETS[key].title}: {METRIC_NAMES[UNIBENCH_SETS[key].metric]}" for key in keys)
    lines += ["", f"Scores x100. Metrics: {metrics}."]
    if k < total:
        same = ", ".join(f"{name} {_cell(v)}" for name, v in report["published_mean_over_scored"].items())
        lines.append(f"The mean of ours is over the {k} sets scored here (published means over the same sets: "
                     f"{same}); the published means are over all {total}.")
    if report["missing_sets"]:
        lines.append(f"Missing (no label file under data.root): {', '.join(report['missing_sets'])}.")
    if report["skipped_sets"]:
        lines.append(f"Not asked for (data.sets): {', '.join(report['skipped_sets'])}.")
    extractor = report.get("extractor", {})
    lines += [f"Answers -> emotion words: extractor={extractor.get('extractor', '?')}"
              + ("" if extractor.get("extractor") != "rule" else f" ({extractor.get('vocabulary')})")
              + f"; wheels at level {report.get('level', 1)}; AffectGPT's harness samples Qwen2.5-7B-Instruct at "
              "temperature 0.7.",
              f"Note: {SELECTION_NOTE}.", ""]
    return "\n".join(lines)


def _write_table_csv(path: Path, report: dict) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["set", "title", "kind", "metric", "status", "score", "n", "answered", *PUBLISHED])
        for key, spec in UNIBENCH_SETS.items():
            rep = report["sets"].get(key)
            status = ("scored" if rep else "missing" if key in report["missing_sets"] else "skipped")
            writer.writerow([key, spec.title, spec.kind, spec.metric, status, _cell(report["scores"][key]),
                             rep["n"] if rep else "", rep["answered"] if rep else "",
                             *(_cell(row[key]) for row in PUBLISHED.values())])
        writer.writerow(["mean", "", "", "", f"mean over {report['sets_scored']} of {report['sets_total']} sets",
                         _cell(report["mean"]), "", "", *(_cell(row["mean"]) for row in PUBLISHED.values())])


def format_report(report: dict) -> str:
    """What the command prints: one set's scores, or the MER-UniBench table."""
    if report["data"] == "mer_unibench":
        return "\n".join(line for line in markdown_table(report).splitlines()[2:] if line)
    keys = {"basic": ("hit",), "sentiment": ("weighted_f1", "accuracy"),
            "openset": ("fscore", "precision", "recall")}[report["kind"]]
    figures = "  ".join(f"{k} {report[k]:.4f}" for k in keys)
    line = (f"{report['title']} ({METRIC_NAMES[report['metric']]}): {figures}  ({report['answered']} of "
            f"{report['n']} clips answered")
    if report["missing"]["count"]:
        line += f"; {report['missing']['count']} without features, see predictions.csv"
    return line + ")"
