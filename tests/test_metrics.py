import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from emotion_llama.evaluation.metrics import (
    classification_report,
    mean_over_folds,
    mer_combined,
    plot_confusion,
    valence_mse,
)
from emotion_llama.labels import DFEW_LABELS, MER_LABELS

# Emotion-LLaMA's released MER2023-SEMI confusion matrix (rows = truth, columns = prediction, MER_LABELS).
SEMI_CONFUSION = [
    [179, 1, 2, 1, 0, 0],
    [2, 152, 7, 4, 3, 1],
    [10, 10, 134, 6, 2, 4],
    [2, 2, 1, 250, 0, 2],
    [1, 0, 3, 1, 6, 3],
    [4, 1, 3, 2, 1, 34],
]


def expand(confusion, labels):
    y_true, y_pred = [], []
    for (i, j), count in np.ndenumerate(np.asarray(confusion)):
        y_true += [labels[i]] * count
        y_pred += [labels[j]] * count
    return y_true, y_pred


def test_reproduces_the_released_mer2023_semi_figures():
    report = classification_report(*expand(SEMI_CONFUSION, MER_LABELS), labels=MER_LABELS)
    assert report["n"] == 834
    assert round(report["weighted_f1"], 4) == 0.9036
    assert round(report["war"], 4) == 0.9053
    assert report["confusion"] == SEMI_CONFUSION
    assert report["per_class"]["worried"]["support"] == 14


def torch_reference(y_true, y_pred, labels):
    index = {label: i for i, label in enumerate(labels)}
    t = torch.tensor([index[y] for y in y_true])
    p = torch.tensor([index[y] for y in y_pred])
    k = len(labels)
    return {
        "war": MulticlassAccuracy(k, average="micro")(p, t).item(),
        "uar": MulticlassAccuracy(k, average="macro")(p, t).item(),
        "weighted_f1": MulticlassF1Score(k, average="weighted")(p, t).item(),
        "macro_f1": MulticlassF1Score(k, average="macro")(p, t).item(),
        "confusion": MulticlassConfusionMatrix(k)(p, t).tolist(),
    }


@pytest.mark.parametrize("seed", range(4))
def test_matches_torchmetrics_on_random_data(seed):
    rng = np.random.default_rng(seed)
    labels = list(DFEW_LABELS)
    y_true = list(rng.choice(labels, 300))
    # Mostly right, so that classes differ in precision and recall.
    y_pred = [t if rng.random() < 0.6 else rng.choice(labels) for t in y_true]
    assert set(y_true) == set(labels)  # torchmetrics' macro recall also counts classes absent from the truth
    ours, ref = classification_report(y_true, y_pred, labels), torch_reference(y_true, y_pred, labels)
    for key in ("war", "uar", "weighted_f1", "macro_f1"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-6), key
    assert ours["confusion"] == ref["confusion"]


def test_f1_matches_torchmetrics_when_a_class_never_occurs():
    labels = list(MER_LABELS)
    y_true = ["happy", "sad", "sad", "angry", "neutral", "happy"]
    y_pred = ["happy", "sad", "worried", "angry", "happy", "happy"]  # no surprise; worried only predicted
    ours, ref = classification_report(y_true, y_pred, labels), torch_reference(y_true, y_pred, labels)
    assert ours["macro_f1"] == pytest.approx(ref["macro_f1"], abs=1e-6)
    assert ours["weighted_f1"] == pytest.approx(ref["weighted_f1"], abs=1e-6)
    assert ours["uar"] == pytest.approx((1 + 0.5 + 1 + 0) / 4)  # over the four true classes only


def test_prediction_outside_the_label_set_counts_as_wrong():
    labels = ["happy", "sad"]
    y_true = ["happy", "happy", "sad", "sad"]
    base = classification_report(y_true, ["happy", "happy", "sad", "sad"], labels)
    report = classification_report(y_true, ["happy", None, "sad", "unparseable"], labels)
    assert base["war"] == 1.0
    assert report["war"] == 0.5 and report["uar"] == 0.5
    happy = report["per_class"]["happy"]
    assert happy == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert report["confusion"] == [[1, 0], [0, 1]]
    assert report["invalid"] == [1, 1] and report["n_invalid"] == 2 and report["n"] == 4


def test_unknown_truth_and_length_mismatch_are_errors():
    with pytest.raises(ValueError, match="not in the label set"):
        classification_report(["joy"], ["happy"], ["happy"])
    with pytest.raises(ValueError, match="1 items but y_pred has 2"):
        classification_report(["happy"], ["happy", "happy"], ["happy"])


def test_valence_and_combined_score():
    assert valence_mse([1.0, -2.0, 0.0], [0.0, -2.0, 2.0]) == pytest.approx(5 / 3)
    assert mer_combined(0.8, 0.4) == pytest.approx(0.7)
    with pytest.raises(ValueError):
        valence_mse([1.0], [])


def test_mean_over_folds():
    folds = [{"war": 0.5, "uar": 0.4, "weighted_f1": 0.3, "macro_f1": 0.2},
             {"war": 0.7, "uar": 0.6, "weighted_f1": 0.5, "macro_f1": 0.2}]
    summary = mean_over_folds(folds)
    assert summary["n_folds"] == 2
    assert summary["war"] == pytest.approx(0.6) and summary["war_std"] == pytest.approx(0.1)
    assert summary["macro_f1_std"] == 0.0


def test_plot_confusion_writes_a_png(tmp_path):
    report = classification_report(*expand(SEMI_CONFUSION, MER_LABELS), labels=MER_LABELS)
    path = tmp_path / "plots" / "semi.png"
    plot_confusion(report["confusion"], MER_LABELS, path, "MER2023-SEMI", invalid=report["invalid"])
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert [p.name for p in path.parent.iterdir()] == ["semi.png"]
