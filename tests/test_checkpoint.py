"""Checkpoint folders open with plain transformers + peft and round-trip through the project's loader."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from emotion_llama.encoders.build import EncoderShapes
from emotion_llama.model.builder import build_model
from emotion_llama.model.checkpoint import (
    BASE_LLM_DIR,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from emotion_llama.model.config import ModelConfig
from emotion_llama.model.fusion import FEATURE_MODALITIES
from emotion_llama.model.llm import llm_config
from emotion_llama.model.prompts import PromptParts, emotion_instruction
from emotion_llama.model.sequences import encode_answer, encode_prompt
from emotion_llama.model.tokenizer import (
    base_vocab_size,
    build_tiny_tokenizer,
    load_tokenizer,
    segment_encoder,
)

SHAPES = EncoderShapes(dims={"eva": 24, "mae": 20, "videomae": 18, "hubert": 16}, eva_patches=16)
ARCH = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, max_position_embeddings=512)
# The tiny preset's LoRA (conf/model/tiny.yaml): every projection, embeddings and head fully trained.
TINY_LORA = dict(r=4, alpha=8, dropout=0.05, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                 "gate_proj", "up_proj", "down_proj"], modules_to_save=["embed_tokens", "lm_head"])
PLAIN_LORA = dict(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer(["the person smiles and the voice is loud"], vocab_size=512)


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory, tokenizer):
    """A LLaMA folder standing in for paths.llm of a real preset."""
    path = tmp_path_factory.mktemp("llm")
    torch.manual_seed(0)
    LlamaForCausalLM(llm_config(base_vocab_size(tokenizer), **ARCH)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def config(kind: str, llm_dir) -> ModelConfig:
    if kind == "tiny":
        return ModelConfig(llm_arch=ARCH, lora=TINY_LORA)
    if kind == "tiny_lora_only":
        return ModelConfig(llm_arch=ARCH, lora=PLAIN_LORA)
    return ModelConfig(preset="real_like", llm_path=str(llm_dir), llm_arch=ARCH, lora=PLAIN_LORA)


def trained_checkpoint(cfg, tokenizer, out):
    """Save a model whose adapter and modules_to_save copies differ from the base, as after training."""
    torch.manual_seed(1)
    model = build_model(cfg, tokenizer, SHAPES)
    base = model.llm.get_base_model()
    originals = {n: p.detach().clone() for n, p in base.named_parameters() if "original_module" in n}
    with torch.no_grad():
        for n, p in model.llm.named_parameters():
            if "lora_B" in n or "modules_to_save" in n:
                p.add_(torch.randn_like(p))
    save_checkpoint(model, cfg, tokenizer, out)
    return model.eval(), originals


def random_ids(model, seed=3):
    g = torch.Generator().manual_seed(seed)
    vocab = model.llm.get_input_embeddings().num_embeddings
    return torch.randint(0, vocab, (2, 11), generator=g)


def plain_llm(ckpt, cfg):
    """What a user without this project does: transformers for the base, peft for the adapter."""
    base_dir = ckpt / BASE_LLM_DIR if cfg.llm_path is None else cfg.llm_path
    base = AutoModelForCausalLM.from_pretrained(str(base_dir))
    return PeftModel.from_pretrained(base, str(ckpt / "adapter")).eval()


@pytest.mark.parametrize("kind", ["tiny", "tiny_lora_only", "llm_folder"])
def test_plain_transformers_and_peft_give_the_project_logits(kind, tokenizer, llm_dir, tmp_path):
    cfg = config(kind, llm_dir)
    trained, _ = trained_checkpoint(cfg, tokenizer, tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / BASE_LLM_DIR).is_dir() == (cfg.llm_path is None)
    ours, loaded_cfg, _ = load_checkpoint(tmp_path / "ckpt", shapes=SHAPES)
    assert loaded_cfg == cfg
    ids = random_ids(ours)
    with torch.no_grad():
        expected = ours.eval().llm(input_ids=ids).logits
        torch.testing.assert_close(trained.llm(input_ids=ids).logits, expected, atol=1e-5, rtol=1e-5)
        plain = plain_llm(tmp_path / "ckpt", cfg)
        torch.testing.assert_close(plain(input_ids=ids).logits, expected, atol=1e-5, rtol=1e-5)


def test_base_llm_folder_holds_the_untrained_base_only(tokenizer, llm_dir, tmp_path):
    cfg = config("tiny", llm_dir)
    trained, originals = trained_checkpoint(cfg, tokenizer, tmp_path / "ckpt")
    base_dir = tmp_path / "ckpt" / BASE_LLM_DIR
    assert json.loads((base_dir / "config.json").read_text())["hidden_size"] == ARCH["hidden_size"]
    saved = load_file(base_dir / "model.safetensors")
    assert not [k for k in saved if any(w in k for w in ("lora_", "base_layer", "modules_to_save", "original_module"))]
    # The embeddings and head keep their values from before training; the trained copies live in the adapter.
    assert {n.replace(".original_module", "") for n in originals} == {"model.embed_tokens.weight", "lm_head.weight"}
    for name, before in originals.items():
        torch.testing.assert_close(saved[name.replace(".original_module", "")], before)
    base = AutoModelForCausalLM.from_pretrained(str(base_dir)).eval()
    ids = random_ids(trained)
    with torch.no_grad(), trained.llm.disable_adapter():
        torch.testing.assert_close(base(input_ids=ids).logits, trained.llm(input_ids=ids).logits)


def test_missing_base_weight_fails(tokenizer, llm_dir, tmp_path):
    cfg = config("tiny", llm_dir)
    trained_checkpoint(cfg, tokenizer, tmp_path / "ckpt")
    path = tmp_path / "ckpt" / BASE_LLM_DIR / "model.safetensors"
    state = load_file(path)
    state.pop("model.layers.1.self_attn.q_proj.weight")
    save_file(state, path, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="missing.*layers.1.self_attn.q_proj.weight"):
        load_checkpoint(tmp_path / "ckpt", shapes=SHAPES)


def test_missing_adapter_weight_fails(tokenizer, llm_dir, tmp_path):
    cfg = config("tiny", llm_dir)
    trained_checkpoint(cfg, tokenizer, tmp_path / "ckpt")
    path = tmp_path / "ckpt" / "adapter" / "adapter_model.safetensors"
    state = load_file(path)
    state = {k: v for k, v in state.items() if "lm_head" not in k}
    save_file(state, path)
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path / "ckpt", shapes=SHAPES)


def test_only_an_llm_folder_may_stand_in_for_the_saved_tokenizer(tokenizer, llm_dir, tmp_path):
    """With an LLM folder (real presets, imported official checkpoints) a checkpoint without tokenizer/ takes
    that folder's tokenizer and gives the same ids; a random-LLM (tiny) one is refused: a tokenizer rebuilt
    from text would number the tokens differently."""
    trained, _ = trained_checkpoint(config("llm_folder", llm_dir), tokenizer, tmp_path / "real")
    shutil.rmtree(tmp_path / "real" / "tokenizer")
    loaded, _, tok = load_checkpoint(tmp_path / "real", shapes=SHAPES)
    text = "the person smiles"
    assert tok(text)["input_ids"] == tokenizer(text)["input_ids"]
    ids = random_ids(trained)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval().llm(input_ids=ids).logits, trained.llm(input_ids=ids).logits)

    trained_checkpoint(config("tiny", llm_dir), tokenizer, tmp_path / "tiny")
    shutil.rmtree(tmp_path / "tiny" / "tokenizer")
    with pytest.raises(CheckpointError, match=r"tiny/tokenizer not found"):
        load_checkpoint(tmp_path / "tiny", shapes=SHAPES)


def test_fusion_model_round_trips(tokenizer, llm_dir, tmp_path):
    cfg = config("tiny", llm_dir)
    trained, _ = trained_checkpoint(cfg, tokenizer, tmp_path / "ckpt")
    loaded, _, _ = load_checkpoint(tmp_path / "ckpt", shapes=SHAPES)
    ids = [1] + [trained.video_token_id] * trained.num_video_tokens
    ids = torch.tensor([ids + [trained.feature_token_id] * trained.num_feature_tokens + [40, 41, 42]])
    g = torch.Generator().manual_seed(2)
    feats = {"eva": torch.randn(1, 1 + SHAPES.eva_patches, SHAPES.dims["eva"], generator=g)}
    feats |= {m: torch.randn(1, SHAPES.dims[m], generator=g) for m in FEATURE_MODALITIES}
    with torch.no_grad():
        mask = torch.ones_like(ids)
        torch.testing.assert_close(loaded.eval()(ids, mask, feats).logits, trained(ids, mask, feats).logits)


@pytest.mark.gpu
def test_checkpoint_loads_onto_the_gpu_with_the_cpu_logits(tokenizer, llm_dir, tmp_path):
    cfg = config("tiny", llm_dir)
    trained, _ = trained_checkpoint(cfg, tokenizer, tmp_path / "ckpt")
    on_gpu, _, _ = load_checkpoint(tmp_path / "ckpt", device="cuda", shapes=SHAPES)
    assert all(p.is_cuda for p in on_gpu.parameters())
    ids = random_ids(trained)
    with torch.no_grad():
        logits = on_gpu.eval().llm(input_ids=ids.cuda()).logits.cpu()
        torch.testing.assert_close(logits, trained.llm(input_ids=ids).logits, atol=1e-4, rtol=1e-4)


LLAMA2_TOKENIZER = Path(__file__).resolve().parents[2] / "shared" / "llama2-tokenizer" / "tokenizer.model"


def test_a_llama_checkpoint_keeps_the_sentencepiece_prompt_ids(tmp_path):
    """A tokenizer from a folder with tokenizer.model encodes prompts with SentencePiece; its checkpoint's
    tokenizer/ folder carries that file, so the loaded checkpoint gives the same ids."""
    pytest.importorskip("sentencepiece")
    if not LLAMA2_TOKENIZER.is_file():
        pytest.skip(f"the real LLaMA-2 tokenizer is not at {LLAMA2_TOKENIZER} (shared/ beside the repository)")
    folder = tmp_path / "llama"
    folder.mkdir()
    shutil.copy(LLAMA2_TOKENIZER, folder / "tokenizer.model")
    torch.manual_seed(0)
    LlamaForCausalLM(llm_config(32000, **ARCH)).save_pretrained(folder)
    tok = load_tokenizer(folder)
    assert type(segment_encoder(tok)).__name__ == "SentencePieceSegments"
    cfg = ModelConfig(preset="real_like", llm_path=str(folder), llm_arch=ARCH, lora=PLAIN_LORA)
    save_checkpoint(build_model(cfg, tok, SHAPES), cfg, tok, tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "tokenizer" / "tokenizer.model").read_bytes() == LLAMA2_TOKENIZER.read_bytes()
    _, _, loaded = load_checkpoint(tmp_path / "ckpt", shapes=SHAPES)
    parts = PromptParts("I see you.", "emotion", emotion_instruction())
    ids = encode_prompt(tok, parts, 4, 4)
    assert ids[:2] == [1, 518] and ids[-4:] == [518, 29914, 25580, 29962]  # BOS ▁[ ... ▁[ / INST ]
    assert encode_prompt(loaded, parts, 4, 4) == ids
    assert encode_answer(loaded, "happy") == encode_answer(tok, "happy") == [9796, 2]
