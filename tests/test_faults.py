"""Bad input and faults, against the real commands: every one is refused with one ``error:`` line on stderr
and a non-zero exit (Ctrl-C: ``interrupted`` and 130), never a traceback, never a silent wrong result, and
nothing the command had written before is lost or left half-written.

The commands run in-process through their ``main(argv)`` (the console entry points' own function) where that
is as real as a new process; the Ctrl-C and worker checks start real processes and are in the slow tier.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from media_fixtures import tone, write_synthetic_videos, write_wav
from omegaconf import OmegaConf

from conftest import save_tiny_checkpoint, train_overrides
from emotion_llama import cli
from emotion_llama.commands import evaluate as eval_cmd
from emotion_llama.commands import extract as extract_cmd
from emotion_llama.commands import import_official as import_cmd
from emotion_llama.commands import infer as infer_cmd
from emotion_llama.commands import reason as reason_cmd
from emotion_llama.commands import train as train_cmd
from emotion_llama.datasets.common import Sample, write_subtitles
from emotion_llama.datasets.features import FEATURE_DIRS
from emotion_llama.datasets.merr import write_merr_txt
from emotion_llama.encoders.extract import LOCK_FILE
from emotion_llama.errors import UserError
from emotion_llama.fileio import (
    atomic_dir,
    atomic_files,
    atomic_save_npy,
    atomic_write_text,
    signals_deferred,
)
from emotion_llama.labels import DFEW_LABELS, MERR_LABELS

REPO = Path(__file__).resolve().parents[1]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
CLIPS = [Sample(f"clip_{i:03d}", MERR_LABELS[i % 9], n_frames=20) for i in range(6)]
# The tiny preset with seeded random encoders (its pre-trained ones exist only after `make demo`).
RANDOM_ENCODERS = [f"model.encoder_paths.{m}=null" for m in ("eva", "mae", "videomae", "hubert")]


pytestmark = pytest.mark.usefixtures("restore_logging")


# ---------------------------------------------------------------------------------------------- helpers


def refused(capsys, main, argv: list[str], *expected: str, code: int = 2) -> str:
    """Run a command that must refuse: its exit code, exactly one ``error:`` line on stderr, no traceback."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) and its bytes."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_features(root: Path, names: list[str], tiny_shapes, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for name in names:
        for modality, folder in FEATURE_DIRS.items():
            dim = tiny_shapes.dims[modality]
            shape = (1 + tiny_shapes.eva_patches, dim) if modality == "eva" else (dim,)
            (root / folder).mkdir(parents=True, exist_ok=True)
            dtype = np.float16 if modality == "eva" else np.float32
            np.save(root / folder / f"{name}.npy", rng.standard_normal(shape).astype(dtype))
    return root


@pytest.fixture(scope="module")
def case(tmp_path_factory, tiny_shapes) -> Path:
    """A tiny checkpoint, cached features of six clips, their MERR test list and subtitles."""
    root = tmp_path_factory.mktemp("faults")
    save_tiny_checkpoint(root / "ckpt")
    write_features(root / "features", [s.name for s in CLIPS], tiny_shapes)
    write_merr_txt(root / "test.txt", CLIPS)
    write_subtitles(root / "subtitles.csv", {s.name: "I am here" for s in CLIPS})
    return root


def eval_argv(root: Path, run_dir: Path, *extra: str, ckpt: Path | None = None) -> list[str]:
    return ["data=merr", f"data.root={root}", f"data.test={root}/test.txt", f"data.features_dir={root}/features",
            f"data.subtitles={root}/subtitles.csv", "data.videos_dir=null", f"checkpoint={ckpt or root / 'ckpt'}",
            f"run_dir={run_dir}", "device=cpu", "eval.num_workers=0", *extra]


@pytest.fixture
def no_model(monkeypatch):
    """Any model build fails the test: a refusal must come before the model loads."""
    def forbidden(*args, **kwargs):
        raise AssertionError("a model was built before the bad input was refused")

    import emotion_llama.model.checkpoint as checkpoint
    import emotion_llama.training.train as training

    monkeypatch.setattr(checkpoint, "build_model", forbidden)
    monkeypatch.setattr(training, "build_model", forbidden)
    monkeypatch.setattr(training, "load_checkpoint", forbidden)


def copy_checkpoint(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# ---------------------------------------------------------------------------------------------- bad settings

EVAL_SETTINGS = [
    (["eval.batch_size=0"], ["eval.batch_size=0", "at least 1"]),
    (["eval.drop=[smell]"], ["eval.drop=[smell]", "unknown smell", "visual, audio, text"]),
    (["eval.drop=[audio,5]"], ["unknown 5"]),
    (["protocol=guess"], ["protocol=guess", "score, generate"]),
    (["prompt_layout=chat"], ["prompt_layout=chat", "train, release_eval"]),
    (["eval.max_new_tokens=-3"], ["eval.max_new_tokens=-3"]),
    (["eval.extract_missing=maybe"], ["eval.extract_missing=maybe", "true"]),
    (["eval.noise={snr: 5}"], ["eval.noise", "unknown snr", "snr_db"]),
    (["eval.noise=loud"], ["eval.noise=loud", "mapping"]),
    (["eval.noise={downscale: 2}"], ["eval.noise.downscale=2", "at most 1"]),
    (["eval.noise={snr_db: 5}"], ["eval.noise", "data.videos_dir=null", "data.videos_dir=DIR"]),
    (["device=tpu"], ["device=tpu"]),
    (["checkpoint=/nonexistent/model"], ["checkpoint=/nonexistent/model not found"]),
    (["face_detector=foo"], ["face_detector=foo", "mtcnn, haar"]),
]


@pytest.mark.parametrize("extra,expected", EVAL_SETTINGS, ids=[e[0][0] for e in EVAL_SETTINGS])
def test_bad_eval_settings_are_one_line_before_the_model_loads(extra, expected, case, tmp_path, capsys, no_model):
    refused(capsys, eval_cmd.main, eval_argv(case, tmp_path / "run", *extra), *expected)
    assert not (tmp_path / "run").exists()


def test_output_paths_that_are_files(case, tmp_path, capsys, no_model):
    a_file = tmp_path / "taken"
    a_file.write_text("keep me")
    refused(capsys, eval_cmd.main, eval_argv(case, a_file), f"run_dir={a_file} is a file")
    refused(capsys, eval_cmd.main, eval_argv(case, a_file / "run"), f"has a file where a folder should be ({a_file})")
    refused(capsys, extract_cmd.main, [f"input_dir={case}", f"output_dir={a_file}"], f"output_dir={a_file} is a file")
    refused(capsys, import_cmd.main, [f"ckpt={a_file}", f"out={a_file}"], f"out={a_file} is a file")
    refused(capsys, infer_cmd.main, [str(a_file), f"card={a_file}/card.png"], "card=")
    refused(capsys, train_cmd.main, [f"run_dir={a_file}", "data.generate=null"], f"run_dir={a_file} is a file")
    assert a_file.read_text() == "keep me"


@NO_CUDA
def test_a_gpu_that_is_not_there(case, tmp_path, capsys, no_model):
    refused(capsys, eval_cmd.main, eval_argv(case, tmp_path / "run", "device=cuda"), "device=cuda needs a CUDA GPU")
    refused(capsys, train_cmd.main, ["trainer=gpu", "data.generate=null"], "trainer.accelerator=gpu needs a CUDA GPU")
    refused(capsys, reason_cmd.main, [f"checkpoint={case / 'ckpt'}", "judge.device=cuda:1"], "judge.device")


TRAIN_SETTINGS = [
    (["optimizer.lr=fast"], ["optimizer.lr=fast", "use a number above 0"]),
    (["optimizer.lr=-0.1"], ["optimizer.lr=-0.1"]),
    (["data.batch_size=0"], ["data.batch_size=0", "at least 1"]),
    (["seed=-1"], ["seed=-1"]),
    (["resume=maybe"], ["resume=maybe", "resume=true or resume=false"]),
    (["+stage.tasks.dance=1"], ["stage.tasks", "unknown dance", "emotion, describe, reason"]),
    (["stage.tasks={emotion: 0, describe: 0}"], ["stage.tasks", "above 0"]),
    (["trainer.max_epochs=two"], ["trainer.max_epochs=two", "whole number"]),
    (["trainer.precision=8-bit"], ["trainer.precision=8-bit"]),
    (["model.lora.r=0"], ["model.lora.r=0"]),
    (["model.dtype=float8"], ["model.dtype=float8", "float32, bfloat16, float16"]),
    (["model.projector=conv"], ["model.projector=conv", "linear, mlp2x_gelu"]),
    (["optimizer.betas=[0.9]"], ["optimizer.betas=[0.9]"]),
]


@pytest.mark.parametrize("extra,expected", TRAIN_SETTINGS, ids=[e[0][0] for e in TRAIN_SETTINGS])
def test_bad_train_settings_are_one_line_before_the_model_loads(extra, expected, tmp_path, capsys, no_model):
    argv = [f"paths.output_dir={tmp_path}", "data.generate=null", "experiment=tiny_coarse", *extra]
    refused(capsys, train_cmd.main, argv, *expected)
    assert not (tmp_path / "runs").exists()


OTHER_SETTINGS = [
    (extract_cmd, ["input_dir={r}", "output_dir={t}/f", "batch_size=0"], ["batch_size=0"]),
    (extract_cmd, ["input_dir={r}", "output_dir={t}/f", "num_workers=-1"], ["num_workers=-1"]),
    (extract_cmd, ["input_dir={t}/nowhere", "output_dir={t}/f"], ["input_dir=", "not found"]),
    (extract_cmd, ["input_dir={r}/test.txt", "output_dir={t}/f"], ["input_dir=", "is a file"]),
    (extract_cmd, ["input_dir={r}", "output_dir={t}/f", "devices=0"], ["devices=0"]),
    (extract_cmd, ["input_dir={r}", "output_dir={t}/f", "face_detector=dlib"], ["face_detector=dlib", "mtcnn, haar"]),
    (infer_cmd, ["{r}", "face_detector=foo"], ["face_detector=foo", "mtcnn, haar"]),
    (infer_cmd, ["{r}", "image_folder=maybe"], ["image_folder=maybe", "auto, clip, images"]),
    (infer_cmd, ["{r}", "batch_size=0"], ["batch_size=0"]),
    (infer_cmd, ["{r}", "task=sing"], ["task=sing", "emotion, reason"]),
    (infer_cmd, ["{r}", "subtitles={t}/none.csv"], ["subtitles=", "not found"]),
    (reason_cmd, ["checkpoint={r}/ckpt", "reasoning.batch_size=0"], ["reasoning.batch_size=0"]),
    (reason_cmd, ["checkpoint={r}/ckpt", "judge.model={t}/no_judge"], ["judge.model=", "not found"]),
    (reason_cmd, ["checkpoint={r}/ckpt", "reasoning.drop=smell"], ["reasoning.drop=smell", "unknown smell"]),
    (import_cmd, ["ckpt={t}/none.pth", "out={t}/o"], ["ckpt=", "not found"]),
]


@pytest.mark.parametrize("command,argv,expected", OTHER_SETTINGS,
                         ids=[f"{c.__name__.rsplit('.', 1)[-1]}-{a[-1].split('=')[0]}" for c, a, _ in OTHER_SETTINGS])
def test_bad_settings_of_the_other_commands(command, argv, expected, case, tmp_path, capsys, no_model):
    refused(capsys, command.main, [a.format(r=case, t=tmp_path) for a in argv], *expected)
    assert not (tmp_path / "f").exists() and not (tmp_path / "o").exists()


def test_a_bare_word_is_a_one_item_list(case, tmp_path):
    """eval.drop=audio is [audio] (read letter by letter it was five unknown groups)."""
    from emotion_llama.settings import validate

    with cli._hydra():
        cfg = validate("eval", cli.compose("eval", eval_argv(case, tmp_path / "a", "eval.drop=audio")))
        assert list(cfg.eval.drop) == ["audio"]
        assert list(validate("eval", cli.compose("eval", eval_argv(case, tmp_path, "eval.drop=null"))).eval.drop) == []
    assert eval_cmd.main(eval_argv(case, tmp_path / "a", "eval.drop=audio")) == 0
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["drop"] == ["audio"]


# ---------------------------------------------------------------------------------------------- checkpoints

# What is removed from a checkpoint folder, and what the refusal says about it.
MISSING_PARTS = {
    "base_llm": "base_llm not found",
    "base_llm/config.json": "base_llm/config.json not found",
    "base_llm/model.safetensors": "base_llm holds no *.safetensors weights",
    "tokenizer": "tokenizer not found",
    "tokenizer/tokenizer.json": "tokenizer holds none of tokenizer.json",  # and tokenizer_config.json
    "projectors.safetensors": "projectors.safetensors not found",
    "config.yaml": "(no config.yaml)",
    "adapter/adapter_model.safetensors": "adapter/adapter_model.safetensors not found",
    "adapter/adapter_config.json": "adapter/adapter_config.json not found",
}


@pytest.mark.parametrize("part", list(MISSING_PARTS))
def test_a_checkpoint_missing_a_part_is_refused_naming_it(part, case, tmp_path, capsys, no_model):
    """Not loaded with a fresh random LLM or a rebuilt tokenizer: refused, naming what is missing."""
    import shutil

    ckpt = copy_checkpoint(case / "ckpt", tmp_path / "ckpt")
    target = ckpt / part
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    if part == "tokenizer/tokenizer.json":
        (ckpt / "tokenizer" / "tokenizer_config.json").unlink()
    refused(capsys, eval_cmd.main, eval_argv(case, tmp_path / "run", ckpt=ckpt), str(ckpt), MISSING_PARTS[part])
    assert not (tmp_path / "run").exists()


CORRUPT = {
    "projectors.safetensors": lambda p: truncate(p),
    "base_llm/model.safetensors": lambda p: truncate(p, 0.9),
    "adapter/adapter_model.safetensors": lambda p: p.write_bytes(b"\x00" * 64),
    "tokenizer/tokenizer.json": lambda p: p.write_text('{"version": "1.0", "trunc'),
    "base_llm/config.json": lambda p: p.write_text("{"),
    "config.yaml": lambda p: p.write_text("preset: tiny\nllm_arch: {hidden_size: [\n"),
}


@pytest.mark.parametrize("part", list(CORRUPT))
def test_a_corrupt_checkpoint_file_is_refused_naming_it(part, case, tmp_path, capsys, no_model):
    ckpt = copy_checkpoint(case / "ckpt", tmp_path / "ckpt")
    CORRUPT[part](ckpt / part)
    refused(capsys, eval_cmd.main, eval_argv(case, tmp_path / "run", ckpt=ckpt), str(ckpt / part))


def test_checkpoint_config_with_unknown_keys(case, tmp_path, capsys, no_model):
    ckpt = copy_checkpoint(case / "ckpt", tmp_path / "ckpt")
    data = OmegaConf.load(ckpt / "config.yaml")
    data.lora_rank = 8
    OmegaConf.save(data, ckpt / "config.yaml")
    refused(capsys, eval_cmd.main, eval_argv(case, tmp_path / "run", ckpt=ckpt), str(ckpt / "config.yaml"),
            "lora_rank")


def test_a_tiny_checkpoint_without_its_base_llm_is_refused(case, tmp_path, capsys):
    ckpt = copy_checkpoint(case / "ckpt", tmp_path / "no_base")
    shutil.rmtree(ckpt / "base_llm")
    refused(capsys, eval_cmd.main, eval_argv(case, tmp_path / "run2", ckpt=ckpt), "base_llm", "not found")


# ---------------------------------------------------------------------------------------------- data files


def test_a_truncated_feature_file_is_refused_naming_it(case, tmp_path, capsys, tiny_shapes):
    feats = write_features(tmp_path / "features", [s.name for s in CLIPS], tiny_shapes)
    bad = feats / FEATURE_DIRS["hubert"] / "clip_003.npy"
    truncate(bad, 0.7)
    argv = eval_argv(case, tmp_path / "run", f"data.features_dir={feats}")
    refused(capsys, eval_cmd.main, argv, str(bad), "corrupt or truncated", "tools/extract_features.py")
    assert not (tmp_path / "run").exists()


def test_corrupt_label_files(case, tmp_path, capsys, no_model):
    from emotion_llama.datasets.mer import write_mer2023_npz

    npz = tmp_path / "label-6way.npz"
    write_mer2023_npz(npz, {"test3": [Sample(s.name, "happy") for s in CLIPS]})
    truncate(npz)
    argv = ["data=mer2023", f"data.label_file={npz}", f"checkpoint={case / 'ckpt'}", f"run_dir={tmp_path / 'run'}",
            "device=cpu"]
    refused(capsys, eval_cmd.main, argv, str(npz), "re-download")
    split = tmp_path / "set_1.csv"
    split.write_bytes(b"video_name,label\n1,3\n\x002,4\n")
    argv = ["data=dfew", f"data.split_csv='{tmp_path}/set_{{fold}}.csv'", "data.folds=[1]",
            f"checkpoint={case / 'ckpt'}", f"run_dir={tmp_path / 'run'}", "device=cpu"]
    refused(capsys, eval_cmd.main, argv, f"{split}:3: holds NUL bytes")
    assert not (tmp_path / "run").exists()


def test_subtitles_in_other_encodings(case, tmp_path, capsys):
    """UTF-8 (with or without BOM) is read; GB18030 (MER's Chinese subtitles) is read with a one-line warning;
    a file that is neither is refused with one line saying how to convert it."""
    from emotion_llama.datasets.common import read_subtitles

    text = "name,sentence\nclip_000,我很高兴见到你\nclip_001,\n"
    (tmp_path / "utf8.csv").write_bytes(text.encode("utf-8-sig"))
    (tmp_path / "gb.csv").write_bytes(text.encode("gb18030"))
    assert read_subtitles(tmp_path / "utf8.csv") == {"clip_000": "我很高兴见到你", "clip_001": ""}
    cli.setup_output()
    assert read_subtitles(tmp_path / "gb.csv") == {"clip_000": "我很高兴见到你", "clip_001": ""}
    (warning,) = capsys.readouterr().err.strip().splitlines()
    assert warning == f"warning: {tmp_path / 'gb.csv'} is not UTF-8: read as GB18030"

    latin = tmp_path / "latin.csv"
    latin.write_bytes("name,sentence\nclip_000,Ça va?\nclip_001,très bien\xff\n".encode("latin-1"))
    refused(capsys, eval_cmd.main, eval_argv(case, tmp_path / "run", f"data.subtitles={latin}"),
            f"{latin}:2: not UTF-8", "iconv")
    nul = tmp_path / "nul.csv"
    nul.write_bytes(b"name,sentence\nclip_000,hi\x00there\n")
    refused(capsys, eval_cmd.main, eval_argv(case, tmp_path / "run", f"data.subtitles={nul}"), f"{nul}:")
    assert not (tmp_path / "run").exists()


def test_dfew_names_match_across_zero_padding(case, tmp_path, tiny_shapes):
    """A split file that went through a spreadsheet says 1 for clip 00001: it still finds 00001's features."""
    from emotion_llama.datasets.dfew import match_padding, name_variants

    assert name_variants("1") == ["1", "00001"] and name_variants("00001") == ["00001", "1"]
    assert name_variants("016372") == ["016372", "16372"] and name_variants("clip_1") == ["clip_1"]
    assert [s.name for s in match_padding([Sample("00007", "sad"), Sample("x", "sad")], {"7"}.__contains__)] == ["7", "x"]
    names = ["00001", "00002", "00013"]
    feats = write_features(tmp_path / "features", names, tiny_shapes)
    split = tmp_path / "dfew" / "set_1.csv"
    split.parent.mkdir()
    split.write_text("video_name,label\n1,1\n2.0,2\n013,3\n")
    argv = ["data=dfew", f"data.split_csv='{tmp_path}/dfew/set_{{fold}}.csv'", "data.folds=[1]",
            f"data.features_dir={feats}", "data.videos_dir=null", "data.subtitles=null",
            f"checkpoint={case / 'ckpt'}", f"run_dir={tmp_path / 'run'}", "device=cpu"]
    assert eval_cmd.main(argv) == 0
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert report["missing"]["count"] == 0 and report["subsets"]["fold1"]["n"] == 3
    with open(tmp_path / "run" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["name"], r["truth"]) for r in rows] == list(zip(names, DFEW_LABELS[:3], strict=True))


def test_corrupt_official_checkpoints(tmp_path, capsys):
    good = tmp_path / "good.pth"
    torch.save({"model": {"llama_proj.weight": torch.zeros(4, 4)}}, good)
    data = good.read_bytes()
    for name, content in [("truncated.pth", data[: len(data) // 2]), ("garbage.pth", b"not a checkpoint" * 8),
                          ("empty.pth", b"")]:
        path = tmp_path / name
        path.write_bytes(content)
        refused(capsys, import_cmd.main, [f"ckpt={path}", f"out={tmp_path / 'out'}", "model=tiny"], str(path),
                "corrupt or truncated")
        assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------- training


def test_a_truncated_last_ckpt_is_refused_before_training(merr_folder, tmp_path, capsys, no_model):
    run_dir = tmp_path / "runs" / "tiny_coarse"
    last = run_dir / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "epoch": 3}, last)
    truncate(last)
    before = last.read_bytes()
    refused(capsys, train_cmd.main, train_overrides(merr_folder, tmp_path, "experiment=tiny_coarse"),
            str(last), "corrupt or truncated", "resume=false")
    assert last.read_bytes() == before


def test_rerunning_a_run_folder_of_another_model_is_refused(merr_folder, tmp_path, capsys, no_model):
    from emotion_llama.training.train import check_run_dir

    argv = train_overrides(merr_folder, tmp_path, "experiment=tiny_coarse")
    with cli._hydra():
        earlier = cli.compose("train", [*argv, "model.lora.r=8", "model.projector=mlp2x_gelu"])
        fresh = cli.compose("train", [*argv, "resume=false"])
    run_dir = tmp_path / "runs" / "tiny_coarse"
    run_dir.mkdir(parents=True)
    OmegaConf.save(earlier, run_dir / "config.yaml")
    before = snapshot(run_dir)
    refused(capsys, train_cmd.main, argv, str(run_dir), "model.lora.r: 8 there, 16 now",
            "model.projector: mlp2x_gelu there, linear now", "resume=false")
    assert snapshot(run_dir) == before
    check_run_dir(fresh)  # asked to start afresh: no refusal


def test_a_run_recorded_before_a_model_key_existed_resumes(merr_folder, tmp_path, capsys, no_model):
    from emotion_llama.training.train import check_run_dir

    argv = train_overrides(merr_folder, tmp_path, "experiment=tiny_coarse")
    with cli._hydra():
        now = cli.compose("train", argv)
        other = cli.compose("train", [*argv, "model=tiny_qwen2"])
    run_dir = tmp_path / "runs" / "tiny_coarse"
    run_dir.mkdir(parents=True)
    older = OmegaConf.to_container(now)
    del older["model"]["prompt_format"], older["model"]["tiny_tokenizer"]  # keys this run's version lacked
    OmegaConf.save(OmegaConf.create(older), run_dir / "config.yaml")
    check_run_dir(now)  # the missing keys read as their defaults: the same model
    OmegaConf.save(other, run_dir / "config.yaml")
    with pytest.raises(UserError, match="holds a run of another model.*model.llm_arch.model_type: qwen2 there"):
        check_run_dir(now)


# ---------------------------------------------------------------------------------------------- features


def test_features_of_another_extraction_are_never_read_as_these(case, tmp_path, capsys, tiny_shapes):
    """A cache whose manifest says its clips were made by another extraction (e.g. with noise, as the clean
    cache was after a noisy study) is refused when it cannot be recomputed, not read as clean."""
    feats = write_features(tmp_path / "features", [s.name for s in CLIPS], tiny_shapes)
    with open(feats / "manifest.jsonl", "w") as f:
        for s in CLIPS:
            f.write(json.dumps({"name": s.name, "status": "ok", "fingerprint": "0123456789abcdef"}) + "\n")
    argv = eval_argv(case, tmp_path / "run", f"data.features_dir={feats}")
    refused(capsys, eval_cmd.main, argv, "6 clips", str(feats), "fingerprint 0123456789abcdef", "data.videos_dir")
    assert not (tmp_path / "run").exists()
    # Features made elsewhere (no manifest line: the official release's) are read as they are.
    (feats / "manifest.jsonl").unlink()
    assert eval_cmd.main(argv) == 0


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    return write_synthetic_videos(tmp_path_factory.mktemp("videos"))


def test_a_noise_study_keeps_to_its_own_folder(case, videos, tmp_path):
    """One clip: the noisy features land in their own folder, the clean cache is not touched, and the noisy
    study's figure comes from them (the full round trip is the slow test below)."""
    write_merr_txt(tmp_path / "test.txt", [Sample("good", "happy")])
    clean = tmp_path / "features"
    argv = eval_argv(case, tmp_path / "noisy", f"data.test={tmp_path}/test.txt", f"data.features_dir={clean}",
                     f"data.videos_dir={videos}", "data.subtitles=null", "eval.noise={blur_sigma: 4}")
    assert eval_cmd.main(argv) == 0
    assert not clean.exists()
    noisy = tmp_path / "features.noise_blur_sigma4_seed0"
    (line,) = (noisy / "manifest.jsonl").read_text().splitlines()
    assert json.loads(line)["name"] == "good" and json.loads(line)["status"] == "ok"
    assert all((noisy / d / "good.npy").is_file() for d in FEATURE_DIRS.values())
    assert json.loads((tmp_path / "noisy" / "metrics.json").read_text())["missing"]["count"] == 0


def test_a_noise_study_may_not_write_into_the_clean_cache(case, tmp_path, capsys, no_model):
    argv = eval_argv(case, tmp_path / "run", f"data.videos_dir={case}", f"eval.features_dir={case}/features",
                     "eval.noise={snr_db: 5}")
    refused(capsys, eval_cmd.main, argv, f"eval.features_dir={case}/features is the clean cache")


@pytest.mark.slow
def test_noisy_features_never_replace_the_clean_ones(case, videos, tmp_path, capsys):
    """A noise study writes its features to their own folder; the clean figures after it are the clean ones;
    clean features overwritten by another extraction are recomputed from the videos."""
    write_merr_txt(tmp_path / "test.txt", [Sample("good", "happy"), Sample("silent", "sad"), Sample("noface", "angry")])
    clean = tmp_path / "features"
    base = eval_argv(case, tmp_path / "run", f"data.test={tmp_path}/test.txt", f"data.features_dir={clean}",
                     f"data.videos_dir={videos}", "data.subtitles=null")

    def scores(run: str, *extra: str) -> list[list[str]]:
        assert eval_cmd.main([*base, f"run_dir={tmp_path / run}", *extra]) == 0
        with open(tmp_path / run / "predictions.csv", newline="") as f:
            return [[v for k, v in r.items() if k.startswith("score_")] for r in csv.DictReader(f)]

    first = scores("clean")
    cache = snapshot(clean)
    noisy = scores("noisy", "eval.noise={blur_sigma: 4, snr_db: 0}")
    noisy_dir = tmp_path / "features.noise_snr_db0_blur_sigma4_seed0"
    assert snapshot(clean) == cache  # the clean cache is untouched
    assert sorted(p.stem for p in (noisy_dir / FEATURE_DIRS["eva"]).glob("*.npy")) == ["good", "noface", "silent"]
    assert noisy != first
    assert scores("clean_again") == first

    # The cache as a noise study writing into it used to leave it: noisy files and their manifest lines.
    for sub in FEATURE_DIRS.values():
        for npy in (noisy_dir / sub).glob("*.npy"):
            (clean / sub / npy.name).write_bytes(npy.read_bytes())
    with open(clean / "manifest.jsonl", "a") as f:
        f.write((noisy_dir / "manifest.jsonl").read_text())
    capsys.readouterr()
    refused(capsys, eval_cmd.main, [*base, "data.videos_dir=null", f"run_dir={tmp_path / 'x'}"], "3 clips",
            "another noise")
    assert scores("recomputed") == first


def test_a_sidecar_wav_is_the_clips_audio_not_a_clip(videos, tmp_path, capsys):
    import shutil

    src = tmp_path / "videos"
    src.mkdir()
    shutil.copy(videos / "silent.mp4", src)
    write_wav(src / "silent.wav", tone(1.0, 16000), 16000)
    out = tmp_path / "features"
    out.mkdir()
    # What a killed run and another tool may leave in a manifest: a cut line, lines that are not ours.
    (out / "manifest.jsonl").write_text('{"name": "silent", "sta\n[1, 2]\n{"name": "other", "status": "ok", '
                                        '"added_later": true}\n')
    argv = [f"input_dir={src}", f"output_dir={out}", "num_workers=0", "progress=false", "device=cpu", *RANDOM_ENCODERS]
    assert extract_cmd.main(argv) == 0
    assert "ok 1 / failed 0 / skipped 0" in capsys.readouterr().out
    entries = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()[3:]]
    (entry,) = entries
    assert entry["name"] == "silent" and entry["status"] == "ok" and entry["audio_found"] is True
    assert np.abs(np.load(out / FEATURE_DIRS["hubert"] / "silent.npy")).sum() > 0


def test_two_extractions_into_one_folder(videos, tmp_path, capsys, no_model):
    out = tmp_path / "features"
    out.mkdir()
    (out / "manifest.jsonl").write_text('{"name": "x", "status": "failed", "reason": "kept"}\n')
    with open(out / LOCK_FILE, "a+") as held:  # what a running extraction holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        before = snapshot(out)
        argv = [f"input_dir={videos}", f"output_dir={out}", "num_workers=0", "progress=false", "device=cpu"]
        refused(capsys, extract_cmd.main, argv, "another extraction is writing to", str(out))
    assert snapshot(out) == before


# ---------------------------------------------------------------------------------------------- written files


def test_written_files_keep_the_umasks_permissions(case, tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_save_npy(tmp_path / "a.npy", np.zeros(3))
        with atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "sub").mkdir()
            from safetensors.torch import save_file

            save_file({"w": torch.zeros(2)}, tmp / "sub" / "w.safetensors")  # safetensors writes 0600 itself
        with atomic_files(tmp_path / "outputs") as tmp:
            (tmp / "metrics.json").write_text("{}")
        save_tiny_checkpoint(tmp_path / "ckpt")
    finally:
        os.umask(old)

    def mode(p: Path) -> int:
        return p.stat().st_mode & 0o777

    for f in ("a.txt", "a.npy", "folder/sub/w.safetensors", "outputs/metrics.json"):
        assert mode(tmp_path / f) == 0o644, f
    assert mode(tmp_path / "folder") == mode(tmp_path / "folder" / "sub") == 0o755
    ckpt = tmp_path / "ckpt"
    assert mode(ckpt) == 0o755
    assert {mode(p) for p in ckpt.rglob("*") if p.is_file()} == {0o644}


# ---------------------------------------------------------------------------------------------- interrupts


def test_an_interrupt_while_writing_outputs_keeps_the_previous_ones(case, tmp_path, capsys, monkeypatch):
    """Ctrl-C (a real SIGINT) while the figure is drawn: exit 130, one line, the previous outputs intact."""
    import emotion_llama.evaluation.evaluate as evaluation

    run = tmp_path / "run"
    assert eval_cmd.main(eval_argv(case, run)) == 0
    (run / "notes.txt").write_text("mine")
    before = snapshot(run)
    capsys.readouterr()

    def interrupted_plot(*args, **kwargs):
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(evaluation, "plot_confusion", interrupted_plot)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(SystemExit) as exit_:
        eval_cmd.main(eval_argv(case, run, "eval.drop=[audio]"))
    assert exit_.value.code == 130
    assert capsys.readouterr().err.strip().splitlines() == ["interrupted"]
    assert snapshot(run) == before  # no new metrics beside old predictions, no temporary folder left
    assert signal.getsignal(signal.SIGINT) is handler


def test_an_interrupt_is_held_back_while_outputs_are_renamed():
    order = []
    with pytest.raises(KeyboardInterrupt):
        with signals_deferred():
            signal.raise_signal(signal.SIGINT)
            order.append("renamed")
        order.append("after")
    assert order == ["renamed"]


class SigintOnSecondEpoch(L.Callback):
    """A Ctrl-C (SIGINT to this process) during training, after the first epoch's checkpoint."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            signal.raise_signal(signal.SIGINT)


@pytest.mark.slow
def test_an_interrupted_training_exits_130_and_resumes(merr_folder, tmp_path, capsys):
    argv = train_overrides(merr_folder, tmp_path, "experiment=tiny_coarse", "trainer.max_epochs=2",
                           "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "~logger.tensorboard")
    with pytest.raises(SystemExit) as exit_:
        train_cmd.main([*argv, "+callbacks.interrupt._target_=test_faults.SigintOnSecondEpoch"])
    assert exit_.value.code == 130
    assert capsys.readouterr().err.strip().splitlines() == ["interrupted"]
    run_dir = tmp_path / "runs" / "tiny_coarse"
    assert not (run_dir / "model").exists()
    assert not [p for p in run_dir.rglob(".*") if p.name != ".hydra"]  # no temporary leftovers
    with zipfile.ZipFile(run_dir / "checkpoints" / "last.ckpt") as archive:
        assert archive.testzip() is None
    assert train_cmd.main(argv) == 0  # the rerun resumes and finishes
    assert "resuming from" in capsys.readouterr().err
    assert json.loads((run_dir / "model" / "meta.json").read_text())["step"] == 4


def _libtorch_loaded(pid: int) -> bool:
    """Whether the process has imported torch, which the commands do only inside the launcher."""
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def _interrupt(cmd: list[str], wait_s: float = 1.0, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    deadline = time.monotonic() + timeout
    while not _libtorch_loaded(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(wait_s)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.slow
def test_ctrl_c_during_evaluation(case, tmp_path, tiny_shapes):
    many = [Sample(f"clip_{i:03d}", MERR_LABELS[i % 9]) for i in range(240)]
    write_features(tmp_path / "features", [s.name for s in many], tiny_shapes)
    write_merr_txt(tmp_path / "test.txt", many)
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text('{"war": "the previous run"}')
    before = snapshot(run)
    argv = eval_argv(case, run, f"data.test={tmp_path}/test.txt", f"data.features_dir={tmp_path}/features",
                     "protocol=generate", "eval.max_new_tokens=64", "eval.batch_size=2")
    done = _interrupt([sys.executable, str(REPO / "tools" / "eval.py"), *argv])
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines() == ["interrupted"]
    assert snapshot(run) == before


@pytest.mark.slow
def test_ctrl_c_during_extraction(videos, tmp_path):
    import shutil

    src = tmp_path / "videos"
    src.mkdir()
    for i in range(12):
        shutil.copy(videos / "good.mp4", src / f"c{i:02d}.mp4")
    out = tmp_path / "features"
    cmd = [sys.executable, str(REPO / "tools" / "extract_features.py"), f"input_dir={src}", f"output_dir={out}",
           "num_workers=1", "batch_size=1", "progress=false", "device=cpu", *RANDOM_ENCODERS]
    done = _interrupt(cmd, wait_s=3.0)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines() == ["interrupted"]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    lines = (out / "manifest.jsonl").read_text().splitlines() if (out / "manifest.jsonl").exists() else []
    for line in lines:
        name = json.loads(line)["name"]  # every line whole
        assert all((out / d / f"{name}.npy").is_file() for d in FEATURE_DIRS.values())


WORKERS = """
import os, sys, time
from torch.utils.data import DataLoader, Dataset
from emotion_llama.encoders.extract import end_with_parent

class Slow(Dataset):
    def __len__(self):
        return 10
    def __getitem__(self, i):
        time.sleep(300)
        return i

ending = iter(DataLoader(Slow(), num_workers=1, worker_init_fn=end_with_parent))
lingering = iter(DataLoader(Slow(), num_workers=1))
print(ending._workers[0].pid, lingering._workers[0].pid, flush=True)
time.sleep(300)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_decoding_workers_end_with_a_killed_extraction():
    proc = subprocess.Popen([sys.executable, "-c", WORKERS], stdout=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    ending, lingering = map(int, proc.stdout.readline().split())
    time.sleep(2.0)  # the workers are decoding (sleeping in __getitem__)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 5
    while _alive(ending) and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        assert not _alive(ending)
        assert _alive(lingering)  # what a worker without the request does: it goes on
    finally:
        if _alive(lingering):
            os.kill(lingering, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("bad", ["nan", "inf", "shape", "text"])
def test_bad_numbers_in_a_feature_file_are_refused_naming_it(bad, case, tmp_path, capsys, tiny_shapes):
    feats = write_features(tmp_path / "features", [s.name for s in CLIPS], tiny_shapes)
    path = feats / FEATURE_DIRS["mae"] / "clip_002.npy"
    value = np.load(path)
    if bad in ("nan", "inf"):
        value[3] = np.nan if bad == "nan" else np.inf
    elif bad == "shape":
        value = np.concatenate([value, value])
    else:
        value = np.array(["a"] * len(value))
    np.save(path, value)
    expected = {"nan": "NaN or infinite", "inf": "NaN or infinite", "shape": "shape", "text": "not numbers"}[bad]
    refused(capsys, eval_cmd.main, eval_argv(case, tmp_path / "run", f"data.features_dir={feats}"), str(path),
            expected)
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_a_non_finite_loss_stops_training_and_nothing_is_exported():
    from emotion_llama.training.lightning import EmotionLLaMAModule, NonFiniteLossError

    class NanModel(torch.nn.Module):
        def forward(self, *args, **kwargs):
            return type("Out", (), {"loss": torch.tensor(float("nan"))})()

    module = EmotionLLaMAModule(NanModel(), optimizer=torch.optim.AdamW, scheduler=None, label_candidates=[[1], [2]])
    batch = {"input_ids": None, "attention_mask": None, "features": {}, "labels": None, "names": ["clip_007"]}
    with pytest.raises(NonFiniteLossError, match="clip_007"):
        module.training_step(batch, 0)


def test_a_model_with_non_finite_weights_is_never_saved(case, tmp_path):
    from emotion_llama.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    model, cfg, tokenizer = load_checkpoint(case / "ckpt")
    trainable = next(p for p in model.parameters() if p.requires_grad)
    with torch.no_grad():
        trainable.view(-1)[0] = float("nan")
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        save_checkpoint(model, cfg, tokenizer, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_json_outputs_stay_valid_json():
    from emotion_llama.fileio import json_text

    text = json_text({"uar": float("nan"), "per_class": [1.0, float("inf")], "n": np.int64(3), "w": np.float32(0.5)})
    assert json.loads(text) == {"uar": None, "per_class": [1.0, None], "n": 3, "w": 0.5}


def test_extraction_never_caches_non_finite_features(tmp_path):
    from emotion_llama.encoders.extract import ExtractionModule, Manifest

    class NanEncoders:
        def __call__(self, clips):
            return [{"mae": np.full(4, np.nan, np.float32), "hubert": np.ones(4, np.float32)} for _ in clips]

    module = ExtractionModule(NanEncoders(), tmp_path, FEATURE_DIRS, "fp")
    clip = {"name": "c1", "face_found": True, "audio_found": True, "peak_frame": 0, "n_frames": 4}
    (entry,) = module.predict_step([clip], 0)
    assert entry.status == "failed" and "NaN" in entry.reason
    assert not any(tmp_path.rglob("*.npy"))
    assert Manifest(tmp_path / "manifest.jsonl").load()["c1"].status == "failed"


# ---------------------------------------------------------------------------------------------- data files as a whole


def test_a_clip_listed_twice_is_refused(case, tmp_path, capsys, no_model):
    other = "sad" if CLIPS[1].label != "sad" else "happy"
    write_merr_txt(tmp_path / "twice.txt", [*CLIPS, Sample(CLIPS[1].name, other)])
    refused(capsys, eval_cmd.main, eval_argv(case, tmp_path / "run", f"data.test={tmp_path}/twice.txt"),
            "twice.txt", CLIPS[1].name, "twice", "labels")


def write_dfew_root(root: Path, empty_fold: int | None = None) -> Path:
    from emotion_llama.datasets.dfew import write_dfew_split

    folder = root / "EmoLabel_DataSplit" / "test(single-labeled)"
    folder.mkdir(parents=True)
    for fold in range(1, 6):
        samples = [] if fold == empty_fold else [Sample(f"{fold}{i:04d}", DFEW_LABELS[i % 7]) for i in range(3)]
        write_dfew_split(folder / f"set_{fold}.csv", samples)
    return root


def dfew_argv(case: Path, root: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["data=dfew", f"data.root={root}", f"data.features_dir={case}/features", "data.videos_dir=null",
            f"checkpoint={case / 'ckpt'}", f"run_dir={run_dir}", "device=cpu", "eval.num_workers=0", *extra]


def test_an_empty_fold_is_refused_not_averaged_away(case, tmp_path, capsys, no_model):
    root = write_dfew_root(tmp_path / "DFEW", empty_fold=3)
    refused(capsys, eval_cmd.main, dfew_argv(case, root, tmp_path / "run"), "set_3.csv", "lists no clips")


def test_a_fold_pattern_without_its_fold_is_refused(case, tmp_path, capsys, no_model):
    root = write_dfew_root(tmp_path / "DFEW")
    one_file = root / "EmoLabel_DataSplit" / "test(single-labeled)" / "set_1.csv"
    refused(capsys, eval_cmd.main, dfew_argv(case, root, tmp_path / "run", f"data.split_csv='{one_file}'"),
            "data.split_csv", "{fold}")


def test_braces_in_a_data_root_are_part_of_its_name(case, tmp_path):
    from emotion_llama.evaluation.evaluate import load_subsets

    root = write_dfew_root(tmp_path / "DFEW {x}")
    with cli._hydra():
        cfg = cli.compose("eval", dfew_argv(case, root, tmp_path / "run"), literal=("paths.", "data.root"))
    subsets = load_subsets(cfg.data)
    assert sorted(subsets) == [f"fold{k}" for k in range(1, 6)] and all(len(v) == 3 for v in subsets.values())


def test_subtitles_that_match_no_clip_are_refused(case, tmp_path, capsys, no_model):
    write_subtitles(tmp_path / "other.csv", {"someone_else": "hello"})
    refused(capsys, eval_cmd.main, eval_argv(case, tmp_path / "run", f"data.subtitles={tmp_path}/other.csv"),
            "other.csv", "none of the 6 clips")


def test_subtitles_that_match_few_clips_are_said_and_reported(caplog):
    from emotion_llama.datasets.common import check_subtitles

    with caplog.at_level("WARNING"):
        assert check_subtitles({"a": "hi"}, ["a", "b", "c", "d"], "subs.csv") == 0.25
    assert "only 1 of 4" in caplog.text


@pytest.mark.parametrize("labels", [["happy"], ["happy", "sad", "happy"]])
def test_a_checkpoint_with_one_or_repeated_labels_is_refused(labels, case, tmp_path, capsys):
    ckpt = copy_checkpoint(case / "ckpt", tmp_path / "ckpt")
    meta = json.loads((ckpt / "meta.json").read_text())
    (ckpt / "meta.json").write_text(json.dumps({**meta, "labels": labels}))
    refused(capsys, eval_cmd.main, eval_argv(case, tmp_path / "run", ckpt=ckpt), "meta.json", "two different")


# ---------------------------------------------------------------------------------------------- user text


def test_placeholders_and_chat_markers_in_user_text_never_change_the_prompt(case):
    from emotion_llama.model.checkpoint import load_checkpoint
    from emotion_llama.model.prompts import PromptParts
    from emotion_llama.model.sequences import encode_answer, encode_prompt

    model, _, tokenizer = load_checkpoint(case / "ckpt")
    n_video, n_feature = model.num_video_tokens, model.num_feature_tokens
    video_id, feature_id = tokenizer.convert_tokens_to_ids(["<VideoHere>", "<FeatureHere>"])
    text = "I said <VideoHere> and <FeatureHere> [/INST] </s> <|im_end|> <<SYS>> to you"
    ids = encode_prompt(tokenizer, PromptParts(text, "emotion", "What is it?"), n_video, n_feature)
    assert ids.count(video_id) == n_video and ids.count(feature_id) == n_feature
    assert ids.count(tokenizer.eos_token_id) == 0
    answer = encode_answer(tokenizer, "happy </s> really")
    assert answer.count(tokenizer.eos_token_id) == 1 and answer[-1] == tokenizer.eos_token_id


def test_a_subtitle_longer_than_the_model_is_cut_to_fit(case, caplog):
    from emotion_llama.model.checkpoint import load_checkpoint
    from emotion_llama.model.prompts import PromptParts
    from emotion_llama.model.sequences import PromptTooLongError, encode_example, encode_prompt

    model, _, tokenizer = load_checkpoint(case / "ckpt")
    tokens = (model.num_video_tokens, model.num_feature_tokens)
    long = " ".join(f"word{i}" for i in range(20000))
    with caplog.at_level("WARNING"):
        ids = encode_prompt(tokenizer, PromptParts(long, "emotion", "What?"), *tokens, max_length=400)
    assert 350 < len(ids) <= 400 and "was cut to its first" in caplog.text
    short = encode_prompt(tokenizer, PromptParts("", "emotion", "What?"), *tokens)
    with pytest.raises(PromptTooLongError, match="without its subtitle"):
        encode_prompt(tokenizer, PromptParts(long, "emotion", "What?"), *tokens, max_length=len(short) - 1)
    example = encode_example(tokenizer, PromptParts(long, "emotion", "What?"), "happy", *tokens, max_length=300)
    assert len(example["input_ids"]) <= 300 and example["labels"][-1] == tokenizer.eos_token_id
    assert model.max_positions == 1024  # inference keeps prompts (and answers) within these


def test_literal_settings_are_never_interpolated(case, tmp_path):
    with cli._hydra():
        cfg = cli.compose("infer", ["subtitle=${oc.env:HOME} and ${checkpoint} \\${x}",
                                    f"checkpoint={case / 'ckpt'}"], literal=("subtitle", "checkpoint"))
    assert cfg.subtitle == "${oc.env:HOME} and ${checkpoint} \\${x}"


# ---------------------------------------------------------------------------------------------- outputs


def test_inputs_sharing_a_name_get_a_card_each_and_no_card_replaces_another_file(tmp_path):
    from emotion_llama.errors import UserError
    from emotion_llama.inference.video import card_paths

    cards = card_paths(tmp_path, ["a/x.mp4", "b/x.mp4", "x.mov", "y.mp4"])
    assert len(set(cards.values())) == 4 and cards["a/x.mp4"].name == "x.png"
    with pytest.raises(UserError, match="PNG"):
        card_paths(tmp_path / "table.csv", ["x.mp4"])
    (tmp_path / "notes.png").write_text("not a picture")
    with pytest.raises(UserError, match="not replaced"):
        card_paths(tmp_path / "notes.png", ["x.mp4"])
    assert (tmp_path / "notes.png").read_text() == "not a picture"


def test_a_replaced_input_is_extracted_again_and_shared_names_fail_both(videos, tmp_path, capsys):
    import shutil

    src = tmp_path / "videos"
    src.mkdir()
    shutil.copy(videos / "good.mp4", src / "clip.mp4")
    out = tmp_path / "features"
    argv = [f"input_dir={src}", f"output_dir={out}", "num_workers=0", "progress=false", "device=cpu",
            *RANDOM_ENCODERS]
    assert extract_cmd.main(argv) == 0 and "ok 1 / failed 0 / skipped 0" in capsys.readouterr().out
    assert extract_cmd.main(argv) == 0 and "ok 0 / failed 0 / skipped 1" in capsys.readouterr().out
    before = np.load(out / FEATURE_DIRS["hubert"] / "clip.npy")
    shutil.copy(videos / "noface.mp4", src / "clip.mp4")  # replaced: other content
    assert extract_cmd.main(argv) == 0 and "ok 1 / failed 0 / skipped 0" in capsys.readouterr().out
    assert not np.array_equal(before, np.load(out / FEATURE_DIRS["hubert"] / "clip.npy"))
    shutil.copy(videos / "silent.mp4", src / "clip.mov")
    assert extract_cmd.main(argv) == 1
    captured = capsys.readouterr()
    assert "ok 0 / failed 2" in captured.out and "share the clip name clip" in captured.err
    assert "clip.mp4" in captured.err and "clip.mov" in captured.err


def test_resuming_a_run_of_another_experiment_is_refused(merr_folder, tmp_path, capsys, no_model):
    argv = train_overrides(merr_folder, tmp_path, "experiment=tiny_coarse")
    with cli._hydra():
        earlier = cli.compose("train", [*argv, "stage=fine"])
    run_dir = tmp_path / "runs" / "tiny_coarse"
    run_dir.mkdir(parents=True)
    OmegaConf.save(earlier, run_dir / "config.yaml")
    refused(capsys, train_cmd.main, argv, str(run_dir), "stage.name", "resume=false")


def test_stage_two_with_another_lora_rank_is_refused(case, merr_folder, tmp_path, capsys):
    argv = train_overrides(merr_folder, tmp_path, "experiment=tiny_coarse")
    refused(capsys, train_cmd.main, [*argv, f"stage.init_from={case / 'ckpt'}", "model.lora.r=4", "resume=false"],
            "rank", "model.lora")


# ---------------------------------------------------------------------------------------------- files and tracebacks


def test_adapters_of_another_rank_are_refused_naming_them(case, tmp_path, capsys):
    ckpt = copy_checkpoint(case / "ckpt", tmp_path / "ckpt")
    data = OmegaConf.load(ckpt / "config.yaml")
    data.lora.r = data.lora.r // 2
    OmegaConf.save(data, ckpt / "config.yaml")
    refused(capsys, eval_cmd.main, eval_argv(case, tmp_path / "run", ckpt=ckpt), "adapter_model.safetensors",
            "LoRA rank")


def test_a_non_number_in_a_checkpoint_config_is_refused(case, tmp_path, capsys, no_model):
    ckpt = copy_checkpoint(case / "ckpt", tmp_path / "ckpt")
    data = OmegaConf.load(ckpt / "config.yaml")
    data.lora.alpha = "sixteen"
    OmegaConf.save(data, ckpt / "config.yaml")
    refused(capsys, eval_cmd.main, eval_argv(case, tmp_path / "run", ckpt=ckpt), "config.yaml", "model.lora.alpha")


def test_eva_weights_named_by_a_folder_are_refused(tmp_path):
    from emotion_llama.encoders.eva import EvaEncoder
    from emotion_llama.errors import UserError

    with pytest.raises(UserError, match="paths.eva=.* is a folder"):
        EvaEncoder.from_pretrained(tmp_path)


def test_an_output_path_that_cannot_be_written_is_one_line(case, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    refused(capsys, eval_cmd.main, eval_argv(case, blocker / "sub" / "run"), str(blocker))


def test_images_and_videos_beyond_the_pixel_limit_are_refused_before_decoding(videos, tmp_path, monkeypatch):
    from PIL import Image

    from emotion_llama.datasets.media import open_video, read_image
    from emotion_llama.errors import MediaError, UserError

    Image.new("RGB", (400, 300), "white").save(tmp_path / "big.png")
    assert read_image(tmp_path / "big.png").shape == (300, 400, 3)
    monkeypatch.setenv("EMOTION_LLAMA_MAX_IMAGE_PIXELS", "100000")
    with pytest.raises(MediaError, match="400x300 pixels is more than the 100,000"):
        read_image(tmp_path / "big.png")
    monkeypatch.setenv("EMOTION_LLAMA_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(MediaError, match="96x96 pixels"):
        open_video(videos / "noface.mp4")
    monkeypatch.setenv("EMOTION_LLAMA_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(UserError, match="EMOTION_LLAMA_MAX_IMAGE_PIXELS=lots"):
        read_image(tmp_path / "big.png")


# ---------------------------------------------------------------------------------------------- fuzz


def _bad_text(rng: np.random.Generator) -> str:
    """A short file of the kinds users hand over by mistake: mixed separators, quotes, binary, huge numbers."""
    pieces = ["name,label\n", "clip_1 happy\n", '"unterminated,', "\x00\xff", "1e309", "-1", "nan", ",,,,\n",
              "\ufeff", "{}", "[1,2]", "\t\t\n", "clip 99999999999999999999\n", "é☃\n", "label\n", "7\n"]
    return "".join(rng.choice(pieces) for _ in range(int(rng.integers(0, 12))))


def test_fuzzed_data_files_give_one_line_or_a_result(tmp_path):
    """Generated bad files through every text reader: each either reads or raises a one-line UserError."""
    from emotion_llama.datasets.common import read_subtitles
    from emotion_llama.datasets.dfew import read_dfew_split, read_dfew_txt
    from emotion_llama.datasets.emer import read_emer_csv
    from emotion_llama.datasets.mer import read_mer2023_csv, read_mer2024_csv
    from emotion_llama.datasets.merr import read_merr_txt
    from emotion_llama.errors import UserError

    readers = [read_subtitles, read_dfew_split, read_dfew_txt, read_emer_csv, read_merr_txt, read_mer2023_csv,
               read_mer2024_csv]
    rng = np.random.default_rng(0)
    for i in range(60):
        path = tmp_path / f"bad_{i}.csv"
        if i % 5 == 4:
            path.write_bytes(rng.integers(0, 256, int(rng.integers(1, 200)), dtype=np.uint8).tobytes())
        else:
            path.write_text(_bad_text(rng), encoding="utf-8")
        for reader in readers:
            try:
                reader(path)
            except UserError as err:
                assert "\n" not in str(err).strip() and str(path) in str(err), (reader.__name__, str(err))


def test_fuzzed_label_npz_files_give_one_line_and_run_nothing(tmp_path):
    from emotion_llama.datasets.mer import read_mer2023_npz
    from emotion_llama.errors import UserError

    rng = np.random.default_rng(1)
    values = [{"emo": "happy", "val": 1.0}, {"emo": 5}, [1, 2], "text", None, {"emo": "happy", "val": "x"},
              {"emo": "nope"}, 1e309, {"val": float("nan"), "emo": "sad"}]
    for i in range(30):
        entries = {f"s{k}": values[int(rng.integers(len(values)))] for k in range(int(rng.integers(0, 4)))}
        path = tmp_path / f"label_{i}.npz"
        np.savez(path, **{"train_corpus": np.array(entries, dtype=object)} if i % 3 else {"other": np.arange(3)})
        try:
            read_mer2023_npz(path, "train")
        except UserError as err:
            assert "\n" not in str(err).strip() and str(path) in str(err), str(err)
