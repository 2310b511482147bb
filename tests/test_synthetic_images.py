"""The synthetic image emotion set: EmoSet's layout, determinism, resuming, attributes that match the
pixels, and labels that a linear model on colour statistics (or on a tiny random ViT's tokens) separates."""

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from emotion_llama.commands import make_synthetic_images
from emotion_llama.datasets.emoset import attribute_level, brightness, colorfulness, read_emoset
from emotion_llama.datasets.synthetic import images as syn
from emotion_llama.errors import UserError
from emotion_llama.labels import EMOSET_LABELS

PER_LABEL = 10  # enough for a held-out check (6 train / 4 test per label), a few seconds to draw


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return syn.generate_images(tmp_path_factory.mktemp("images") / "set", images_per_label=PER_LABEL, seed=0)


@pytest.fixture(scope="module")
def records(root):
    return sorted((r for s in ("train", "val", "test") for r in read_emoset(root, s)), key=lambda r: r.id)


def rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_layout_splits_and_info(root, records):
    assert len(records) == PER_LABEL * len(EMOSET_LABELS)
    for label in EMOSET_LABELS:
        names = sorted(p.name for p in (root / "image" / label).iterdir())
        assert names == [f"{label}_{i:05d}.jpg" for i in range(PER_LABEL)]
        assert len(list((root / "annotation" / label).glob("*.json"))) == PER_LABEL
    assert rgb(records[0].image).shape == (224, 224, 3)
    splits = {s: json.loads((root / f"{s}.json").read_text()) for s in ("train", "val", "test")}
    for entries in splits.values():
        for label, ident, image, annotation in entries:
            assert (image, annotation) == (f"image/{label}/{ident}.jpg", f"annotation/{label}/{ident}.json")
    ids = [e[1] for entries in splits.values() for e in entries]
    assert len(ids) == len(set(ids)) == len(records)
    for label in EMOSET_LABELS:  # 10 per label: 7 / 1 / 2 (80/5/15 rounded; at least one in val and test)
        counts = [sum(e[0] == label for e in splits[s]) for s in ("train", "val", "test")]
        assert counts == [7, 1, 2]
    info = json.loads((root / "info.json").read_text())
    assert info["emotion"]["idx2label"] == {str(i): label for i, label in enumerate(EMOSET_LABELS)}
    for r in records:  # every attribute value is in info.json's vocabularies (EmoSet's loader indexes them)
        assert str(r.annotation["brightness"]) in info["brightness"]["label2idx"]
        assert r.annotation["scene"] in info["scene"]["label2idx"]
        assert all(o in info["object"]["label2idx"] for o in r.annotation["object"])


def test_attributes_describe_the_pixels(records):
    by_label: dict[str, list[tuple[float, float]]] = {label: [] for label in EMOSET_LABELS}
    for r in records:
        img = rgb(r.image)
        assert r.annotation["brightness"] == attribute_level(brightness(img))
        assert r.annotation["colorfulness"] == attribute_level(colorfulness(img))
        by_label[r.label].append((brightness(img), colorfulness(img)))
        person = "person" in r.annotation["object"]
        assert ("facial_expression" in r.annotation) == person == ("human_action" in r.annotation)
        caption = r.annotation["caption"]
        assert caption.endswith(".") and r.annotation["scene"].replace("_", " ") in caption
        assert (" a person " in caption) == person
        if person:
            assert r.annotation["human_action"] in caption
    mean = {label: np.mean(v, axis=0) for label, v in by_label.items()}
    assert mean["sadness"][0] < mean["amusement"][0] and mean["fear"][0] < mean["contentment"][0]
    assert mean["fear"][0] < min(m[0] for label, m in mean.items() if label != "fear")
    assert mean["amusement"][0] == max(m[0] for m in mean.values())
    assert mean["excitement"][1] > mean["sadness"][1] + 0.3 and mean["fear"][1] < 0.3
    people = sum("person" in r.annotation["object"] for r in records)
    assert 0.3 * len(records) < people < 0.7 * len(records)  # person_fraction 0.5
    angry = {r.annotation.get("facial_expression") for r in records if r.label == "anger"}
    assert angry <= {"angry", None} and "angry" in angry


def colour_features(img: np.ndarray) -> np.ndarray:
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], None, [8, 4, 4], [0, 180, 0, 256, 0, 256]).ravel()
    pixels = img.reshape(-1, 3) / 255.0
    return np.concatenate([hist / hist.sum(), pixels.mean(0), pixels.std(0)])


def held_out_accuracy(features: np.ndarray, labels: np.ndarray, train: np.ndarray) -> float:
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    clf.fit(features[train], labels[train])
    return float(clf.score(features[~train], labels[~train]))


@pytest.fixture(scope="module")
def pixels(records):
    images = np.stack([rgb(r.image) for r in records])
    labels = np.array([EMOSET_LABELS.index(r.label) for r in records])
    train = np.array([int(r.id.rsplit("_", 1)[1]) < 6 for r in records])  # images 0-5 of each label
    return images, labels, train


def test_labels_separate_on_colour_statistics(pixels):
    images, labels, train = pixels
    features = np.stack([colour_features(img) for img in images])
    assert held_out_accuracy(features, labels, train) >= 0.9
    mean_rgb = images.reshape(len(images), -1, 3).mean(1)
    assert held_out_accuracy(mean_rgb, labels, train) >= 0.9


def test_labels_separate_on_tiny_random_vit_tokens(pixels):
    from emotion_llama.encoders.eva import EvaEncoder

    images, labels, train = pixels
    encoder = EvaEncoder.tiny(seed=0).eval()
    with torch.no_grad():
        tokens = encoder(encoder.preprocess(images)).tokens
    assert held_out_accuracy(tokens.mean(1).numpy(), labels, train) >= 0.9


def test_same_seed_same_files_other_seed_other_images(tmp_path):
    a = syn.generate_images(tmp_path / "a", images_per_label=1, seed=3)
    b = syn.generate_images(tmp_path / "b", images_per_label=1, seed=3)
    c = syn.generate_images(tmp_path / "c", images_per_label=1, seed=4)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert len([f for f in files if f.suffix == ".jpg"]) == len(EMOSET_LABELS)
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    jpgs = [f for f in files if f.suffix == ".jpg"]
    assert all((a / f).read_bytes() != (c / f).read_bytes() for f in jpgs)
    # A larger set keeps the first images: each is drawn from its own seed.
    d = syn.generate_images(tmp_path / "d", images_per_label=2, seed=3)
    assert all((a / f).read_bytes() == (d / f).read_bytes() for f in jpgs)


def test_resumes_keeping_complete_images_and_refuses_other_arguments(tmp_path):
    out = syn.generate_images(tmp_path / "set", images_per_label=1, seed=0, person_fraction=1.0)
    kept = out / "image" / "awe" / "awe_00000.jpg"
    redo = out / "image" / "fear" / "fear_00000.jpg"
    before = redo.read_bytes()
    stamp = kept.stat().st_mtime_ns
    os.utime(kept, ns=(stamp - 10**9, stamp - 10**9))
    (out / "annotation" / "fear" / "fear_00000.json").unlink()  # an image whose annotation never got written
    redo.unlink()
    (out / "test.json").unlink()
    syn.generate_images(out, images_per_label=1, seed=0, person_fraction=1.0)
    assert kept.stat().st_mtime_ns == stamp - 10**9 and redo.read_bytes() == before
    assert len(read_emoset(out, "train")) == len(EMOSET_LABELS)  # one per label: all in train
    assert all("person" in r.annotation["object"] for r in read_emoset(out, "train"))
    with pytest.raises(UserError, match="made with other arguments .*meta.json"):
        syn.generate_images(out, images_per_label=2, seed=0, person_fraction=1.0)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty and holds no synthetic image set"):
        syn.generate_images(tmp_path / "other", images_per_label=1)
    with pytest.raises(UserError, match="images_per_label >= 1"):
        syn.generate_images(tmp_path / "bad", images_per_label=0)


def test_command_line(tmp_path, capsys):
    import logging

    root_logger = logging.getLogger()
    handlers, level = list(root_logger.handlers), root_logger.level
    try:
        _check_command_line(tmp_path, capsys)
    finally:  # the launcher installs its handler on the root logger: later tests get the logging they had
        root_logger.handlers[:] = handlers
        root_logger.setLevel(level)


def _check_command_line(tmp_path, capsys):
    out = tmp_path / "cli set"
    argv = [f"out_dir={out}", "images_per_label=1", "seed=2", "size=96", "person_fraction=0"]
    assert make_synthetic_images.main(argv) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"synthetic image set at {out}: 8 images (1 per label x 8 labels, 96x96), seed 2")
    assert rgb(out / "image" / "sadness" / "sadness_00000.jpg").shape == (96, 96, 3)
    assert make_synthetic_images.main(argv) == 0
    assert "already complete" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        make_synthetic_images.main([f"out_dir={out}", "images_per_label=0"])
    assert exit_.value.code == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert err.startswith("error: images_per_label=0")


@pytest.mark.slow
def test_parallel_workers_write_the_same_set(tmp_path):
    a = syn.generate_images(tmp_path / "a", images_per_label=2, seed=1)
    b = syn.generate_images(tmp_path / "b", images_per_label=2, seed=1, workers=2)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
