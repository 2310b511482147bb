"""The chat turn around a prompt, and the token that ends an answer, for the tokenizer of any chat LLM.

Two formats (``model.prompt_format``), attached to the tokenizer by :func:`use_chat_format` wherever a tokenizer is
built or loaded, and read back by :func:`chat_format`:

- ``release``: the release's literal LLaMA-2 markers (:func:`~emotion_llama.model.prompts.format_chat`), each text
  segment through the release's segment encoder, one BOS in front, the answer ended by ``</s>``: the ids the
  released checkpoint was trained on (the parity tests hold them), never the tokenizer's chat template.
- ``chat_template``: the user turn rendered by the tokenizer's own chat template with the generation prompt (so a
  Qwen2.5 folder gives ChatML with its default system turn, a Llama-3.1 folder its header form and date lines);
  the rendered text is encoded by the tokenizer itself with its special tokens recognised, so a BOS appears only
  where the template writes one. The answer ends with the model's own end-of-turn token (``<|im_end|>``,
  ``<|eot_id|>``), found by rendering a one-answer conversation: the first special token after the answer.

The user turn is stripped for templates (Llama-3's template trims it anyway), so every template sees the same
text.
"""

from __future__ import annotations

from collections.abc import Callable

from transformers import PreTrainedTokenizerBase

from emotion_llama.choices import PROMPT_FORMATS
from emotion_llama.errors import UserError
from emotion_llama.model.prompts import LAYOUTS, format_chat
from emotion_llama.model.tokenizer import segment_encoder

_FORMAT_ATTR = "emotion_llama_chat"  # the ChatFormat attached to a tokenizer
_ANSWER_PROBE = "ANSWER_END_PROBE"


class ChatFormatError(UserError, ValueError):
    """A tokenizer that cannot give the prompt format asked of it."""


class ChatFormat:
    """How one tokenizer wraps a user turn and ends an answer."""

    kind: str
    tokenizer: PreTrainedTokenizerBase

    def wrap(self, user: str, layout: str = "train") -> str:
        """The text of the user turn, ready for the answer (placeholders still in it)."""
        raise NotImplementedError

    @property
    def bos_ids(self) -> list[int]:
        """Ids put before the wrapped text."""
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        """One text segment of the wrapped prompt (or an answer) to ids."""
        raise NotImplementedError

    @property
    def end_of_turn_id(self) -> int:
        """The token that follows an answer: trained on, scored with each label, and where generation stops."""
        raise NotImplementedError

    @property
    def stop_ids(self) -> list[int]:
        """Generation stops on any of these: the end of turn, and the tokenizer's EOS when it is another."""
        ids = [self.end_of_turn_id]
        eos = self.tokenizer.eos_token_id
        return ids + [eos] if eos is not None and eos not in ids else ids


class ReleaseChat(ChatFormat):
    """The release's LLaMA-2 turn (see the module doc)."""

    kind = "release"

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.tokenizer = tokenizer
        self._encode: Callable[[str], list[int]] = segment_encoder(tokenizer)

    def wrap(self, user: str, layout: str = "train") -> str:
        return format_chat(user, layout)

    @property
    def bos_ids(self) -> list[int]:
        bos = self.tokenizer.bos_token_id
        return [] if bos is None else [bos]

    def encode(self, text: str) -> list[int]:
        return self._encode(text)

    @property
    def end_of_turn_id(self) -> int:
        return self.tokenizer.eos_token_id


class TemplateChat(ChatFormat):
    """The tokenizer's own chat template (see the module doc)."""

    kind = "chat_template"

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        if not tokenizer.chat_template:
            raise ChatFormatError(f"model.prompt_format=chat_template but the tokenizer of {tokenizer.name_or_path or 'this model'} "
                                  "has no chat template: use a chat (instruct) model's folder, or "
                                  "model.prompt_format=release for LLaMA-2")
        self.tokenizer = tokenizer
        self._end = _end_of_turn(tokenizer)

    def wrap(self, user: str, layout: str = "train") -> str:
        if layout != "train":
            raise ChatFormatError(f"prompt_layout={layout} is the release's LLaMA-2 evaluation layout; a model "
                                  "prompted through its chat template has only prompt_layout=train")
        return self.tokenizer.apply_chat_template([{"role": "user", "content": user.strip()}], tokenize=False,
                                                  add_generation_prompt=True)

    @property
    def bos_ids(self) -> list[int]:
        return []  # the template writes the BOS where the model has one

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    @property
    def end_of_turn_id(self) -> int:
        return self._end


def _end_of_turn(tokenizer: PreTrainedTokenizerBase) -> int:
    """The first special token the template writes after an assistant answer (else the tokenizer's EOS)."""
    turns = [{"role": "user", "content": "Hello."}, {"role": "assistant", "content": _ANSWER_PROBE}]
    text = tokenizer.apply_chat_template(turns, tokenize=False)
    after = text.split(_ANSWER_PROBE, 1)[1] if _ANSWER_PROBE in text else ""
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    for token in tokenizer(after, add_special_tokens=False).input_ids:
        if token in special:
            return token
    if tokenizer.eos_token_id is None:
        raise ChatFormatError(f"the chat template of {tokenizer.name_or_path or 'this tokenizer'} ends an answer "
                              "with no special token and the tokenizer has no EOS: answers could never end")
    return tokenizer.eos_token_id


def use_chat_format(tokenizer: PreTrainedTokenizerBase, kind: str = "release") -> PreTrainedTokenizerBase:
    """Attach the prompt format ``kind`` (one of PROMPT_FORMATS) to ``tokenizer``; returns the tokenizer."""
    if kind not in PROMPT_FORMATS:
        raise ChatFormatError(f"model.prompt_format must be one of {', '.join(PROMPT_FORMATS)}, got {kind!r}")
    setattr(tokenizer, _FORMAT_ATTR, TemplateChat(tokenizer) if kind == "chat_template" else ReleaseChat(tokenizer))
    return tokenizer


def chat_format(tokenizer: PreTrainedTokenizerBase) -> ChatFormat:
    """The format attached to ``tokenizer`` (the release's when none was)."""
    fmt = getattr(tokenizer, _FORMAT_ATTR, None)
    if fmt is None:
        fmt = ReleaseChat(tokenizer)
        setattr(tokenizer, _FORMAT_ATTR, fmt)
    return fmt


def check_prompt_layout(tokenizer: PreTrainedTokenizerBase, layout: str) -> None:
    """Refuse a prompt layout the tokenizer's format cannot give, before any work."""
    if layout not in LAYOUTS:
        raise ChatFormatError(f"prompt_layout={layout} is not a prompt layout: use {' or '.join(LAYOUTS)}")
    chat_format(tokenizer).wrap("x", layout)
