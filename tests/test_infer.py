"""Inference on raw videos: the Predictor on an untrained tiny checkpoint, and tools/infer.py end to end
(``VIDEO|DIR ... key=value``: the one command-line convention of emotion_llama.cli)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch
from media_fixtures import write_synthetic_videos

from conftest import save_tiny_checkpoint
from emotion_llama.datasets.common import write_subtitles
from emotion_llama.errors import UserError
from emotion_llama.inference.core import checkpoint_overrides
from emotion_llama.inference.video import Failure, Prediction, Predictor, Transcriber, card_paths
from emotion_llama.labels import MERR_LABELS

INFER = Path(__file__).resolve().parents[1] / "tools" / "infer.py"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    # Nothing is trained.
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "model")


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    return write_synthetic_videos(tmp_path_factory.mktemp("videos"))


@pytest.fixture(scope="module")
def predictor(checkpoint) -> Predictor:
    return Predictor(checkpoint, device="cpu", max_new_tokens=8)


def start_cli(*args) -> subprocess.Popen:
    # One thread each: two runs share the machine's two cores.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(INFER), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(INFER), *map(str, args)], capture_output=True, text=True, timeout=120)


NAMES = ("good", "noface", "silent")
SUBTITLES = {"good": "I passed the exam", "silent": "a much longer sentence, so the other prompts are padded"}


@pytest.fixture(scope="module")
def base(predictor, videos) -> dict[str, Prediction]:
    """The three videos scored in one batch (the Predictor's default batch holds them all)."""
    preds = predictor.predict([videos / f"{n}.mp4" for n in NAMES], SUBTITLES)
    assert all(isinstance(p, Prediction) for p in preds)
    return {Path(p.video).stem: p for p in preds}


def test_predictions_for_videos_with_and_without_face_and_audio(base):
    assert tuple(base) == NAMES
    for p in base.values():
        assert list(p.scores) == list(MERR_LABELS)
        assert sum(p.scores.values()) == pytest.approx(1.0, abs=1e-5)
        assert p.emotion == max(p.scores, key=p.scores.get)
        assert p.reasoning is None
        assert len(p.face_box) == 4 and p.face_box[0] < p.face_box[2]
        row = json.loads(json.dumps(p.to_dict()))  # what json=true prints: rounded, without the frame
        assert "image" not in row and row["emotion"] == max(row["scores"], key=row["scores"].get)
        assert sum(row["scores"].values()) == pytest.approx(1.0, abs=1e-3)
    assert base["good"].face_found and base["good"].audio_found
    assert not base["noface"].face_found and base["noface"].audio_found
    assert base["silent"].face_found and not base["silent"].audio_found
    assert base["good"].subtitle == "I passed the exam" and base["noface"].subtitle == ""


def test_batched_scores_match_one_at_a_time(predictor, videos, base):
    for name in ("good", "silent"):
        alone = predictor.predict([videos / f"{name}.mp4"], SUBTITLES)[0]
        np.testing.assert_allclose(list(alone.scores.values()), list(base[name].scores.values()), atol=1e-4)


def test_subtitle_reaches_the_prompt(predictor, videos, base):
    other = predictor.predict([videos / "good.mp4"], "This is awful")[0]
    assert other.subtitle == "This is awful" and other.scores != base["good"].scores


def test_reason_task_adds_an_explanation_without_changing_scores(predictor, videos, base):
    reasoned = predictor.predict([videos / "good.mp4"], SUBTITLES, task="reason")[0]
    assert isinstance(reasoned.reasoning, str)
    np.testing.assert_allclose(list(reasoned.scores.values()), list(base["good"].scores.values()), atol=1e-5)


def test_bad_files_fail_alone(predictor, videos, tmp_path):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4000))
    preds = predictor.predict([corrupt, videos / "good.mp4", tmp_path / "missing.mp4", tmp_path / "notes.txt"])
    assert [type(p) for p in preds] == [Failure, Prediction, Failure, Failure]
    assert "corrupt" in preds[0].reason and "not found" in preds[2].reason
    assert all("\n" not in str(p) for p in preds if isinstance(p, Failure))


def test_encoder_path_overrides_keep_the_saved_ones(checkpoint):
    assert checkpoint_overrides(checkpoint, {"llm": None, "eva": None, "output_dir": "x"}) == {}
    out = checkpoint_overrides(checkpoint, {"llm": "/m/llama", "hubert": "/m/hubert"})
    assert out == {"llm_path": "/m/llama", "encoder_paths": {"hubert": "/m/hubert"}}
    moved = checkpoint_overrides(checkpoint, {"tiny_encoders": "/enc", "eva": "/m/eva.pth"})["encoder_paths"]
    assert moved["eva"] == "/m/eva.pth" and moved["hubert"] == str(Path("/enc") / "hubert")


def test_card_names():
    assert card_paths("c.png", ["v/a.mp4"]) == {"v/a.mp4": Path("c.png")}
    assert card_paths("o/c.png", ["a.mp4", "b.avi"]) == {"a.mp4": Path("o/c_a.png"), "b.avi": Path("o/c_b.png")}
    assert card_paths("cards", ["x/a.mp4"]) == {"x/a.mp4": Path("cards/a.png")}


def test_the_cards_of_a_run_land_together(tmp_path):
    """Cards are staged while the answers stream and move into place together: an interrupted run leaves the
    cards of the run before it, untouched, and no staging files."""
    from emotion_llama.inference.video import card_set

    def prediction(video: str) -> Prediction:
        scores = {label: 1 / len(MERR_LABELS) for label in MERR_LABELS}
        return Prediction(video=video, emotion=MERR_LABELS[0], scores=scores, reasoning=None, subtitle="",
                          peak_frame=0, face_found=True, audio_found=False, face_box=[2, 2, 6, 6],
                          image=np.zeros((8, 8, 3), np.uint8))

    cards = card_paths(tmp_path / "cards", ["v/a.mp4", "v/00001"])
    (tmp_path / "cards").mkdir()
    (tmp_path / "cards" / "a.png").write_bytes(b"the card of an earlier run")
    with pytest.raises(KeyboardInterrupt), card_set(cards) as save:
        save(prediction("v/a.mp4"))
        raise KeyboardInterrupt
    assert [(p.name, p.read_bytes()) for p in (tmp_path / "cards").iterdir()] == [("a.png", b"the card of an earlier run")]
    with card_set(cards) as save:
        save(prediction("v/a.mp4"))
        save(prediction("v/00001"))
    assert sorted(p.name for p in (tmp_path / "cards").iterdir()) == ["00001.png", "a.png"]
    assert matplotlib.image.imread(tmp_path / "cards" / "a.png").ndim == 3


def test_missing_asr_folder_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="ASR model not found"):
        Transcriber(tmp_path / "whisper", torch.device("cpu"))


@pytest.mark.slow
def test_cli_json_and_text(checkpoint, videos, predictor, base, tmp_path):
    src = tmp_path / "in"
    shutil.copytree(videos, src)
    (src / "corrupt.mp4").write_bytes(np.random.default_rng(1).bytes(4000))
    (src / "readme.txt").write_text("folders keep only their videos")
    odd = tmp_path / "take=2.mp4"  # an existing file whose name holds '=' is a video, not an override
    shutil.copy(videos / "good.mp4", odd)
    write_subtitles(tmp_path / "subs.csv", SUBTITLES)
    cards = tmp_path / "cards" / "c.png"
    # Both runs at once: most of each is Python importing torch and transformers.
    as_json = start_cli(src, f"checkpoint={checkpoint}", "json=true", "device=cpu", f"card={cards}",
                        f"subtitles={tmp_path / 'subs.csv'}")
    as_text = start_cli(odd, f"checkpoint={checkpoint}", "task=reason", "subtitle=It's won, I won")
    out, err = as_json.communicate(timeout=180)
    assert as_json.returncode == 1, err
    reason = predictor.predict([src / "corrupt.mp4"])[0].reason
    # Nothing but the one failure on stderr: no library notices, warnings or weight-loading bars.
    assert err.strip().splitlines() == [f"error: {src / 'corrupt.mp4'}: {reason}"]
    rows = [json.loads(line) for line in out.splitlines()]
    assert [Path(r["video"]).stem for r in rows] == list(NAMES)
    for row in rows:
        expected = base[Path(row["video"]).stem]
        assert row["emotion"] == max(row["scores"], key=row["scores"].get) == expected.emotion
        assert list(row["scores"]) == list(MERR_LABELS)
        assert sum(row["scores"].values()) == pytest.approx(1.0, abs=1e-3)
        assert row["subtitle"] == expected.subtitle
        assert row["face_found"] == expected.face_found and row["audio_found"] == expected.audio_found
    for name in ("good", "noface", "silent"):
        image = matplotlib.image.imread(cards.with_name(f"c_{name}.png"))
        assert image.shape[0] > 0 and image.shape[1] > 0
    assert not list(cards.parent.glob("*.tmp"))

    out, err = as_text.communicate(timeout=180)
    assert as_text.returncode == 0, err
    assert str(odd) in out and "emotion: " in out and "reasoning: " in out
    assert "subtitle: " + repr("It's won, I won") in out  # the text as typed, commas and quotes kept
    assert err.strip() == ""


def test_cli_without_checkpoint_or_with_a_bad_override(videos, tmp_path):
    proc = cli(videos / "good.mp4", f"paths.output_dir={tmp_path}")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "make demo" in proc.stderr
    proc = cli(videos / "good.mp4", "nonsense.key=1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "nonsense.key" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
