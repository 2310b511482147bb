"""make demo: the embedded default end to end, on CPU: synthetic clips -> tiny encoders -> features -> stage 1 -> stage 2
-> zero-shot-style evaluation (MERR test split, DFEW and MER2023 formats, each modality dropped)
-> inference with a card on one test video -> ``summary.json``."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from hydra import compose
from omegaconf import DictConfig

from emotion_llama.cli import Call, run
from emotion_llama.commands.infer import infer
from emotion_llama.errors import UserError
from emotion_llama.evaluation.evaluate import evaluate
from emotion_llama.evaluation.reasoning import evaluate_reasoning
from emotion_llama.evaluation.unibench import evaluate_unibench
from emotion_llama.fileio import atomic_write_text, json_text
from emotion_llama.inference.video import Failure
from emotion_llama.training.train import train

log = logging.getLogger("emotion_llama.demo")
DEFAULT_MODEL = "tiny"

def _train_cfg(cfg: DictConfig, experiment: str, init_from: str | None = None) -> DictConfig:
    overrides = [f"experiment={experiment}", f"paths.output_dir={cfg.paths.output_dir}",
                 f"data.generate.clips_per_label={cfg.clips_per_label}", f"data.generate.seed={cfg.seed}",
                 f"face_detector={cfg.face_detector}", f"model={cfg.model.preset}"]
    if cfg.model.preset != DEFAULT_MODEL:  # each backbone's runs beside the others'
        overrides.append(f"name={experiment}_{cfg.model.preset}")
    if init_from:
        overrides.append(f"stage.init_from={init_from}")
    return compose(config_name="train", overrides=[*overrides, *cfg.train_overrides])


def _stage(cfg: DictConfig, experiment: str, init_from: str | None = None) -> dict:
    metrics, objects = train(_train_cfg(cfg, experiment, init_from))
    return {"metrics": metrics, "model": str(objects["export"])}


def _eval(cfg: DictConfig, checkpoint: str, data: str, tag: str = "", drop: str = "[]") -> dict:
    overrides = [f"paths.output_dir={cfg.paths.output_dir}", f"data={data}", f"checkpoint={checkpoint}",
                 f"eval.drop={drop}", f"eval.tag={tag}", f"run_dir={cfg.demo_dir}/eval/{data}{tag}",
                 f"face_detector={cfg.face_detector}"]
    report = evaluate(compose(config_name="eval", overrides=overrides))
    return {k: report[k] for k in ("war", "uar", "weighted_f1", "macro_f1")} | {
        "metrics": f"{cfg.demo_dir}/eval/{data}{tag}/metrics.json"}


def _openset(cfg: DictConfig, checkpoint: str) -> dict:
    """MER-UniBench's open-vocabulary protocol on the synthetic test clips (OV-MERD+'s layout, synthetic wheel,
    rule-based extraction): the set F-score of the answers' emotion words."""
    run_dir = f"{cfg.demo_dir}/eval/synthetic_ov"
    overrides = [f"paths.output_dir={cfg.paths.output_dir}", "data=synthetic_ov", f"checkpoint={checkpoint}",
                 f"run_dir={run_dir}", f"face_detector={cfg.face_detector}"]
    report = evaluate_unibench(compose(config_name="eval", overrides=overrides))
    return {k: report[k] for k in ("fscore", "precision", "recall")} | {"metrics": f"{run_dir}/metrics.json"}


def _reasoning(cfg: DictConfig, checkpoint: str) -> dict:
    """Explanations of the test clips, checked against the cues each clip was drawn with."""
    run_dir = f"{cfg.demo_dir}/eval/reasoning"
    overrides = [f"paths.output_dir={cfg.paths.output_dir}", "data=synthetic", f"checkpoint={checkpoint}",
                 f"run_dir={run_dir}"]
    report = evaluate_reasoning(compose(config_name="eval_reasoning", overrides=overrides))
    return {"n": report["n"], "concluded_label_accuracy": report.get("concluded_label_accuracy"),
            "cues": report.get("cues"), "reasons": f"{run_dir}/reasons.csv"}


def _infer(cfg: DictConfig, checkpoint: str, video: Path) -> dict:
    """``emotion-llama-infer VIDEO checkpoint=... task=reason card=...`` with the synthetic set's subtitles, through
    the command's own function (its printing left to the summary)."""
    card = Path(cfg.demo_dir) / "card.png"
    overrides = [f"paths.output_dir={cfg.paths.output_dir}", f"checkpoint={checkpoint}", "task=reason",
                 f"card={card}", f"subtitles={Path(cfg.paths.synthetic_dir) / 'subtitles.csv'}",
                 f"face_detector={cfg.face_detector}"]
    (pred,) = infer(compose(config_name="infer", overrides=overrides), [str(video)], show=False)
    if isinstance(pred, Failure):
        raise UserError(f"inference failed on {pred}")
    return pred.to_dict() | {"card": str(card)}


def run_demo(cfg: DictConfig) -> dict:
    start = time.perf_counter()
    log.info("stage 1 (labels and descriptions); makes the synthetic set, tiny encoders and features first")
    coarse = _stage(cfg, "tiny_coarse")
    log.info("stage 2 (reasoning), from stage 1's model")
    fine = _stage(cfg, "tiny_fine", init_from=coarse["model"])
    ckpt = fine["model"]
    log.info("evaluation on the test split, then with each modality dropped, then in DFEW and MER2023 formats")
    test = _eval(cfg, ckpt, "synthetic")
    ablation = {m: _eval(cfg, ckpt, "synthetic", f"_no_{m}", f"[{m}]") for m in ("visual", "audio", "text")}
    dfew = _eval(cfg, ckpt, "dfew")
    mer = _eval(cfg, ckpt, "mer2023")
    log.info("open-vocabulary answers (MER-UniBench's OV-MERD+ protocol) on the test clips")
    openset = _openset(cfg, ckpt)
    first_test = Path(cfg.paths.synthetic_dir, "splits", "test.txt").read_text().split()[0]
    video = Path(cfg.paths.synthetic_dir, "videos", f"{first_test}.mp4")
    log.info("explanations of the test clips, checked against their cues")
    reasoning = _reasoning(cfg, ckpt)
    log.info("inference on %s with a card", video)
    inference = _infer(cfg, ckpt, video)
    summary = {
        "test_war": test["war"], "test_uar": test["uar"],
        "ablation_war": {m: r["war"] for m, r in ablation.items()},
        "ablation_drop": {m: test["war"] - r["war"] for m, r in ablation.items()},
        "dfew": dfew, "mer2023": mer,
        "openset_fscore": openset["fscore"], "openset": openset,
        "stage1": coarse["metrics"], "stage2": fine["metrics"],
        "reasoning": reasoning,
        "inference": inference,
        "model": cfg.model.preset, "checkpoint": ckpt, "metrics": test["metrics"], "card": inference["card"],
        "minutes": (time.perf_counter() - start) / 60,
    }
    atomic_write_text(Path(cfg.demo_dir) / "summary.json", json_text(summary, indent=2))
    return summary


def format_summary(s: dict) -> str:
    drops = ", ".join(f"{m} {w:.3f}" for m, w in s["ablation_war"].items())
    return "\n".join([
        f"test split (9 labels): WAR {s['test_war']:.3f}  UAR {s['test_uar']:.3f}",
        f"WAR with one modality dropped: {drops}",
        f"DFEW format (5 folds): WAR {s['dfew']['war']:.3f}  UAR {s['dfew']['uar']:.3f}",
        f"MER2023 format: weighted F1 {s['mer2023']['weighted_f1']:.3f}",
        f"open vocabulary (OV-MERD+ layout, synthetic wheel, rule extractor): set F-score {s['openset_fscore']:.3f}"
        f"  (precision {s['openset']['precision']:.3f}, recall {s['openset']['recall']:.3f})",
        f"explanations: {_cue_line(s['reasoning'])}",
        f"inference on {s['inference']['video']}: {s['inference']['emotion']}; card {s['card']}",
        f"checkpoint {s['checkpoint']}" + (" (tools/infer.py uses it by default)" if s["model"] == DEFAULT_MODEL
                                           else f" (tools/infer.py checkpoint={s['checkpoint']})"),
        f"{s['minutes']:.1f} minutes",
    ])


def _cue_line(r: dict) -> str:
    cues = r.get("cues") or {}
    precision = cues.get("precision")
    shown = "n/a" if precision is None else f"{precision:.3f}"
    accuracy = r.get("concluded_label_accuracy")
    return (f"{r['n']} test clips; cues named that the clip really has: {shown} "
            f"({cues.get('named_present', 0)} present, {cues.get('named_absent', 0)} absent); "
            f"concluded label accuracy {'n/a' if accuracy is None else f'{accuracy:.3f}'}")


def main(cfg: DictConfig, call: Call) -> None:
    if cfg.model.preset != DEFAULT_MODEL and "demo_dir" not in call.named(""):
        cfg.demo_dir = f"{cfg.demo_dir}_{cfg.model.preset}"
    summary = run_demo(cfg)
    print(format_summary(summary))
    print(f"summary: {cfg.demo_dir}/summary.json")
    print(json_text({k: summary[k] for k in ("test_war", "test_uar", "ablation_war", "minutes")}))


if __name__ == "__main__":
    sys.exit(run("demo", main, literal=("demo_dir",)))
