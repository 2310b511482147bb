"""Tokenizers: the real LLaMA one from a weights folder, or a tiny Llama-style BPE built from project text.

The tiny tokenizer is a byte-fallback BPE with SentencePiece-style ``▁`` word boundaries, like LLaMA's,
trained in about a second on the prompts, label words and any extra text given (e.g. the synthetic
captions). Training is deterministic, so the same text always gives the same vocabulary.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from emotion_llama.errors import WeightsNotFoundError
from emotion_llama.labels import DFEW_LABELS, MERR_LABELS
from emotion_llama.model.prompts import (
    DESCRIBE_POOL,
    FEATURE_TOKEN,
    REASON_POOL,
    USER_TEMPLATE,
    VIDEO_TOKEN,
    instruction_pool,
)

SPECIALS = ("<unk>", "<s>", "</s>", "<pad>")
BYTE_TOKENS = tuple(f"<0x{i:02X}>" for i in range(256))
PLACEHOLDERS = (VIDEO_TOKEN, FEATURE_TOKEN)
_SPACE = "▁"

# Words the tiny model must write often (cue descriptions, reasoning); keeping them whole shortens sequences.
_CUE_TEXT = """
The person raises the brows and opens the eyes wide with an open mouth. The mouth corners turn up in a smile.
The brows are lowered and knitted, the lids narrowed, the mouth flat or turned down. The face stays almost
still. The voice is loud and high with fast syllables and wide pitch. The voice is soft, low and slow with a
falling pitch. The voice is steady and flat with a rising end. The person says something. The words suggest
the emotion. Together these cues suggest that the person feels this emotion. head moves lighting expression
"""


def _corpus(extra_texts: Iterable[str]) -> list[str]:
    texts = [USER_TEMPLATE, _CUE_TEXT, *REASON_POOL, *DESCRIBE_POOL]
    texts += list(instruction_pool("emotion", MERR_LABELS)) + list(instruction_pool("emotion", DFEW_LABELS))
    texts += [" ".join(MERR_LABELS + DFEW_LABELS)] * 20
    texts += [t for t in extra_texts if t]
    return texts


def _train_bpe(texts: list[str], vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_SPACE, prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=max(vocab_size - len(SPECIALS) - len(BYTE_TOKENS), 64),
        min_frequency=2,
        show_progress=False,
        special_tokens=[],
    )
    tok.train_from_iterator(texts, trainer=trainer)
    state = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    return state["vocab"], merges


def build_tiny_tokenizer(extra_texts: Iterable[str] = (), vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """A LLaMA-like tokenizer (ids 0-2 unk/bos/eos, then 256 byte tokens, then BPE pieces)."""
    learned, merges = _train_bpe(_corpus(extra_texts), vocab_size)
    vocab = {tok: i for i, tok in enumerate(SPECIALS + BYTE_TOKENS)}
    for piece in sorted(learned, key=learned.get):
        vocab.setdefault(piece, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_SPACE, prepend_scheme="first")
    tok.decoder = decoders.Sequence(
        [decoders.Replace(_SPACE, " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    return add_placeholders(hf)


def add_placeholders(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Register ``<VideoHere>``/``<FeatureHere>`` as special tokens (ids after the LLM's vocabulary)."""
    missing = [t for t in PLACEHOLDERS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:
        # LLaMA-2 ships without a pad token; pad positions are masked everywhere, so unk is safe.
        tokenizer.pad_token = tokenizer.unk_token
    return tokenizer


def load_tokenizer(path: str | Path, config_key: str = "model.tokenizer_path") -> PreTrainedTokenizerBase:
    if not Path(path).exists():
        raise WeightsNotFoundError("Tokenizer", path, config_key)
    return add_placeholders(AutoTokenizer.from_pretrained(str(path)))


def base_vocab_size(tokenizer: PreTrainedTokenizerBase) -> int:
    """Size of the vocabulary without the placeholder tokens (what the LLM's embedding must cover)."""
    return min(tokenizer.convert_tokens_to_ids(t) for t in PLACEHOLDERS)
