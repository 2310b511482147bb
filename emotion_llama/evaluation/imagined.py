"""Text-only emotion recognition through imagination (WALL-E) on dialogue data: MELD, IEMOCAP and the
synthetic MELD-layout set (``tools/eval.py data=meld|iemocap|synthetic_meld variant=... mapper=...``).

Each utterance is answered by the checkpoint's model in one or two variants:

- ``text``: the utterance alone; every modality is absent in the presence mask, the prompt is the image/text
  one (:data:`~emotion_llama.model.prompts.IMAGE_TEMPLATE`) with the utterance as its text line.
- ``imagined``: the utterance plus a picture of it drawn by a local text-to-image pipeline
  (:class:`~emotion_llama.imagination.imagine.Imaginer`: ``imagine.prompt_template`` filled from the utterance,
  its speaker and the last ``imagine.context_turns`` turns; per-utterance seed; cached, so a rerun draws
  nothing). The picture goes through the model's image path: for Emotion-LLaMA its EVA features, computed by
  the extraction code's own image decoding and EVA encoder, with EVA the only modality present; for a backbone
  that preprocesses images itself (InstructBLIP), its pixel values.
- ``both``: the two, reported side by side.

Training on the same data (``tools/train.py data=meld|synthetic_meld``, ``data.media: text``) asks the same
prompts and, with ``data.imagined=true``, draws into the same cache with the same settings and gives the model
the same EVA features: both use :mod:`emotion_llama.imagination.pictures`.

The model is reached only through :class:`~emotion_llama.inference.core.InferenceCore` (loaded with
:meth:`~emotion_llama.inference.core.InferenceCore.load`, so any backbone ``load_checkpoint`` knows works).
The answer becomes a label by ``mapper``: ``score`` ranks the labels by the model's log-likelihood of each as
the answer (the probability of the chosen one, a softmax over the labels, is its "similarity"); ``parse`` and
``embedding`` read the greedy free-text answer, the first with the project's answer parser (similarity 1 when
a label is found, 0 when none is: counted as wrong), the second, WALL-E's way, by cosine similarity between the
answer's sentence embedding and each label description's.

Outputs in ``run_dir`` (written together, atomically): ``metrics.json`` (weighted F1 first, as WALL-E
reports it, then WAR, UAR, macro F1, per class and the confusion matrix, per variant; the top-level figures
are the ``imagined`` variant's when it ran, else ``text``'s), ``predictions.csv`` (one row per utterance and
variant), ``confusion_<variant>.png`` and ``imagined_grid.png`` (a few pictures with their utterance and
answer; only when pictures were drawn).
"""

from __future__ import annotations

import csv
import logging
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from emotion_llama.datasets.dialogue import DIALOGUE_KINDS, dialogue_labels
from emotion_llama.datasets.iemocap import read_iemocap
from emotion_llama.datasets.meld import SPLIT_FILES, read_meld_split
from emotion_llama.errors import UserError
from emotion_llama.evaluation.metrics import classification_report, plot_confusion
from emotion_llama.fileio import atomic_files, atomic_path, json_text
from emotion_llama.imagination.mapper import build_mapper, default_embedding_model
from emotion_llama.imagination.pictures import ImageInputs, build_imaginer, check_imagine, text_inputs
from emotion_llama.inference.core import InferenceCore
from emotion_llama.model.checkpoint import read_config
from emotion_llama.model.prompts import answer_text

log = logging.getLogger(__name__)

VARIANTS = ("text", "imagined")
VARIANT_CHOICES = (*VARIANTS, "both")
MEDIA = {"text": "text", "imagined": "image"}  # the prompt each variant uses (model.prompts.MEDIA)
METRIC_ORDER = ("weighted_f1", "war", "uar", "macro_f1")  # weighted F1 first, as WALL-E reports it
PREDICTION_COLUMNS = ("id", "dialogue", "speaker", "utterance", "label", "variant", "mapper", "image", "prompt",
                      "answer", "mapped", "similarity", "correct")
GRID_FILE = "imagined_grid.png"
# Weighted F1 (%) of WALL-E (arXiv 2308.10354): its imagination pipeline and the best text-only LLM it compares with.
PUBLISHED = {
    "meld": {"imagined_weighted_f1": 46.74, "text_only_llm_weighted_f1": 22.89},
    "iemocap": {"imagined_weighted_f1": 25.23, "text_only_llm_weighted_f1": 12.28,
                "note": "the paper does not state its IEMOCAP class setup"},
}


def variants_of(variant: str) -> tuple[str, ...]:
    if variant == "both":
        return VARIANTS
    if variant in VARIANTS:
        return (variant,)
    raise UserError(f"variant={variant}: use one of {', '.join(VARIANT_CHOICES)}")


# ---------------------------------------------------------------------------------------------- data


def load_utterances(data: DictConfig) -> list:
    """The utterances to evaluate (``data.limit``: only the first N), generating the synthetic set first
    when the data config names a generator."""
    if data.kind == "meld":
        split = data.get("split", "test")
        if split not in SPLIT_FILES:
            raise UserError(f"data.split={split}: use one of {', '.join(SPLIT_FILES)}")
        if data.get("generate"):
            from hydra.utils import instantiate

            instantiate(data.generate)(data.root)  # deterministic, atomic, milliseconds: always in step with it
        utterances = read_meld_split(data.root, split)
    elif data.kind == "iemocap":
        sessions = list(data.get("sessions") or (1, 2, 3, 4, 5))
        if not all(isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 5 for n in sessions):
            raise UserError(f"data.sessions=[{','.join(map(str, sessions))}]: use some of IEMOCAP's sessions 1..5, "
                            "e.g. data.sessions=[5]")
        utterances = read_iemocap(data.root, classes=data.get("classes", 4), sessions=sessions)
    else:
        raise UserError(f"data.kind={data.kind} is not a dialogue set: use one of {', '.join(DIALOGUE_KINDS)}")
    limit = data.get("limit")
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise UserError(f"data.limit={limit}: use a whole number of at least 1, or null for all utterances")
        utterances = utterances[:limit]
    if not utterances:
        raise UserError(f"no labelled utterance in {data.root}: check data.root (and data.split, data.sessions)")
    return utterances


# ---------------------------------------------------------------------------------------------- settings


def check_settings(cfg: DictConfig) -> None:
    """What the per-key checks cannot see: the keys a variant or mapper needs, the template. Runs before
    anything loads."""
    if "imagined" in variants_of(cfg.variant):
        check_imagine(cfg, f"variant={cfg.variant}", "use variant=text")


# ---------------------------------------------------------------------------------------------- answering


@dataclass
class Answer:
    id: str
    variant: str
    image: str  # the picture's path ("" for the text variant)
    answer: str  # the generated answer; for mapper=score the scored answer of the chosen label
    mapped: str | None  # None: the answer named no label
    similarity: float


def answer_variant(core, utterances: Sequence, variant: str, mapper_kind: str, mapper, labels: Sequence[str],
                   images: Mapping[str, Path] | None = None, batch_size: int = 16, max_new_tokens: int = 16,
                   image_inputs: Callable[[Sequence[Path]], dict] | None = None) -> list[Answer]:
    """The model's answer to each utterance in ``variant`` (pictures from ``images`` by utterance id), mapped
    to a label by ``mapper`` (built by :func:`~emotion_llama.imagination.mapper.build_mapper`)."""
    from tqdm.auto import tqdm

    media = MEDIA[variant]
    if variant == "imagined":
        if images is None:
            raise ValueError("the imagined variant needs the pictures")
        image_inputs = image_inputs or ImageInputs(core)
    out: list[Answer] = []
    starts = range(0, len(utterances), batch_size)
    for start in tqdm(starts, desc=f"{variant} ({mapper_kind})", unit="batch", disable=None, leave=False):
        batch = utterances[start:start + batch_size]
        texts = [u.text for u in batch]
        paths = [images[u.id] for u in batch] if variant == "imagined" else []
        feats = image_inputs(paths) if variant == "imagined" else text_inputs(len(batch))
        if mapper_kind == "score":
            logp = core.score(texts, feats, labels, media=media)  # (B, K) log-likelihoods
            mapped = mapper.map_many(logp.softmax(-1))
            answers = [answer_text(m.label, media) for m in mapped]
        else:
            answers = core.generate(texts, feats, "emotion", labels, max_new_tokens, media=media)
            mapped = mapper.map_many(answers)
        for i, (u, text, m) in enumerate(zip(batch, answers, mapped, strict=True)):
            out.append(Answer(u.id, variant, str(paths[i]) if paths else "", text, m.label, float(m.score)))
    return out


# ---------------------------------------------------------------------------------------------- the evaluation


def evaluate_dialogue(cfg: DictConfig, paths: Mapping[str, object] | None = None) -> dict:
    """Run the evaluation ``cfg`` describes (see the module doc) and write its outputs; returns metrics.json.
    ``paths``: the weight paths the user named, which replace the checkpoint's."""
    import torch

    check_settings(cfg)
    read_config(cfg.checkpoint)  # a folder that is no checkpoint is refused before pictures are drawn
    wanted = variants_of(cfg.variant)
    labels = dialogue_labels(cfg.data)
    utterances = load_utterances(cfg.data)
    log.info("%s: %d utterances, %d labels; variants %s, mapper %s", cfg.data.get("name", cfg.data.kind),
             len(utterances), len(labels), "+".join(wanted), cfg.mapper)
    seconds: dict[str, float] = {}
    # The mapper before the model: a missing embedding model is reported before minutes of loading.
    mapper = build_mapper(cfg.mapper, labels, cfg.paths.get("embedder"), device=cfg.device)
    images, imagination = None, None
    if "imagined" in wanted:
        start = time.perf_counter()
        images, imagination = _imagine(cfg, utterances)
        seconds["imagine"] = time.perf_counter() - start
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the pipeline is gone: its memory goes back before the model loads
    start = time.perf_counter()
    core = InferenceCore.load(cfg.checkpoint, paths, cfg.device, layout=cfg.prompt_layout)
    seconds["load_model"] = time.perf_counter() - start
    answers: dict[str, list[Answer]] = {}
    for variant in wanted:
        start = time.perf_counter()
        answers[variant] = answer_variant(core, utterances, variant, cfg.mapper, mapper, labels, images,
                                          cfg.eval.batch_size, cfg.eval.max_new_tokens)
        seconds[variant] = time.perf_counter() - start
    report = build_report(cfg, utterances, labels, answers, imagination, seconds)
    write_outputs(Path(cfg.run_dir), utterances, labels, answers, report, grid=int(cfg.imagine.grid),
                  prompts=(imagination or {}).get("prompts"))
    return report


def _imagine(cfg: DictConfig, utterances: Sequence) -> tuple[dict[str, Path], dict]:
    imaginer = build_imaginer(cfg)
    done = imaginer.imagine(utterances)
    prompts = {u.id: imaginer.prompt(u) for u in utterances}
    info = {"pipeline": str(cfg.paths.t2i), "fingerprint": imaginer.fingerprint, "cache": str(imaginer.image_dir),
            "template": cfg.imagine.prompt_template, "settings": imaginer.settings(), "drawn": done.drawn,
            "cached": done.cached, "prompts": prompts}
    return done.paths, info


def build_report(cfg: DictConfig, utterances: Sequence, labels: Sequence[str], answers: Mapping[str, list[Answer]],
                 imagination: dict | None, seconds: Mapping[str, float]) -> dict:
    truth = [u.label for u in utterances]
    per: dict[str, dict] = {}
    for variant, rows in answers.items():
        rep = classification_report(truth, [a.mapped for a in rows], labels)
        ordered = {k: rep[k] for k in METRIC_ORDER}
        per[variant] = ordered | {k: v for k, v in rep.items() if k not in ordered} | {
            "n_unmapped": sum(a.mapped is None for a in rows),
            "mean_similarity": sum(a.similarity for a in rows) / len(rows)}
    primary = "imagined" if "imagined" in per else "text"
    name = str(cfg.data.get("name", cfg.data.kind))
    report = {k: per[primary][k] for k in METRIC_ORDER}
    report |= {"primary_variant": primary, "data": name, "kind": cfg.data.kind, "variant": cfg.variant,
               "mapper": cfg.mapper, "checkpoint": str(cfg.checkpoint), "labels": list(labels), "n": len(truth),
               "variants": per}
    if len(per) == 2:
        report["imagined_minus_text"] = {k: per["imagined"][k] - per["text"][k] for k in METRIC_ORDER}
    if imagination is not None:
        report["imagination"] = {k: v for k, v in imagination.items() if k != "prompts"}
    if cfg.mapper == "embedding":
        report["embedder"] = str(cfg.paths.get("embedder") or default_embedding_model())
    if cfg.data.kind in PUBLISHED and not cfg.data.get("generate"):
        report["published"] = PUBLISHED[cfg.data.kind] | {"source": "WALL-E, arXiv 2308.10354 (weighted F1, %)"}
    report["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
    return report


# ---------------------------------------------------------------------------------------------- outputs


def write_outputs(run_dir: Path, utterances: Sequence, labels: Sequence[str], answers: Mapping[str, list[Answer]],
                  report: dict, grid: int = 8, prompts: Mapping[str, str] | None = None) -> None:
    """metrics.json, predictions.csv, a confusion picture per variant and the grid of pictures, together
    (``prompts``: the imagination prompt of each utterance id, for the csv)."""
    prompts = prompts or {}
    by_id = {u.id: u for u in utterances}
    with atomic_files(run_dir) as out:
        (out / "metrics.json").write_text(json_text(report, indent=2), encoding="utf-8")
        with open(out / "predictions.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(PREDICTION_COLUMNS)
            for variant, rows in answers.items():
                for a in rows:
                    u = by_id[a.id]
                    writer.writerow([a.id, u.dialogue, u.speaker, u.text, u.label, variant, report["mapper"],
                                     a.image, prompts.get(a.id, "") if a.image else "", a.answer, a.mapped or "",
                                     f"{a.similarity:.4f}", int(a.mapped == u.label)])
        for variant, rep in report["variants"].items():
            plot_confusion(rep["confusion"], labels, out / f"confusion_{variant}.png",
                           title=f"{report['data']} {variant} ({report['mapper']})", invalid=rep["invalid"])
        if "imagined" in answers and grid > 0:
            save_grid(out / GRID_FILE, utterances, answers, grid)


def save_grid(path: Path, utterances: Sequence, answers: Mapping[str, list[Answer]], count: int = 8,
              columns: int = 4) -> Path:
    """The first ``count`` pictures, each above its utterance, true label and answer (and the text-only
    variant's label when it ran)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    imagined = answers["imagined"][:count]
    text = {a.id: a for a in answers.get("text", [])}
    by_id = {u.id: u for u in utterances}
    columns = max(1, min(columns, len(imagined)))
    rows = -(-len(imagined) // columns)
    fig = Figure(figsize=(3.2 * columns, 4.4 * rows))
    FigureCanvasAgg(fig)
    for i, a in enumerate(imagined):
        u = by_id[a.id]
        ax = fig.add_subplot(rows, columns, i + 1)
        with Image.open(a.image) as picture:
            ax.imshow(picture.convert("RGB"))
        ax.set_axis_off()
        said = textwrap.shorten(f"{u.speaker}: {u.text}", 90, placeholder="...")
        answer = textwrap.shorten(a.answer or "(empty)", 60, placeholder="...")
        lines = [*textwrap.wrap(f'"{said}"', 34), f"true: {u.label}",
                 *textwrap.wrap(f"answer: {answer}", 34), f"-> {a.mapped or '(no label)'} ({a.similarity:.2f})"]
        if a.id in text:
            lines.append(f"text only -> {text[a.id].mapped or '(no label)'}")
        ax.set_title("\n".join(lines), fontsize=7, loc="left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def format_report(report: dict) -> str:
    """A table of the variants' figures (weighted F1 first) and, for real MELD/IEMOCAP, the published ones."""
    rows = [f"{report['data']} ({report['n']} utterances), mapper={report['mapper']}",
            f"{'variant':<9} " + " ".join(f"{k:>11}" for k in METRIC_ORDER) + f" {'unmapped':>9}"]
    for variant, rep in report["variants"].items():
        rows.append(f"{variant:<9} " + " ".join(f"{rep[k]:>11.4f}" for k in METRIC_ORDER)
                    + f" {rep['n_unmapped']:>9}")
    if "imagination" in report:
        im = report["imagination"]
        rows.append(f"pictures: {im['drawn']} drawn, {im['cached']} from the cache ({im['cache']})")
    if "published" in report:
        pub = report["published"]
        rows.append(f"published weighted F1 (WALL-E): imagined {pub['imagined_weighted_f1']}, "
                    f"best text-only LLM {pub['text_only_llm_weighted_f1']}")
    return "\n".join(rows)
