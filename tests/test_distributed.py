"""Exports of multi-process runs: every rank joins the gather of the full weights, rank 0 writes them."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from conftest import train_overrides
from emotion_llama.encoders.build import EncoderShapes
from emotion_llama.model.builder import build_model
from emotion_llama.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from emotion_llama.model.config import ModelConfig
from emotion_llama.model.tokenizer import build_tiny_tokenizer
from emotion_llama.training.lightning import EmotionLLaMAModule
from emotion_llama.training.train import gather_export_state

REPO = Path(__file__).resolve().parents[1]
SHAPES = EncoderShapes(dims={"eva": 24, "mae": 20, "videomae": 18, "hubert": 16}, eva_patches=16)
ARCH = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
            num_key_value_heads=4, max_position_embeddings=256)
LORA = dict(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"], modules_to_save=["embed_tokens"])


@pytest.fixture(scope="module")
def tiny():
    cfg = ModelConfig(llm_arch=ARCH, lora=LORA)
    tokenizer = build_tiny_tokenizer(["the person smiles and the voice is loud"], vocab_size=256)
    return cfg, tokenizer


def test_gather_without_a_process_group_is_the_whole_state(tiny):
    cfg, tokenizer = tiny
    model = build_model(cfg, tokenizer, SHAPES)
    module = EmotionLLaMAModule(model, optimizer=None, scheduler=None, label_candidates=[[1], [2]])
    trainer = SimpleNamespace(strategy=SimpleNamespace(model=module))
    full = gather_export_state(trainer, module, with_frozen=True)
    assert full.keys() == model.state_dict().keys()
    assert all(torch.equal(full[k], v) and full[k].device.type == "cpu" for k, v in model.state_dict().items())
    trainable = gather_export_state(trainer, module, with_frozen=False)
    assert set(trainable) == {n for n, p in model.named_parameters() if p.requires_grad}


def test_save_checkpoint_writes_the_given_state_not_the_models(tiny, tmp_path):
    """The export of a sharded run: ``model`` gives the structure, the gathered state every weight."""
    cfg, tokenizer = tiny
    torch.manual_seed(0)
    holder = build_model(cfg, tokenizer, SHAPES)  # stands in for a rank-0 model that holds only its shard
    torch.manual_seed(1)
    trained = build_model(cfg, tokenizer, SHAPES)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p))  # LoRA B, modules_to_save copies and the base all differ from holder
    state = {k: v.clone() for k, v in trained.state_dict().items()}
    save_checkpoint(holder, cfg, tokenizer, tmp_path / "ckpt", state_dict=state)
    loaded, _, _ = load_checkpoint(tmp_path / "ckpt", shapes=SHAPES)
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, msg=key)

    lora = next(k for k in state if "lora_A" in k)
    with pytest.raises(CheckpointError, match="lacks 1 of the model's weights"):
        save_checkpoint(holder, cfg, tokenizer, tmp_path / "bad", state_dict={k: v for k, v in state.items() if k != lora})
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_ddp_two_cpu_processes_export_the_trained_weights(merr_folder, tmp_path):
    """``trainer=ddp`` on 2 CPU processes (gloo), started as a user does: Lightning re-runs the script for rank 1."""
    out = tmp_path / "out"
    overrides = train_overrides(
        merr_folder, out, "experiment=tiny_coarse", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
        "trainer.precision=32-true", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1", "+trainer.num_sanity_val_steps=0",
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "train.py"), *overrides], capture_output=True,
                          text=True, env=env, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # One JSON result per rank (both processes ran train() to its end); the two share stdout, so a line may
    # hold both.
    results = re.findall(r'\{"model": [^{}]*\}', proc.stdout)
    assert len(results) == 2, proc.stdout
    results = [json.loads(r) for r in results]

    run = out / "runs" / "tiny_coarse"
    export = Path(results[0]["model"])
    assert export == run / "model"
    assert json.loads((export / "meta.json").read_text())["step"] == 2
    model, _, _ = load_checkpoint(export)  # strict: fails on any missing weight
    # Rank 0's Lightning checkpoint of the same step holds the whole trained model (trainer=ddp replicates it).
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2
    trained = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    exported = model.state_dict()
    assert exported.keys() == trained.keys()
    for key, value in exported.items():
        torch.testing.assert_close(value, trained[key], rtol=0, atol=0, msg=key)
    projectors = load_file(export / "projectors.safetensors")
    assert {k.split(".")[0] for k in projectors} == {"eva_patch", "eva_cls", "mae", "videomae", "hubert"}
    lora_b = [v for k, v in exported.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # trained: LoRA B starts at zero
