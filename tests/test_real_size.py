"""What the real-size preset needs, checked at tiny shapes or on the meta device: fp32 trainable weights on a
bf16 base, building on the target device, encoder sizes from the weights' config.json."""

import pytest
import torch
from safetensors.torch import load_file
from transformers import HubertConfig, ViTConfig

from emotion_llama.encoders.build import EncoderShapes, encoder_config, encoder_shapes
from emotion_llama.errors import UserError
from emotion_llama.model.builder import build_model
from emotion_llama.model.checkpoint import load_checkpoint, save_checkpoint
from emotion_llama.model.config import ModelConfig
from emotion_llama.model.fusion import FEATURE_MODALITIES
from emotion_llama.model.llm import load_llm
from emotion_llama.model.prompts import PromptParts, emotion_instruction
from emotion_llama.model.sequences import (
    IGNORE_INDEX,
    encode_answer,
    encode_example,
    encode_prompt,
    pad_batch,
)
from emotion_llama.model.tokenizer import build_tiny_tokenizer

SHAPES = EncoderShapes(dims={"eva": 24, "mae": 20, "videomae": 18, "hubert": 16}, eva_patches=16)
LABELS = ["happy", "sad", "angry"]
ARCH = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=512,
)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer(["the person smiles and the voice is loud"], vocab_size=512)


def bf16_cfg(**kw) -> ModelConfig:
    lora = dict(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"], **kw.pop("lora", {}))
    return ModelConfig(llm_arch=ARCH, lora=lora, dtype="bfloat16", **kw)


def features(batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    feats = {"eva": torch.randn(batch, 1 + SHAPES.eva_patches, SHAPES.dims["eva"], generator=g)}
    for m in FEATURE_MODALITIES:
        feats[m] = torch.randn(batch, SHAPES.dims[m], generator=g)
    return feats


def train_batch(tokenizer, model, answers=("happy", "a much longer answer")):
    parts = PromptParts("I am fine", "emotion", emotion_instruction(LABELS))
    ex = [
        encode_example(tokenizer, parts, a, model.num_video_tokens, model.num_feature_tokens) for a in answers
    ]
    ids, mask = pad_batch([e["input_ids"] for e in ex], tokenizer.pad_token_id, "right")
    labels, _ = pad_batch([e["labels"] for e in ex], IGNORE_INDEX, "right")
    return ids, mask, labels


def trainable(model) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


# --------------------------------------------------------------------------------- fp32 trainable weights


def test_bf16_preset_keeps_a_bf16_base_and_fp32_trainable_weights(tokenizer):
    torch.manual_seed(0)
    model = build_model(bf16_cfg(lora={"modules_to_save": ["embed_tokens", "lm_head"]}), tokenizer, SHAPES)
    train = trainable(model)
    assert any(n.startswith("projectors.") for n in train) and any("lora_A" in n for n in train)
    assert any("modules_to_save" in n for n in train)
    assert {p.dtype for p in train.values()} == {torch.float32}
    frozen = {p.dtype for n, p in model.named_parameters() if n not in train}
    assert frozen == {torch.bfloat16}


@pytest.mark.parametrize("modules_to_save", [[], ["embed_tokens", "lm_head"]])
def test_fp32_forward_without_autocast_works_on_a_bf16_base(tokenizer, modules_to_save):
    torch.manual_seed(0)
    model = build_model(bf16_cfg(lora={"modules_to_save": modules_to_save}), tokenizer, SHAPES)
    ids, mask, labels = train_batch(tokenizer, model)
    out = model(ids, mask, features(2), labels=labels)  # no autocast: the fp32/bf16 casts are the model's own
    assert torch.isfinite(out.loss)
    out.loss.backward()
    grads = {n: p.grad for n, p in trainable(model).items()}
    assert all(g is not None and g.dtype == torch.float32 for g in grads.values())
    # The forward runs in the base's dtype: the projected tokens reach the LLM as bf16 embeddings.
    assert model.embed(ids, features(2)).dtype == torch.bfloat16


def adamw_steps(model, tokenizer, steps: int = 3) -> None:
    """What training does: bf16 autocast (CPU autocast here), AdamW lr 1e-5, weight decay 0.05."""
    ids, mask, labels = train_batch(tokenizer, model)
    feats = features(2)
    opt = torch.optim.AdamW(trainable(model).values(), lr=1e-5, weight_decay=0.05)
    for _ in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(ids, mask, feats, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()


def test_small_adamw_steps_move_fp32_projectors_but_are_lost_on_bf16_ones(tokenizer):
    torch.manual_seed(0)
    fixed = build_model(bf16_cfg(), tokenizer, SHAPES).train()
    torch.manual_seed(0)
    buggy = build_model(bf16_cfg(), tokenizer, SHAPES).train()
    buggy.projectors.to(torch.bfloat16)  # what build_model did before: projectors in the preset's dtype
    before_fixed = {n: p.detach().clone() for n, p in fixed.projectors.named_parameters()}
    before_buggy = {n: p.detach().clone() for n, p in buggy.projectors.named_parameters()}
    for name in before_fixed:  # the same starting weights
        torch.testing.assert_close(before_buggy[name], before_fixed[name].to(torch.bfloat16))

    adamw_steps(fixed, tokenizer)
    adamw_steps(buggy, tokenizer)

    for name, p in fixed.projectors.named_parameters():
        assert p.dtype == torch.float32
        assert (p.detach() != before_fixed[name]).float().mean() > 0.99, name  # every weight moved (~3e-5)
    for name, p in buggy.projectors.named_parameters():
        # A step of ~1e-5 is under half a bf16 ulp (1.5e-5) for |w| > 2^-8 (~0.004): those weights never move,
        # and they are most of a real projector's (Linear(5632, 4096) starts uniform in +-0.013).
        old = before_buggy[name]
        large = old.abs() > 2**-8
        assert large.float().mean() > 0.5
        assert torch.equal(p.detach()[large], old[large]), name


def test_bf16_checkpoints_save_fp32_trainables_and_load_them_back(tokenizer, tmp_path):
    torch.manual_seed(0)
    cfg = bf16_cfg()
    model = build_model(cfg, tokenizer, SHAPES).eval()
    with torch.no_grad():  # a non-trivial adapter (lora_B starts at zero)
        for n, p in model.llm.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)
    save_checkpoint(model, cfg, tokenizer, tmp_path / "ckpt")
    assert {t.dtype for t in load_file(tmp_path / "ckpt" / "projectors.safetensors").values()} == {
        torch.float32
    }
    adapter = load_file(tmp_path / "ckpt" / "adapter" / "adapter_model.safetensors")
    assert {t.dtype for t in adapter.values()} == {torch.float32}

    loaded, _, _ = load_checkpoint(tmp_path / "ckpt", shapes=SHAPES)
    loaded.eval()
    assert {p.dtype for p in trainable(loaded).values()} == {torch.float32}
    assert loaded.llm.get_base_model().dtype == torch.bfloat16
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b), name
    ids, mask, _ = train_batch(tokenizer, model)
    torch.testing.assert_close(loaded(ids, mask, features(2)).logits, model(ids, mask, features(2)).logits)


def test_label_scoring_runs_on_a_bf16_base_without_autocast(tokenizer):
    torch.manual_seed(0)
    model = build_model(bf16_cfg(), tokenizer, SHAPES).eval()
    parts = PromptParts("so good", "emotion", emotion_instruction(LABELS))
    prompt = encode_prompt(tokenizer, parts, model.num_video_tokens, model.num_feature_tokens)
    ids, mask = pad_batch([prompt, prompt[:3] + prompt[4:]], tokenizer.pad_token_id, "left")
    scores = model.score_labels(ids, mask, features(2), [encode_answer(tokenizer, label) for label in LABELS])
    assert scores.shape == (2, 3) and scores.dtype == torch.float32 and torch.all(scores < 0)


# --------------------------------------------------------------------------------- target device


def real_cfg(**kw) -> ModelConfig:
    lora = dict(r=64, alpha=16, dropout=0.05, target_modules=["q_proj", "v_proj"])
    return ModelConfig(
        preset="emotion_llama_7b",
        lora=lora,
        encoder_size="real",
        dtype="bfloat16",
        weights_required=True,
        **kw,
    )


def test_real_size_model_is_built_on_the_given_device_without_a_device_context():
    shapes = EncoderShapes(
        dims={"eva": 1408, "mae": 1024, "videomae": 1024, "hubert": 1024}, eva_patches=1024
    )
    assert torch.get_default_device().type == "cpu"
    model = build_model(real_cfg(), tokenizer=None, shapes=shapes, device="meta")
    tensors = [*model.parameters(), *model.buffers()]
    assert {t.device.type for t in tensors} == {"meta"}  # nothing was allocated on the CPU
    base = sum(p.numel() for n, p in model.llm.named_parameters() if not p.requires_grad)
    assert base == pytest.approx(6.74e9, rel=0.01)
    assert {p.dtype for p in trainable(model).values()} == {torch.float32}
    assert {p.dtype for n, p in model.named_parameters() if not p.requires_grad} == {torch.bfloat16}


def test_a_weights_folder_is_read_straight_onto_the_target_device(tmp_path):
    load_llm(None, ARCH, 100, torch.bfloat16).save_pretrained(tmp_path / "llm")
    on_meta = load_llm(tmp_path / "llm", dtype=torch.bfloat16, device="meta")
    assert {p.device.type for p in on_meta.parameters()} == {"meta"}
    assert {p.dtype for p in on_meta.parameters()} == {torch.bfloat16}
    on_cpu = load_llm(tmp_path / "llm", dtype=torch.bfloat16)  # the default: the CPU, as before
    assert {p.device.type for p in on_cpu.parameters()} == {"cpu"}


def test_a_checkpoint_is_built_on_the_load_device(tokenizer, tmp_path, monkeypatch):
    from emotion_llama.model import checkpoint

    cfg = bf16_cfg()
    save_checkpoint(build_model(cfg, tokenizer, SHAPES), cfg, tokenizer, tmp_path / "ckpt")
    seen = []
    real_build = checkpoint.build_model

    def spy(*args, **kwargs):
        seen.append(kwargs.get("device"))
        return real_build(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "build_model", spy)
    model, _, _ = load_checkpoint(tmp_path / "ckpt", shapes=SHAPES, device="cpu")
    assert seen == ["cpu"]
    assert {p.device.type for p in model.parameters()} == {"cpu"}


# --------------------------------------------------------------------------------- encoder sizes


def small_hubert(hidden: int) -> HubertConfig:
    return HubertConfig(
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )


def test_encoder_sizes_come_from_the_weights_config_json(tmp_path):
    folder = tmp_path / "hubert-small"
    small_hubert(24).save_pretrained(folder)  # config.json only: no weights are needed, none are read
    assert not list(folder.glob("*.safetensors"))
    cfg = ModelConfig(encoder_size="real", encoder_paths={"hubert": str(folder)})
    dims = encoder_shapes(cfg).dims
    assert dims["hubert"] == 24
    # The others keep the real sizes: MAE / VideoMAE without a folder, EVA always (its file has no config).
    assert (dims["mae"], dims["videomae"], dims["eva"]) == (1024, 1024, 1408)
    assert encoder_config(cfg, "hubert").hidden_size == 24


def test_a_folder_of_another_model_type_is_refused(tmp_path):
    ViTConfig(hidden_size=24, num_hidden_layers=1, num_attention_heads=2).save_pretrained(tmp_path / "vit")
    cfg = ModelConfig(encoder_size="real", encoder_paths={"hubert": str(tmp_path / "vit")})
    with pytest.raises(UserError, match="paths.hubert"):
        encoder_config(cfg, "hubert")


def test_unset_or_missing_encoder_paths_keep_the_built_in_configs(tmp_path):
    missing = ModelConfig(encoder_size="real", encoder_paths={"hubert": str(tmp_path / "absent")})
    assert encoder_config(missing, "hubert").hidden_size == 1024
    assert encoder_config(ModelConfig(), "hubert").hidden_size == 64  # the tiny preset
