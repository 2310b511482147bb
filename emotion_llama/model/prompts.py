"""The Emotion-LLaMA prompt: template, task tags, label order, instruction pools, chat wrap, answer cleaning.

One turn in the release's LLaMA-2 chat layout (its spacing exactly: two spaces before ``[{task}]`` and before
``[/INST]``; the subtitle's own trailing "." is kept, so "I see you." gives "I see you.."); the answer follows
``]`` directly and ends with the EOS token::

    [INST] <video><VideoHere></video> <feature><FeatureHere></feature> The person in video says: {subtitle}.  [{task}] {instruction}  [/INST]{answer}</s>

``<VideoHere>`` stands for the EVA patch tokens and ``<FeatureHere>`` for the MAE, VideoMAE, HuBERT and EVA
CLS tokens, in that order. :mod:`emotion_llama.model.sequences` splits the text at the two placeholders,
encodes each text segment on its own and puts one placeholder id per modality token where the placeholder
was (the release's ``prompt_wrap``); see there for the ids and for the release's evaluation layout.

Label order: the release lists MERR's labels as ``happy, sad, neutral, angry, worried, surprise, fear,
contempt, doubt`` (MER2023/MER2024: the first six). :func:`emotion_instruction` lists any label set made only
of MERR labels in that order, whatever order the data config gives (which stays the metric order); other
label sets (e.g. DFEW's, which has ``disgust``) are listed as given.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from emotion_llama.labels import MERR_LABELS

VIDEO_TOKEN = "<VideoHere>"
FEATURE_TOKEN = "<FeatureHere>"
TASKS: tuple[str, ...] = ("emotion", "reason", "describe")
LAYOUTS: tuple[str, ...] = ("train", "release_eval")

# The release's example text (its ``character_line`` ends in ". " and the instruction in " ").
USER_TEMPLATE = (
    "<video>{video}</video> <feature>{feature}</feature> "
    "The person in video says: {subtitle}.  [{task}] {instruction} "
)
# The release's chat wraps: training (``prompt_wrap``) and evaluation (conversation roles ``("<s>[INST] ", " [/INST]")``).
TRAIN_CHAT = "[INST] {} [/INST]"
RELEASE_EVAL_CHAT = "<s>[INST] {} [/INST]"

# Still images (and text alone, where every modality is absent): the same placeholders; the subtitle line only
# when there is text. EmoVIT's categorical instruction and answer format are the emotion task's for images.
IMAGE_TEMPLATE = "<image>{video}</image> <feature>{feature}</feature> {text}[{task}] {instruction} "
MEDIA: tuple[str, ...] = ("video", "image", "text")
EMOVIT_INSTRUCTION = (
    "Please select the emotion closest to the image from the following options: {labels} (Do not provide "
    "answers outside of the candidates options.) Please answer in the following format: Predict emotion:"
)
EMOVIT_ANSWER = "Predict emotion: {label}"

RELEASE_MERR_ORDER: tuple[str, ...] = (
    "happy", "sad", "neutral", "angry", "worried", "surprise", "fear", "contempt", "doubt",
)
RELEASE_MER_ORDER: tuple[str, ...] = RELEASE_MERR_ORDER[:6]

# The release's ``blip_caption`` answer processing.
ANSWER_MAX_WORDS = 50
_ANSWER_PUNCT = re.compile(r"[.!\"()*#:;~]")
_SPACES = re.compile(r"\s{2,}")


def release_label_order(labels: Sequence[str]) -> tuple[str, ...]:
    """``labels`` in the release's order when they are all MERR labels, else as given."""
    labels = tuple(labels)
    if set(labels) <= set(RELEASE_MERR_ORDER):
        return tuple(sorted(labels, key=RELEASE_MERR_ORDER.index))
    return labels


def emotion_instruction(labels: Sequence[str] = MERR_LABELS) -> str:
    """The release's emotion instruction, listing the candidate labels of the target dataset (a set of MERR
    labels in the release's order, see :func:`release_label_order`)."""
    return instruction_pool("emotion", labels)[0]


def emovit_instruction(labels: Sequence[str]) -> str:
    """EmoVIT's categorical instruction, the labels in alphabetical order joined as "a, b and c" (for
    EmoSet's eight labels, EmoVIT's text exactly)."""
    ordered = sorted(labels)
    joined = ordered[0] if len(ordered) == 1 else ", ".join(ordered[:-1]) + " and " + ordered[-1]
    return EMOVIT_INSTRUCTION.format(labels=joined)


def canonical_instruction(task: str, labels: Sequence[str], media: str = "video") -> str:
    """The instruction evaluation and inference use: EmoVIT's for the emotion of an image (or text alone),
    else the first of the task's pool."""
    if media not in MEDIA:
        raise ValueError(f"unknown media {media!r}; expected one of {', '.join(MEDIA)}")
    if task == "emotion" and media != "video":
        return emovit_instruction(labels)
    return pick_instruction(task, labels, None)


def answer_text(label: str, media: str = "video") -> str:
    """How a label is written as the answer to the emotion instruction of ``media``."""
    return label if media == "video" else EMOVIT_ANSWER.format(label=label)


def clean_answer(text: str, max_words: int = ANSWER_MAX_WORDS) -> str:
    """The release's processing of a training answer: lower case; each of ``.!"()*#:;~`` -> a space; runs of
    whitespace collapsed to one space; stripped; the first ``max_words`` words."""
    text = _SPACES.sub(" ", _ANSWER_PUNCT.sub(" ", text.lower())).rstrip("\n").strip(" ")
    words = text.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else text


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
        joined = ", ".join(release_label_order(labels))
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
    media: str = "video"  # video | image | text (see MEDIA)


# What gives a prompt its structure: the placeholders and the media tags around them, and the chat markers of
# LLaMA-2 ([INST], <<SYS>>, <s>, </s>) and of ChatML / Llama-3 (<|im_end|>, <|eot_id|>, ...). In user text (a
# subtitle, a question, an answer) they would change the prompt (a typed "<VideoHere>" is the placeholder
# token), so there they are written with round brackets: "<VideoHere>" -> "(VideoHere)", "[/INST]" -> "(/INST)".
RESERVED = re.compile(r"<VideoHere>|<FeatureHere>|</?video>|</?feature>"  # placeholders, media tags
                      r"|\[/?INST\]|<</?SYS>>|</?s>"  # LLaMA-2
                      r"|<\|[^|<>\s]{1,40}\|>")  # ChatML, Llama-3


def user_text(text: str) -> str:
    """``text`` with every reserved marker (see :data:`RESERVED`) written in round brackets; other text as is."""
    return RESERVED.sub(lambda m: "(" + m.group(0).strip("<>[]|").replace("|", "") + ")", text)


def user_message(parts: PromptParts) -> str:
    """The release's example text, with one ``<VideoHere>`` and one ``<FeatureHere>``; the subtitle as given
    (its own final "." stays: "you." gives "you..", as in the release) but for the reserved markers, which
    :func:`user_text` neutralises in the subtitle and the instruction. Images and text alone use
    :data:`IMAGE_TEMPLATE`, with the subtitle line only when there is one."""
    parts = PromptParts(user_text(parts.subtitle), parts.task, user_text(parts.instruction), parts.media)
    if parts.media == "video":
        return USER_TEMPLATE.format(
            video=VIDEO_TOKEN, feature=FEATURE_TOKEN, subtitle=parts.subtitle, task=parts.task,
            instruction=parts.instruction,
        )
    if parts.media not in MEDIA:
        raise ValueError(f"unknown media {parts.media!r}; expected one of {', '.join(MEDIA)}")
    text = f"The text says: {parts.subtitle}.  " if parts.subtitle else ""
    return IMAGE_TEMPLATE.format(video=VIDEO_TOKEN, feature=FEATURE_TOKEN, text=text, task=parts.task,
                                 instruction=parts.instruction)


def format_chat(user: str, layout: str = "train") -> str:
    """Wrap one user turn in the release's literal LLaMA-2 chat markers.

    Never the tokenizer's chat template: LLaMA-2-chat's template yields ``[`` (29961) where the release had
    ``▁[`` (518). ``layout='release_eval'`` is the release's evaluation wrap, which opens with a literal ``<s>``.
    """
    if layout == "train":
        return TRAIN_CHAT.format(user)
    if layout == "release_eval":
        return RELEASE_EVAL_CHAT.format(user)
    raise ValueError(f"unknown prompt layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
