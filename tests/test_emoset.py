"""Image emotion dataset readers: EmoSet's split files (official and EmoVIT forms), folder-per-class sets,
their one-line errors, and the brightness/colorfulness attributes."""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from emotion_llama.datasets.emoset import (
    ImageRecord,
    attribute_level,
    brightness,
    colorfulness,
    image_ids,
    label_counts,
    load_annotation,
    read_emoset,
    read_emoset_info,
    read_image_folders,
)
from emotion_llama.datasets.synthetic.images import generate_images
from emotion_llama.errors import UserError
from emotion_llama.labels import EMOSET_LABELS, EMOTION6_LABELS


@pytest.fixture(scope="module")
def emoset(tmp_path_factory) -> Path:
    return generate_images(tmp_path_factory.mktemp("emoset") / "set", images_per_label=3, seed=0)


def tiny_jpeg(path: Path, value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((8, 8, 3), value, np.uint8))


def mini_set(root: Path, entries: list, annotations: dict[str, object] | None = None) -> Path:
    """A hand-made EmoSet folder: ``train.json`` holding ``entries`` as given; every path named in a
    well-formed entry exists unless it contains "missing"; ``annotations`` overrides file contents."""
    root.mkdir(parents=True, exist_ok=True)
    for entry in entries:
        if isinstance(entry, list) and len(entry) in (3, 4) and all(isinstance(v, str) for v in entry):
            image, annotation = entry[-2], entry[-1]
            if "missing" not in image:
                tiny_jpeg(root / image)
            if "missing" not in annotation:
                (root / annotation).parent.mkdir(parents=True, exist_ok=True)
                content = (annotations or {}).get(annotation, {"brightness": 0.5, "scene": "street"})
                text = content if isinstance(content, str) else json.dumps(content)
                (root / annotation).write_text(text, encoding="utf-8")
    (root / "train.json").write_text(json.dumps(entries), encoding="utf-8")
    return root


def entry(label: str, n: int, **changes: str) -> list[str]:
    ident = f"{label}_{n:05d}"
    fields = {"label": label, "id": ident, "image": f"image/{label}/{ident}.jpg",
              "annotation": f"annotation/{label}/{ident}.json", **changes}
    return [fields["label"], fields["id"], fields["image"], fields["annotation"]]


# ---------------------------------------------------------------------------------------------- EmoSet


def test_reads_the_official_split_files(emoset):
    seen = set()
    for split in ("train", "val", "test"):
        records = read_emoset(emoset, split)
        assert label_counts(records) == dict.fromkeys(EMOSET_LABELS, 1)  # 3 per label: 1 / 1 / 1
        for r in records:
            assert isinstance(r, ImageRecord) and r.image.is_absolute() and r.image.is_file()
            assert r.image == emoset / "image" / r.label / f"{r.id}.jpg"
            assert r.annotation_path == emoset / "annotation" / r.label / f"{r.id}.json"
            assert set(r.annotation) >= {"brightness", "colorfulness", "scene", "object", "caption"}
            assert 0.0 <= r.annotation["brightness"] <= 1.0 and isinstance(r.annotation["object"], list)
        seen |= {r.id for r in records}
    assert len(seen) == 3 * len(EMOSET_LABELS)
    label2idx = read_emoset_info(emoset)["emotion"]["label2idx"]
    assert label2idx == {label: i for i, label in enumerate(EMOSET_LABELS)}


def test_reads_emovit_three_field_copies(emoset):
    official = json.loads((emoset / "train.json").read_text())
    (emoset / "train_emovit.json").write_text(json.dumps([[e[0], e[2], e[3]] for e in official]))
    try:
        three = read_emoset(emoset, "train_emovit")
    finally:
        (emoset / "train_emovit.json").unlink()
    four = read_emoset(emoset, "train")
    assert three == four  # id = image file stem, same paths and labels
    assert [r.annotation for r in three] == [r.annotation for r in four]


def test_annotations_can_be_left_for_later(emoset):
    eager = read_emoset(emoset, "test")
    lazy = read_emoset(emoset, "test", load_annotations=False, threads=1)
    assert lazy == eager and all(r.annotation == {} for r in lazy)
    assert [load_annotation(r.annotation_path) for r in lazy] == [r.annotation for r in eager]
    assert lazy[0].annotation is not lazy[1].annotation  # one dict per record


def test_annotation_attributes_are_normalised(tmp_path):
    entries = [entry("awe", 0), entry("fear", 1)]
    root = mini_set(tmp_path / "set", entries, {
        entries[0][3]: {"emotion": "awe", "brightness": "0.3", "colorfulness": 1, "object": "Mountain",
                        "scene": "", "facial_expression": None, "human_action": "hiking"},
        entries[1][3]: {},
    })
    first, second = read_emoset(root, labels=[label.upper() for label in EMOSET_LABELS])
    assert first.annotation == {"brightness": 0.3, "colorfulness": 1.0, "object": ["Mountain"],
                                "human_action": "hiking"}
    assert second.annotation == {} and (first.label, second.label) == ("awe", "fear")


@pytest.mark.parametrize("bad, expected", [
    (["awe", "image/awe/awe_00001.jpg"], "entry 1: expected [label, id, image_path, annotation_path]"),
    (["awe", 7, "image/awe/x.jpg", "annotation/awe/x.json"], "entry 1: expected"),
    ("awe_00001.jpg", "entry 1: expected"),
    (entry("joy", 1), "entry 1: unknown label 'joy'; use one of amusement, awe"),
    (entry("awe", 1, annotation="annotation/awe/missing.json"), "entry 1: annotation file"),
    (entry("awe", 1, image="image/awe/missing.jpg"), "entry 1: image"),
    (entry("awe", 0, image="image/awe/other.jpg", annotation="annotation/awe/other.json"),
     "entry 1 repeats the id 'awe_00000' of entry 0"),
])
def test_a_bad_entry_is_one_line_naming_the_file_and_entry(tmp_path, bad, expected):
    root = mini_set(tmp_path / "set", [entry("awe", 0), bad])
    with pytest.raises(UserError) as err:
        read_emoset(root)
    message = str(err.value)
    assert "\n" not in message and f"{root / 'train.json'}: " in message and expected in message
    if "not found" in message:
        assert "missing" in message and "restore the file" in message


@pytest.mark.parametrize("content, expected", [
    ("{not json", "not valid JSON"),
    ({"brightness": 1.5}, "brightness should be a number from 0 to 1"),
    ({"object": [1, 2]}, "object should be a list of names"),
    ({"scene": 3}, "scene should be a string"),
    ([1, 2], "expected a JSON object of attributes"),
])
def test_a_bad_annotation_file_names_it_and_the_entry(tmp_path, content, expected):
    entries = [entry("awe", 0), entry("fear", 4)]
    root = mini_set(tmp_path / "set", entries, {entries[1][3]: content})
    with pytest.raises(UserError) as err:
        read_emoset(root)
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(root / entries[1][3])) and expected in message
    assert f"(entry 1 of {root / 'train.json'})" in message


def test_bad_split_and_info_files(tmp_path):
    root = mini_set(tmp_path / "set", [entry("awe", 0)])
    with pytest.raises(UserError, match=r"val\.json not found: splits here: train"):
        read_emoset(root, "val")
    (root / "train.json").write_text('[["awe", "awe_0", \n oops]')
    with pytest.raises(UserError, match=r"train\.json:2: not valid JSON .*fix or re-download"):
        read_emoset(root)
    (root / "train.json").write_text('{"awe": 1}')
    with pytest.raises(UserError, match=r"train\.json: expected a JSON list"):
        read_emoset(root)
    mini_set(root, [entry("awe", 0)])
    swapped = [EMOSET_LABELS[1], EMOSET_LABELS[0], *EMOSET_LABELS[2:]]  # another order: the same label set
    label2idx = {k: i for i, k in enumerate(swapped)}
    (root / "info.json").write_text(json.dumps({"emotion": {"label2idx": label2idx}}))
    assert len(read_emoset(root)) == 1
    labels6 = {k: i for i, k in enumerate(EMOTION6_LABELS)}
    (root / "info.json").write_text(json.dumps({"emotion": {"label2idx": labels6}}))
    pattern = r"info\.json: emotion\.label2idx \(anger, disgust, .*\) is not the label set \(amusement, awe"
    with pytest.raises(UserError, match=pattern + r".*\); pass labels="):
        read_emoset(root)
    with pytest.raises(UserError, match="entry 0: unknown label 'awe'; use one of anger, disgust"):
        read_emoset(root, labels=EMOTION6_LABELS)  # info.json agrees now: the entry's label does not


def test_image_ids_are_unique_keys(emoset):
    records = read_emoset(emoset, "val")
    assert set(image_ids(records)) == {r.id for r in records}
    with pytest.raises(UserError, match="amusement_.* is also the id of"):
        image_ids(records + records[:1])


# ---------------------------------------------------------------------------------------------- folders


def test_folder_per_class_sets(tmp_path):
    root = tmp_path / "emotion6"
    (root / "Fear").mkdir(parents=True)
    for folder, names in {"Anger": ["1.jpg", "2.PNG", "anger_3.webp"], "joy": ["1.jpg", "1.png"],
                          "Fear": []}.items():
        for name in names:
            tiny_jpeg(root / folder / name)
    (root / "joy" / "notes.txt").write_text("not an image")
    tiny_jpeg(root / "joy" / ".hidden.jpg")
    (root / ".cache").mkdir()
    records = read_image_folders(root, EMOTION6_LABELS)
    assert [(r.label, r.id, r.image.name) for r in records] == [
        ("anger", "anger_1", "1.jpg"), ("anger", "anger_2", "2.PNG"), ("anger", "anger_3", "anger_3.webp"),
        ("joy", "joy_1_jpg", "1.jpg"), ("joy", "joy_1_png", "1.png"),
    ]
    assert all(r.image.is_absolute() and r.image.is_file() and r.annotation == {} for r in records)
    inferred = read_image_folders(root)
    assert [r.id for r in inferred] == [r.id for r in records]  # labels from the folders: anger, fear, joy
    with pytest.raises(UserError) as err:
        read_image_folders(root, EMOSET_LABELS)
    message = str(err.value)
    assert "\n" not in message and str(root / "joy") in message and "'joy' is not in the label set" in message
    assert "amusement, awe, contentment" in message


def test_folder_sets_with_split_subfolders(tmp_path):
    for split, n in (("train", 2), ("test", 1)):
        for label in ("amusement", "sadness"):
            for k in range(n):
                tiny_jpeg(tmp_path / "fi" / split / label / f"{label}_{k:04d}.jpg")
    train = read_image_folders(tmp_path / "fi", EMOSET_LABELS, split="train")
    test = read_image_folders(tmp_path / "fi", EMOSET_LABELS, split="test")
    assert label_counts(train)["sadness"] == 2 and label_counts(test) == {**dict.fromkeys(EMOSET_LABELS, 0),
                                                                          "amusement": 1, "sadness": 1}
    assert train[0].id == "amusement_0000"
    with pytest.raises(UserError, match="val is not a folder"):
        read_image_folders(tmp_path / "fi", split="val")
    shutil.rmtree(tmp_path / "fi" / "test" / "sadness")
    (tmp_path / "fi" / "test" / "amusement" / "amusement_0000.jpg").unlink()
    with pytest.raises(UserError, match="no images"):
        read_image_folders(tmp_path / "fi", split="test")


# ---------------------------------------------------------------------------------------------- attributes


def test_brightness_and_colorfulness():
    grey, black, white = (np.full((16, 16, 3), v, np.uint8) for v in (128, 0, 255))
    assert brightness(black) == 0.0 and brightness(white) == 1.0 and abs(brightness(grey) - 128 / 255) < 1e-6
    assert colorfulness(grey) == 0.0 and colorfulness(white) == 0.0
    red_green = np.zeros((16, 16, 3), np.uint8)
    red_green[:, :8, 0], red_green[:, 8:, 1] = 255, 255
    pastel = (0.9 * 255 + 0.1 * red_green).astype(np.uint8)
    assert colorfulness(red_green) == 1.0 and 0.0 < colorfulness(pastel) < 0.5
    levels = [attribute_level(v) for v in (0.04, 0.05001, 0.349, 0.96, 1.2, -1)]
    assert levels == [0.0, 0.1, 0.3, 1.0, 1.0, 0.0]
