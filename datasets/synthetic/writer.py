"""Writing the whole set: clips (in parallel), annotation files in every native format, ``meta.json`` last."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from emotion_llama.datasets.common import Sample, write_subtitles
from emotion_llama.datasets.cues import cue_phrases_path, write_cue_phrases
from emotion_llama.datasets.dfew import write_dfew_split, write_dfew_txt
from emotion_llama.datasets.mer import write_mer2023_csv, write_mer2023_npz, write_mer2024_csv
from emotion_llama.datasets.merr import write_merr_json, write_merr_txt
from emotion_llama.datasets.synthetic.clip import _make_clip_star, make_clip
from emotion_llama.datasets.synthetic.design import CUE_PHRASES, GRID, WEAK_KINDS, plan_clips
from emotion_llama.datasets.synthetic.face import SIZE
from emotion_llama.datasets.synthetic.voice import SAMPLE_RATE
from emotion_llama.errors import UserError
from emotion_llama.fileio import atomic_write_text
from emotion_llama.labels import DFEW_LABELS, MER_LABELS, MERR_LABELS

GENERATOR_VERSION = 2
N_DFEW_FOLDS = 5


def split_names(records: list[dict], fractions: Sequence[float], seed: int) -> dict[str, list[str]]:
    """Stratified train/val/test names: each label's clips shuffled and cut by ``fractions``.

    With at least three clips of a label, val and test each get at least one of them.
    """
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for k, label in enumerate(MERR_LABELS):
        names = sorted(r["name"] for r in records if r["label"] == label)
        names = [names[i] for i in np.random.default_rng([seed, k, 11]).permutation(len(names))]
        n_val = max(int(round(fractions[1] * len(names))), int(len(names) >= 3))
        n_test = max(int(round(fractions[2] * len(names))), int(len(names) >= 3))
        n_train = len(names) - n_val - n_test
        out["train"] += names[:n_train]
        out["val"] += names[n_train:n_train + n_val]
        out["test"] += names[n_train + n_val:]
    return {k: sorted(v) for k, v in out.items()}


def _sample(record: dict) -> Sample:
    return Sample(record["name"], record["label"], record["valence"], record["n_frames"])


def write_annotations(out_dir: Path, records: list[dict], splits: dict[str, list[str]]) -> None:
    by_name = {r["name"]: r for r in records}
    samples = [_sample(r) for r in records]
    common = ("AU_list", "peak_AU_list", "visual_prior_list", "audio_prior_list", "peak_index", "text",
              "pseu_emotion", "cues")
    for stage, key in (("coarse", "caption"), ("fine", "smp_reason_caption")):
        write_merr_txt(out_dir / f"MERR_{stage}_grained.txt", samples)
        data = {r["name"]: {key: r[key], **{k: r[k] for k in common}} for r in records}
        write_merr_json(out_dir / f"MERR_{stage}_grained.json", data)
    write_subtitles(out_dir / "subtitles.csv", {r["name"]: r["text"] for r in records})
    for split, names in splits.items():
        write_merr_txt(out_dir / "splits" / f"{split}.txt", [_sample(by_name[n]) for n in names])
    test = [_sample(by_name[n]) for n in splits["test"]]
    write_dfew(out_dir / "dfew", [s for s in test if s.label in DFEW_LABELS])
    mer = [s for s in test if s.label in MER_LABELS]
    train_mer = [_sample(by_name[n]) for n in splits["train"] if by_name[n]["label"] in MER_LABELS]
    write_mer2023_npz(out_dir / "mer2023" / "label-6way.npz",
                      {"train": train_mer, "test1": mer, "test2": mer, "test3": mer})
    write_mer2023_csv(out_dir / "mer2023" / "test-label.csv", mer)
    write_mer2024_csv(out_dir / "mer2024" / "label-disdim.csv", mer)


def write_dfew(root: Path, samples: list[Sample]) -> None:
    """The DFEW-label test clips dealt round-robin into five folds, in both DFEW layouts."""
    for k in range(N_DFEW_FOLDS):
        fold = samples[k::N_DFEW_FOLDS]
        write_dfew_split(root / "EmoLabel_DataSplit" / "test(single-labeled)" / f"set_{k + 1}.csv", fold)
        write_dfew_txt(root / f"test_set_{k + 1}.txt", fold)


def _meta(clips_per_label: int, seed: int, splits: Sequence[float]) -> dict:
    return {"generator_version": GENERATOR_VERSION, "seed": seed, "clips_per_label": clips_per_label,
            "splits": [float(s) for s in splits], "labels": list(MERR_LABELS),
            "grid": [list(row) for row in GRID], "text_group": "(face_row + voice_column) % 3",
            "weak_kinds": list(WEAK_KINDS), "size": SIZE, "sample_rate": SAMPLE_RATE}


def generate(out_dir: str | os.PathLike, clips_per_label: int, seed: int,
             splits: Sequence[float] = (0.7, 0.1, 0.2), workers: int = 1, progress: bool | None = None) -> Path:
    """Write the synthetic set under ``out_dir`` and return its path; ``meta.json`` is written last.

    A folder that already holds a complete set made with the same arguments is left as it is, except that
    its cue vocabulary (``cue_phrases.json``) is added when missing. ``progress``: a progress bar over the
    clips (``None``: only on a terminal).
    """
    out_dir = Path(out_dir)
    meta = _meta(clips_per_label, seed, splits)
    _check_existing(out_dir, meta)
    if (out_dir / "meta.json").is_file():
        if not cue_phrases_path(out_dir).is_file():  # a set made before the vocabulary was written
            write_cue_phrases(out_dir, CUE_PHRASES)
        return out_dir
    if clips_per_label < 1 or len(splits) != 3 or abs(sum(splits) - 1) > 1e-6:
        raise UserError(f"clips_per_label={clips_per_label}, splits={list(splits)}: "
                        "use clips_per_label >= 1 and three split fractions summing to 1")
    video_dir = out_dir / "videos"
    video_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(plan, video_dir) for plan in plan_clips(clips_per_label, seed)]
    disable = None if progress is None else not progress
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            # imap keeps the order of the jobs, as map did, and hands each clip over as it is written.
            clips = pool.imap(_make_clip_star, jobs, chunksize=4)
            records = list(tqdm(clips, total=len(jobs), desc="synthetic clips", unit="clip", disable=disable))
    else:
        records = [make_clip(*job) for job in tqdm(jobs, desc="synthetic clips", unit="clip", disable=disable)]
    write_annotations(out_dir, records, split_names(records, splits, seed))
    write_cue_phrases(out_dir, CUE_PHRASES)
    atomic_write_text(out_dir / "meta.json", json.dumps(meta, indent=1) + "\n")
    return out_dir


def _check_existing(out_dir: Path, meta: dict) -> None:
    path = out_dir / "meta.json"
    if path.is_file() and json.loads(path.read_text(encoding="utf-8")) != meta:
        raise UserError(f"{out_dir} already holds a synthetic set made with other arguments "
                        "(see its meta.json): pick another out_dir or delete that folder")


def timed_generate(out_dir: str | os.PathLike, clips_per_label: int, seed: int, workers: int = 1) -> str:
    """Generate and return a one-line summary with counts and time (for the command-line tool)."""
    start = time.perf_counter()
    done_before = (Path(out_dir) / "meta.json").is_file()
    path = generate(out_dir, clips_per_label, seed, workers=workers)
    seconds = time.perf_counter() - start
    if done_before:
        return f"synthetic set at {path} is already complete (seed {seed}, {clips_per_label} per label); nothing to do"
    n = clips_per_label * len(MERR_LABELS)
    return (f"synthetic set at {path}: {n} clips ({clips_per_label} per label x {len(MERR_LABELS)} labels), "
            f"seed {seed}, {seconds:.1f} s ({seconds / n:.3f} s/clip, {workers} worker(s))")
