"""MERR-style training data: annotation + captions + subtitles + cached features -> tokenized examples."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from emotion_llama.datasets.common import check_samples, check_subtitles, read_subtitles
from emotion_llama.datasets.features import (
    FeatureStore,
    MissingFeaturesError,
    drop_modalities,
    stack_features,
)
from emotion_llama.datasets.merr import read_merr_json, read_merr_txt
from emotion_llama.labels import MERR_LABELS
from emotion_llama.model.prompts import PromptParts, emotion_instruction, pick_instruction
from emotion_llama.model.sequences import IGNORE_INDEX, encode_example, encode_prompt, pad_batch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipRecord:
    name: str
    label: str
    subtitle: str = ""
    caption: str = ""  # coarse description (MERR ``caption``)
    reason: str = ""  # fine-grained reasoning (MERR ``smp_reason_caption``)


def load_records(
    annotation: str | Path,
    subtitles: str | Path | None = None,
    coarse_json: str | Path | None = None,
    fine_json: str | Path | None = None,
    labels: Sequence[str] = MERR_LABELS,
) -> list[ClipRecord]:
    subs = read_subtitles(subtitles) if subtitles else {}
    coarse = read_merr_json(coarse_json) if coarse_json else {}
    fine = read_merr_json(fine_json) if fine_json else {}
    samples = check_samples(read_merr_txt(annotation, labels=tuple(labels)), annotation)
    if subs:
        check_subtitles(subs, [s.name for s in samples], subtitles)
    return [
        ClipRecord(
            name=s.name,
            label=s.label,
            subtitle=subs.get(s.name, ""),
            caption=coarse.get(s.name, {}).get("caption", ""),
            reason=fine.get(s.name, {}).get("smp_reason_caption", ""),
        )
        for s in samples
    ]


def keep_with_features(
    records: list[ClipRecord], store: FeatureStore, on_missing: str = "skip"
) -> list[ClipRecord]:
    """Drop (and count) clips without cached features, or fail on the first one (``on_missing='fail'``)."""
    if on_missing not in ("skip", "fail"):
        raise ValueError(f"on_missing must be 'skip' or 'fail', got {on_missing!r}")
    have, lack = store.split_available(r.name for r in records)
    if lack and on_missing == "fail":
        raise MissingFeaturesError(
            f"{len(lack)} clips have no features under {store.root} (first: {lack[0]}); extract them or set "
            "data.on_missing_features=skip"
        )
    if lack:
        log.warning("skipping %d of %d clips without features under %s (e.g. %s)",
                    len(lack), len(records), store.root, lack[0])
    keep = set(have)
    return [r for r in records if r.name in keep]


class MERRDataset(Dataset):
    """Each item: one task drawn from ``tasks`` (weights), the prompt + answer ids, labels, features.

    Every item also carries the canonical emotion prompt (no answer) and its label index, which
    closed-set scoring uses. ``clean_answers`` (``data.clean_answers``): every answer goes through the
    release's text processing (:func:`~emotion_llama.model.prompts.clean_answer`) before it is tokenized.
    """

    def __init__(
        self,
        records: Sequence[ClipRecord],
        store: FeatureStore,
        tokenizer,
        num_video_tokens: int,
        num_feature_tokens: int,
        tasks: Mapping[str, float],
        labels: Sequence[str] = MERR_LABELS,
        max_length: int = 1024,
        train: bool = True,
        seed: int = 0,
        drop: Sequence[str] = (),
        clean_answers: bool = False,
    ):
        self.records = list(records)
        self.store = store
        self.tokenizer = tokenizer
        self.tokens = (num_video_tokens, num_feature_tokens)
        self.tasks = {t: w for t, w in tasks.items() if w > 0}
        self.labels = tuple(labels)
        self.max_length = max_length
        self.train = train
        self.seed = seed
        self.drop = tuple(drop)
        self.clean_answers = clean_answers

    def __len__(self) -> int:
        return len(self.records)

    def _answer(self, rec: ClipRecord, task: str) -> str:
        return {"emotion": rec.label, "describe": rec.caption, "reason": rec.reason}[task]

    def _draw_task(self, rec: ClipRecord, rng: random.Random) -> str:
        tasks = [t for t in self.tasks if self._answer(rec, t)]
        if not tasks:
            return "emotion"
        return rng.choices(tasks, weights=[self.tasks[t] for t in tasks])[0]

    def _example(self, epoch: int, index: int) -> tuple[str, dict[str, list[int]]]:
        """The task drawn for (seed, epoch, index) and its prompt + answer ids."""
        rec = self.records[index]
        rng = random.Random((self.seed * 1_000_003 + epoch) * 10_000_019 + index)
        task = self._draw_task(rec, rng) if self.train else "emotion"
        instruction = pick_instruction(task, self.labels, rng if self.train else None)
        subtitle = "" if "text" in self.drop else rec.subtitle
        return task, encode_example(
            self.tokenizer, PromptParts(subtitle, task, instruction), self._answer(rec, task),
            *self.tokens, max_length=self.max_length, clean_answers=self.clean_answers,
        )

    def length(self, epoch: int, index: int) -> int:
        """Token count of the example ``(epoch, index)`` will be, for length-grouped batching."""
        return len(self._example(epoch, index)[1]["input_ids"])

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """``key`` is an index, or ``(epoch, index)`` from :class:`EpochSampler` so that the task drawn
        depends only on (seed, epoch, index): reruns and resumed runs see the same examples."""
        epoch, index = key if isinstance(key, tuple) else (0, key)
        rec = self.records[index]
        task, example = self._example(epoch, index)
        subtitle = "" if "text" in self.drop else rec.subtitle
        prompt = encode_prompt(
            self.tokenizer, PromptParts(subtitle, "emotion", emotion_instruction(self.labels)), *self.tokens,
            max_length=self.max_length,
        )
        return {
            "name": rec.name,
            "task": task,
            **example,
            "prompt_ids": prompt,
            "label_index": self.labels.index(rec.label),
            "features": drop_modalities(self.store.load(rec.name), self.drop),
        }


class EpochSampler(torch.utils.data.Sampler):
    """Shuffles with a permutation that depends only on (seed, epoch); yields ``(epoch, index)`` keys.

    Lightning calls ``set_epoch`` at every epoch start, so a resumed run continues exactly where an
    uninterrupted one would be.
    """

    def __init__(
        self, size: int, seed: int = 0, shuffle: bool = True,
        length: Callable[[int, int], int] | None = None, group_size: int = 0,
    ):
        self.size, self.seed, self.shuffle, self.epoch = size, seed, shuffle, 0
        # With ``length``, each run of ``group_size`` shuffled examples is sorted longest first, so that
        # consecutive batches hold examples of similar length and little of each batch is padding.
        self.length, self.group_size = length, group_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        order = range(self.size)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        if self.length is not None and self.group_size > 1:
            order = [i for start in range(0, self.size, self.group_size)
                     for i in sorted(order[start:start + self.group_size], key=lambda i: -self.length(self.epoch, i))]
        return ((self.epoch, i) for i in order)


def collate(items: Sequence[dict], pad_id: int) -> dict:
    """Right-padded training ids/labels, left-padded scoring prompts, stacked features."""
    ids, mask = pad_batch([it["input_ids"] for it in items], pad_id, "right")
    labels, _ = pad_batch([it["labels"] for it in items], IGNORE_INDEX, "right")
    prompt_ids, prompt_mask = pad_batch([it["prompt_ids"] for it in items], pad_id, "left")
    feats = stack_features([it["features"] for it in items])
    return {
        "names": [it["name"] for it in items],
        "tasks": [it["task"] for it in items],
        "input_ids": ids,
        "attention_mask": mask,
        "labels": labels,
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "label_index": torch.tensor([it["label_index"] for it in items]),
        "features": feats,
    }
