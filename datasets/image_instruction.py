"""Image emotion instruction data (EmoVIT): EmoSet-style records + instruction JSON + cached image features ->
tokenized single-turn examples in the same item format as :class:`~emotion_llama.datasets.instruction.MERRDataset`,
so the same Lightning module, collate and sampler train on either.

Instruction files are EmoVIT's (``categorical.json``, ``conversation.json``, ``reasoning.json`` in its LLaVA-style
schema, see :mod:`emotion_llama.datasets.emovit`); every (question, answer) turn of a record becomes one example on
that record's image, with the task tag ``emotion`` (categorical), ``vqa`` (conversation) or ``reason``
(reasoning). The categorical turns need no file: they are EmoVIT's fixed instruction and ``Predict emotion:``
answer (:func:`~emotion_llama.model.prompts.emovit_instruction`), made from the records' labels, which is also
what validation scores. Images are keyed by their file stem (EmoSet's id), as feature extraction names them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from emotion_llama.datasets.emoset import ImageRecord
from emotion_llama.datasets.emovit import read_instructions
from emotion_llama.datasets.features import MODALITIES, FeatureStore, MissingFeaturesError
from emotion_llama.errors import UserError
from emotion_llama.model.fusion import PRESENT
from emotion_llama.model.prompts import PromptParts, answer_text, emovit_instruction
from emotion_llama.model.sequences import encode_example, encode_prompt

log = logging.getLogger(__name__)

INSTRUCTION_KINDS: dict[str, str] = {"categorical": "emotion", "conversation": "vqa", "reasoning": "reason"}


@dataclass(frozen=True)
class Turn:
    name: str  # the image's file stem
    kind: str  # categorical | conversation | reasoning
    question: str
    answer: str


def record_name(record) -> str:
    """How examples name a record: an image's file stem; an utterance (text-only data) its id."""
    image = getattr(record, "image", None)
    return record.id if image is None else Path(image).stem


def categorical_turns(records: Sequence, labels: Sequence[str]) -> list[Turn]:
    question = emovit_instruction(labels)
    return [Turn(record_name(r), "categorical", question, answer_text(r.label, "image")) for r in records]


def instruction_turns(path: str | Path, kind: str, known: set[str] | None = None) -> list[Turn]:
    """The turns of one instruction file; records whose image is not in ``known`` (stems) are left out."""
    if kind not in INSTRUCTION_KINDS:
        raise UserError(f"unknown instruction kind {kind!r}: use {', '.join(INSTRUCTION_KINDS)}")
    turns = [Turn(Path(rec.image).stem, kind, q, a) for rec in read_instructions(path) for q, a in rec.turns]
    if known is not None:
        kept = [t for t in turns if t.name in known]
        if len(kept) < len(turns):
            log.info("%s: %d of %d turns are on images outside this split", path, len(turns) - len(kept), len(turns))
        turns = kept
    return turns


def load_turns(records: Sequence[ImageRecord], labels: Sequence[str], kinds: Sequence[str],
               instructions_dir: str | Path | None) -> list[Turn]:
    """Categorical turns from the records; the other kinds from ``instructions_dir/<kind>.json``."""
    known = {Path(r.image).stem for r in records}
    turns: list[Turn] = []
    for kind in kinds:
        if kind == "categorical":
            turns += categorical_turns(records, labels)
            continue
        if instructions_dir is None:
            raise UserError(f"{kind} instructions need data.instructions_dir (made by tools/make_instructions.py)")
        path = Path(instructions_dir) / f"{kind}.json"
        if not path.is_file():
            raise UserError(f"{path} not found: run tools/make_instructions.py out_dir={instructions_dir} "
                            f"kinds=[{kind}] first")
        turns += instruction_turns(path, kind, known)
    return turns


def keep_images_with_features(records: Sequence[ImageRecord], store: FeatureStore,
                              on_missing: str = "skip") -> list[ImageRecord]:
    have, lack = store.split_available(Path(r.image).stem for r in records)
    if lack and on_missing == "fail":
        raise MissingFeaturesError(f"{len(lack)} images have no features under {store.root} (first: {lack[0]}); "
                                   "extract them or set data.on_missing_features=skip")
    if lack:
        log.warning("skipping %d of %d images without features under %s (e.g. %s)",
                    len(lack), len(records), store.root, lack[0])
    keep = set(have)
    return [r for r in records if Path(r.image).stem in keep]


class ImageInstructionDataset(Dataset):
    """Each item: one instruction turn on one image, its ids and answer-only labels, the image's canonical
    categorical prompt and label index (for closed-set validation) and its features: ``store.load(name)`` of a
    :class:`FeatureStore` (cached encoder features), or of an
    :class:`~emotion_llama.datasets.pixels.ImagePixels` (pixel values, for a backbone that encodes images itself).

    Text-only utterances (:class:`~emotion_llama.datasets.dialogue.Utterance` records, named by id) are the same
    examples with ``subtitles`` (name -> the utterance, the prompt's text line) and ``media`` ``text`` (nothing
    but the text; a :class:`HeldFeatures` store without features) or ``image`` (with a picture's features)."""

    def __init__(self, turns: Sequence[Turn], records: Sequence[ImageRecord], store: FeatureStore, tokenizer,
                 num_video_tokens: int, num_feature_tokens: int, labels: Sequence[str], max_length: int = 1024,
                 train: bool = True, seed: int = 0, clean_answers: bool = False,
                 subtitles: Mapping[str, str] | None = None, media: str = "image"):
        self.turns = list(turns)
        self.label_of = {record_name(r): r.label for r in records}
        self.store, self.tokenizer = store, tokenizer
        self.tokens = (num_video_tokens, num_feature_tokens)
        self.labels = tuple(labels)
        self.max_length, self.train, self.seed, self.clean_answers = max_length, train, seed, clean_answers
        self.question = emovit_instruction(self.labels)
        self.subtitles, self.media = dict(subtitles or {}), media
        missing = {t.name for t in self.turns} - set(self.label_of)
        if missing:
            raise UserError(f"{len(missing)} instruction turns are on images without a label record "
                            f"(e.g. {sorted(missing)[0]}); use the instruction files of this dataset")

    def __len__(self) -> int:
        return len(self.turns)

    def _example(self, index: int) -> tuple[str, dict[str, list[int]]]:
        turn = self.turns[index]
        task = INSTRUCTION_KINDS[turn.kind]
        return task, encode_example(
            self.tokenizer, PromptParts(self.subtitles.get(turn.name, ""), task, turn.question, self.media),
            turn.answer, *self.tokens,
            max_length=self.max_length, clean_answers=self.clean_answers and turn.kind != "categorical",
        )

    def length(self, epoch: int, index: int) -> int:
        return len(self._example(index)[1]["input_ids"])

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """``key``: an index, or ``(epoch, index)`` from the epoch sampler (the examples do not depend on it)."""
        index = key[1] if isinstance(key, tuple) else key
        turn = self.turns[index]
        task, example = self._example(index)
        parts = PromptParts(self.subtitles.get(turn.name, ""), "emotion", self.question, self.media)
        prompt = encode_prompt(self.tokenizer, parts, *self.tokens, max_length=self.max_length)
        return {
            "name": turn.name,
            "task": task,
            **example,
            "prompt_ids": prompt,
            "label_index": self.labels.index(self.label_of[turn.name]),
            "features": self.store.load(turn.name),
        }


class HeldFeatures:
    """Features held in memory, by name, for :class:`ImageInstructionDataset` (``load(name)`` as a
    :class:`FeatureStore`'s): a picture's ``{"eva": tokens}`` each (the other modalities absent), read as
    float32; or, without ``features``, text alone: every modality absent."""

    def __init__(self, features: Mapping[str, Mapping[str, torch.Tensor]] | None = None):
        self.features = None if features is None else dict(features)

    def load(self, name: str) -> dict[str, torch.Tensor]:
        if self.features is None:
            return {PRESENT: torch.zeros(len(MODALITIES), dtype=torch.bool)}
        feats = {m: t.float() for m, t in self.features[name].items()}
        return feats | {PRESENT: torch.tensor([m in feats for m in MODALITIES])}
