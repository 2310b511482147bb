"""Token sequences: a prompt (and answer) to ids with placeholder tokens and answer-only labels; collate.

The release's ids, with a LLaMA SentencePiece tokenizer (see :mod:`emotion_llama.model.tokenizer` for the
segment encoder; the tiny tokenizer follows the same layout with its own encoding):

- ``layout='train'`` (the release's ``prompt_wrap``, what its checkpoint was trained on): the chat-wrapped text
  ``[INST] <video><VideoHere></video> <feature><FeatureHere></feature> ...  [/INST]`` is split at the two
  placeholders; each of the three text segments is encoded on its own (each opens with SentencePiece's dummy
  prefix: after the video run comes ``▁</`` 1533, not ``</`` 829); ``num_video_tokens`` video placeholder ids
  and ``num_feature_tokens`` feature placeholder ids go where the placeholders were; one BOS in front::

      [1] + sp("[INST] <video>") + [V]*256 + sp("</video> <feature>") + [F]*4 + sp("</feature> The person ...  [/INST]")

- ``layout='release_eval'`` (the release's ``eval_emotion.py``, which produced its published MER2023 figure):
  ``"<s>[INST] " + text + " [/INST]"`` split at ``<VideoHere>`` only; the literal ``<s>`` gives a second BOS
  after the tokenizer's (ids open ``[1, 1, 518, ...]``); all the multimodal placeholders (video then feature)
  go where ``<VideoHere>`` was and ``<FeatureHere>`` stays in the text as characters.

An answer is ``encoder(answer) + [EOS]``, right after the ``]`` of ``[/INST]`` (no ``▁`` 29871 between).

Any other chat LLM (``model.prompt_format=chat_template``): the same user text rendered by the tokenizer's chat
template, split at the placeholders the same way, the answer ended by the model's end-of-turn token; see
:mod:`emotion_llama.model.chat`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

import torch
from transformers import PreTrainedTokenizerBase

from emotion_llama.errors import UserError
from emotion_llama.model.chat import chat_format
from emotion_llama.model.prompts import (
    FEATURE_TOKEN,
    VIDEO_TOKEN,
    PromptParts,
    clean_answer,
    user_message,
    user_text,
)

IGNORE_INDEX = -100
log = logging.getLogger(__name__)


class PromptTooLongError(UserError, ValueError):
    """A prompt that does not fit its token budget even with its subtitle left out."""


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase,
    parts: PromptParts,
    num_video_tokens: int,
    num_feature_tokens: int,
    layout: str = "train",
    max_length: int | None = None,
) -> list[int]:
    """The user turn wrapped in the tokenizer's chat format (the release's: BOS + ``[INST] ... [/INST]`` in
    ``layout``; see the module doc), ready for the answer.

    ``max_length``: the prompt's token budget. A prompt over it has its subtitle cut, keeping its first words
    and ending it in "...", to the longest beginning that fits (logged); one that does not fit even with no
    subtitle is a :class:`PromptTooLongError`. The placeholders and the instruction are never cut.
    """
    ids = _encode_prompt(tokenizer, parts, num_video_tokens, num_feature_tokens, layout)
    if max_length is None or len(ids) <= max_length:
        return ids
    words = parts.subtitle.split()

    def with_words(k: int) -> list[int]:
        shown = " ".join(words[:k]) + " ..." if k else ""
        return _encode_prompt(tokenizer, replace(parts, subtitle=shown), num_video_tokens, num_feature_tokens,
                              layout)

    bare = len(with_words(0))
    if bare > max_length:
        raise PromptTooLongError(f"the prompt takes {bare} tokens without its subtitle, more than the "
                                 f"{max_length} it has room for: raise the length limit (data.max_length) or "
                                 "shorten the instruction")
    lo, hi = 0, len(words) - 1  # the most words that fit: with_words(lo) fits, with_words(hi + 1) does not
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if len(with_words(mid)) <= max_length else (lo, mid - 1)
    log.warning("a subtitle of %d words was cut to its first %d to fit %d prompt tokens", len(words), lo, max_length)
    return with_words(lo)


def _encode_prompt(tokenizer: PreTrainedTokenizerBase, parts: PromptParts, num_video_tokens: int,
                   num_feature_tokens: int, layout: str) -> list[int]:
    chat = chat_format(tokenizer)  # its wrap refuses a layout it cannot give
    encode = chat.encode
    video_id, feature_id = tokenizer.convert_tokens_to_ids([VIDEO_TOKEN, FEATURE_TOKEN])
    head, rest = _split_once(chat.wrap(user_message(parts), layout), VIDEO_TOKEN)
    ids = chat.bos_ids + encode(head) + [video_id] * num_video_tokens
    if layout == "release_eval":
        return ids + [feature_id] * num_feature_tokens + encode(rest)
    middle, tail = _split_once(rest, FEATURE_TOKEN)
    return ids + encode(middle) + [feature_id] * num_feature_tokens + encode(tail)


def _split_once(text: str, marker: str) -> tuple[str, str]:
    parts = text.split(marker)
    if len(parts) != 2:  # a subtitle or instruction that itself holds a placeholder string
        raise ValueError(f"the prompt must hold {marker} exactly once, not {len(parts) - 1} times: {text!r}")
    return parts[0], parts[1]


def encode_answer(tokenizer: PreTrainedTokenizerBase, answer: str) -> list[int]:
    """The answer's ids followed by the end-of-turn token (LLaMA-2: EOS); scoring a label uses exactly these ids.
    Reserved markers in the answer (a ``</s>`` in a reason text) are neutralised as in the prompt
    (:func:`user_text`)."""
    chat = chat_format(tokenizer)
    return [*chat.encode(user_text(answer.strip())), chat.end_of_turn_id]


def encode_example(
    tokenizer: PreTrainedTokenizerBase,
    parts: PromptParts,
    answer: str,
    num_video_tokens: int,
    num_feature_tokens: int,
    max_length: int | None = None,
    clean_answers: bool = False,
) -> dict[str, list[int]]:
    """Prompt + answer ids, with labels that ignore everything but the answer (and its EOS).

    ``clean_answers``: the answer goes through the release's :func:`~emotion_llama.model.prompts.clean_answer`
    first (lower case, no ``.!"()*#:;~``, at most 50 words). Too long an example has its subtitle cut (see
    :func:`encode_prompt`; the prompt keeps room for the answer, or for half of ``max_length``), then loses the
    end of its answer; never its placeholders.
    """
    answer_ids = encode_answer(tokenizer, clean_answer(answer) if clean_answers else answer)
    # The prompt leaves room for the whole answer, or for half of max_length when the answer is longer.
    budget = None if max_length is None else max_length - min(len(answer_ids), max_length // 2)
    prompt = encode_prompt(tokenizer, parts, num_video_tokens, num_feature_tokens, max_length=budget)
    if max_length is not None:
        answer_ids = answer_ids[: max_length - len(prompt)]
    return {
        "input_ids": prompt + answer_ids,
        "labels": [IGNORE_INDEX] * len(prompt) + answer_ids,
    }


def pad_batch(
    sequences: Sequence[Sequence[int]], pad_value: int, padding_side: str = "right"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) padded ids and their attention mask; generation and scoring want ``padding_side='left'``."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_value, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        span = slice(width - len(s), width) if padding_side == "left" else slice(0, len(s))
        ids[i, span] = torch.tensor(list(s), dtype=torch.long)
        mask[i, span] = 1
    return ids, mask
