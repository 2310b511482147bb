"""Tiny random stand-ins for the imagination models, saved in their real folder layouts: a Stable Diffusion
pipeline (``save_pretrained``, loadable by :func:`~emotion_llama.imagination.imagine.load_text_to_image`) and a
BERT sentence encoder (loadable by :class:`~emotion_llama.imagination.mapper.EmbeddingMapper`).

They carry no knowledge: their pictures are coloured noise and their embeddings arbitrary. They exist so that
the whole text -> picture -> model -> label path runs on a CPU in seconds (``make demo-text`` and the tests);
real runs set ``paths.t2i`` and ``paths.embedder`` to real folders. A seed always gives the same weights.
Each folder is written atomically and left alone when it is already complete.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from emotion_llama.fileio import atomic_dir
from emotion_llama.imagination.mapper import DEFAULT_DESCRIPTIONS

TOKENIZER_LENGTH = 160  # the tiny CLIP text encoder's positions: byte-level tokens of a prompt with its context
# A few byte-pair merges of frequent English letter pairs, so that common words take fewer tokens.
_MERGES = ("t h", "th e</w>", "a t</w>", "i s</w>", "i n", "e r", "o u", "a n", "r e", "o n")
_SPECIAL_WORDS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _byte_level_chars() -> list[str]:
    """The 256 printable stand-ins byte-level BPE (GPT-2, CLIP) uses for the bytes 0..255."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in keep]
    return [chr(c) for c in keep] + [chr(256 + i) for i in range(len(extra))]


def _clip_tokenizer(folder: Path):
    """A CLIP BPE tokenizer written from scratch: every byte, every byte at a word's end, a few merges."""
    from transformers import CLIPTokenizer

    chars = _byte_level_chars()
    vocab: dict[str, int] = {}
    for token in [*chars, *(c + "</w>" for c in chars), *(m.replace(" ", "") for m in _MERGES),
                  "<|startoftext|>", "<|endoftext|>"]:
        vocab.setdefault(token, len(vocab))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(_MERGES) + "\n", encoding="utf-8")
    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=TOKENIZER_LENGTH)


def save_tiny_text_to_image(out_dir: str | Path, seed: int = 0) -> Path:
    """A Stable Diffusion pipeline of tiny random components (UNet, VAE, CLIP text encoder, DDIM scheduler)
    at ``out_dir``; it draws any multiple of 8 (32 pixels take a fraction of a second on a CPU)."""
    import tempfile

    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    out = Path(out_dir)
    if (out / "model_index.json").is_file():
        return out
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = _clip_tokenizer(Path(scratch) / "bpe")
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            unet = UNet2DConditionModel(
                block_out_channels=(4, 8), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                cross_attention_dim=8, attention_head_dim=2, norm_num_groups=2)
            vae = AutoencoderKL(block_out_channels=(4, 8), in_channels=3, out_channels=3, latent_channels=4,
                                down_block_types=("DownEncoderBlock2D",) * 2,
                                up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=2)
            text_encoder = CLIPTextModel(CLIPTextConfig(
                vocab_size=len(tokenizer), hidden_size=8, intermediate_size=16, num_attention_heads=2,
                num_hidden_layers=1, max_position_embeddings=TOKENIZER_LENGTH, projection_dim=8,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id))
        finally:
            torch.random.set_rng_state(generator_state)  # the caller's random numbers are left as they were
        scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                  clip_sample=False, set_alpha_to_one=False, steps_offset=1)
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
        with atomic_dir(out) as tmp:
            pipe.save_pretrained(tmp)
    return out


def embedder_words(extra: Iterable[str] = ()) -> list[str]:
    """The tiny encoder's word list: every word of the default label descriptions and of ``extra``."""
    words: dict[str, None] = {}
    for text in [*DEFAULT_DESCRIPTIONS.values(), *extra]:
        for word in re.findall(r"[a-z]+|[^\sa-z0-9]", text.lower()):
            words.setdefault(word, None)
    return list(words)


def save_tiny_embedder(out_dir: str | Path, words: Iterable[str] | None = None, seed: int = 0) -> Path:
    """A tiny random BERT encoder with a WordPiece vocabulary of ``words`` (default :func:`embedder_words`),
    saved with its tokenizer at ``out_dir``; the mapper mean-pools its last hidden states."""
    import tempfile

    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    out = Path(out_dir)
    if (out / "config.json").is_file():
        return out
    vocabulary = list(dict.fromkeys([*_SPECIAL_WORDS, *(embedder_words() if words is None else words)]))
    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "vocab.txt").write_text("\n".join(vocabulary) + "\n", encoding="utf-8")
        tokenizer = BertTokenizer.from_pretrained(scratch, model_max_length=64)
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            model = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2,
                                         num_attention_heads=2, intermediate_size=32, max_position_embeddings=64))
        finally:
            torch.random.set_rng_state(generator_state)
        with atomic_dir(out) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    return out
