"""Token sequences: a prompt (and answer) to ids with placeholder tokens and answer-only labels; collate."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from emotion_llama.model.prompts import PromptParts, format_chat, user_message

IGNORE_INDEX = -100


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase, parts: PromptParts, num_video_tokens: int, num_feature_tokens: int
) -> list[int]:
    """BOS + the chat-formatted user turn, ready for the answer to follow."""
    text = format_chat(user_message(parts, num_video_tokens, num_feature_tokens), tokenizer)
    ids = tokenizer(text, add_special_tokens=False).input_ids
    if tokenizer.bos_token_id is not None and (not ids or ids[0] != tokenizer.bos_token_id):
        ids = [tokenizer.bos_token_id, *ids]
    return ids


def encode_answer(tokenizer: PreTrainedTokenizerBase, answer: str) -> list[int]:
    """The answer's ids followed by EOS; scoring a label uses exactly these ids."""
    return [*tokenizer(answer.strip(), add_special_tokens=False).input_ids, tokenizer.eos_token_id]


def encode_example(
    tokenizer: PreTrainedTokenizerBase,
    parts: PromptParts,
    answer: str,
    num_video_tokens: int,
    num_feature_tokens: int,
    max_length: int | None = None,
) -> dict[str, list[int]]:
    """Prompt + answer ids, with labels that ignore everything but the answer (and its EOS).

    Too long an example loses the end of its answer, never its placeholders.
    """
    prompt = encode_prompt(tokenizer, parts, num_video_tokens, num_feature_tokens)
    answer_ids = encode_answer(tokenizer, answer)
    if max_length is not None:
        if len(prompt) >= max_length:
            raise ValueError(f"prompt of {len(prompt)} tokens exceeds max_length={max_length}")
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
