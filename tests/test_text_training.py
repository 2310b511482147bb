"""Training on text-only dialogue data (``data.media: text``, ``experiment=tiny_text_coarse``) through the real train
command: the examples are the prompts the WALL-E evaluation asks (utterance as the text line, no modality present,
or the imagined picture's EVA features, drawn into the evaluation's cache); the checkpoint records MELD's labels;
a model trained on the synthetic MELD-layout train split answers its test split far above chance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from emotion_llama.commands import evaluate as eval_cmd
from emotion_llama.commands import train as train_cmd
from emotion_llama.datasets.meld import read_meld_split
from emotion_llama.datasets.synthetic.utterances import write_synthetic_meld
from emotion_llama.labels import MELD_LABELS

pytestmark = pytest.mark.usefixtures("restore_logging", "one_thread")

CONFIG_LABELS = ["neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust"]  # conf/data/synthetic_meld.yaml


@pytest.fixture(scope="module")
def t2i(tmp_path_factory):
    from emotion_llama.imagination.tiny import save_tiny_text_to_image

    return save_tiny_text_to_image(tmp_path_factory.mktemp("t2i") / "t2i")


def train_argv(out: Path, *extra: str) -> list[str]:
    return ["experiment=tiny_text_coarse", f"paths.output_dir={out}", "trainer.enable_progress_bar=false", *extra]


def small(*extra: str) -> list[str]:
    """A few utterances, one epoch: the training path, not what it learns."""
    return ["data.generate.per_label=1", "data.generate.train_per_label=2", "trainer.max_epochs=1",
            "trainer.log_every_n_steps=1", *extra]


def run_train(capsys, argv: list[str]) -> dict:
    assert train_cmd.main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def imagine_argv(t2i: Path) -> list[str]:
    return [f"paths.t2i={t2i}", "imagine.size=32", "imagine.steps=2", "imagine.batch_size=8"]


def test_synthetic_train_split_size_leaves_the_other_splits_alone(tmp_path):
    paths = write_synthetic_meld(tmp_path / "a", per_label=2, seed=1, train_per_label=5)
    plain = write_synthetic_meld(tmp_path / "b", per_label=2, seed=1)
    assert len(read_meld_split(tmp_path / "a", "train")) == 35 and len(read_meld_split(tmp_path / "b", "train")) == 14
    for split in ("dev", "test"):
        assert paths[split].read_bytes() == plain[split].read_bytes()


def test_text_examples_are_the_evaluation_prompts_with_nothing_present(tmp_path, capsys):
    """The fast check of the training path: examples, validation, export and its meta."""
    from emotion_llama.model.checkpoint import load_checkpoint
    from emotion_llama.model.fusion import PRESENT
    from emotion_llama.model.prompts import PromptParts, answer_text, canonical_instruction
    from emotion_llama.model.sequences import encode_prompt
    from emotion_llama.training.train import _text_dataset

    out = run_train(capsys, train_argv(tmp_path, *small()))
    export = Path(out["model"])
    meta = json.loads((export / "meta.json").read_text())
    assert meta["labels"] == CONFIG_LABELS and sorted(meta["labels"]) == sorted(MELD_LABELS)
    assert meta["stage"] == "text_coarse" and meta["step"] == 2  # 14 utterances, batches of 8
    assert 0.0 <= out["val/war"] <= 1.0 and torch.isfinite(torch.tensor(out["train/loss"]))
    assert len(read_meld_split(tmp_path / "synthetic_meld", "train")) == 14  # written where the evaluation reads

    # The examples of the dev split, rebuilt with the exported tokenizer: each asks what the evaluation asks.
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(export.parent / "config.yaml")
    model, _, tokenizer = load_checkpoint(export)
    dataset = _text_dataset(cfg, "val", tokenizer, model, train=False)
    utterances = read_meld_split(tmp_path / "synthetic_meld", "dev")
    assert len(dataset) == len(utterances) == 7
    instruction = canonical_instruction("emotion", CONFIG_LABELS, "text")
    for u, item in zip(utterances, (dataset[i] for i in range(len(dataset))), strict=True):
        assert item["name"] == u.id and item["label_index"] == CONFIG_LABELS.index(u.label)
        assert set(item["features"]) == {PRESENT} and not item["features"][PRESENT].any()
        asked = encode_prompt(tokenizer, PromptParts(u.text, "emotion", instruction, "text"),
                              model.num_video_tokens, model.num_feature_tokens)
        assert item["prompt_ids"] == asked  # the prompt InferenceCore.score builds for variant=text
        answer = [t for t, keep in zip(item["input_ids"], item["labels"], strict=True) if keep != -100]
        assert tokenizer.decode(answer, skip_special_tokens=True) == answer_text(u.label, "text")


def test_imagined_training_uses_eva_only_pictures_the_evaluation_then_reuses(t2i, tmp_path, capsys):
    from omegaconf import OmegaConf

    from emotion_llama.imagination.pictures import ImageInputs
    from emotion_llama.inference.core import InferenceCore
    from emotion_llama.model.checkpoint import load_checkpoint
    from emotion_llama.model.fusion import PRESENT
    from emotion_llama.training.train import _text_dataset

    out = run_train(capsys, train_argv(tmp_path, *small("data.imagined=true"), *imagine_argv(t2i)))
    export = Path(out["model"])
    cache = tmp_path / "imagination"
    drawn = {split: (cache / f"synthetic_meld_{split}" / "imagined" / "manifest.jsonl").read_text().splitlines()
             for split in ("train", "dev")}
    assert [len(lines) for lines in drawn.values()] == [14, 7]  # one picture per utterance, per split

    # Each example carries its picture's EVA tokens, EVA the only modality present, as the evaluation gives them.
    cfg = OmegaConf.load(export.parent / "config.yaml")
    model, _, tokenizer = load_checkpoint(export)
    dataset = _text_dataset(cfg, "val", tokenizer, model, train=False)
    core = InferenceCore.load(export, device="cpu")
    item = dataset[0]
    picture = cache / "synthetic_meld_dev" / "imagined" / f"{item['name']}.png"
    expected = ImageInputs(core)([picture])
    assert set(item["features"]) == {"eva", PRESENT}
    assert item["features"][PRESENT].tolist() == [True, False, False, False]
    torch.testing.assert_close(item["features"]["eva"], expected["eva"][0])

    # The evaluation of the train split finds every picture the training drew.
    args = ["data=synthetic_meld", "data.split=train", f"paths.output_dir={tmp_path}", f"checkpoint={export}",
            "data.generate.per_label=1", "data.generate.train_per_label=2", "variant=imagined", "mapper=score",
            "device=cpu", f"run_dir={tmp_path}/eval", *imagine_argv(t2i)]
    assert eval_cmd.main(args) == 0
    capsys.readouterr()
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["imagination"]["drawn"] == 0 and metrics["imagination"]["cached"] == 14


def refused(capsys, argv: list[str], *expected: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        train_cmd.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for text in expected:
        assert text in lines[0], lines[0]


def test_bad_text_training_settings_are_one_line(t2i, tmp_path, capsys):
    refused(capsys, train_argv(tmp_path, "data.imagined=true"), "paths.t2i is not set", "data.imagined=false")
    refused(capsys, train_argv(tmp_path, "data.imagined=true", f"paths.t2i={t2i}", "imagine.size=36"),
            "imagine.size=36", "multiple of 8")
    refused(capsys, train_argv(tmp_path, "data.media=audio"), "data.media=audio", "video, image, text")
    refused(capsys, train_argv(tmp_path, "data.labels=[neutral,joy]"), "data.labels=[neutral,joy]", "MELD")
    refused(capsys, train_argv(tmp_path, "data=iemocap", f"data.root={tmp_path}"), "data.kind=iemocap",
            "data=synthetic_meld")
    assert not (tmp_path / "synthetic_meld").exists()  # refused before anything was written


@pytest.mark.slow
def test_training_on_the_synthetic_train_split_beats_chance_on_its_test_split(tmp_path, capsys):
    """The embedded default learns: experiment=tiny_text_coarse as configured (210 train utterances), then the
    WALL-E evaluation of the test split (42 utterances), text only, by label likelihood. Measured: weighted
    F1 1.0 (dev WAR 1.0) on 2 CPU cores; a uniform guess scores about 1/7."""
    out = run_train(capsys, train_argv(tmp_path))
    export = Path(out["model"])
    assert json.loads((export / "meta.json").read_text())["labels"] == CONFIG_LABELS
    assert out["val/war"] >= 0.8
    args = ["data=synthetic_meld", f"paths.output_dir={tmp_path}", f"checkpoint={export}", "variant=text",
            "mapper=score", "device=cpu", f"run_dir={tmp_path}/eval"]
    assert eval_cmd.main(args) == 0
    capsys.readouterr()
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n"] == 42 and metrics["primary_variant"] == "text"
    assert metrics["weighted_f1"] >= 0.8, metrics["weighted_f1"]  # measured 1.0; chance is about 0.14
