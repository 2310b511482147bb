import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from conftest import CONF_DIR, train_overrides
from emotion_llama.training.train import train


def cfg_for(overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


@pytest.mark.parametrize("experiment", ["tiny_coarse", "tiny_fine", "emotion_llama_stage1", "emotion_llama_stage2"])
def test_experiments_compose(experiment):
    cfg = cfg_for([f"experiment={experiment}"])
    assert cfg.name == experiment
    assert cfg.stage.name in ("coarse", "fine")
    assert cfg.optimizer._partial_ and cfg.scheduler._partial_
    # The release's answer processing is on in the release's experiments only.
    assert cfg.data.clean_answers is experiment.startswith("emotion_llama")


def test_real_experiment_fails_clearly_without_weights(tmp_path, capsys):
    cfg = cfg_for([f"paths.output_dir={tmp_path}", "experiment=emotion_llama_stage1", f"data.root={tmp_path}"])
    with pytest.raises(Exception, match=r"set (paths\.llm|data)|not found"):
        train(cfg)


def test_coarse_then_fine_and_exact_resume(merr_folder, tmp_path):
    out = tmp_path / "out"
    common = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.log_every_n_steps=1"]
    metrics, objs = train(cfg_for(train_overrides(merr_folder, out, "experiment=tiny_coarse", *common)))
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert 0.0 <= metrics["val/war"] <= 1.0
    export = out / "runs" / "tiny_coarse" / "model"
    assert (export / "adapter" / "adapter_config.json").is_file()
    assert json.loads((export / "meta.json").read_text())["stage"] == "coarse"

    # Stage 2 starts from stage 1's weights exactly.
    fine_cfg = cfg_for(train_overrides(merr_folder, out, "experiment=tiny_fine", "trainer.max_epochs=0"))
    _, fine_objs = train(fine_cfg)
    for (n, a), (_, b) in zip(objs["model"].state_dict().items(), fine_objs["model"].state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=n)

    # Resume: a run stopped after epoch 1 and restarted ends exactly where an uninterrupted run does.
    two_epochs = ["experiment=tiny_coarse", "trainer.max_epochs=2", "trainer.limit_train_batches=2"]
    full = train(cfg_for(train_overrides(merr_folder, tmp_path / "full", *two_epochs)))[1]
    resumed_out = tmp_path / "resumed"
    stop = "+callbacks.stop._target_=conftest.StopAfterFirstEpoch"
    stopped = train(cfg_for(train_overrides(merr_folder, resumed_out, *two_epochs, stop)))[1]
    assert stopped["trainer"].global_step == 2
    resumed = train(cfg_for(train_overrides(merr_folder, resumed_out, *two_epochs)))[1]
    assert resumed["trainer"].global_step == full["trainer"].global_step == 4
    for (n, a), (_, b) in zip(full["model"].state_dict().items(), resumed["model"].state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=n)


def test_length_grouped_batches_pad_less_and_keep_every_example(merr_folder, tiny_shapes):
    from emotion_llama.datasets.features import FeatureStore
    from emotion_llama.datasets.instruction import EpochSampler, MERRDataset, load_records
    from emotion_llama.model.builder import build_tokenizer
    from emotion_llama.model.config import ModelConfig

    records = load_records(merr_folder / "splits" / "train.txt", merr_folder / "subtitles.csv",
                           merr_folder / "coarse.json", merr_folder / "fine.json")
    # Long and short answers side by side: half the draws describe, half name the label.
    records = [r if i % 2 else r.__class__(r.name, r.label, r.subtitle, r.caption * 6) for i, r in enumerate(records)]
    data = MERRDataset(records, FeatureStore(merr_folder), build_tokenizer(ModelConfig()), 4, 4,
                       tasks={"emotion": 0.5, "describe": 0.5}, seed=3)

    def padding(sampler: EpochSampler, batch: int = 3) -> int:
        keys = list(sampler)
        lengths = [data.length(*k) for k in keys]
        return sum(max(c) * len(c) - sum(c) for c in (lengths[i:i + batch] for i in range(0, len(keys), batch)))

    plain = EpochSampler(len(data), seed=1)
    grouped = EpochSampler(len(data), seed=1, length=data.length, group_size=len(data))
    for s in (plain, grouped):
        s.set_epoch(2)
    assert sorted(i for _, i in grouped) == list(range(len(data)))
    assert list(grouped) == list(grouped)  # deterministic for (seed, epoch)
    assert padding(grouped) < padding(plain)


@pytest.mark.parametrize("clean", [False, True])
def test_data_clean_answers_reaches_the_training_examples(merr_folder, tmp_path, clean):
    from types import SimpleNamespace

    from emotion_llama.datasets.features import FeatureStore
    from emotion_llama.model.builder import build_tokenizer
    from emotion_llama.model.config import ModelConfig
    from emotion_llama.model.prompts import clean_answer
    from emotion_llama.model.sequences import encode_answer
    from emotion_llama.training.train import _dataset

    cfg = cfg_for([*train_overrides(merr_folder, tmp_path, "experiment=tiny_coarse", f"data.clean_answers={clean}"),
                   "stage.tasks.emotion=0"])
    tok = build_tokenizer(ModelConfig())
    data = _dataset(cfg, "train", FeatureStore(merr_folder), tok, SimpleNamespace(num_video_tokens=4, num_feature_tokens=4), True)
    item = data[0]
    caption = data.records[0].caption  # "The person looks neutral and speaks."
    answer = encode_answer(tok, clean_answer(caption) if clean else caption)
    assert item["task"] == "describe" and item["input_ids"][-len(answer):] == answer
    assert (clean_answer(caption) != caption) and (item["labels"][-len(answer) - 1] == -100)


def test_activation_checkpointing_switch_trains(merr_folder, tmp_path):
    out = tmp_path / "ckpt"
    metrics, objs = train(cfg_for(train_overrides(
        merr_folder, out, "experiment=tiny_coarse", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1", "activation_checkpointing=true")))
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert objs["model"].llm.get_base_model().is_gradient_checkpointing
    lora_b = [p for n, p in objs["model"].named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b)  # gradients reached the adapters through recomputation
