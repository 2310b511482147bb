"""What the instruction data asks: EmoVIT's categorical prompt, the attribute lines of an image and the two
system prompts under which a language model writes the conversation and reasoning replies.

The categorical prompt is the one the model is trained and evaluated with: the candidate labels in alphabetical
order, joined as ``a, b, ... and z``; for EmoSet's eight labels that is EmoVIT's text word for word.
``release_spacing`` reproduces the spacing of the strings in EmoVIT's own data-building script instead (no space
after ``options:``, two before ``Predict``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from emotion_llama.model.prompts import EMOVIT_ANSWER, emovit_instruction

KINDS: tuple[str, ...] = ("categorical", "conversation", "reasoning")
GENERATED_KINDS: tuple[str, ...] = ("conversation", "reasoning")
# The order of the attribute lines a generator sees; ``emotion`` is the image's label.
ATTRIBUTES: tuple[str, ...] = (
    "brightness", "colorfulness", "scene", "object", "facial_expression", "human_action",
)


def categorical_prompt(labels: Sequence[str], release_spacing: bool = False) -> str:
    """EmoVIT's multiple-choice instruction over ``labels`` (the model's own text, see
    :func:`emotion_llama.model.prompts.emovit_instruction`)."""
    text = emovit_instruction(labels)
    if release_spacing:
        text = text.replace("options: ", "options:", 1).replace("format: Predict", "format:  Predict", 1)
    return text


def categorical_answer(label: str) -> str:
    return EMOVIT_ANSWER.format(label=label)


def _value(value: object) -> str | None:
    """An attribute as the generator reads it; None for an absent one (None, empty text or list)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{round(value, 2):g}"
    if isinstance(value, (list, tuple)):
        items = [str(v).strip() for v in value if v is not None and str(v).strip()]
        return ", ".join(items) or None
    text = " ".join(str(value).split())
    return text or None


def attribute_values(annotation: Mapping[str, object]) -> dict[str, str]:
    """The present attributes among :data:`ATTRIBUTES`, formatted, in that order."""
    values = {name: _value(annotation.get(name)) for name in ATTRIBUTES}
    return {name: v for name, v in values.items() if v is not None}


def attribute_lines(label: str, annotation: Mapping[str, object]) -> list[str]:
    """``emotion: LABEL`` then one ``name: value`` line per present attribute."""
    return [f"emotion: {label}"] + [f"{k}: {v}" for k, v in attribute_values(annotation).items()]


def user_message(caption: str, label: str, annotation: Mapping[str, object]) -> str:
    """What the generator is given for one image: the caption, a blank line, the attribute lines."""
    lines = attribute_lines(label, annotation)
    caption = " ".join(caption.split())
    return "\n".join(([caption, ""] if caption else []) + lines)


SYSTEM_PROMPTS: dict[str, str] = {
    "conversation": """\
You help build training data for a vision assistant that talks about images and the feelings they evoke.
You cannot see the image. Instead you get a short caption of it, followed by attribute lines: `emotion` is
the feeling the image evokes in most viewers; `brightness` runs from 0 (very dark) to 1 (very bright) and
`colorfulness` from 0 (grey) to 1 (vivid colour); `scene`, `object`, `facial_expression` and `human_action`,
when present, name the setting, the things that can be seen, the faces and what people are doing.

Write a short conversation between a curious person and the assistant about this one image: three or four
questions, each followed by the assistant's answer. Cover what is in the picture (people, objects, the
setting, the light and colour) and at least once its mood: what feeling it gives and what in the picture
gives it. Answer as someone looking at the image: describe what is visible, never mention a caption,
attributes or numbers. Ask only what the given information answers with confidence; if something is not
in the image, the answer may say so plainly. Keep each answer to one to four sentences.

Write nothing but the turns, each in this form:
Question: <the question>
Answer: <the answer>""",
    "reasoning": """\
You help build training data for a vision assistant that explains why an image makes people feel the way
they do. You cannot see the image. Instead you get a short caption of it, followed by attribute lines:
`emotion` is the feeling the image evokes in most viewers; `brightness` runs from 0 (very dark) to 1 (very
bright) and `colorfulness` from 0 (grey) to 1 (vivid colour); `scene`, `object`, `facial_expression` and
`human_action`, when present, name the setting, the things that can be seen, the faces and what people are
doing.

Write exactly one question and its answer. The question asks what feeling the image evokes and why, without
giving away the emotion or describing the picture itself, so that answering it needs a look at the image.
The answer names the emotion and explains, step by step, which visible evidence leads to it: the subject
and what is happening, faces and gestures, the setting, the light and colour, and how they work together.
Reason from what is visible, as someone looking at the image; never mention a caption, attributes or
numbers. Four to seven sentences.

Write nothing but this:
Question: <the question>
Answer: <the answer>""",
}
