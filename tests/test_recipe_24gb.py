"""The one-card 24 GB recipe (trainer=gpu_24gb, experiment=emotion_llama_stage{1,2}_24gb) and its optimizer."""

import logging
import sys
import types

import hydra
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from conftest import CONF_DIR
from emotion_llama.settings import validate
from emotion_llama.training.optimizers import adamw_8bit


def cfg_for(overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


@pytest.mark.parametrize("model", ["emotion_llama_7b", "emotion_qwen2_5_7b"])
@pytest.mark.parametrize("recipe", [["experiment=emotion_llama_stage1_24gb"], ["experiment=emotion_llama_stage2_24gb"],
                                    ["trainer=gpu_24gb", "data=merr"]])
def test_the_24gb_recipe_composes_with_each_backbone(recipe, model, monkeypatch):
    cfg = cfg_for([*recipe, f"model={model}"])
    assert cfg.model.preset == model and cfg.model.dtype == "bfloat16"
    trainer = cfg.trainer
    assert (trainer.accelerator, trainer.devices, trainer.strategy, trainer.precision) == ("gpu", 1, "auto", "bf16-mixed")
    # The release's batch: 1 per GPU on 4 GPUs = 1 per step x 4 accumulated.
    assert cfg.data.batch_size * trainer.accumulate_grad_batches == 4
    assert cfg.activation_checkpointing is True
    assert cfg.optimizer._target_ == "emotion_llama.training.optimizers.adamw_8bit" and cfg.optimizer._partial_
    if recipe[0].startswith("experiment="):
        # The release's 1000 optimizer steps an epoch, its lr and stage; stage 2 continues the 24 GB stage 1.
        assert trainer.limit_train_batches == 4000 and cfg.optimizer.lr == 1e-5 and cfg.data.max_length == 1024
        if "stage2" in recipe[0]:
            assert cfg.stage.name == "fine" and cfg.stage.init_from.endswith("runs/emotion_llama_stage1_24gb/model")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the accelerator check wants a GPU
    validate("train", cfg)


def test_the_release_experiments_are_unchanged_by_the_recipe():
    cfg = cfg_for(["experiment=emotion_llama_stage1"])
    assert cfg.trainer.devices == 4 and cfg.trainer.strategy == "ddp" and "accumulate_grad_batches" not in cfg.trainer
    assert cfg.optimizer._target_ == "torch.optim.AdamW" and cfg.activation_checkpointing is False


def test_without_bitsandbytes_the_optimizer_is_torch_adamw_after_one_warning(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import bitsandbytes -> ImportError, installed or not
    weights = [torch.nn.Parameter(torch.zeros(64, 64))]
    factory = hydra.utils.instantiate(cfg_for(["trainer=gpu_24gb", "optimizer.lr=3e-5"]).optimizer)
    with caplog.at_level(logging.WARNING, logger="emotion_llama"):
        optimizer = factory(weights)
    assert type(optimizer) is torch.optim.AdamW
    group = optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"], group["betas"]) == (3e-5, 0.05, (0.9, 0.999))
    (record,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "torch.optim.AdamW" in record.getMessage() and "\n" not in record.getMessage()
    weights[0].grad = torch.ones(64, 64)
    optimizer.step()
    assert torch.all(weights[0] < 0)


def test_with_bitsandbytes_the_optimizer_is_its_8bit_adamw(monkeypatch, caplog):
    made = {}

    class AdamW8bit:
        def __init__(self, params, **kwargs):
            made.update(kwargs, params=list(params))

    fake = types.ModuleType("bitsandbytes")
    fake.optim = types.SimpleNamespace(AdamW8bit=AdamW8bit)
    monkeypatch.setitem(sys.modules, "bitsandbytes", fake)
    weight = torch.nn.Parameter(torch.zeros(2))
    with caplog.at_level(logging.WARNING):
        optimizer = adamw_8bit([weight], lr=1e-5, weight_decay=0.05, betas=[0.9, 0.95])
    assert isinstance(optimizer, AdamW8bit) and not caplog.records
    assert made == {"params": [weight], "lr": 1e-5, "weight_decay": 0.05, "betas": (0.9, 0.95), "eps": 1e-8}
