"""python tools/make_instructions.py: EmoVIT instruction data (categorical, conversation, reasoning) for a split
of EmoSet; the last line printed is the summary JSON.

Exit code 0 when every asked kind has at least one record, 1 otherwise.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from emotion_llama.cli import Call, run
from emotion_llama.datasets.emoset import read_emoset
from emotion_llama.errors import UserError
from emotion_llama.instructions.captions import Captioner
from emotion_llama.instructions.generators import (
    GENERATORS,
    LocalGenerator,
    OpenAICompatibleGenerator,
    TemplateGenerator,
)
from emotion_llama.instructions.pipeline import Options, make_instructions
from emotion_llama.instructions.prompts import GENERATED_KINDS
from emotion_llama.labels import resolve_labels

LITERAL = ("data_root", "out_dir", "captioner", "local.model", "openai.base_url", "openai.model", "openai.api_key")


def select(images: list, limit: int | None, per_label: int | None) -> list:
    """The first ``per_label`` images of each label (order kept), then the first ``limit`` of those."""
    if per_label is not None:
        seen: dict[str, int] = {}
        kept = []
        for image in images:
            seen[image.label] = seen.get(image.label, 0) + 1
            if seen[image.label] <= per_label:
                kept.append(image)
        images = kept
    return images if limit is None else images[:limit]


def build_generator(cfg: DictConfig):
    """The generator named by ``generator=``, built from its section of the config."""
    name = cfg.generator
    if name == "template":
        return TemplateGenerator()
    if name == "local":
        c = cfg.local
        return LocalGenerator(c.model, device=cfg.device, max_new_tokens=c.max_new_tokens, do_sample=c.do_sample,
                              temperature=c.temperature, top_p=c.top_p, seed=cfg.seed, batch_size=c.batch_size)
    if name == "openai_compatible":
        c = cfg.openai
        api_key = c.api_key or (os.environ.get(c.api_key_env) if c.api_key_env else None)
        return OpenAICompatibleGenerator(c.base_url, c.model, api_key=api_key, timeout=c.timeout, retries=c.retries,
                                         backoff=c.backoff, temperature=c.temperature, max_tokens=c.max_tokens,
                                         seed=cfg.seed, concurrency=c.concurrency)
    raise UserError(f"generator={name}: use one of {', '.join(GENERATORS)}")


def read_images(cfg: DictConfig, labels: tuple[str, ...]) -> list:
    return select(read_emoset(cfg.data_root, split=cfg.split, labels=labels), cfg.limit, cfg.per_label)


def _main(cfg: DictConfig, call: Call) -> int:
    kinds = list(OmegaConf.to_container(cfg.kinds)) if isinstance(cfg.kinds, ListConfig) else [str(cfg.kinds)]
    labels = resolve_labels(cfg.labels)
    generated = any(k in GENERATED_KINDS for k in kinds)
    generator = build_generator(cfg) if generated else None  # a bad model folder fails before the data is read
    images = read_images(cfg, labels)
    if not images:
        raise UserError(f"no images in split {cfg.split} of data_root={cfg.data_root}: check the split and limit=")
    captioner = None
    if generated and cfg.captioner:
        captioner = Captioner(cfg.captioner, device=cfg.device, max_new_tokens=cfg.caption.max_new_tokens,
                              batch_size=cfg.caption.batch_size)
    options = Options(labels=labels, image_root=Path(cfg.data_root).absolute(), image_field=cfg.image_field,
                      release_spacing=cfg.release_spacing, split_turns=cfg.split_turns,
                      require_caption=cfg.require_caption, batch_size=cfg.batch_size,
                      retry_skipped=cfg.retry_skipped, overwrite=cfg.overwrite, progress=cfg.progress)
    summary = make_instructions(images, cfg.out_dir, kinds, generator, captioner, options)
    for kind, s in summary["kinds"].items():
        skipped = f", {s['skipped']} replies skipped ({', '.join(s['skipped_ids'])})" if s["skipped"] else ""
        print(f"{kind}: {s['records']} records for {s['images']} images ({s['new']} new){skipped} -> {s['file']}")
    print(json.dumps(summary))
    return 0 if all(s["records"] for s in summary["kinds"].values()) else 1


def main(argv: Sequence[str] | None = None) -> int:
    return run("make_instructions", _main, argv, literal=LITERAL)
