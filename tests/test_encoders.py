"""Frozen encoder wrappers: shapes, freezing, seeding, the real loaders (on tiny checkpoints) and real sizes."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close
from transformers import VideoMAEForPreTraining, ViTMAEForPreTraining

from emotion_llama.encoders import (
    ENCODERS,
    EvaEncoder,
    FaceMAEEncoder,
    HubertEncoder,
    VideoMAEEncoder,
)
from emotion_llama.errors import UserError, WeightsNotFoundError

# BLIP-2's EVA normalisation, written out here so that a wrong constant in the encoder fails the test
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _inputs(encoder, batch: int = 2) -> tuple:
    g = torch.Generator().manual_seed(0)
    if isinstance(encoder, HubertEncoder):
        return (torch.randn(batch, 1600, generator=g),)
    if isinstance(encoder, FaceMAEEncoder):
        return (torch.randn(batch, 3, 3, encoder.image_size, encoder.image_size, generator=g),)
    if isinstance(encoder, VideoMAEEncoder):
        return (torch.randn(batch, 16, 3, encoder.image_size, encoder.image_size, generator=g),)
    return (torch.randn(batch, 3, encoder.image_size, encoder.image_size, generator=g),)


@pytest.fixture(scope="module")
def tiny() -> dict:
    return {name: cls.tiny(seed=0) for name, cls in ENCODERS.items()}


# tokens per sample: HuBERT's 4 frames (20 ms hop) of 1600 samples, MAE crops, VideoMAE 8x4x4 tubes, EVA CLS + 8x8 patches
@pytest.mark.parametrize("name, num_tokens", [("hubert", 4), ("mae", 3), ("videomae", 128), ("eva", 65)])
def test_forward_shapes(tiny, name, num_tokens):
    encoder = tiny[name]
    out = encoder(*_inputs(encoder))
    assert encoder.num_features == 64
    assert out.tokens.shape == (2, num_tokens, 64)
    assert out.pooled.shape == (2, 64)
    assert torch.isfinite(out.tokens).all()


def test_eva_layout(tiny):
    eva = tiny["eva"]
    assert (eva.num_patches, eva.grid_size) == (64, (8, 8))
    out = eva(*_inputs(eva))
    assert_close(out.pooled, out.tokens[:, 0])


@pytest.mark.parametrize("name", list(ENCODERS))
def test_frozen_stays_in_eval_without_grads(tiny, name):
    encoder = tiny[name]
    encoder.train()
    assert not any(m.training for m in encoder.modules())
    assert not any(p.requires_grad for p in encoder.parameters())
    trainable = ENCODERS[name].tiny(seed=0, frozen=False).train()
    assert all(m.training for m in trainable.modules())
    assert all(p.requires_grad for n, p in trainable.named_parameters() if "position_embeddings" not in n)


@pytest.mark.parametrize("name", list(ENCODERS))
def test_tiny_is_seeded(name):
    cls = ENCODERS[name]
    state = torch.get_rng_state()
    a, b, c = cls.tiny(seed=0), cls.tiny(seed=0), cls.tiny(seed=1)
    assert torch.equal(state, torch.get_rng_state())  # callers' randomness is left alone
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert not all(torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())


@pytest.mark.parametrize("name", list(ENCODERS))
def test_missing_weights_name_the_config_key(tmp_path, name):
    with pytest.raises(WeightsNotFoundError, match=f"paths\\.{name}="):
        ENCODERS[name].from_pretrained(tmp_path / "nowhere")


def _hf_source(name: str):
    """A tiny model saved as the real release is: HuBERT as a bare model, (Video)MAE as pre-training models."""
    config = ENCODERS[name].tiny_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        if name == "mae":
            config.mask_ratio = 0.75
            return ViTMAEForPreTraining(config).eval(), lambda m: m.vit
        if name == "videomae":
            return VideoMAEForPreTraining(config).eval(), lambda m: m.videomae
        return ENCODERS[name].hf_class(config).eval(), lambda m: m


@pytest.mark.parametrize("name", ["hubert", "mae", "videomae"])
def test_hf_loader_matches_source(tmp_path, tiny, name):
    source, base = _hf_source(name)
    source.save_pretrained(tmp_path)
    source.config.mask_ratio = 0.0
    loaded = ENCODERS[name].from_pretrained(tmp_path)
    inputs = _inputs(loaded)
    if name == "mae":
        faces = inputs[0].flatten(0, 1)
        noise = torch.arange(16.0).expand(len(faces), -1)
        with torch.no_grad():
            hidden = base(source)(pixel_values=faces, noise=noise).last_hidden_state
        expected = hidden[:, 1:].mean(1).view(2, 3, -1)
    else:
        with torch.no_grad():
            expected = base(source)(*inputs).last_hidden_state
    assert_close(loaded(*inputs).tokens, expected)
    assert not any(p.requires_grad for p in loaded.parameters())


def test_hf_loader_fails_on_missing_weights(tmp_path):
    source = HubertEncoder.tiny().model
    state = {k: v for k, v in source.state_dict().items() if "encoder.layers.1." not in k}
    source.save_pretrained(tmp_path, state_dict=state)
    with pytest.raises(UserError, match="paths.hubert"):
        HubertEncoder.from_pretrained(tmp_path)


def test_hubert_pooling_ignores_padding(tiny):
    hubert = tiny["hubert"]
    wave = hubert.preprocess(np.random.default_rng(0).standard_normal(1600))
    assert abs(float(wave.mean())) < 1e-5 and abs(float(wave.std(unbiased=False)) - 1) < 1e-3
    padded = torch.stack([wave, F.pad(wave[:800], (0, 800))])  # (2, 1600)
    mask = torch.tensor([[1] * 1600, [1] * 800 + [0] * 800])
    out = hubert(padded, attention_mask=mask)
    assert_close(out.pooled[1], hubert(wave[None, :800]).pooled[0], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(out.pooled[1], out.tokens[1].mean(0))


def test_mae_pooling_ignores_padded_crops(tiny):
    mae = tiny["mae"]
    out = mae(*_inputs(mae), mask=torch.tensor([[1, 1, 0], [1, 1, 1]]))
    assert_close(out.pooled[0], out.tokens[0, :2].mean(0))
    assert_close(out.pooled[1], out.tokens[1].mean(0))


def test_preprocess_frames(tiny):
    grey = np.full((16, 40, 60, 3), 128, dtype=np.uint8)
    clip = tiny["videomae"].preprocess(grey)
    faces = tiny["mae"].preprocess(grey[:3])
    images = tiny["eva"].preprocess(grey[:1])
    assert clip.shape == (16, 3, 32, 32) and faces.shape == (3, 3, 32, 32)
    assert images.shape == (1, 3, 112, 112)
    assert_close(images[0, :, 0, 0], (128 / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD))
    with pytest.raises(ValueError, match="16 frames"):
        tiny["videomae"].preprocess(grey[:8])


def _perturbed_tiny_eva(img_size: int) -> EvaEncoder:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        eva = EvaEncoder.from_config({**EvaEncoder.tiny_config(), "img_size": img_size})
        torch.nn.init.normal_(eva.ln_vision.weight)  # so that loading ln_vision is observable
    return eva


def test_eva_loads_minigpt_checkpoint(tmp_path):
    source = _perturbed_tiny_eva(112)
    state = {f"visual_encoder.{k}": v.half() for k, v in source.model.state_dict().items()}
    state |= {f"ln_vision.{k}": v for k, v in source.ln_vision.state_dict().items()}
    torch.save({"model": state, "epoch": 3}, tmp_path / "minigpt.pth")
    loaded = EvaEncoder.from_pretrained(tmp_path / "minigpt.pth", config=EvaEncoder.tiny_config())
    images = _inputs(loaded)[0]
    source.model.half().float()  # the checkpoint was stored in fp16
    assert_close(loaded(images).tokens, source(images).tokens)
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    assert not any(p.requires_grad for p in loaded.parameters())


def test_eva_loads_lavis_file_at_another_resolution(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="emotion_llama.encoders")
    source = _perturbed_tiny_eva(56)  # a 4x4 grid, as LAVIS stores 224 px weights used at 448
    state = dict(source.model.state_dict()) | {"blocks.2.attn.proj.weight": torch.zeros(1)}
    torch.save(state, tmp_path / "eva_vit_g.pth")
    loaded = EvaEncoder.from_pretrained(tmp_path / "eva_vit_g.pth", config=EvaEncoder.tiny_config())
    old = state["pos_embed"][:, 1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    new = F.interpolate(old, size=(8, 8), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    assert_close(loaded.model.pos_embed, torch.cat([state["pos_embed"][:, :1], new.reshape(1, 64, -1)], 1))
    assert_close(loaded.model.blocks[1].mlp.fc2.weight, source.model.blocks[1].mlp.fc2.weight)
    assert torch.equal(loaded.ln_vision.weight, torch.ones(64))  # absent from LAVIS files: identity init
    assert "blocks.2.attn.proj.weight" in caplog.text and "ln_vision" in caplog.text


def test_eva_loader_fails_on_missing_weights(tmp_path):
    state = {k: v for k, v in EvaEncoder.tiny().model.state_dict().items() if k != "blocks.1.mlp.fc1.weight"}
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(UserError, match="blocks.1.mlp.fc1.weight.*paths.eva"):
        EvaEncoder.from_pretrained(tmp_path / "broken.pth", config=EvaEncoder.tiny_config())


# real sizes from the architectures' configs (REFERENCE.md); EVA-g is ~1.01B with 40 blocks, 39 are used
@pytest.mark.parametrize(
    "name, expected, rel",
    [("hubert", 315e6, 0.01), ("mae", 303e6, 0.01), ("videomae", 305e6, 0.01), ("eva", 0.99e9, 0.02)],
)
def test_real_sizes_on_meta(name, expected, rel):
    cls = ENCODERS[name]
    with torch.device("meta"):
        encoder = cls.from_config(cls.real_config())
    assert encoder.num_features == (1408 if name == "eva" else 1024)
    assert sum(p.numel() for p in encoder.parameters()) == pytest.approx(expected, rel=rel)
    if name == "eva":
        assert (encoder.num_patches, encoder.grid_size) == (1024, (32, 32))
