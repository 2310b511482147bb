"""One inference core: evaluation, EMER-style reasoning, video inference and the benchmarks score and
generate through it, so that they agree on the same clips."""

from pathlib import Path

import pytest
import torch
from media_fixtures import write_synthetic_videos

from conftest import save_tiny_checkpoint
from emotion_llama.datasets.features import FeatureStore, LazyFeatures
from emotion_llama.encoders.build import build_encoders
from emotion_llama.encoders.extract import extract_folder
from emotion_llama.errors import UserError
from emotion_llama.evaluation.evaluate import Evaluator
from emotion_llama.evaluation.reasoning import ReasonEvaluator
from emotion_llama.inference.core import InferenceCore, checkpoint_overrides
from emotion_llama.inference.video import Predictor
from emotion_llama.labels import DFEW_LABELS, MERR_LABELS
from emotion_llama.model.config import ModelConfig
from emotion_llama.runtime import resolve_device

NAMES = ("good", "noface", "silent")
SUBTITLES = {"good": "I passed the exam", "silent": "a much longer sentence, so the other prompts are padded"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "model", lora_b_std=0.5)


@pytest.fixture(scope="module")
def core(checkpoint) -> InferenceCore:
    return InferenceCore.load(checkpoint, device="cpu")


@pytest.fixture(scope="module")
def clips(tmp_path_factory, checkpoint):
    """The test videos and their features extracted to the official cache layout (float32 copy kept)."""
    videos = write_synthetic_videos(tmp_path_factory.mktemp("videos"))
    out = tmp_path_factory.mktemp("features")
    encoders = build_encoders(ModelConfig())
    extract_folder(videos, out, ModelConfig(), encoders=encoders, progress=False, batch_size=3)
    return videos, LazyFeatures(FeatureStore(out), list(NAMES))


def test_evaluation_and_video_inference_give_the_same_scores(core, clips):
    videos, features = clips
    evaluated = {p.name: p for p in Evaluator(core, MERR_LABELS).run(list(NAMES), SUBTITLES, features, "score")}
    predicted = Predictor(core).predict([videos / f"{n}.mp4" for n in NAMES], SUBTITLES)
    for pred in predicted:
        name = Path(pred.video).stem
        logp = torch.tensor([evaluated[name].scores[label] for label in MERR_LABELS])
        probs = torch.tensor([pred.scores[label] for label in MERR_LABELS])
        # The cache stores EVA tokens in float16; video inference keeps them in float32.
        torch.testing.assert_close(probs, logp.softmax(-1), atol=2e-3, rtol=0)
        assert pred.emotion == evaluated[name].prediction


def test_every_caller_is_identical_on_identical_features(core, clips):
    """Same features in, same numbers out: the callers share prompts, padding and the scoring call."""
    _, features = clips
    names = list(NAMES)
    batch = {m: torch.stack([features[n][m] for n in names]) for m in features[names[0]]}
    texts = [SUBTITLES.get(n, "") for n in names]
    direct = core.score(texts, batch, DFEW_LABELS)
    evaluated = Evaluator(core, DFEW_LABELS).run(names, SUBTITLES, features, "score")
    assert torch.equal(torch.tensor([[p.scores[lb] for lb in DFEW_LABELS] for p in evaluated]), direct)

    predictor = Predictor(core, labels=DFEW_LABELS, max_new_tokens=6)
    predictor.inputs = lambda _clips: batch  # the cached features instead of encoding the videos again
    fake_clips = [{"peak_frame": 0, "face_found": True, "audio_found": True, "face_box": [0, 0, 1, 1]}] * 3
    preds = predictor._predict_clips(names, fake_clips, texts, "reason")
    assert torch.equal(torch.tensor([[p.scores[lb] for lb in DFEW_LABELS] for p in preds]), direct.softmax(-1))

    reasons = ReasonEvaluator(core, DFEW_LABELS, max_new_tokens=6).run(names, SUBTITLES, features, "generate")
    assert [p.reasoning for p in preds] == [r.answer for r in reasons]


def test_batching_does_not_change_a_clip_score(core, clips):
    _, features = clips
    names = list(NAMES)
    together = Evaluator(core, MERR_LABELS, batch_size=3).run(names, SUBTITLES, features, "score")
    alone = Evaluator(core, MERR_LABELS, batch_size=1).run(names, SUBTITLES, features, "score")
    for a, b in zip(together, alone, strict=True):
        torch.testing.assert_close(torch.tensor(list(a.scores.values())), torch.tensor(list(b.scores.values())),
                                   atol=1e-4, rtol=0)


def test_prompt_layout(checkpoint, core):
    from emotion_llama.model.prompts import PromptParts, emotion_instruction
    from emotion_llama.model.sequences import encode_prompt

    assert core.layout == "train"
    release = InferenceCore.load(checkpoint, device="cpu", layout="release_eval")
    assert release.layout == "release_eval"
    n = (core.model.num_video_tokens, core.model.num_feature_tokens)
    for c in (core, release):
        ids, mask = c.prompts(["I passed"], "emotion", emotion_instruction(MERR_LABELS))
        parts = PromptParts("I passed", "emotion", emotion_instruction(MERR_LABELS))
        assert ids[0].tolist() == encode_prompt(c.tokenizer, parts, *n, layout=c.layout) and bool(mask.all())
    bos = core.tokenizer.bos_token_id
    assert release.prompts([""], "emotion", "x")[0][0, :2].tolist() == [bos, bos]
    assert core.prompts([""], "emotion", "x")[0][0, 1] != bos
    with pytest.raises(UserError, match="prompt_layout=chat"):
        InferenceCore.load(checkpoint, device="cpu", layout="chat")


def test_named_paths_replace_only_what_they_name(checkpoint, tmp_path):
    from emotion_llama.model.checkpoint import read_config

    saved = read_config(checkpoint).encoder_paths
    out = checkpoint_overrides(checkpoint, {"eva": str(tmp_path / "eva.pth"), "llm": None})
    assert out["encoder_paths"]["eva"] == str(tmp_path / "eva.pth")
    assert {k: v for k, v in out["encoder_paths"].items() if k != "eva"} == {k: v for k, v in saved.items() if k != "eva"}
    assert "llm_path" not in out
    # Unset (null) paths and keys that are no weights name nothing.
    assert checkpoint_overrides(checkpoint, {"llm": None, "output_dir": "outputs"}) == {}


def test_device_policy():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UserError, match="device=gpu0"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="needs a CUDA GPU"):
            resolve_device("cuda:1")
