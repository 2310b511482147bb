"""Tokenizers: the real LLaMA one from a weights folder, or a tiny Llama-style BPE built from project text.

The tiny tokenizer is a byte-fallback BPE with SentencePiece-style ``▁`` word boundaries, like LLaMA's,
trained in about a second on the prompts, label words and any extra text given (e.g. the synthetic
captions). Training is deterministic, so the same text always gives the same vocabulary. The tiny Qwen2 and
Llama-3 tokenizers (:func:`build_tiny_chat_tokenizer`) are byte-level BPEs trained the same way, with those models'
special tokens and a chat template of the same form (ChatML with Qwen's default system turn; Llama-3's headers
with its date lines).

Prompt text is encoded one segment at a time by :func:`segment_encoder` (a ``str -> list[int]`` callable
derived from the tokenizer), as the release's slow LLaMA tokenizer did with ``add_special_tokens=False``:

- a tokenizer loaded from a folder that holds ``tokenizer.model`` (every LLaMA-2 folder, and every checkpoint's
  ``tokenizer/`` saved from one) encodes text with that SentencePiece model itself (``sentencepiece``
  package): every segment gets SentencePiece's dummy prefix ``▁``, double spaces and ``[`` split as in the
  release. transformers 5's ``LlamaTokenizer``/``Fast`` give other ids for the same text (no ``▁`` after a
  special token, ``[`` 29961 instead of ``▁[`` 518), so they are kept only for pad/eos ids, the placeholder
  tokens, decoding and ``save_pretrained`` (which then writes ``tokenizer.model`` beside ``tokenizer.json``);
- any other tokenizer (the tiny one) encodes each segment with its own encoding.

Either way ``<s>``, ``</s>`` and ``<unk>`` written in the text become their ids (as in the slow tokenizer),
while the placeholder tokens are NOT recognised in a segment: ``<FeatureHere>`` left in the text (the release's
evaluation layout) stays characters.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
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
    format_chat,
    instruction_pool,
)

log = logging.getLogger(__name__)

SPECIALS = ("<unk>", "<s>", "</s>", "<pad>")
BYTE_TOKENS = tuple(f"<0x{i:02X}>" for i in range(256))
PLACEHOLDERS = (VIDEO_TOKEN, FEATURE_TOKEN)
_SPACE = "▁"
SENTENCEPIECE_FILE = "tokenizer.model"
_SEGMENTS_ATTR = "emotion_llama_segments"  # the SentencePieceSegments attached to a LLaMA tokenizer

# Words the tiny model must write often (cue descriptions, reasoning); keeping them whole shortens sequences.
_CUE_TEXT = """
The person raises the brows and opens the eyes wide with an open mouth. The mouth corners turn up in a smile.
The brows are lowered and knitted, the lids narrowed, the mouth flat or turned down. The face stays almost
still. The voice is loud and high with fast syllables and wide pitch. The voice is soft, low and slow with a
falling pitch. The voice is steady and flat with a rising end. The person says something. The words suggest
the emotion. Together these cues suggest that the person feels this emotion. head moves lighting expression
"""


def _corpus(extra_texts: Iterable[str]) -> list[str]:
    texts = [format_chat(USER_TEMPLATE), _CUE_TEXT, *REASON_POOL, *DESCRIBE_POOL]
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


# ------------------------------------------------------------------------ tiny Qwen2 / Llama-3 tokenizers
# Chat templates of the same form as the real models' (REFERENCE: one user turn renders exactly like theirs),
# written for the tiny tokenizers; transformers renders them.
QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
CHATML_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}{%- set system = messages[0]['content'] %}"
    "{%- set turns = messages[1:] %}{%- else %}{%- set system = '" + QWEN_SYSTEM + "' %}"
    "{%- set turns = messages %}{%- endif %}"
    "{{- '<|im_start|>system\n' + system + '<|im_end|>\n' }}"
    "{%- for m in turns %}{{- '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)
LLAMA3_SYSTEM = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
LLAMA3_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}{%- set system = messages[0]['content'] | trim %}"
    "{%- set turns = messages[1:] %}{%- else %}{%- set system = '' %}{%- set turns = messages %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\n\n" + LLAMA3_SYSTEM + "' + system + '<|eot_id|>' }}"
    "{%- for m in turns %}{{- '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] | trim"
    " + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}"
)
# kind -> (special tokens in id order, bos, eos (= end of turn of the instruct models), pad, chat template)
TINY_CHAT_TOKENIZERS = {
    "qwen2": (("<|endoftext|>", "<|im_start|>", "<|im_end|>"), None, "<|im_end|>", "<|endoftext|>",
              CHATML_TEMPLATE),
    "llama3": (("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                "<|eot_id|>", "<|finetune_right_pad_id|>"), "<|begin_of_text|>", "<|eot_id|>",
               "<|finetune_right_pad_id|>", LLAMA3_TEMPLATE),
}


def build_tiny_chat_tokenizer(kind: str, extra_texts: Iterable[str] = (), vocab_size: int = 1024
                              ) -> PreTrainedTokenizerFast:
    """A byte-level BPE of ``vocab_size`` (pieces first, then the model's special tokens, then the placeholders)
    with the special tokens and chat template of ``kind`` (``qwen2`` or ``llama3``), trained deterministically on
    the project's prompts as rendered by that template."""
    specials, bos, eos, pad, template = TINY_CHAT_TOKENIZERS[kind]
    texts = _corpus(extra_texts) + [QWEN_SYSTEM if kind == "qwen2" else LLAMA3_SYSTEM] * 20
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=max(vocab_size - len(specials), 300), min_frequency=2,
                                  show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens(list(specials))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad,
                                 clean_up_tokenization_spaces=False)
    hf.chat_template = template
    return add_placeholders(hf)


def add_placeholders(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Register ``<VideoHere>``/``<FeatureHere>`` as special tokens (ids after the LLM's vocabulary), and attach
    the SentencePiece model of a tokenizer loaded from a folder holding one (see :func:`attach_sentencepiece`)."""
    missing = [t for t in PLACEHOLDERS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:
        # LLaMA-2 and Llama-3 ship without a pad token; pad positions are masked everywhere, so unk (or, for a
        # byte-level vocabulary without one, EOS) is safe.
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return attach_sentencepiece(tokenizer)


# ------------------------------------------------------------------------------------------ text segments
class SegmentEncoder:
    """``str -> list[int]`` for one text segment of a prompt, like the slow LLaMA tokenizer with
    ``add_special_tokens=False``: each of the ``specials`` strings in the text becomes its id (the spaces
    around it kept), every other non-empty chunk is encoded on its own by :meth:`encode_text`."""

    def __init__(self, specials: Mapping[str, int]):
        self.specials = dict(specials)
        names = sorted(self.specials, key=len, reverse=True)
        self._split = re.compile("(" + "|".join(map(re.escape, names)) + ")") if names else None

    def encode_text(self, text: str) -> list[int]:
        raise NotImplementedError

    def __call__(self, text: str) -> list[int]:
        ids: list[int] = []
        for chunk in self._split.split(text) if self._split else [text]:
            if chunk in self.specials:
                ids.append(self.specials[chunk])
            elif chunk:
                ids.extend(self.encode_text(chunk))
        return ids


class SentencePieceSegments(SegmentEncoder):
    """Segments through a SentencePiece model (LLaMA's ``tokenizer.model``): every chunk with the dummy prefix."""

    kind = "sentencepiece"

    def __init__(self, model_proto: bytes):
        import sentencepiece

        self.model_proto = bytes(model_proto)
        self.sp = sentencepiece.SentencePieceProcessor(model_proto=self.model_proto)
        sp = self.sp
        super().__init__({sp.id_to_piece(i): i for i in (sp.unk_id(), sp.bos_id(), sp.eos_id()) if i >= 0})

    @classmethod
    def from_file(cls, path: str | Path) -> SentencePieceSegments:
        return cls(Path(path).read_bytes())

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode_text(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def save(self, folder: str | Path) -> str:
        path = Path(folder) / SENTENCEPIECE_FILE
        path.write_bytes(self.model_proto)
        return str(path)

    def __getstate__(self) -> dict:
        return {"model_proto": self.model_proto}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["model_proto"])


class TokenizerSegments(SegmentEncoder):
    """Segments through a Hugging Face tokenizer's own encoding (the tiny tokenizer), its added tokens (the
    placeholders) read as plain text; ``<s>``, ``</s>`` and ``<unk>`` become their ids."""

    kind = "tokenizer"

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.tokenizer = tokenizer
        names = (tokenizer.unk_token, tokenizer.bos_token, tokenizer.eos_token)
        super().__init__({t: tokenizer.convert_tokens_to_ids(t) for t in names if t})

    def encode_text(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False, split_special_tokens=True).input_ids


def segment_encoder(tokenizer: PreTrainedTokenizerBase) -> Callable[[str], list[int]]:
    """The ``str -> ids`` encoder of prompt segments and answers for ``tokenizer``: its attached SentencePiece
    model (a LLaMA tokenizer from a folder with ``tokenizer.model``), else the tokenizer's own encoding."""
    return getattr(tokenizer, _SEGMENTS_ATTR, None) or TokenizerSegments(tokenizer)


class _SaveWithSentencePiece:
    """``tokenizer.save_pretrained`` that also writes the attached ``tokenizer.model`` (transformers 5 writes
    only ``tokenizer.json``), so that a checkpoint's ``tokenizer/`` folder encodes prompts the same way."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.tokenizer = tokenizer

    def __call__(self, save_directory, *args, **kwargs):
        files = type(self.tokenizer).save_pretrained(self.tokenizer, save_directory, *args, **kwargs)
        return (*files, getattr(self.tokenizer, _SEGMENTS_ATTR).save(save_directory))


def _sentencepiece_file(tokenizer: PreTrainedTokenizerBase) -> Path | None:
    """The ``tokenizer.model`` the tokenizer was loaded with, or the one in the folder it came from."""
    candidates = [getattr(tokenizer, "vocab_file", None)]
    if tokenizer.name_or_path:
        candidates.append(Path(tokenizer.name_or_path) / SENTENCEPIECE_FILE)
    for candidate in candidates:
        if candidate and str(candidate).endswith(".model") and Path(candidate).is_file():
            return Path(candidate)
    return None


def attach_sentencepiece(
    tokenizer: PreTrainedTokenizerBase, model_file: str | Path | None = None
) -> PreTrainedTokenizerBase:
    """Attach the SentencePiece model (``model_file``, else the one of the tokenizer's folder) for prompt text,
    and make ``save_pretrained`` write it too. A tokenizer without one is returned unchanged."""
    if getattr(tokenizer, _SEGMENTS_ATTR, None) is not None:
        return tokenizer
    path = Path(model_file) if model_file else _sentencepiece_file(tokenizer)
    if path is None:
        if "llama" in type(tokenizer).__name__.lower():
            log.warning("%s has no %s: prompts are encoded by transformers' %s, whose ids differ from the "
                        "release's", tokenizer.name_or_path, SENTENCEPIECE_FILE, type(tokenizer).__name__)
        return tokenizer
    segments = SentencePieceSegments.from_file(path)
    if segments.vocab_size != base_vocab_size(tokenizer):
        log.warning("%s has %d pieces but the tokenizer %d tokens: not used for prompts",
                    path, segments.vocab_size, base_vocab_size(tokenizer))
        return tokenizer
    setattr(tokenizer, _SEGMENTS_ATTR, segments)
    tokenizer.save_pretrained = _SaveWithSentencePiece(tokenizer)
    return tokenizer


def load_tokenizer(path: str | Path, config_key: str = "model.tokenizer_path") -> PreTrainedTokenizerBase:
    if not Path(path).exists():
        raise WeightsNotFoundError("Tokenizer", path, config_key)
    return add_placeholders(AutoTokenizer.from_pretrained(str(path)))


def base_vocab_size(tokenizer: PreTrainedTokenizerBase) -> int:
    """Size of the vocabulary without the placeholder tokens (what the LLM's embedding must cover)."""
    return min(tokenizer.convert_tokens_to_ids(t) for t in PLACEHOLDERS)
