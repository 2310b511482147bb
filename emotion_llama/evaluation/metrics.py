"""Emotion-recognition metrics: WAR/UAR (DFEW), weighted F1 (MER), valence MSE, confusion matrices.

A prediction outside ``labels`` (an unparseable answer, a label of another dataset) is counted as wrong,
never dropped: it lowers accuracy and the recall of its true class but is nobody's true positive, so no
class's precision changes. The square ``confusion`` has no column for it; such predictions are counted per
true class in ``invalid`` so that ``confusion[i].sum() + invalid[i] == support[i]``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    mean_squared_error,
    precision_recall_fscore_support,
)

from emotion_llama.fileio import atomic_path

SUMMARY_KEYS = ("war", "uar", "weighted_f1", "macro_f1")
INVALID = "<invalid>"


def classification_report(y_true: Sequence[str], y_pred: Sequence[str | None], labels: Sequence[str]) -> dict:
    """Return war, uar, weighted_f1, macro_f1, per_class, confusion, invalid, n_invalid and n.

    ``uar`` averages recall over the classes present in ``y_true`` (recall of an absent class is undefined);
    ``macro_f1`` averages F1 over the classes present in ``y_true`` or predicted (as torchmetrics does);
    ``weighted_f1`` weighs each class's F1 by its support, which ignores absent classes by construction.
    """
    labels, y_true = list(labels), list(y_true)
    # One placeholder for every out-of-set prediction (None included): scikit-learn cannot sort mixed types.
    y_pred = [p if p in labels else INVALID for p in y_pred]
    _check_inputs(y_true, y_pred, labels)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0
    )
    in_truth = support > 0
    predicted = np.isin(labels, y_pred)
    pairs = list(zip(y_true, y_pred, strict=True))
    return {
        "war": float(accuracy_score(y_true, y_pred)),
        "uar": float(recall[in_truth].mean()),
        "weighted_f1": float(np.average(f1, weights=support)),
        "macro_f1": float(f1[in_truth | predicted].mean()),
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
        },
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "invalid": [sum(t == label and p == INVALID for t, p in pairs) for label in labels],
        "n_invalid": y_pred.count(INVALID),
        "n": len(y_true),
    }


def _check_inputs(y_true: list[str], y_pred: list[str], labels: list[str]) -> None:
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} items but y_pred has {len(y_pred)}")
    if not y_true:
        raise ValueError("no samples to score")
    unknown = sorted(set(y_true) - set(labels))
    if unknown:
        raise ValueError(f"ground-truth labels {unknown} are not in the label set {labels}")


def valence_mse(true: Sequence[float], pred: Sequence[float]) -> float:
    if len(true) != len(pred) or not true:
        raise ValueError(f"valence_mse needs equally long, non-empty inputs, got {len(true)} and {len(pred)}")
    return float(mean_squared_error(np.asarray(true, float), np.asarray(pred, float)))


def mer_combined(f1: float, mse: float) -> float:
    """The MER2023 MULTI/NOISE score: discrete weighted F1 minus a quarter of the valence MSE."""
    return f1 - 0.25 * mse


def mean_over_folds(reports: Sequence[dict]) -> dict:
    """Mean and population std (ddof=0) of the summary metrics, flat for logging: ``war``, ``war_std``..."""
    if not reports:
        raise ValueError("mean_over_folds needs at least one report")
    out: dict = {"n_folds": len(reports)}
    for key in SUMMARY_KEYS:
        values = np.array([r[key] for r in reports], dtype=float)
        out[key], out[f"{key}_std"] = float(values.mean()), float(values.std())
    return out


def plot_confusion(
    confusion: Sequence[Sequence[int]],
    labels: Sequence[str],
    path: str | os.PathLike,
    title: str = "",
    invalid: Sequence[int] | None = None,
) -> None:
    """Write a PNG heat map of row-normalised rates with the counts annotated.

    ``invalid`` (from :func:`classification_report`) adds an "(invalid)" column so that the rows are
    normalised by the true support rather than by the in-set predictions only.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(confusion, dtype=float)
    columns = list(labels)
    if invalid is not None:
        counts = np.column_stack([counts, np.asarray(invalid, dtype=float)])
        columns.append("(invalid)")
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)

    size = 1.0 + 0.7 * max(len(columns), 3)
    fig = Figure(figsize=(size + 1.5, size))  # a bare Figure: no pyplot global state, no GUI backend
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(rates, vmin=0.0, vmax=1.0, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    _annotate(ax, rates, counts)
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), list(labels))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


def _annotate(ax, rates: np.ndarray, counts: np.ndarray) -> None:
    for (i, j), rate in np.ndenumerate(rates):
        if counts[i, j] or i == j:
            color = "white" if rate > 0.5 else "black"
            text = f"{rate:.2f}\n({int(counts[i, j])})"
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color=color)
