"""The Emotion-LLaMA prompt: template, task tags, instruction pools and chat formatting.

One turn in LLaMA-2 chat style; the answer follows ``[/INST]`` and ends with the EOS token:

    [INST] <video><VideoHere></video> <feature><FeatureHere></feature> The person in video says: {subtitle}.
    [{task}] {instruction} [/INST] {answer}</s>

``<VideoHere>`` stands for the EVA patch tokens and ``<FeatureHere>`` for the MAE, VideoMAE, HuBERT and EVA
CLS tokens, in that order; the tokenizer expands each to as many placeholder ids as the model has tokens.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from emotion_llama.labels import MERR_LABELS

VIDEO_TOKEN = "<VideoHere>"
FEATURE_TOKEN = "<FeatureHere>"
TASKS: tuple[str, ...] = ("emotion", "reason", "describe")

USER_TEMPLATE = (
    "<video>{video}</video> <feature>{feature}</feature> "
    "The person in video says: {subtitle}. [{task}] {instruction}"
)


def emotion_instruction(labels: Sequence[str] = MERR_LABELS) -> str:
    """The release's emotion instruction, listing the candidate labels of the target dataset."""
    return f"Please determine which emotion label in the video represents: {', '.join(labels)}."


# First entry of each pool is the canonical one used at evaluation time.
_EMOTION_POOL = (
    "Please determine which emotion label in the video represents: {labels}.",
    "Which of these emotions does the person show: {labels}?",
    "Choose the emotion of the person from: {labels}.",
    "Identify the displayed emotion. Options: {labels}.",
    "What is the emotion in this clip? Answer with one of: {labels}.",
)
REASON_POOL = (
    "Please analyze all the clues in the video and reason about the emotion of the person.",
    "Explain which facial, vocal and verbal cues reveal the person's emotion.",
    "Combine what you see, hear and read to infer the emotion, and explain why.",
    "What emotion does the person feel? Justify your answer with the cues in the clip.",
    "Describe the clues in the face, the voice and the words, then conclude the emotion.",
)
DESCRIBE_POOL = (
    "Describe the person's facial expression, voice and words in this clip.",
    "What does the person's face and voice look and sound like in the video?",
    "Give a short description of the expression, tone of voice and speech in the clip.",
    "Summarize the visual and vocal cues of the person in this video.",
)


def instruction_pool(task: str, labels: Sequence[str] = MERR_LABELS) -> tuple[str, ...]:
    if task == "emotion":
        joined = ", ".join(labels)
        return tuple(p.format(labels=joined) for p in _EMOTION_POOL)
    if task == "reason":
        return REASON_POOL
    if task == "describe":
        return DESCRIBE_POOL
    raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")


def pick_instruction(
    task: str, labels: Sequence[str] = MERR_LABELS, rng: random.Random | None = None
) -> str:
    """A random instruction for training (``rng``), or the canonical one when ``rng`` is None."""
    pool = instruction_pool(task, labels)
    return pool[0] if rng is None else rng.choice(pool)


@dataclass(frozen=True)
class PromptParts:
    subtitle: str
    task: str
    instruction: str


def user_message(parts: PromptParts, num_video_tokens: int, num_feature_tokens: int) -> str:
    """The user turn with each placeholder repeated once per modality token."""
    subtitle = parts.subtitle.strip().rstrip(".")
    return USER_TEMPLATE.format(
        video=VIDEO_TOKEN * num_video_tokens,
        feature=FEATURE_TOKEN * num_feature_tokens,
        subtitle=subtitle,
        task=parts.task,
        instruction=parts.instruction,
    )


def format_chat(user: str, tokenizer=None) -> str:
    """Wrap one user turn for generation: the tokenizer's chat template if it has one, else LLaMA-2's."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
        )
    return f"[INST] {user} [/INST] "
