"""Still images beside videos: extraction writes only the modalities an image has, the cache reads them back
with the presence mask, and inference answers images with the image prompt."""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from media_fixtures import draw_face, write_synthetic_videos

from conftest import save_tiny_checkpoint
from emotion_llama.datasets.features import FeatureStore, LazyFeatures
from emotion_llama.encoders.build import build_encoders
from emotion_llama.encoders.extract import extract_folder
from emotion_llama.evaluation.evaluate import Evaluator
from emotion_llama.inference.core import InferenceCore
from emotion_llama.inference.video import Predictor, expand_inputs
from emotion_llama.labels import EMOSET_LABELS
from emotion_llama.model.config import ModelConfig
from emotion_llama.model.fusion import PRESENT


def _face_image(path: Path) -> Path:
    img = draw_face(size=200, centre=(100, 100), height=110, expression=0.8)
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return path


def _faceless_image(path: Path) -> Path:
    img = np.zeros((120, 200, 3), np.uint8)
    img[:, :100] = (30, 60, 200)
    cv2.imwrite(str(path), img)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    (root / "videos").mkdir()
    videos = write_synthetic_videos(root / "videos")
    folder = root / "inputs"
    folder.mkdir()
    shutil.copy(videos / "good.mp4", folder / "clip.mp4")
    _face_image(folder / "face.png")
    _faceless_image(folder / "scene.jpg")
    return folder


@pytest.fixture(scope="module")
def extracted(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("features")
    counts = extract_folder(inputs, out, ModelConfig(), encoders=build_encoders(ModelConfig()), progress=False,
                            batch_size=3)
    return out, counts


def test_an_image_has_only_its_modalities(extracted, inputs, tmp_path):
    out, counts = extracted
    assert (counts.ok, counts.failed) == (3, 0)
    entries = {e["name"]: e for e in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    if not entries["face"]["face_found"]:
        pytest.skip("the face detector missed the drawn face")
    assert entries["face"]["present"] == ["eva", "mae"]
    assert entries["scene"]["present"] == ["eva"] and not entries["scene"]["face_found"]
    assert entries["clip"]["present"] is None  # a video: all four
    assert not (out / "maeV_399_UTT" / "scene.npy").exists() and not (out / "HL-UTT" / "face.npy").exists()

    store = FeatureStore(out)
    scene = store.load("scene")
    assert set(scene) == {"eva", PRESENT} and scene[PRESENT].tolist() == [True, False, False, False]
    assert store.load("face")[PRESENT].tolist() == [True, True, False, False]
    assert PRESENT not in store.load("clip") and store.has("scene")

    # The video's features do not depend on the images batched with it.
    alone = tmp_path / "alone"
    (alone / "in").mkdir(parents=True)
    shutil.copy(inputs / "clip.mp4", alone / "in" / "clip.mp4")
    extract_folder(alone / "in", alone / "out", ModelConfig(), encoders=build_encoders(ModelConfig()), progress=False)
    for m, t in FeatureStore(alone / "out").load("clip").items():
        torch.testing.assert_close(store.load("clip")[m], t, atol=1e-5, rtol=1e-4)


def test_a_rerun_keeps_finished_images(extracted, inputs):
    out, _ = extracted
    again = extract_folder(inputs, out, ModelConfig(), encoders=build_encoders(ModelConfig()), progress=False)
    assert (again.ok, again.skipped) == (0, 3)


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    return InferenceCore.load(save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "model"), device="cpu")


def test_inference_answers_images_as_evaluation_scores_them(core, inputs, extracted):
    out, _ = extracted
    paths = expand_inputs([inputs])
    assert sorted(p.name for p in paths) == ["clip.mp4", "face.png", "scene.jpg"]
    preds = {Path(p.video).stem: p for p in Predictor(core, labels=EMOSET_LABELS).predict(paths)}
    assert preds["scene"].media == "image" and preds["clip"].media == "video"
    assert not preds["scene"].audio_found
    names = ["face", "scene"]
    evaluated = Evaluator(core, EMOSET_LABELS, media="image").run(
        names, {}, LazyFeatures(FeatureStore(out), names), "score")
    for ev in evaluated:
        probs = torch.tensor([preds[ev.name].scores[lb] for lb in EMOSET_LABELS])
        logp = torch.tensor([ev.scores[lb] for lb in EMOSET_LABELS])
        # The cache stores EVA tokens in float16; inference keeps them in float32.
        torch.testing.assert_close(probs, logp.softmax(-1), atol=2e-3, rtol=0)
    # A video scores the same whether images share its batch or not.
    video_alone = Predictor(core, labels=EMOSET_LABELS).predict([inputs / "clip.mp4"])[0]
    torch.testing.assert_close(torch.tensor(list(video_alone.scores.values())),
                               torch.tensor(list(preds["clip"].scores.values())), atol=1e-5, rtol=0)


def test_a_corrupt_image_is_a_failure_not_a_crash(core, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    result = Predictor(core).predict([bad])[0]
    assert "not a readable image" in result.reason
