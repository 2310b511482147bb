"""Instruction data for a list of labelled images: ``categorical.json``, ``conversation.json`` and
``reasoning.json`` in ``out_dir``.

Every finished image is appended to ``out_dir/progress/<kind>.jsonl`` at once (see :mod:`.progress`), so a run
that is stopped at any point continues where it stopped when started again, without repeating an image or
writing one twice. The three JSON files are rewritten atomically from the progress files at the end of a
run; they hold every image finished in ``out_dir``, in input order (an image of an earlier, larger selection
stays, after the others). Captions made by a captioner are kept the same way (``progress/captions.jsonl``).

An image is anything with ``id``, ``label``, ``image`` (its path) and ``annotation`` (a dict with the optional
attributes and ``caption``), as :func:`emotion_llama.datasets.emoset.read_emoset` returns.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from emotion_llama.errors import UserError
from emotion_llama.fileio import atomic_write_text
from emotion_llama.instructions.generators import Generator, Request
from emotion_llama.instructions.progress import ProgressLog
from emotion_llama.instructions.prompts import (
    GENERATED_KINDS,
    KINDS,
    SYSTEM_PROMPTS,
    attribute_values,
    categorical_answer,
    categorical_prompt,
    user_message,
)
from emotion_llama.instructions.records import ReplyError, instruction_record, parse_qa, split_turns
from emotion_llama.labels import EMOSET_LABELS

log = logging.getLogger(__name__)

IMAGE_FIELDS = ("relative", "name")
PROGRESS_DIR = "progress"
Captioner = Callable[[Sequence[Path]], list[str]]


class Image(Protocol):
    id: str
    label: str
    image: Path
    annotation: Mapping[str, Any]


@dataclass(frozen=True)
class Options:
    labels: Sequence[str] = EMOSET_LABELS  # the categorical prompt's candidates
    image_root: Path | None = None  # with image_field="relative": the folder the image paths are relative to
    image_field: str = "relative"  # relative (to image_root) or name (the file name, as EmoVIT's release)
    release_spacing: bool = False  # the categorical prompt with the spacing of EmoVIT's data-building script
    split_turns: bool = False  # one record per question/answer pair, as EmoVIT's released file
    require_caption: bool = True  # an image without caption (and no captioner) is an error, else no caption line
    batch_size: int = 8  # images per generator call
    retry_skipped: bool = False  # ask again for the replies an earlier run skipped
    overwrite: bool = False  # forget earlier progress in out_dir
    progress: bool = True  # a progress bar
    report_ids: int = 5  # skipped ids listed per kind in the summary


def make_instructions(images: Sequence[Image], out_dir: str | Path, kinds: Sequence[str] = KINDS,
                      generator: Generator | None = None, captioner: Captioner | None = None,
                      options: Options = Options()) -> dict:
    """Write the instruction files of ``kinds`` for ``images``; returns the summary (also the caller's report)."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    kinds = _check(images, kinds, generator, options)
    if options.overwrite and (out_dir / PROGRESS_DIR).exists():
        shutil.rmtree(out_dir / PROGRESS_DIR)
    logs: dict[str, ProgressLog] = {}
    try:
        for kind in kinds:
            logs[kind] = ProgressLog(out_dir / PROGRESS_DIR / f"{kind}.jsonl",
                                     _settings(kind, generator, captioner, options), options.retry_skipped)
        if "categorical" in logs:
            _categorical(images, logs["categorical"], options)
        generated = {k: logs[k] for k in GENERATED_KINDS if k in logs}
        if generated:
            _generated(images, generated, generator, captioner, out_dir, options)
        summary = {"out_dir": str(out_dir), "images": len(images),
                   "generator": getattr(generator, "name", None) if generated else None, "kinds": {}}
        for kind, progress in logs.items():
            summary["kinds"][kind] = _write(kind, progress, images, out_dir, options)
    finally:
        for progress in logs.values():
            progress.close()
    summary["seconds"] = round(time.perf_counter() - start, 2)
    return summary


def _check(images: Sequence[Image], kinds: Sequence[str], generator: Generator | None, options: Options) -> list[str]:
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise UserError(f"kinds={list(kinds)}: use any of {', '.join(KINDS)} (e.g. kinds=[categorical,reasoning])")
    if options.image_field not in IMAGE_FIELDS:
        raise UserError(f"image_field={options.image_field}: use one of {', '.join(IMAGE_FIELDS)}")
    if generator is None and any(k in GENERATED_KINDS for k in kinds):
        raise UserError("conversation and reasoning records need a generator: set generator=template, local or "
                        "openai_compatible, or kinds=[categorical]")
    seen = set()
    for image in images:
        if image.id in seen:
            raise UserError(f"{image.image}: id {image.id!r} appears twice in the input; ids must be unique")
        seen.add(image.id)
        if image.label not in options.labels:
            raise UserError(f"{image.image}: label {image.label!r} is not among labels ({', '.join(options.labels)});"
                            " set labels= to the label set of the data")
    return list(dict.fromkeys(kinds))


def _settings(kind: str, generator: Generator | None, captioner: Captioner | None, options: Options) -> dict:
    """What shapes the records of ``kind``: a rerun must match it to continue the same files."""
    shared = {"image_field": options.image_field}
    if kind == "categorical":
        return shared | {"prompt": categorical_prompt(options.labels, options.release_spacing)}
    captions = getattr(captioner, "settings", lambda: {"captioner": "given"})() if captioner else None
    return shared | generator.settings() | {"system_prompt": SYSTEM_PROMPTS[kind], "captions": captions}


def image_field(image: Image, options: Options) -> str:
    path = Path(image.image)
    if options.image_field == "name":
        return path.name
    if options.image_root is None:
        raise UserError("image_field=relative needs the data root: set image_field=name or give data_root")
    for root, candidate in ((options.image_root, path), (options.image_root.resolve(), path.resolve())):
        try:
            return candidate.relative_to(root).as_posix()
        except ValueError:
            pass
    raise UserError(f"{path} is not under data_root={options.image_root}: keep the images under it or set "
                    "image_field=name")


# ---------------------------------------------------------------------------------------------- the three kinds


def _categorical(images: Sequence[Image], progress: ProgressLog, options: Options) -> None:
    prompt = categorical_prompt(options.labels, options.release_spacing)
    for image in images:
        if not progress.done(image.id):
            turns = [(prompt, categorical_answer(image.label))]
            progress.keep(image.id, instruction_record(image.id, image_field(image, options), turns))


def _generated(images: Sequence[Image], logs: Mapping[str, ProgressLog], generator: Generator,
               captioner: Captioner | None, out_dir: Path, options: Options) -> None:
    from tqdm import tqdm

    pending = [im for im in images if any(not p.done(im.id) for p in logs.values())]
    captions = _CaptionSource(captioner, out_dir / PROGRESS_DIR / "captions.jsonl", options)
    captions.check(pending)
    try:
        with tqdm(total=len(pending), desc="instructions", unit="image", disable=not options.progress,
                  dynamic_ncols=True) as bar:
            for start in range(0, len(pending), max(1, options.batch_size)):
                batch = pending[start:start + max(1, options.batch_size)]
                texts = captions(batch)
                requests = [_request(im, kind, texts[im.id]) for im in batch
                            for kind, p in logs.items() if not p.done(im.id)]
                images_of = {im.id: im for im in batch}
                for index, reply in generator.generate(requests):
                    request = requests[index]
                    _record(request, reply, images_of[request.id], logs[request.kind], options)
                bar.update(len(batch))
    finally:
        captions.close()


def _request(image: Image, kind: str, caption: str) -> Request:
    return Request(id=image.id, kind=kind, system=SYSTEM_PROMPTS[kind],
                   user=user_message(caption, image.label, image.annotation), label=image.label,
                   caption=caption, attributes=attribute_values(image.annotation))


def _record(request: Request, reply: str, image: Image, progress: ProgressLog, options: Options) -> None:
    try:
        turns = parse_qa(reply)
    except ReplyError as err:
        log.warning("%s %s: reply skipped, %s", request.kind, request.id, err)
        progress.skip(request.id, str(err), reply)
        return
    progress.keep(request.id, instruction_record(request.id, image_field(image, options), turns))


class _CaptionSource:
    """The caption of an image: its annotation's ``caption``, else one made by the captioner (kept in the
    progress folder so that a rerun does not make it again), else none."""

    def __init__(self, captioner: Captioner | None, cache: Path, options: Options):
        self.captioner, self.options = captioner, options
        self.cache = None
        if captioner is not None:
            settings = getattr(captioner, "settings", lambda: {"captioner": "given"})()
            self.cache = ProgressLog(cache, settings)

    @staticmethod
    def given(image: Image) -> str:
        caption = image.annotation.get("caption")
        return " ".join(str(caption).split()) if caption else ""

    def check(self, images: Sequence[Image]) -> None:
        if self.captioner is not None or not self.options.require_caption:
            return
        missing = [im for im in images if not self.given(im)]
        if missing:
            raise UserError(f"{missing[0].image}: no caption in its annotation ({len(missing)} images lack one): set "
                            "captioner=DIR (a local image-captioning model folder) or require_caption=false to go "
                            "on without captions")

    def __call__(self, images: Sequence[Image]) -> dict[str, str]:
        out = {im.id: self.given(im) for im in images}
        if self.cache is None:
            return out
        cached = dict(self.cache.records())
        todo = []
        for im in images:
            if not out[im.id]:
                if im.id in cached:
                    out[im.id] = cached[im.id]["caption"]
                else:
                    todo.append(im)
        if todo:
            for im, text in zip(todo, self.captioner([Path(im.image) for im in todo]), strict=True):
                self.cache.keep(im.id, {"caption": text})
                out[im.id] = text
        return out

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()


# ---------------------------------------------------------------------------------------------- output


def _write(kind: str, progress: ProgressLog, images: Sequence[Image], out_dir: Path, options: Options) -> dict:
    order = {im.id: i for i, im in enumerate(images)}
    kept = sorted(progress.records(), key=lambda item: order.get(item[0], len(order)))
    records = [r for _, r in kept]
    if options.split_turns:
        records = [part for r in records for part in split_turns(r)]
    path = out_dir / f"{kind}.json"
    atomic_write_text(path, json.dumps(records, ensure_ascii=False, indent=2) + "\n")
    skipped = progress.skipped()
    return {"file": str(path), "records": len(records), "images": len(kept), "new": progress.kept_now,
            "skipped": len(skipped), "skipped_now": progress.skipped_now, "skipped_ids": skipped[:options.report_ids]}
