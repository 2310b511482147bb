"""The web demo's page logic on an untrained tiny checkpoint: the answers are the Predictor's, bad uploads are
one line, and the page builds with its examples (the page in a real browser: tests/test_app_browser.py)."""

import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

gr = pytest.importorskip("gradio")

from media_fixtures import draw_face, write_synthetic_videos  # noqa: E402

from conftest import save_tiny_checkpoint  # noqa: E402
from emotion_llama.app import DemoApp, find_examples  # noqa: E402
from emotion_llama.datasets.common import Sample, write_subtitles  # noqa: E402
from emotion_llama.datasets.merr import write_merr_txt  # noqa: E402
from emotion_llama.errors import UserError  # noqa: E402
from emotion_llama.inference.video import Prediction, Predictor  # noqa: E402
from emotion_llama.labels import DFEW_LABELS, MERR_LABELS  # noqa: E402

APP = Path(__file__).resolve().parents[1] / "tools" / "app.py"
SUBTITLE = "I passed the exam"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "model")  # nothing is trained


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    return write_synthetic_videos(tmp_path_factory.mktemp("videos"))


@pytest.fixture(scope="module")
def predictor(checkpoint) -> Predictor:
    return Predictor(checkpoint, device="cpu", max_new_tokens=8)


@pytest.fixture(scope="module")
def app(predictor) -> DemoApp:
    return DemoApp(predictor, {"MERR": "merr", "DFEW": "dfew"})


@pytest.fixture(scope="module")
def good(app, videos):
    return app.answer(videos / "good.mp4", SUBTITLE, "emotion", "MERR")


def test_answer_is_the_predictors(good, predictor, videos):
    expected = predictor.predict([videos / "good.mp4"], SUBTITLE)[0]
    assert isinstance(expected, Prediction) and good.ok
    assert list(good.scores) == list(MERR_LABELS) == list(expected.scores)
    np.testing.assert_allclose(list(good.scores.values()), list(expected.scores.values()), atol=1e-6)
    assert good.record == expected.to_dict()  # what emotion-llama-infer json=true prints for the clip
    assert good.status.startswith(f"{expected.emotion} (") and "\n" not in good.status
    status, label, card, modalities, explanation, record = good.outputs()
    assert status == good.status and label == good.scores and record == good.record
    assert explanation["visible"] is False
    assert card.ndim == 3 and card.shape[2] == 3 and card.std() > 10  # the drawn card, not a blank picture
    assert modalities.splitlines() == [f"face: found (peak frame {expected.peak_frame})", "audio: found",
                                       f"subtitle: {SUBTITLE!r} (typed)"]


def test_label_set_scores_its_own_labels(app, predictor, videos):
    answer = app.answer(videos / "good.mp4", SUBTITLE, "emotion", "DFEW")
    alone = Predictor(predictor.core, labels=DFEW_LABELS).predict([videos / "good.mp4"], SUBTITLE)[0]
    assert list(answer.scores) == list(DFEW_LABELS)
    np.testing.assert_allclose(list(answer.scores.values()), list(alone.scores.values()), atol=1e-6)
    assert answer.prediction.emotion == alone.emotion
    assert predictor.labels == list(MERR_LABELS)  # the loaded Predictor is shared, not changed


def test_reason_task_shows_the_explanation(app, good, videos):
    answer = app.answer(videos / "good.mp4", SUBTITLE, "reason", "MERR")
    assert isinstance(answer.explanation, str)
    np.testing.assert_allclose(list(answer.scores.values()), list(good.scores.values()), atol=1e-5)
    explanation = answer.outputs()[4]
    assert explanation["visible"] is True and explanation["value"] == answer.explanation


def test_missing_modalities_are_shown(app, videos):
    silent = app.answer(videos / "silent.mp4", "", "emotion", "MERR")
    noface = app.answer(videos / "noface.mp4", None, "emotion", "MERR")
    assert "audio: none" in silent.modalities and "subtitle: none" in silent.modalities
    assert silent.prediction.subtitle == ""
    assert noface.modalities.startswith("face: not found") and "audio: found" in noface.modalities


def test_bad_uploads_are_one_line_and_the_app_goes_on(app, good, videos, tmp_path):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4000))
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video")
    for path in (corrupt, notes, tmp_path / "gone.mp4"):
        answer = app.answer(path, "", "emotion", "MERR")
        assert answer.status.startswith(f"error: {path.name}: ") and "\n" not in answer.status
        assert "Traceback" not in answer.status and not answer.ok
        assert answer.outputs()[1:3] == (None, None) and answer.outputs()[5] is None
    assert app.answer(None, "", "emotion", "MERR").status.startswith("error: upload a video")
    assert app.answer(videos / "good.mp4", "", "emotion", "nope").status.startswith("error: unknown label set")
    again = app.answer(videos / "good.mp4", SUBTITLE, "emotion", "MERR")
    assert again.scores == pytest.approx(good.scores, abs=1e-6)


def test_image_upload_is_answered_or_refused_in_one_line(app, predictor, tmp_path):
    image = tmp_path / "face.png"
    cv2.imwrite(str(image), cv2.cvtColor(draw_face(), cv2.COLOR_RGB2BGR))
    answer = app.answer(image, SUBTITLE, "emotion", "MERR")
    direct = predictor.predict([image], SUBTITLE)[0]
    if isinstance(direct, Prediction):
        assert answer.scores == pytest.approx(direct.scores, abs=1e-6)
    else:  # the Predictor reads no images: its own reason, on one line
        assert answer.status == f"error: face.png: {direct.reason}" and "\n" not in answer.status


def test_page_builds_with_the_examples(predictor, videos, tmp_path):
    root = tmp_path / "synthetic"
    (root / "videos").mkdir(parents=True)
    for name in ("good", "silent", "noface"):
        (root / "videos" / f"{name}.mp4").symlink_to(videos / f"{name}.mp4")
    write_merr_txt(root / "splits" / "test.txt", [Sample("silent", "sad"), Sample("noface", "sad"),
                                                  Sample("good", "happy"), Sample("absent", "angry")])
    write_subtitles(root / "subtitles.csv", {"good": SUBTITLE, "silent": "", "noface": "hello"})
    examples = find_examples(root, limit=9)
    assert [(e.video.name, e.label, e.subtitle) for e in examples] == [
        ("silent.mp4", "sad", ""), ("good.mp4", "happy", SUBTITLE), ("noface.mp4", "sad", "hello")]
    assert [e.caption for e in find_examples(root, limit=2)] == ["silent (sad)", "good (happy)"]
    assert find_examples(tmp_path / "nothing") == []

    app = DemoApp(predictor, examples=examples, checkpoint="ckpt")
    assert app.label_set_names == ["MERR", "DFEW", "MER", "EmoSet"]
    demo = app.build()
    assert isinstance(demo, gr.Blocks)
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    assert {"upload", "subtitle", "task", "label-set", "submit", "status", "emotion", "card", "modalities",
            "explanation", "json", "examples"} <= ids
    upload = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "upload")
    assert ".mp4" in upload.file_types and ".png" in upload.file_types


def test_unknown_label_set_is_a_user_error(predictor):
    with pytest.raises(UserError, match="label_sets.X=nope: no such label set"):
        DemoApp(predictor, {"X": "nope"})


def test_command_line_errors_are_one_line(tmp_path):
    run = [sys.executable, str(APP)]
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    shown = subprocess.run([*run, "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "checkpoint=DIR" in shown.stdout and "port=7860" in shown.stdout
    for args, message in (([f"paths.output_dir={tmp_path}"], "no checkpoint found at"),
                          (["port=99999"], "port=99999: use a port number"),
                          (["prot=1"], "unknown key prot"),
                          ([f"checkpoint={tmp_path}", "label_sets.DFEW=nope"], "label_sets.DFEW=nope: no such label set"),
                          ([f"checkpoint={tmp_path}", f"port={port}"], f"cannot serve on 127.0.0.1:{port} (in use)")):
        done = subprocess.run([*run, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("error: ") and message in done.stderr and done.stderr.count("\n") == 1
    taken.close()
