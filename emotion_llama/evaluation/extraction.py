"""From a free-text answer to emotion words (and, for a sentiment set, to positive / negative / neutral):
MER-UniBench's second step (:mod:`emotion_llama.evaluation.unibench`), pluggable and deterministic by default.

- ``rule`` (default; no model): the emotion words the answer names, in the order they first appear, repeats
  dropped. The vocabulary is the surface forms of the emotion wheels' ``format.csv`` when ``paths.emotion_wheel``
  is given (multi-word forms matched as phrases), else the project's label words and the answer parser's
  synonyms (:data:`emotion_llama.answers.SYNONYMS`). Negation is not handled: "not happy" gives ``happy``; a
  word used in another sense ("content" as a noun) counts too. Sentiment: each word's polarity from a small
  lexicon (:data:`POSITIVE`, :data:`NEGATIVE`; a synonym takes its label's, a surface form its base word's);
  more positive words -> positive, more negative -> negative, a tie (none included) -> neutral.
- ``local`` (a Hugging Face causal LM folder, through
  :class:`~emotion_llama.instructions.generators.LocalGenerator`) and ``openai`` (an OpenAI-compatible chat
  endpoint, e.g. a local vLLM or Ollama server, through
  :class:`~emotion_llama.instructions.generators.OpenAICompatibleGenerator`): the model is asked
  :data:`EXTRACT_PROMPT` (the clearly identifiable emotions of the main character as ``[a, b, c]``, or ``[]``,
  with two worked examples) and, for a sentiment set, :data:`SENTIMENT_PROMPT` on the list it gave. Greedy
  (temperature 0) by default; ``extractor.temperature=0.7`` samples as AffectGPT's harness does (with a fixed
  seed for the local model). A reply is read by its first ``[...]`` (else its first line) through
  :func:`~emotion_llama.datasets.unibench.parse_openset`.

Every model reply is kept in a JSON cache (:class:`ReplyCache`, written atomically after each batch) keyed by
the extractor's model, temperature, reply length and seed, and by the prompt's text: a rerun, or a second set
with the same answers, asks the model nothing again, and the model is not even loaded when every reply is
cached.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from emotion_llama.answers import SYNONYMS
from emotion_llama.datasets.unibench import parse_openset
from emotion_llama.errors import UserError
from emotion_llama.evaluation.openset import EmotionWheels, normalise
from emotion_llama.fileio import atomic_write_text
from emotion_llama.instructions.generators import (
    Generator,
    LocalGenerator,
    OpenAICompatibleGenerator,
    Request,
)
from emotion_llama.labels import DFEW_LABELS, EMOSET_LABELS, EMOTION6_LABELS, MELD_LABELS, MERR_LABELS
from emotion_llama.runtime import model_folder

log = logging.getLogger(__name__)

EXTRACTORS = ("rule", "local", "openai")
SENTIMENTS = ("positive", "negative", "neutral")

# The prompts (this project's own wording of the procedure AffectGPT's harness follows).
EXTRACT_SYSTEM = "You read descriptions of a person's emotional state and list the emotions they name."
EXTRACT_PROMPT = (
    "Below is a description of the emotional state of a character. List the emotions of the main character "
    "that the description clearly identifies, as lower-case words in square brackets separated by commas, "
    "for example [happy, relieved]. If no emotion can be clearly identified, answer []. Answer with the list "
    "only.\n\n"
    "Description: We cannot recognize his emotional state.\n"
    "Answer: []\n\n"
    "Description: His emotional states are happy, sad, and angry.\n"
    "Answer: [happy, sad, angry]\n\n"
    "Description: {answer}\n"
    "Answer:"
)
SENTIMENT_SYSTEM = "You judge the overall sentiment of a person from the emotions they show."
SENTIMENT_PROMPT = (
    "A character shows these emotions: {labels}. Is the character's overall sentiment positive, negative or "
    "neutral? Answer with one word: positive, negative or neutral."
)

# The rule-based polarity lexicon: a few common emotion words of each sign; any other word is neutral.
POSITIVE = frozenset((
    "happy", "happiness", "joy", "joyful", "glad", "cheerful", "delighted", "pleased", "excited", "excitement",
    "amused", "amusement", "content", "contentment", "satisfied", "relieved", "relief", "proud", "pride",
    "grateful", "gratitude", "hopeful", "hope", "love", "loving", "affection", "admiration", "awe", "enthusiastic",
    "optimistic", "confident", "relaxed", "comfortable", "friendly", "playful", "elated", "ecstatic",
))
NEGATIVE = frozenset((
    "sad", "sadness", "unhappy", "sorrow", "sorrowful", "grief", "depressed", "disappointed", "disappointment",
    "lonely", "hurt", "helpless", "hopeless", "angry", "anger", "mad", "furious", "fury", "annoyed", "irritated",
    "rage", "frustrated", "frustration", "hostile", "resentful", "upset", "worried", "worry", "anxious",
    "anxiety", "nervous", "tense", "tension", "concerned", "stressed", "fear", "fearful", "afraid", "scared",
    "frightened", "terrified", "panic", "contempt", "contemptuous", "disdain", "scorn", "scornful", "disgust",
    "disgusted", "ashamed", "shame", "guilty", "guilt", "embarrassed", "jealous", "envious", "bored", "tired",
))
# The project's label words (IEMOCAP's abbreviations left out) for the rule extractor without a wheel folder.
LABEL_WORDS: tuple[str, ...] = tuple(dict.fromkeys((*MERR_LABELS, *DFEW_LABELS, *MELD_LABELS, *EMOSET_LABELS,
                                                     *EMOTION6_LABELS)))
_WORD = re.compile(r"[a-z]+(?:['-][a-z]+)*")
_LIST = re.compile(r"\[[^\[\]]*\]")
_SENTIMENT = re.compile(r"\b(positive|negative|neutral)\b")


def _words(text: str) -> list[str]:
    return _WORD.findall(str(text).lower())


# ---------------------------------------------------------------------------------------------- rule


class RuleExtractor:
    """Emotion words by vocabulary match, sentiment by a polarity lexicon (see the module doc)."""

    name = "rule"

    def __init__(self, wheels: EmotionWheels | None = None):
        self.wheels = wheels
        forms = list(wheels.forms) if wheels is not None else [*LABEL_WORDS, *SYNONYMS]
        self.vocabulary = {" ".join(_words(f)) for f in forms} - {""}
        self.longest = max((len(v.split()) for v in self.vocabulary), default=1)

    def settings(self) -> dict:
        source = "the emotion wheels' format.csv" if self.wheels is not None else "label words and synonyms"
        return {"extractor": self.name, "vocabulary": f"{source} ({len(self.vocabulary)} forms)"}

    def words(self, answer: str) -> tuple[str, ...]:
        """The vocabulary's words and phrases ``answer`` holds, longest match first, in order, no repeats."""
        tokens, found, i = _words(answer), [], 0
        while i < len(tokens):
            for n in range(min(self.longest, len(tokens) - i), 0, -1):
                phrase = " ".join(tokens[i:i + n])
                if phrase in self.vocabulary:
                    if phrase not in found:
                        found.append(phrase)
                    i += n
                    break
            else:
                i += 1
        return tuple(found)

    def polarity(self, word: str) -> int:
        word = normalise(word)
        for candidate in (word, SYNONYMS.get(word), *(self.wheels.forms.get(word, ()) if self.wheels else ())):
            if candidate in POSITIVE:
                return 1
            if candidate in NEGATIVE:
                return -1
        return 0

    def sentiment(self, words: Sequence[str]) -> str:
        total = sum(self.polarity(w) for w in words)
        return "positive" if total > 0 else "negative" if total < 0 else "neutral"

    def emotions(self, answers: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
        return {name: self.words(text) for name, text in answers.items()}

    def sentiments(self, labels: Mapping[str, Sequence[str]]) -> dict[str, str]:
        return {name: self.sentiment(words) for name, words in labels.items()}

    def stats(self) -> dict:
        return {}


# ---------------------------------------------------------------------------------------------- LLM


class ReplyCache:
    """Model replies by a key of the extractor's settings and the prompt, in one JSON file (``entries``: key
    -> ``{"prompt": ..., "reply": ...}``), read once and written atomically by :meth:`save`."""

    FORMAT = "emotion-llama extractor cache"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.entries: dict[str, dict] = {}
        self.dirty = False
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                entries = data["entries"] if data.get("format") == self.FORMAT else None
            except (ValueError, KeyError, TypeError, AttributeError):
                entries = None
            if not isinstance(entries, dict):
                raise UserError(f"extractor.cache={self.path} is not an extractor cache (or is damaged): delete it "
                                "or choose another extractor.cache")
            self.entries = entries

    @staticmethod
    def key(settings: Mapping[str, object], system: str, user: str) -> str:
        text = json.dumps([dict(settings), system, user], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()

    def get(self, key: str) -> str | None:
        entry = self.entries.get(key)
        return entry.get("reply") if isinstance(entry, dict) else None

    def put(self, key: str, prompt: str, reply: str) -> None:
        self.entries[key] = {"prompt": prompt, "reply": reply}
        self.dirty = True

    def save(self) -> None:
        if self.dirty:
            atomic_write_text(self.path, json.dumps({"format": self.FORMAT, "entries": self.entries},
                                                    ensure_ascii=False, indent=1) + "\n")
            self.dirty = False


def read_list(reply: str) -> tuple[str, ...]:
    """An extractor reply's words: its first ``[...]``, else its first non-empty line (an ``Answer:`` prefix
    dropped), split on commas; ``[]`` gives none."""
    text = str(reply)
    found = _LIST.search(text)
    if found:
        return parse_openset(found.group(0), empty=())
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = re.sub(r"^answer\s*:\s*", "", line, flags=re.IGNORECASE)
    return parse_openset(line, empty=())


def read_sentiment(reply: str) -> str:
    """The first of positive / negative / neutral a reply names ("" when none: scored as neutral)."""
    found = _SENTIMENT.search(str(reply).lower())
    return found.group(1) if found else ""


def as_list_text(words: Iterable[str]) -> str:
    return f"[{', '.join(words)}]"


class LLMExtractor:
    """A language model asked :data:`EXTRACT_PROMPT` / :data:`SENTIMENT_PROMPT`; its replies cached
    (:class:`ReplyCache`). ``make_generator`` builds the model's generator on first need (never when every
    reply is cached); ``settings`` is what the cache keys on."""

    def __init__(self, name: str, settings: Mapping[str, object], make_generator: Callable[[], Generator],
                 cache: ReplyCache, batch_size: int = 32):
        self.name, self.cache_settings = name, dict(settings)
        self.make_generator, self.cache = make_generator, cache
        self.batch_size = max(1, batch_size)
        self.generator: Generator | None = None
        self.cached = self.generated = 0

    def settings(self) -> dict:
        return {"extractor": self.name, **self.cache_settings, "cache": str(self.cache.path)}

    def stats(self) -> dict:
        return {"cached": self.cached, "generated": self.generated, "cache": str(self.cache.path)}

    def ask(self, system: str, users: Mapping[str, str]) -> dict[str, str]:
        """The reply to each prompt (``id -> user text``; the same text is asked once): from the cache, else from
        the model (batch by batch, the cache saved after each)."""
        texts = list(dict.fromkeys(users.values()))
        keys = {u: ReplyCache.key(self.cache_settings, system, u) for u in texts}
        replies = {u: self.cache.get(keys[u]) for u in texts}
        todo = [u for u in texts if replies[u] is None]
        self.cached += len(texts) - len(todo)
        for start in range(0, len(todo), self.batch_size):
            if self.generator is None:
                self.generator = self.make_generator()
            chunk = todo[start:start + self.batch_size]
            requests = [Request(f"{start + j}", "unibench", system, u, "") for j, u in enumerate(chunk)]
            for index, reply in self.generator.generate(requests):
                replies[chunk[index]] = reply
                self.cache.put(keys[chunk[index]], chunk[index], reply)
            self.generated += len(chunk)
            self.cache.save()
        return {i: replies[u] or "" for i, u in users.items()}

    def emotions(self, answers: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
        replies = self.ask(EXTRACT_SYSTEM, {n: EXTRACT_PROMPT.format(answer=" ".join(str(a).split()))
                                            for n, a in answers.items()})
        return {n: read_list(r) for n, r in replies.items()}

    def sentiments(self, labels: Mapping[str, Sequence[str]]) -> dict[str, str]:
        replies = self.ask(SENTIMENT_SYSTEM, {n: SENTIMENT_PROMPT.format(labels=as_list_text(w))
                                              for n, w in labels.items()})
        return {n: read_sentiment(r) for n, r in replies.items()}


# ---------------------------------------------------------------------------------------------- building


def check_extractor(cfg) -> None:
    """What ``extractor.*`` needs, checked before any model loads: ``local`` a model folder, ``openai`` an
    endpoint and a model name."""
    ex = cfg.extractor
    if ex.kind == "local":
        model_folder(ex.get("model"), "extractor.model", "causal language model",
                     " (or use extractor=rule, which needs no model)")
    elif ex.kind == "openai":
        for key, example in (("base_url", "http://127.0.0.1:8000/v1"), ("model", "Qwen2.5-7B-Instruct")):
            if not ex.get(key):
                raise UserError(f"extractor=openai needs extractor.{key} (e.g. extractor.{key}={example})")
    elif ex.kind not in EXTRACTORS:
        raise UserError(f"extractor.kind={ex.kind}: use one of {', '.join(EXTRACTORS)}")


def build_extractor(cfg, wheels: EmotionWheels | None, default_cache: str | Path):
    """The extractor ``cfg.extractor`` describes (see the module doc); its cache ``extractor.cache`` or
    ``default_cache``."""
    check_extractor(cfg)
    ex = cfg.extractor
    if ex.kind == "rule":
        return RuleExtractor(wheels)
    temperature = float(ex.temperature)
    sampling = {"seed": int(ex.seed)} if temperature > 0 else {}
    cache = ReplyCache(ex.get("cache") or default_cache)
    if ex.kind == "local":
        folder = Path(ex.model)
        settings = {"model": str(folder.resolve()), "temperature": temperature,
                    "max_new_tokens": int(ex.max_new_tokens), **sampling}

        def make() -> Generator:
            log.info("extractor: loading %s", folder)
            return LocalGenerator(folder, device=ex.device, max_new_tokens=int(ex.max_new_tokens),
                                  do_sample=temperature > 0, temperature=temperature or 1.0, top_p=1.0,
                                  seed=int(ex.seed), batch_size=int(ex.batch_size))
    else:
        settings = {"model": str(ex.model), "temperature": temperature, "max_new_tokens": int(ex.max_new_tokens),
                    **sampling}
        key_env = ex.get("api_key_env")
        api_key = os.environ.get(key_env) if key_env else None

        def make() -> Generator:
            return OpenAICompatibleGenerator(str(ex.base_url), str(ex.model), api_key=api_key,
                                             temperature=temperature, max_tokens=int(ex.max_new_tokens),
                                             seed=int(ex.seed) if temperature > 0 else None,
                                             concurrency=int(ex.batch_size))
    return LLMExtractor(ex.kind, settings, make, cache, batch_size=max(32, int(ex.batch_size)))
