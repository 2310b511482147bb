"""EmoVIT's InstructBLIP backbone through the project's commands: training on a synthetic image set without a
feature cache, strict checkpoints, evaluation (score and generate) and inference on an image."""

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from media_fixtures import write_synthetic_videos
from omegaconf import OmegaConf
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import InstructBlipForConditionalGeneration

from conftest import CONF_DIR
from emotion_llama.commands import evaluate as eval_command
from emotion_llama.commands import infer as infer_command
from emotion_llama.commands import train as train_command
from emotion_llama.datasets.emoset import read_emoset
from emotion_llama.datasets.features import stack_features
from emotion_llama.datasets.media import read_image
from emotion_llama.datasets.pixels import IMAGE_PRESENT, ImagePixels, image_features
from emotion_llama.errors import WeightsNotFoundError
from emotion_llama.inference.core import InferenceCore, checkpoint_overrides
from emotion_llama.labels import EMOSET_LABELS, MERR_LABELS
from emotion_llama.model.builder import build_model, build_tokenizer
from emotion_llama.model.checkpoint import (
    BASE_INSTRUCTBLIP_DIR,
    TRAINABLE_FILE,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from emotion_llama.model.config import ModelConfig
from emotion_llama.model.fusion import IMAGE, PRESENT
from emotion_llama.model.instructblip import ImageTransform, InstructBlipEmotion, save_tiny_instructblip
from emotion_llama.training.train import train

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = Path(CONF_DIR) / "model" / "instructblip_tiny.yaml"
SIZE = 32  # the tiny preset's image size


def tiny_config(**changes) -> ModelConfig:
    return ModelConfig.from_dict({**OmegaConf.to_container(OmegaConf.load(TINY)), **changes})


def compose_train(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def pixels(batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    images = torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    return stack_features([image_features(image) for image in images])


def scores(model, tokenizer, features, labels=EMOSET_LABELS) -> torch.Tensor:
    return InferenceCore(model, tokenizer, device="cpu").score([""] * len(features[IMAGE]), features, labels,
                                                               media="image")


def exit_code(command, argv: list[str]) -> int:
    """A command's exit code: what ``main`` returns, or the code it exits with (2 for a user mistake)."""
    try:
        return command.main(argv)
    except SystemExit as exit_:
        return exit_.code


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ fast


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """An untrained tiny InstructBLIP checkpoint whose Q-Former has moved off its seeded initialisation."""
    cfg = tiny_config()
    tokenizer = build_tokenizer(cfg)
    model = build_model(cfg, tokenizer)
    with torch.no_grad():
        for p in model.blip.qformer.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    ckpt = save_checkpoint(model, cfg, tokenizer, tmp_path_factory.mktemp("ib") / "model")
    return model.eval(), tokenizer, ckpt


def test_the_backbone_setting_builds_instructblip_everywhere():
    cfg = tiny_config()
    assert cfg.is_instructblip and cfg.reads_pixels and cfg.random_base
    model = build_model(cfg, build_tokenizer(cfg))
    assert isinstance(model, InstructBlipEmotion)
    assert (model.num_video_tokens, model.num_feature_tokens) == (8, 0)
    # EmoVIT's recipe: only the Q-Former, its query tokens and the language projection are trained.
    trained = {n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {"query_tokens", "qformer", "language_projection"}
    with pytest.raises(ValueError, match="model.backbone"):
        tiny_config(backbone="blip3")


def test_checkpoint_reloads_strictly_with_identical_scores(saved):
    model, tokenizer, ckpt = saved
    files = sorted(p.name for p in ckpt.iterdir())
    assert files == [BASE_INSTRUCTBLIP_DIR, "config.yaml", "meta.json", "qformer_tokenizer", "tokenizer",
                     TRAINABLE_FILE]
    trained = load_file(ckpt / TRAINABLE_FILE)
    assert {k.split(".")[0] for k in trained} == {"query_tokens", "qformer", "language_projection"}
    # The base folder is a plain transformers InstructBLIP folder.
    base = InstructBlipForConditionalGeneration.from_pretrained(str(ckpt / BASE_INSTRUCTBLIP_DIR))
    torch.testing.assert_close(base.qformer.state_dict(), model.blip.qformer.state_dict())

    reloaded, cfg, tok = load_checkpoint(ckpt)
    assert cfg.backbone == "instructblip" and tok.get_vocab() == tokenizer.get_vocab()
    for (name, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    feats = pixels(4)
    assert torch.equal(scores(model, tokenizer, feats), scores(reloaded.eval(), tok, feats))


def test_an_incomplete_checkpoint_is_one_line_naming_the_file(saved, tmp_path):
    _, _, ckpt = saved
    broken = shutil.copytree(ckpt, tmp_path / "broken")
    weights = load_file(broken / TRAINABLE_FILE)
    gone = next(k for k in weights if k.startswith("qformer."))
    save_file({k: v for k, v in weights.items() if k != gone}, broken / TRAINABLE_FILE)
    with pytest.raises(CheckpointError, match=f"{TRAINABLE_FILE}: 1 weights are missing") as err:
        load_checkpoint(broken)
    assert str(broken) in str(err.value) and "\n" not in str(err.value)

    shutil.rmtree(broken / BASE_INSTRUCTBLIP_DIR)
    with pytest.raises(CheckpointError, match=f"{BASE_INSTRUCTBLIP_DIR} not found"):
        load_checkpoint(broken)


def test_a_model_from_a_folder_saves_only_its_trained_weights_and_rereads_the_folder(tmp_path):
    tokenizer = build_tokenizer(tiny_config())
    folder = save_tiny_instructblip(tmp_path / "instructblip", tokenizer, seed=1)
    cfg = tiny_config(preset="instructblip_folder", instructblip_path=str(folder), tokenizer_path=str(folder),
                      dtype="bfloat16", weights_required=True)
    assert not cfg.random_base
    model = build_model(cfg, build_tokenizer(cfg))
    assert model.blip.language_model.dtype == torch.bfloat16 and model.blip.qformer.dtype == torch.float32
    with torch.no_grad():
        model.blip.query_tokens.add_(0.1)
    ckpt = save_checkpoint(model, cfg, build_tokenizer(cfg), tmp_path / "model")
    assert not (ckpt / BASE_INSTRUCTBLIP_DIR).exists()  # the frozen weights stay in their folder
    reloaded, _, tok = load_checkpoint(ckpt)
    feats = pixels(3)
    assert torch.equal(scores(model.eval(), tok, feats), scores(reloaded.eval(), tok, feats))

    moved = folder.rename(tmp_path / "elsewhere")
    with pytest.raises(WeightsNotFoundError, match="paths.instructblip"):
        load_checkpoint(ckpt)
    # paths.instructblip=DIR at evaluation or inference time names the folder's new place.
    again, _, _ = load_checkpoint(ckpt, checkpoint_overrides(ckpt, {"instructblip": str(moved)}))
    assert torch.equal(again.blip.query_tokens, model.blip.query_tokens)


def test_pixel_inputs_batch_with_the_image_marked_present(tmp_path):
    paths = []
    for i, colour in enumerate([(200, 30, 30), (30, 30, 200)]):
        paths.append(tmp_path / f"img_{i}.jpg")
        Image.new("RGB", (48, 40), colour).save(paths[-1])
    images = ImagePixels(paths, ImageTransform(image_size=SIZE))
    assert list(images) == ["img_0", "img_1"]
    batch = stack_features([images["img_0"], images["img_1"]])
    assert batch[IMAGE].shape == (2, 3, SIZE, SIZE)
    assert batch[PRESENT].tolist() == [list(IMAGE_PRESENT)] * 2 == [[True, False, False, False]] * 2
    expected = ImageTransform(image_size=SIZE)(read_image(paths[1]))
    torch.testing.assert_close(batch[IMAGE][1], expected)
    # eval.drop=[visual] zeroes the pixels, as it zeroes the fusion model's visual features.
    assert not ImagePixels(paths, ImageTransform(image_size=SIZE), drop=["visual"])["img_0"][IMAGE].any()


def test_commands_refuse_video_data_for_an_image_model(saved, tmp_path, capsys, restore_logging):
    argv = ["experiment=tiny_instructblip_coarse", f"paths.output_dir={tmp_path}", "data=synthetic"]
    assert exit_code(train_command, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "reads still images" in err[0] and "data=synthetic_images" in err[0]
    assert not (tmp_path / "synthetic").exists()  # refused before any data is made

    _, _, ckpt = saved
    assert exit_code(eval_command, ["data=merr", f"checkpoint={ckpt}", f"run_dir={tmp_path / 'eval'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "image set" in err[0] and "data.kind=merr" in err[0]

    assert exit_code(train_command, ["experiment=tiny_instructblip_coarse", "model.backbone=blip3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.backbone=blip3" in err[0]

    # Stage 2 trains what stage 1 trained: the tiny experiment's train_llm=true on a train_llm=false checkpoint
    # is refused rather than silently training the checkpoint's way.
    argv = ["experiment=tiny_instructblip_fine", f"paths.output_dir={tmp_path}", "data.generate=null",
            f"stage.init_from={ckpt}"]
    assert exit_code(train_command, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "set model.train_llm=false" in err[0]


# ------------------------------------------------------------------------------------------------ trained


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread):
    """The tiny InstructBLIP trained (stage 1) through the train entry on a small synthetic image set that the
    data config makes itself; no features are ever extracted."""
    out = tmp_path_factory.mktemp("ib_run")
    cfg = compose_train([
        "experiment=tiny_instructblip_coarse", f"paths.output_dir={out}", "data.generate.images_per_label=5",
        "trainer.max_epochs=6", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false",
        "scheduler.num_warmup_steps=2",
    ])
    metrics, objects = train(cfg)
    return out, metrics, objects


def test_training_lowers_the_loss_without_a_feature_cache(trained):
    out, metrics, objects = trained
    run = out / "runs" / "tiny_instructblip_coarse"
    with open(next(run.glob("csv/version_*/metrics.csv"))) as f:
        losses = [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]
    assert len(losses) >= 10
    assert losses[-1] < 0.6 * losses[0], losses
    assert 0.0 <= metrics["val/war"] <= 1.0
    root = out / "synthetic_images"
    assert (root / "instructions" / "conversation.json").is_file()
    assert not (root / "features").exists()  # the model read the pixels; nothing was extracted
    export = run / "model"
    assert json.loads((export / "meta.json").read_text())["stage"] == "image_coarse"
    # The frozen ViT left training untouched: it is the seeded random base; the Q-Former side (and, in the tiny
    # experiment, the random LLM) was trained and saved as such.
    model = objects["model"]
    assert objects["trainer"].lightning_module.model is model and model.train_llm
    base = build_model(tiny_config(), objects["tokenizer"])
    for (n, a), (_, b) in zip(model.blip.vision_model.state_dict().items(),
                              base.blip.vision_model.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=n)
    assert not torch.equal(model.blip.query_tokens, base.blip.query_tokens)
    saved = load_file(export / TRAINABLE_FILE)
    assert {k.split(".")[0] for k in saved} == {"query_tokens", "qformer", "language_projection", "language_model"}


def test_the_trained_model_reloads_with_identical_scores_and_stage2_starts_from_it(trained):
    out, _, objects = trained
    export = out / "runs" / "tiny_instructblip_coarse" / "model"
    model, tokenizer = objects["model"].eval(), objects["tokenizer"]
    reloaded, _, tok = load_checkpoint(export)
    feats = pixels(6, seed=3)
    assert torch.equal(scores(model, tokenizer, feats), scores(reloaded.eval(), tok, feats))

    fine = compose_train(["experiment=tiny_instructblip_fine", f"paths.output_dir={out}",
                          "data.generate.images_per_label=5", "trainer.max_epochs=0",
                          "trainer.enable_progress_bar=false"])
    assert fine.stage.instructions == ["categorical", "conversation", "reasoning"]
    _, fine_objects = train(fine)
    for (n, a), (_, b) in zip(model.state_dict().items(), fine_objects["model"].state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=n)


@pytest.mark.parametrize("protocol", ["score", "generate"])
def test_eval_command_writes_metrics_from_the_images(trained, protocol, tmp_path, capsys, restore_logging):
    out, _, _ = trained
    export = out / "runs" / "tiny_instructblip_coarse" / "model"
    run_dir = tmp_path / protocol
    argv = ["data=synthetic_images", f"paths.output_dir={out}", f"checkpoint={export}", f"protocol={protocol}",
            f"run_dir={run_dir}", "device=cpu"]
    assert exit_code(eval_command, argv) == 0, capsys.readouterr().err
    printed = last_json(capsys.readouterr().out)
    report = json.loads((run_dir / "metrics.json").read_text())
    assert {"war", "uar", "weighted_f1", "macro_f1"} <= set(report) and report["protocol"] == protocol
    assert printed["war"] == report["war"] and report["missing"]["count"] == 0
    with open(run_dir / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    test_images = read_emoset(out / "synthetic_images", "test", load_annotations=False)
    assert sorted(r["name"] for r in rows) == sorted(Path(r.image).stem for r in test_images)
    accuracy = sum(r["truth"] == r["prediction"] for r in rows) / len(rows)
    assert report["war"] == pytest.approx(accuracy)
    if protocol == "generate":
        assert "n_unparseable" in report["subsets"]["test"]
        return
    # The scores are the inference core's on the images' pixels (read and processed as in training).
    core = InferenceCore.load(export, device="cpu")
    by_name = {Path(r.image).stem: r.image for r in test_images}
    names = [r["name"] for r in rows]
    feats = stack_features([image_features(core.image_transform(read_image(by_name[n]))) for n in names])
    expected = core.score([""] * len(names), feats, EMOSET_LABELS, media="image")
    got = torch.tensor([[float(r[f"score_{label}"]) for label in EMOSET_LABELS] for r in rows])
    torch.testing.assert_close(got, expected, atol=1e-3, rtol=0)
    assert [r["prediction"] for r in rows] == [EMOSET_LABELS[i] for i in expected.argmax(1).tolist()]


def test_infer_command_answers_an_image_and_refuses_a_video(trained, tmp_path, capsys, restore_logging):
    out, _, _ = trained
    export = out / "runs" / "tiny_instructblip_coarse" / "model"
    image = read_emoset(out / "synthetic_images", "test", load_annotations=False)[0].image
    # The candidates are the labels the checkpoint was trained on (EmoSet's here), as recorded in meta.json.
    assert json.loads((export / "meta.json").read_text())["labels"] == list(EMOSET_LABELS)
    assert exit_code(infer_command, [str(image), "--json", f"checkpoint={export}", "device=cpu"]) == 0
    row = last_json(capsys.readouterr().out)
    assert row["media"] == "image" and list(row["scores"]) == list(EMOSET_LABELS)
    assert row["emotion"] == max(row["scores"], key=row["scores"].get)
    core = InferenceCore.load(export, device="cpu")
    assert core.labels == list(EMOSET_LABELS)
    feats = stack_features([image_features(core.image_transform(read_image(image)))])
    for labels, argv in ((EMOSET_LABELS, []), (MERR_LABELS, ["labels=merr"]), (["awe", "fear"], ["labels=[awe,fear]"])):
        if argv:
            assert exit_code(infer_command, [str(image), "json=true", f"checkpoint={export}", "device=cpu", *argv]) == 0
            row = last_json(capsys.readouterr().out)
        probs = core.score([""], feats, list(labels), media="image").softmax(-1)[0]
        assert list(row["scores"]) == list(labels)
        assert [row["scores"][label] for label in labels] == pytest.approx(probs.tolist(), abs=1e-4)
    assert exit_code(infer_command, [str(image), "labels=emoset9", f"checkpoint={export}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "labels=emoset9" in err[0]

    video = write_synthetic_videos(tmp_path) / "good.mp4"
    assert exit_code(infer_command, [str(video), "json=true", f"checkpoint={export}", "device=cpu"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(video) in err[0] and "answers images only" in err[0]
