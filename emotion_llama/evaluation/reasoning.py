"""EMER-style explainable emotion reasoning: generate an explanation per clip, then (optionally) judge it.

Generation uses the ``reason`` task with its canonical instruction, greedy decoding and the evaluation
batching of :class:`~emotion_llama.evaluation.evaluate.Evaluator`. The explanations are written in EMER's submission
layout (``names,chi_reasons``) to ``run_dir/reasons.csv``, beside ``reasoning.json`` (the report) and, with a judge,
``judgements.csv``: the three land together once everything is done, so an interrupted run leaves the previous
run's set whole (a run without a judge removes an earlier run's judgements.csv in the same step).

The original EMER judge (a hosted LLM) is retired, so the judge here is pluggable: any local Hugging Face
causal LM (``judge.model=DIR``), or any ``list[str] -> list[str]`` callable in code. It is asked, for each
clip, with :data:`JUDGE_PROMPT`::

    You grade an explanation of a person's emotion in a video clip against a reference explanation.

    Reference emotion: {emotion}
    Reference explanation: {reference}

    Candidate explanation: {prediction}

    Give two integers from 1 (nothing in common) to 10 (the same):
    clue: how far the candidate names the same clues (facial expression, voice, words) as the reference;
    label: how far the emotion the candidate concludes matches the reference emotion.
    Answer with one line in exactly this format and nothing else:
    clue: N; label: M

A reply is read by :func:`parse_judgement`: the first integer after ``clue`` and the first after ``label``
(case-insensitive, ``clue overlap: 7/10`` works too), or a bare ``N; M`` pair. A score outside 1..10 or a
reply without both numbers is *unparseable*: counted and listed, never replaced by a default, and left out of
the means (which are therefore over the judged clips only; compare ``n_judged`` to ``n``).

For the synthetic set, whose json files record the cues each clip was drawn with, :func:`cue_mentions` checks
which cue phrases an explanation names and whether the clip really has them: an explanation that names cues
the clip lacks is confabulating, however fluent.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from emotion_llama.datasets.common import read_subtitles
from emotion_llama.datasets.cues import cue_phrases_path, read_cue_phrases
from emotion_llama.datasets.emer import read_emer_csv, write_emer_predictions
from emotion_llama.datasets.features import FeatureStore, LazyFeatures
from emotion_llama.datasets.merr import read_merr_json, read_merr_txt
from emotion_llama.errors import UserError
from emotion_llama.evaluation.evaluate import ClipPrediction, Evaluator
from emotion_llama.fileio import atomic_files, atomic_path, json_text
from emotion_llama.inference.core import InferenceCore
from emotion_llama.runtime import LOCAL_PLAIN, model_folder, resolve_device

log = logging.getLogger(__name__)

JUDGE_PROMPT = (
    "You grade an explanation of a person's emotion in a video clip against a reference explanation.\n\n"
    "Reference emotion: {emotion}\n"
    "Reference explanation: {reference}\n\n"
    "Candidate explanation: {prediction}\n\n"
    "Give two integers from 1 (nothing in common) to 10 (the same):\n"
    "clue: how far the candidate names the same clues (facial expression, voice, words) as the reference;\n"
    "label: how far the emotion the candidate concludes matches the reference emotion.\n"
    "Answer with one line in exactly this format and nothing else:\n"
    "clue: N; label: M"
)
SCORE_RANGE = (1, 10)
JUDGEMENTS = "judgements.csv"
JudgeFn = Callable[[list[str]], list[str]]


@dataclass(frozen=True)
class Truth:
    """One clip's EMER ground truth."""

    name: str
    emotion: str
    subtitle: str
    reason: str


# ---------------------------------------------------------------------------------------------- ground truth


def load_emer_truth(path: str | Path) -> dict[str, Truth]:
    """EMER ground truth (``names,emotions,subtitles,reasons``) keyed by clip name."""
    return {r["names"]: Truth(r["names"], r["emotions"], r["subtitles"], r["reasons"]) for r in read_emer_csv(path)}


def load_merr_truth(test: str | Path, fine_json: str | Path, subtitles: str | Path | None,
                    labels: Sequence[str]) -> dict[str, Truth]:
    """Ground truth of a MERR-format split: the label and the fine-grained ``smp_reason_caption``."""
    fine = read_merr_json(fine_json)
    subs = read_subtitles(subtitles) if subtitles else {}
    return {
        s.name: Truth(s.name, s.label, subs.get(s.name, ""), fine.get(s.name, {}).get("smp_reason_caption", ""))
        for s in read_merr_txt(test, labels=tuple(labels))
    }


def load_truth(cfg: DictConfig) -> dict[str, Truth]:
    if cfg.reasoning.get("ground_truth"):
        return load_emer_truth(cfg.reasoning.ground_truth)
    if cfg.data.kind != "merr" or not cfg.data.get("fine_json"):
        raise UserError(
            f"data={cfg.data.kind} has no reasoning ground truth: set reasoning.ground_truth=<EMER csv> "
            "or use a MERR-format data config with data.fine_json"
        )
    return load_merr_truth(cfg.data.test, cfg.data.fine_json, cfg.data.get("subtitles"), cfg.data.labels)


# ---------------------------------------------------------------------------------------------- generation


class ReasonEvaluator(Evaluator):
    """The Evaluator's batched greedy generation with the ``reason`` task instead of ``emotion``.

    ``prediction`` of each result is the label the explanation concludes (the last one it names).
    """

    task = "reason"

    def reasons(self, names: Sequence[str], subtitles: Mapping[str, str],
                features: Mapping[str, dict]) -> list[ClipPrediction]:
        return self.run(names, subtitles, features, "generate")


# ---------------------------------------------------------------------------------------------- judging


_CLUE = re.compile(r"clues?\b\D{0,40}?(-?\d+(?:\.\d+)?)", re.IGNORECASE | re.DOTALL)
_LABEL = re.compile(r"labels?\b\D{0,40}?(-?\d+(?:\.\d+)?)", re.IGNORECASE | re.DOTALL)
_PAIR = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*[;,/ ]\s*(-?\d+(?:\.\d+)?)\s*\.?\s*$")


def judge_prompt(truth: Truth, prediction: str) -> str:
    return JUDGE_PROMPT.format(emotion=truth.emotion, reference=truth.reason.strip(),
                               prediction=prediction.strip())


def parse_judgement(text: str) -> tuple[float, float] | None:
    """``(clue, label)`` from a judge's reply, or ``None`` when it does not give both within 1..10."""
    clue, label = _CLUE.search(text), _LABEL.search(text)
    if clue and label:
        pair = (float(clue.group(1)), float(label.group(1)))
    elif (bare := _PAIR.match(text)) is not None:
        pair = (float(bare.group(1)), float(bare.group(2)))
    else:
        return None
    lo, hi = SCORE_RANGE
    return pair if all(lo <= v <= hi for v in pair) else None


def judge(predictions: Mapping[str, str], truth: Mapping[str, Truth], judge_fn: JudgeFn,
          batch_size: int = 8) -> tuple[dict, list[dict]]:
    """Ask ``judge_fn`` about every predicted clip with ground truth; (summary, one row per clip)."""
    names = [n for n in predictions if n in truth]
    replies: list[str] = []
    for start in range(0, len(names), batch_size):
        chunk = names[start:start + batch_size]
        out = judge_fn([judge_prompt(truth[n], predictions[n]) for n in chunk])
        if len(out) != len(chunk):
            raise ValueError(f"the judge returned {len(out)} replies for {len(chunk)} prompts")
        replies.extend(out)
    rows = [_judgement_row(n, r) for n, r in zip(names, replies, strict=True)]
    return summarize_judgements(rows, n_without_truth=len(predictions) - len(names)), rows


def _judgement_row(name: str, reply: str) -> dict:
    scores = parse_judgement(reply)
    clue, label = scores if scores else (None, None)
    return {"names": name, "clue": clue, "label": label, "reply": reply.strip()}


def summarize_judgements(rows: Sequence[dict], n_without_truth: int = 0) -> dict:
    judged = [r for r in rows if r["clue"] is not None]
    unparseable = [r["names"] for r in rows if r["clue"] is None]
    return {
        "n": len(rows),
        "n_judged": len(judged),
        "n_unparseable": len(unparseable),
        "unparseable": unparseable,
        "n_without_truth": n_without_truth,
        "clue_overlap": _mean([r["clue"] for r in judged]),
        "label_overlap": _mean([r["label"] for r in judged]),
    }


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def hf_judge(model_dir: str | Path, device: str | torch.device = "cpu", max_new_tokens: int = 16) -> JudgeFn:
    """A judge backed by a local Hugging Face causal LM (greedy, chat template when it has one)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = _check_judge_dir(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(path), **LOCAL_PLAIN).to(device).eval()

    @torch.no_grad()
    def generate(prompts: list[str]) -> list[str]:
        texts = [_chat(tokenizer, p) for p in prompts]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
        return tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)

    return generate


def _check_judge_dir(model_dir: str | Path) -> Path:
    return model_folder(model_dir, "judge.model", "causal-LM", ", or leave judge.model unset to skip judging")


def _chat(tokenizer, prompt: str) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    return prompt + "\n"


# ---------------------------------------------------------------------------------------------- cue check


def _cue_pattern(phrase: str) -> re.Pattern:
    # Without its article, so that "the one-sided smile" counts as naming "a one-sided smile".
    core = re.sub(r"^(a|an|the)\s+", "", phrase.lower())
    return re.compile(r"\b" + r"\s+".join(map(re.escape, core.split())) + r"\b")


def cue_patterns(phrases: Mapping[str, Mapping[str, str]]) -> dict[str, re.Pattern]:
    """One pattern per cue key of a set's vocabulary (``{"face": {key: phrase}, "voice": {key: phrase}}``)."""
    return {key: _cue_pattern(p) for group in phrases.values() for key, p in group.items()}


def cue_mentions(reason_text: str, cues: Mapping[str, Sequence[str]],
                 phrases: Mapping[str, Mapping[str, str]]) -> dict:
    """Which synthetic cue phrases ``reason_text`` names, split by whether the clip has them.

    ``cues`` is a clip's ``cues`` record (``face_cues`` and ``voice_cues`` lists of cue keys); ``phrases`` the
    set's cue vocabulary, as its ``cue_phrases.json`` holds it (:func:`read_cue_phrases`).
    """
    text = reason_text.lower()
    named = [key for key, pattern in cue_patterns(phrases).items() if pattern.search(text)]
    have = {*cues.get("face_cues", ()), *cues.get("voice_cues", ())}
    present = [k for k in named if k in have]
    absent = [k for k in named if k not in have]
    return {"present": len(present), "absent": len(absent), "named_present": present,
            "named_absent": absent, "not_named": sorted(have - set(named))}


def cue_summary(reasons: Mapping[str, str], cue_records: Mapping[str, Mapping],
                phrases: Mapping[str, Mapping[str, str]]) -> dict | None:
    """Cue mentions summed over the clips whose json records their cues (``None`` when none does)."""
    checks = [cue_mentions(reasons[n], cue_records[n], phrases) for n in reasons if n in cue_records]
    if not checks:
        return None
    named = sum(c["present"] + c["absent"] for c in checks)
    return {"n": len(checks), "named_present": sum(c["present"] for c in checks),
            "named_absent": sum(c["absent"] for c in checks),
            "precision": sum(c["present"] for c in checks) / named if named else None}


# ---------------------------------------------------------------------------------------------- entry point


def evaluate_reasoning(cfg: DictConfig, judge_fn: JudgeFn | None = None,
                       paths: Mapping[str, object] | None = None) -> dict:
    """Generate explanations for the ground-truth clips, write reasons.csv, judge them, write reasoning.json.
    ``paths``: the weight paths the user named, which replace the checkpoint's."""
    if judge_fn is None and cfg.judge.get("model"):
        _check_judge_dir(cfg.judge.model)  # before generating, not after minutes of it
    truth = load_truth(cfg)
    core = InferenceCore.load(cfg.checkpoint, paths, cfg.device)
    if core.reads_pixels:
        raise UserError(f"{cfg.checkpoint} holds a model of still images (model.backbone={core.config.backbone}); "
                        "EMER reasoning is judged on videos: use a checkpoint of the emotion_llama backbone")
    names = sorted(truth)
    store = FeatureStore(cfg.reasoning.get("features_dir") or cfg.data.features_dir, cfg.data.feature_dirs,
                         shapes=core.model.feature_shapes)
    have, missing = store.split_available(names)
    if missing:
        log.warning("%d of %d clips have no features and get no explanation (e.g. %s)", len(missing), len(names), missing[0])
    drop = list(cfg.reasoning.drop or [])
    features = LazyFeatures(store, have, drop)
    subtitles = {} if "text" in drop else {n: truth[n].subtitle for n in have}
    evaluator = ReasonEvaluator(core, cfg.data.labels, cfg.data.get("label_map"), cfg.reasoning.batch_size,
                                cfg.reasoning.max_new_tokens)
    preds = evaluator.reasons(have, subtitles, features)
    reasons = {p.name: p.answer for p in preds}
    report = _base_report(cfg, truth, preds, missing)
    report["judge"], judgements = _judge_block(cfg, reasons, truth, judge_fn)
    cues = _cue_records(cfg)
    if cues:
        report["cues"] = cue_summary(reasons, cues, _cue_phrases(cfg))
    # The outputs land together, or none of them: never new reasons beside an earlier run's report.
    with atomic_files(Path(cfg.run_dir), remove=[JUDGEMENTS]) as out:
        write_emer_predictions(out / "reasons.csv", reasons)
        if judgements is not None:
            _write_judgements(out / JUDGEMENTS, judgements)
        (out / "reasoning.json").write_text(json_text(report, indent=2), encoding="utf-8")
    return report


def _base_report(cfg: DictConfig, truth: Mapping[str, Truth], preds: Sequence[ClipPrediction],
                 missing: list[str]) -> dict:
    # The label an explanation concludes, against the truth: a cheap check that needs no judge.
    correct = sum(p.prediction == truth[p.name].emotion for p in preds)
    return {"checkpoint": str(cfg.checkpoint), "n": len(preds), "drop": list(cfg.reasoning.drop or []),
            "concluded_label_accuracy": correct / len(preds) if preds else None,
            "n_no_label": sum(p.prediction is None for p in preds),
            "missing": {"count": len(missing), "names": missing}}


def _judge_block(cfg: DictConfig, reasons: Mapping[str, str], truth: Mapping[str, Truth],
                 judge_fn: JudgeFn | None) -> tuple[dict, list[dict] | None]:
    """The report's judge block and the per-clip judgements (None when no judge ran)."""
    if judge_fn is None:
        if not cfg.judge.get("model"):
            skipped = "not run: set judge.model=DIR (a local Hugging Face causal LM) to score the reasons"
            return {"skipped": skipped}, None
        judge_fn = hf_judge(cfg.judge.model, resolve_device(cfg.judge.device), cfg.judge.max_new_tokens)
    summary, rows = judge(reasons, truth, judge_fn, cfg.judge.batch_size)
    return {"model": str(cfg.judge.get("model") or "<callable>"), "prompt": JUDGE_PROMPT, **summary}, rows


def _write_judgements(path: Path, rows: Sequence[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["names", "clue", "label", "reply"])
        writer.writeheader()
        writer.writerows(rows)


def _cue_records(cfg: DictConfig) -> dict[str, Mapping]:
    fine = cfg.data.get("fine_json")
    if cfg.reasoning.get("ground_truth") or not fine or not Path(fine).is_file():
        return {}
    records = {n: r["cues"] for n, r in read_merr_json(fine).items() if isinstance(r.get("cues"), dict)}
    vocabulary = cue_phrases_path(Path(fine).parent)
    if records and not vocabulary.is_file():
        log.warning("no cue check: %s is missing (tools/make_synthetic.py on that set adds it)", vocabulary)
        return {}
    return records


def _cue_phrases(cfg: DictConfig) -> dict[str, dict[str, str]]:
    """The cue vocabulary the generator wrote next to the data's fine json."""
    return read_cue_phrases(Path(cfg.data.fine_json).parent)
