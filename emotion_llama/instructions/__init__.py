"""EmoVIT-style instruction data for emotion visual instruction tuning on images.

Three kinds of records per labelled image, in EmoVIT's LLaVA-style schema:

- ``categorical``: EmoVIT's multiple-choice prompt and ``Predict emotion: {label}`` (no generator);
- ``conversation``: several questions and answers about the image's content and mood;
- ``reasoning``: one question whose answer explains from the visual evidence why the image evokes its emotion.

The last two are written by a generator (:mod:`.generators`: ``template``, ``local``, ``openai_compatible``)
from the image's caption and attribute lines (:mod:`.prompts`), and its reply is read by
:func:`~.records.parse_qa`. :func:`~.pipeline.make_instructions` runs it all, resumably.
"""

from emotion_llama.instructions.generators import (
    GENERATORS,
    LocalGenerator,
    OpenAICompatibleGenerator,
    Request,
    TemplateGenerator,
)
from emotion_llama.instructions.pipeline import Options, make_instructions
from emotion_llama.instructions.prompts import (
    KINDS,
    SYSTEM_PROMPTS,
    attribute_lines,
    categorical_answer,
    categorical_prompt,
    user_message,
)
from emotion_llama.instructions.records import ReplyError, instruction_record, parse_qa, split_turns

__all__ = [
    "GENERATORS", "KINDS", "SYSTEM_PROMPTS", "LocalGenerator", "OpenAICompatibleGenerator", "Options", "ReplyError",
    "Request", "TemplateGenerator", "attribute_lines", "categorical_answer", "categorical_prompt",
    "instruction_record", "make_instructions", "parse_qa", "split_turns", "user_message",
]
