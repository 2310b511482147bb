"""Throughput and latency benchmarks: training steps, the two evaluation protocols, feature extraction, inference.

Each mode prints one JSON line per measurement. Whatever is compared (our evaluation protocol against the
original one, decoding against full extraction, a cold against a warm inference, training variants) is measured
in the same process, one after the other, so that both sides see the same machine load.

With no overrides (``python tools/bench.py MODE [key=value ...]``, see ``--help``) every mode runs the tiny preset on the test split of a small synthetic set, made on first use
under ``work_dir`` with its features (seeded random tiny encoders) and a tiny random-weight checkpoint:
speed does not depend on what the weights have learnt.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from emotion_llama.cli import Call, UsageError, run
from emotion_llama.datasets.common import read_subtitles
from emotion_llama.datasets.features import FeatureStore, LazyFeatures
from emotion_llama.datasets.instruction import EpochSampler, MERRDataset, collate, load_records
from emotion_llama.datasets.merr import read_merr_txt
from emotion_llama.datasets.synthetic import generate
from emotion_llama.encoders import ENCODERS
from emotion_llama.encoders.build import build_encoders, encoder_config, encoder_shapes
from emotion_llama.encoders.extract import VideoFolder, decode_clip, extract_folder
from emotion_llama.errors import UserError
from emotion_llama.evaluation.evaluate import Evaluator
from emotion_llama.inference.core import InferenceCore
from emotion_llama.inference.video import Predictor
from emotion_llama.labels import MERR_LABELS
from emotion_llama.model.builder import build_model, build_tokenizer
from emotion_llama.model.checkpoint import load_checkpoint, save_checkpoint
from emotion_llama.model.config import ENCODER_NAMES, ModelConfig
from emotion_llama.model.llm import LLAMA2_7B
from emotion_llama.runtime import resolve_device
from emotion_llama.training.lightning import EmotionLLaMAModule

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
INFER_TOOL = REPO / "tools" / "infer.py"
H100_BF16_PEAK = 989e12  # dense bf16 FLOP/s of an H100 SXM
TABLE_END = "<!-- tools/bench.py --append inserts rows above this line -->"  # kept: BENCHMARKS.md holds it
TABLE_HEAD = "| date | machine | device | mode | command | figures |\n|---|---|---|---|---|---|\n"
MODES = ("train", "eval", "extract", "infer")
# The figures a BENCHMARKS.md row keeps of each mode's JSON line (the line itself has more).
ROW_FIGURES = {
    "train": ("variant", "threads", "batch", "steps_per_s", "tokens_per_s", "mfu", "peak_mem_mb"),
    "eval": ("weights", "threads", "clips", "batch", "ours_clips_per_s", "original_clips", "original_max_new_tokens",
             "original_mean_new_tokens", "original_clips_per_s", "speedup", "peak_mem_mb"),
    "extract": ("threads", "clips", "workers", "batch", "decode_clips_per_s", "extract_clips_per_s", "gpu_util", "peak_mem_mb"),
    "infer": ("threads", "cold_s", "warm_videos", "warm_mean_ms", "warm_median_ms", "cold_peak_mem_mb", "peak_mem_mb"),
}


# ---------------------------------------------------------------------------------------------- machine


def machine_name(device: torch.device) -> str:
    """The CPU model and core count, plus the GPU's name when the benchmark runs on one."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        models = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")]
        cpu = models[0] if models else cpu
    text = f"{cpu}, {os.cpu_count()} cores"
    return f"{torch.cuda.get_device_name(device)}; {text}" if device.type == "cuda" else text


def peak_memory_mb(device: torch.device) -> float:
    """GPU: peak allocated by torch since the last reset; CPU: the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def timed_repeats(fn: Callable[[], object], device: torch.device, min_time: float) -> tuple[float, int]:
    """Repeat ``fn`` until ``min_time`` seconds have passed: one fast call is too short to time reliably."""
    seconds, repeats = 0.0, 0
    while repeats == 0 or seconds < min_time:
        seconds += timed(fn, device)
        repeats += 1
    return seconds, repeats


class GpuUtilisation:
    """Mean GPU utilisation sampled in a thread while the block runs (None off GPU or without pynvml)."""

    def __init__(self, device: torch.device, interval: float = 0.2):
        self.device, self.interval = device, interval
        self.samples: list[float] = []
        self._stop = threading.Event()

    def __enter__(self) -> GpuUtilisation:
        if self.device.type == "cuda" and self._sample() is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if hasattr(self, "_thread"):
            self._thread.join()

    def _sample(self) -> float | None:
        try:
            return float(torch.cuda.utilization(self.device))
        except Exception:  # torch raises ModuleNotFoundError or a driver error without pynvml
            return None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            value = self._sample()
            if value is not None:
                self.samples.append(value)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.samples) if self.samples else None


# ---------------------------------------------------------------------------------------------- set-up


def compose_preset(preset: str) -> DictConfig:
    """``{paths, model}`` with the ``model`` preset composed by Hydra, as the commands compose it: a preset may
    inherit another through its ``defaults`` list (``tiny_qwen2`` is ``tiny`` with another LLM)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    # Inside a command (tools/bench.py) Hydra is already initialised on conf/; a direct call (tests) starts it.
    ready = GlobalHydra.instance().is_initialized()
    with contextlib.nullcontext() if ready else initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("inspect_model", overrides=[f"model={preset}"])
    return OmegaConf.create({"paths": cfg.paths, "model": cfg.model})


def preset_config(preset: str, paths: Mapping[str, object] | None = None):
    """The ``model`` preset resolved against ``conf/paths`` and the ``paths`` named on the command line.

    The tiny preset's pre-trained encoders are replaced by seeded random ones unless
    ``tiny_encoders=DIR`` is given: their speed is the same and nothing has to be trained first.
    """

    file = CONF / "model" / f"{preset}.yaml"
    if not file.is_file():
        known = ", ".join(sorted(p.stem for p in (CONF / "model").glob("*.yaml")))
        raise UserError(f"unknown preset {preset!r}: use one of {known}")
    given = {k: str(v) for k, v in (paths or {}).items()}
    cfg = compose_preset(preset)
    cfg.paths = OmegaConf.merge(cfg.paths, given)
    model = OmegaConf.to_container(cfg.model, resolve=True)
    if model["encoder_size"] == "tiny" and "tiny_encoders" not in given:
        model["encoder_paths"] = {}
    return ModelConfig.from_dict(model)


@dataclass
class BenchSet:
    """A synthetic-style set (splits, subtitles, captions, videos) and the store holding its features."""

    root: Path
    features: Path

    def names(self, split: str) -> list[str]:

        return [s.name for s in read_merr_txt(self.root / "splits" / f"{split}.txt")]

    def records(self, split: str) -> list:

        r = self.root
        return load_records(r / "splits" / f"{split}.txt", r / "subtitles.csv", r / "MERR_coarse_grained.json",
                            r / "MERR_fine_grained.json")

    def subtitles(self) -> dict[str, str]:

        return read_subtitles(self.root / "subtitles.csv")

    def videos(self, names: Sequence[str]) -> list[Path]:
        by_stem = {p.stem: p for p in (self.root / "videos").iterdir()}
        return [by_stem[n] for n in names]

    def store(self):

        return FeatureStore(self.features)


def prepare_set(data: Path | None, work_dir: Path, clips_per_label: int, workers: int, cfg) -> BenchSet:
    """The set to measure on, its features extracted where absent (never into a given set's own folder)."""

    root = Path(data) if data else generate(work_dir / "synthetic", clips_per_label, seed=0, workers=workers)
    if not (root / "splits" / "test.txt").is_file():
        raise UserError(f"{root} is not a synthetic-style set (no splits/test.txt): make one with "
                        "tools/make_synthetic.py or leave out data_dir=")
    bset = BenchSet(root, root / "features")
    if not bset.names("test") or not bset.names("train"):
        raise UserError(f"{root} has an empty train or test split: use clips_per_label=3 or more")
    names = bset.names("train") + bset.names("test")
    if data and not all(bset.store().has(n) for n in names):
        bset = BenchSet(root, work_dir / f"features_{root.name}")
    missing = [n for n in names if not bset.store().has(n)]
    if missing:

        extract_folder(root / "videos", bset.features, cfg, names=missing, progress=False, num_workers=workers)
    return bset


def bench_checkpoint(cfg, bset: BenchSet, work_dir: Path, checkpoint: Path | None) -> Path:
    """``checkpoint``, else a random-weight model of the preset saved once under ``work_dir``."""
    if checkpoint is not None:
        return checkpoint
    out = work_dir / f"model_{cfg.preset}"
    if (out / "config.yaml").is_file():
        return out

    texts = [t for r in bset.records("train") for t in (r.subtitle, r.caption, r.reason)]
    tokenizer = build_tokenizer(cfg, texts)
    torch.manual_seed(0)
    return save_checkpoint(build_model(cfg, tokenizer), cfg, tokenizer, out, meta={"note": "random weights, for benchmarks"})


def base_result(mode: str, args: argparse.Namespace, device: torch.device, dtype: str, batch: int) -> dict:
    return {"mode": mode, "machine": machine_name(device), "device": str(device), "dtype": dtype,
            "preset": args.preset, "batch": batch, "threads": torch.get_num_threads()}


# ---------------------------------------------------------------------------------------------- train


@dataclass(frozen=True)
class Variant:
    """One training configuration: ``fp32`` or ``bf16`` autocast, plus ``+ckpt`` and/or ``+compile``."""

    name: str
    dtype: str
    grad_ckpt: bool
    compile: bool

    @classmethod
    def parse(cls, text: str) -> Variant:
        parts = text.split("+")
        extra = set(parts[1:])
        if parts[0] not in ("fp32", "bf16") or extra - {"ckpt", "compile"}:
            raise UserError(f"variants: {text!r}: write fp32 or bf16, optionally +ckpt and/or +compile "
                            "(e.g. variants=[fp32,bf16+ckpt+compile])")
        return cls(text, parts[0], "ckpt" in extra, "compile" in extra)


def random_real_model(cfg, tokenizer, device: torch.device):
    """The real-size model with random weights, as training builds it (``build_model``: the frozen base in the
    preset's dtype, fp32 trainables), straight on the device.

    MFU needs the real shapes, not trained weights. The LLM keeps its real vocabulary (the tiny tokenizer that
    writes the prompts uses ids inside it), so N is the real model's.
    """
    vocab = cfg.llm_arch.get("vocab_size", LLAMA2_7B["vocab_size"])
    return build_model(cfg, tokenizer, device=device, vocab_size=vocab)


class RandomFeatures:
    """Stands in for a FeatureStore at the real encoders' sizes: step time does not depend on the values."""

    def __init__(self, dims: dict[str, int], eva_patches: int):
        self.shapes = {m: ((1 + eva_patches, d) if m == "eva" else (d,)) for m, d in dims.items()}

    def load(self, name: str) -> dict[str, torch.Tensor]:
        return {m: torch.randn(shape) for m, shape in self.shapes.items()}


def train_batches(model, tokenizer, bset: BenchSet, store, args: argparse.Namespace) -> list[dict]:
    """Collated batches of the train split, made before timing: the steps, not the loader, are measured."""
    tasks = dict(OmegaConf.load(CONF / "stage" / f"{args.stage}.yaml").tasks)
    dataset = MERRDataset(bset.records("train"), store, tokenizer, model.num_video_tokens, model.num_feature_tokens,
                          tasks=tasks, max_length=args.max_length, train=True, seed=0)
    loader = DataLoader(dataset, batch_size=args.batch or 8, sampler=EpochSampler(len(dataset), 0),
                        collate_fn=partial(collate, pad_id=tokenizer.pad_token_id))
    batches: list[dict] = []
    while len(batches) < args.steps + args.warmup:
        batches.extend(loader)
    return batches[: args.steps + args.warmup]


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: ({m: t.to(device) for m, t in v.items()} if k == "features" else
                v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def train_step_fn(model, variant: Variant, device: torch.device) -> Callable[[dict, int], None]:
    """One optimisation step as training runs it: the Lightning module's ``training_step`` (under bf16 autocast
    for ``bf16``, as ``trainer.precision=bf16-mixed`` runs it), backward, and the module's own optimizer."""
    if variant.grad_ckpt:
        model.enable_activation_checkpointing()
    module = EmotionLLaMAModule(model, optimizer=partial(torch.optim.AdamW, lr=1e-5, weight_decay=0.05),
                                scheduler=None, label_candidates=[[0], [1]])
    module.train()
    if variant.compile:
        module.model = torch.compile(model)
    optimizer = module.configure_optimizers()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=variant.dtype == "bf16")

    def step(batch: dict, index: int) -> None:
        with autocast:
            loss = module.training_step(batch, index)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def train_model(cfg, bset: BenchSet, args: argparse.Namespace, device: torch.device):
    """(model, tokenizer, feature store) for one variant: a fresh model each, so none inherits optimizer state."""
    if cfg.encoder_size == "tiny":

        model, _, tokenizer = load_checkpoint(bench_checkpoint(cfg, bset, args.work_dir, args.checkpoint), device=device)
        return model, tokenizer, bset.store()

    tokenizer = prompt_tokenizer(cfg, bset)
    torch.manual_seed(0)
    model = random_real_model(cfg, tokenizer, device)
    shapes = encoder_shapes(cfg)
    return model, tokenizer, RandomFeatures(shapes.dims, shapes.eva_patches)


def prompt_tokenizer(cfg, bset: BenchSet):
    """The small tokenizer (of the preset's prompt format) that writes a real-size random model's prompts."""
    return build_tokenizer(replace(cfg, llm_path=None, tokenizer_path=None),
                           [t for r in bset.records("train") for t in (r.subtitle, r.caption, r.reason)])


def needs_gpu(cfg, device: torch.device, what: str) -> None:
    """A real-size model with random weights is only benchmarked on a GPU (on a CPU it would take hours)."""
    if device.type != "cuda":
        raise UserError(f"model={cfg.preset} {what} a real-size model with random weights and is only "
                        "benchmarked on a GPU: pass device=cuda on a machine with one")


def bench_train_variant(cfg, bset: BenchSet, args: argparse.Namespace, device: torch.device, variant: Variant) -> dict:
    model, tokenizer, store = train_model(cfg, bset, args, device)
    batches = [to_device(b, device) for b in train_batches(model, tokenizer, bset, store, args)]
    step = train_step_fn(model, variant, device)
    for index, batch in enumerate(batches[: args.warmup]):
        step(batch, index)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    measured = batches[args.warmup:]
    seconds = timed(lambda: [step(b, i) for i, b in enumerate(measured)], device)
    tokens = int(sum(b["attention_mask"].sum() for b in measured))
    # peft keeps an untouched copy of each fully trained module; only the trained copy does work.
    n_llm = sum(p.numel() for n, p in model.llm.named_parameters() if "original_module" not in n)
    peak = args.peak_flops or (H100_BF16_PEAK if device.type == "cuda" else None)
    result = base_result("train", args, device, variant.dtype, args.batch or 8) | {
        "variant": variant.name, "grad_ckpt": variant.grad_ckpt, "compile": variant.compile, "stage": args.stage,
        "steps": len(measured), "seconds": seconds, "steps_per_s": len(measured) / seconds,
        "tokens": tokens, "tokens_per_s": tokens / seconds, "throughput": tokens / seconds,
        "throughput_unit": "tokens/s (non-pad)", "llm_params": n_llm, "peak_flops": peak,
        # Model FLOPs only (4NT for LoRA): recomputation under activation checkpointing is not useful work.
        "mfu": 4 * n_llm * tokens / seconds / peak if peak else None,
        "peak_mem_mb": peak_memory_mb(device),
    }
    return result


def bench_train(args: argparse.Namespace) -> list[dict]:
    device = resolve_device(args.device)
    variants = [Variant.parse(v) for v in args.variants.split(",")] if args.variants else [
        Variant.parse("bf16" if device.type == "cuda" else "fp32")]
    cfg = preset_config(args.preset, args.paths)
    if cfg.encoder_size != "tiny":
        needs_gpu(cfg, device, "trains")
    bset = prepare_set(args.data, args.work_dir, args.clips_per_label, args.workers, preset_config("tiny"))
    results = []
    for variant in variants:
        results.append(bench_train_variant(cfg, bset, args, device, variant))
        gc.collect()  # the previous variant's model and optimizer must leave the GPU before the next is built
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return results


# ---------------------------------------------------------------------------------------------- eval


@contextlib.contextmanager
def count_calls(module: torch.nn.Module) -> Iterator[list[int]]:
    """Counts forward calls: at batch 1 each greedy step is one call, so this is the tokens generated."""
    count = [0]
    handle = module.register_forward_hook(lambda *_: count.__setitem__(0, count[0] + 1))
    try:
        yield count
    finally:
        handle.remove()


def bench_eval(args: argparse.Namespace) -> list[dict]:
    """Our score protocol (batched label scoring) against the original (batch 1, greedy, last word); with
    ``original=false`` ours alone. A real-size preset without ``checkpoint`` or ``paths.llm`` is scored with
    random weights (as ``train`` builds them) on random features of the real encoders' shapes, held in memory."""

    device = resolve_device(args.device)
    cfg = preset_config(args.preset, args.paths)
    random_real = cfg.encoder_size != "tiny" and args.checkpoint is None and cfg.llm_path is None
    batch = args.batch or 16
    if random_real:
        needs_gpu(cfg, device, "scores with")
        bset = prepare_set(args.data, args.work_dir, args.clips_per_label, args.workers, preset_config("tiny"))
        tokenizer = prompt_tokenizer(cfg, bset)
        torch.manual_seed(0)
        core = InferenceCore(random_real_model(cfg, tokenizer, device), tokenizer, cfg, device)
        shapes = encoder_shapes(cfg)
        store = RandomFeatures(shapes.dims, shapes.eva_patches)
        test, given = bset.names("test"), bset.subtitles()
        # Two full batches at least, each clip with a test clip's subtitle: the batch size, not the set, is timed.
        names = [f"{test[i % len(test)]}_{i}" for i in range(max(len(test), 2 * batch))]
        subtitles = {n: given.get(test[i % len(test)], "") for i, n in enumerate(names)}
        features: Mapping[str, dict] = {n: store.load(n) for n in names}
    else:
        bset = prepare_set(args.data, args.work_dir, args.clips_per_label, args.workers, cfg)
        checkpoint = bench_checkpoint(cfg, bset, args.work_dir, args.checkpoint)
        core = InferenceCore.load(checkpoint, args.paths, device)
        names = bset.names("test")
        features, subtitles = LazyFeatures(bset.store(), names), bset.subtitles()
    subset = names[: args.clips]
    ours = Evaluator(core, MERR_LABELS, batch_size=batch)
    ours.run(names[:batch], subtitles, features, "score")  # warm-up: first calls pay one-off costs
    ours_s, repeats = timed_repeats(lambda: ours.run(names, subtitles, features, "score"), device, args.min_time)
    ours_rate = len(names) * repeats / ours_s
    dtype = "bf16" if device.type == "cuda" else "fp32"  # the inference core's autocast policy
    result = base_result("eval", args, device, dtype, batch) | {
        # A random model never emits EOS, so the original protocol runs to max_new_tokens on it: the fair
        # baseline is a trained model that answers and stops (checkpoint=the demo's model).
        "weights": "trained" if args.checkpoint else "random",
        "features": "random, in memory" if random_real else "cached",
        "clips": len(names), "labels": len(MERR_LABELS), "repeats": repeats,
        "ours_protocol": "score (batched, shared-prefix label scoring)",
        "ours_clips_per_s": ours_rate, "throughput": ours_rate, "throughput_unit": "clips/s",
    }
    if not args.original:
        return [result | {"original_protocol": None, "peak_mem_mb": peak_memory_mb(device)}]
    original = Evaluator(core, MERR_LABELS, batch_size=1, max_new_tokens=args.max_new_tokens)
    Evaluator(core, MERR_LABELS, batch_size=1, max_new_tokens=2).run(subset[:1], subtitles, features, "generate")
    answers: list = []
    with count_calls(core.model.base_llm) as steps:
        original_s = timed(lambda: answers.extend(original.run(subset, subtitles, features, "generate")), device)
    original_rate = len(subset) / original_s
    return [result | {
        "original_protocol": "generate (batch 1, greedy, last word, else neutral)", "original_batch": 1,
        "original_clips": len(subset), "original_max_new_tokens": args.max_new_tokens,
        "original_mean_new_tokens": steps[0] / len(subset),
        "original_labels": [a.original for a in answers],
        "original_clips_per_s": original_rate, "speedup": ours_rate / original_rate,
        "peak_mem_mb": peak_memory_mb(device),
    }]


# ---------------------------------------------------------------------------------------------- extract


def unset_real_encoders(cfg) -> list[str]:
    """The encoders of a real-size preset whose weight paths are unset (none for the tiny preset, whose
    encoders are seeded random without them)."""
    return [] if cfg.encoder_size == "tiny" else [n for n in ENCODER_NAMES if not cfg.encoder_paths.get(n)]


def bench_encoders(cfg, device: torch.device) -> dict:
    """The preset's encoders as extraction builds them; a real-size preset's encoders whose paths are unset are
    built at their real size with seeded random weights, on ``device`` (speed does not depend on the weights).
    Only here: the commands refuse a real-size preset without its weights."""
    unset = unset_real_encoders(cfg)
    given = build_encoders(cfg, [n for n in ENCODER_NAMES if n not in unset], random_tiny_ok=True)
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(0)
        made = {n: ENCODERS[n].from_config(encoder_config(cfg, n)) for n in unset}
    return {n: given[n] if n in given else made[n] for n in ENCODER_NAMES}


def bench_extract(args: argparse.Namespace) -> list[dict]:
    """Decoding alone (DataLoader workers) beside the full extraction (decode, encode, write) of the same videos."""
    device = resolve_device(args.device)
    cfg = preset_config(args.preset, args.paths)
    random_names = unset_real_encoders(cfg)
    if random_names:
        needs_gpu(cfg, device, "extracts with")
    bset = prepare_set(args.data, args.work_dir, args.clips_per_label, args.workers, preset_config("tiny"))
    names = bset.names("test")
    names = names[: args.clips] if args.clips else names
    paths, batch = bset.videos(names), args.batch or 4
    decode_clip(paths[0])  # warm-up: the first decode loads the codec libraries
    loader = DataLoader(VideoFolder(paths), batch_size=batch, num_workers=args.workers, collate_fn=list)
    decode_s = timed(lambda: [None for _ in loader], device)
    encoders = bench_encoders(cfg, device)
    extract = partial(extract_folder, bset.root / "videos", cfg=cfg, batch_size=batch, num_workers=args.workers,
                      progress=False, encoders=encoders, accelerator="gpu" if device.type == "cuda" else "cpu")
    with tempfile.TemporaryDirectory() as warm:
        extract(output_dir=warm, names=names[:1])  # warm-up: first encoder calls pay one-off costs
    with tempfile.TemporaryDirectory() as out, GpuUtilisation(device) as util:
        counts = []
        extract_s = timed(lambda: counts.append(extract(output_dir=out, names=names)), device)
    return [base_result("extract", args, device, "bf16" if device.type == "cuda" else "fp32", batch) | {
        "clips": len(paths), "workers": args.workers, "decode_clips_per_s": len(paths) / decode_s,
        "extract_clips_per_s": len(paths) / extract_s, "throughput": len(paths) / extract_s,
        "throughput_unit": "clips/s (full extraction, Trainer set-up included)", "extracted_ok": counts[0].ok,
        "encoder_size": cfg.encoder_size, "random_encoders": random_names,
        "gpu_util": util.mean, "peak_mem_mb": peak_memory_mb(device),
    }]


# ---------------------------------------------------------------------------------------------- infer


def cold_start(video: Path, checkpoint: Path, device: torch.device, paths: Mapping[str, str]) -> float:
    """Seconds from launching ``tools/infer.py`` to its first answer on stdout."""
    overrides = [f"paths.{k}={v}" for k, v in paths.items()]
    cmd = [sys.executable, str(INFER_TOOL), str(video.resolve()), f"checkpoint={checkpoint}", "json=true",
           f"device={device}", *overrides]
    start = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # the same threads as the warm side
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env) as proc:
        first = proc.stdout.readline()
        seconds = time.perf_counter() - start
        _, err = proc.communicate()
    if proc.returncode != 0 or not first.startswith("{"):
        tail = (err.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"tools/infer.py failed on {video} ({tail}): run it by hand to see why")
    return seconds


def bench_infer(args: argparse.Namespace) -> list[dict]:
    """Cold start (a new process to the first answer) beside warm per-video latency (Predictor loaded once)."""

    device = resolve_device(args.device)
    cfg = preset_config(args.preset, args.paths)
    bset = prepare_set(args.data, args.work_dir, args.clips_per_label, args.workers, cfg)
    checkpoint = bench_checkpoint(cfg, bset, args.work_dir, args.checkpoint).resolve()
    names = bset.names("test")
    videos = bset.videos(names[: (args.clips or len(names) - 1) + 1])
    cold_s = cold_start(videos[0], checkpoint, device, args.paths)
    cold_mem = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    predictor = Predictor(checkpoint, args.paths, device=device, batch_size=1)
    predictor.predict([videos[0]])  # the first answer of a loaded model is the cold one, measured above
    warm = [timed(partial(predictor.predict, [v]), device) * 1000 for v in videos[1:] or videos]
    return [base_result("infer", args, device, "bf16" if device.type == "cuda" else "fp32", 1) | {
        "cold_s": cold_s, "warm_videos": len(warm), "warm_mean_ms": statistics.fmean(warm),
        "warm_median_ms": statistics.median(warm), "throughput": 1000 / statistics.fmean(warm),
        "throughput_unit": "clips/s (warm, one video at a time)", "cold_peak_mem_mb": cold_mem,
        "peak_mem_mb": peak_memory_mb(device),
    }]


# ---------------------------------------------------------------------------------------------- report


def figures(result: dict) -> str:
    keys = ROW_FIGURES[result["mode"]]
    return ", ".join(f"{k}={_fmt(result[k])}" for k in keys if k in result)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def table_row(result: dict, command: str, date: str, note: str | None) -> str:
    machine = result["machine"] + (f" ({note})" if note else "")
    cells = [date, machine, f"{result['device']} {result['dtype']}", result["mode"], f"`{command}`", figures(result)]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |\n"


def append_rows(path: Path, rows: Sequence[str]) -> None:
    """Insert rows at the end of the results table (made, with its header, when the file has none)."""
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    if TABLE_END not in text:
        text = text.rstrip("\n") + "\n\n## Results\n\n" + TABLE_HEAD + TABLE_END + "\n"
    head, _, tail = text.partition(TABLE_END)
    path.write_text(head + "".join(rows) + TABLE_END + tail)


def bench_args(cfg: DictConfig, call: Call) -> argparse.Namespace:
    """The runners' ``args`` from ``conf/bench.yaml`` composed with the command line (MODE key=value ...)."""
    if len(call.positional) != 1 or call.positional[0] not in MODES:
        given = " ".join(call.positional) or "none"
        raise UsageError(f"give one mode, {' | '.join(MODES)} (got {given}): python tools/bench.py MODE [key=value ...]")
    if call.named("model."):
        raise UsageError("the benchmarks measure a preset as it is: choose one with model=NAME, without model.* overrides")
    if cfg.stage not in ("coarse", "fine"):
        raise UsageError(f"stage={cfg.stage}: use stage=coarse or stage=fine")
    variants = cfg.variants
    if variants is not None and not isinstance(variants, str):
        variants = ",".join(map(str, variants))
    append = cfg.append
    if isinstance(append, str) and append.lower() in ("true", "false"):
        append = append.lower() == "true"
    return argparse.Namespace(
        mode=call.positional[0], preset=cfg.model.preset, device=cfg.device,
        checkpoint=Path(cfg.checkpoint) if cfg.checkpoint else None,
        # Only the paths named on the command line replace a checkpoint's own.
        paths={k: str(v) for k, v in call.named_paths(cfg).items()},
        data=Path(cfg.data_dir) if cfg.data_dir else None, work_dir=Path(cfg.work_dir),
        clips_per_label=cfg.clips_per_label, batch=cfg.batch, threads=cfg.threads, workers=cfg.workers,
        clips=cfg.clips, max_new_tokens=cfg.max_new_tokens, min_time=cfg.min_time, original=cfg.original,
        variants=variants,
        steps=cfg.steps, warmup=cfg.warmup, stage=cfg.stage, max_length=cfg.max_length, peak_flops=cfg.peak_flops,
        append=Path("BENCHMARKS.md") if append is True else Path(append) if append else None,
        note=cfg.note, date=str(cfg.date) if cfg.date else datetime.date.today().isoformat(),
    )


EVAL_ORIGINAL_CLIPS = 4  # at 500 tokens a clip the original protocol takes seconds per clip even at tiny size

RUNNERS: dict[str, Callable[[argparse.Namespace], list[dict]]] = {
    "train": bench_train, "eval": bench_eval, "extract": bench_extract, "infer": bench_infer,
}


def run_bench(cfg: DictConfig, call: Call) -> None:
    args = bench_args(cfg, call)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.mode == "eval" and args.clips is None:
        args.clips = EVAL_ORIGINAL_CLIPS
    results = RUNNERS[args.mode](args)
    for result in results:
        print(json.dumps(result), flush=True)
    if args.append:
        command = "python tools/bench.py " + shlex.join(call.argv)
        append_rows(args.append, [table_row(r, command, args.date, args.note) for r in results])


def main(argv: Sequence[str] | None = None) -> int:
    """``python tools/bench.py MODE [key=value ...]``; see ``--help`` (conf/bench.yaml)."""
    # stage is also the name of a config group (conf/stage): its value is set as typed, past Hydra's group override.
    return run("bench", run_bench, argv, positional="MODE",
               literal=("checkpoint", "data_dir", "work_dir", "append", "note", "stage"))


if __name__ == "__main__":
    sys.exit(main())
