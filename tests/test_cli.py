"""The one command-line convention (emotion_llama.cli.run): key=value overrides, positional arguments where a
tool takes them, the project's --help, one-line errors with exit code 2, quiet library output.

Most checks run the tools in-process (runpy, the commands' main); two start a real process.
"""

import logging
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from emotion_llama import cli
from emotion_llama.commands import evaluate, extract, import_official, infer, train
from emotion_llama.errors import UserError

REPO = Path(__file__).resolve().parents[1]
# Every script and a key its usage must list.
TOOLS = {
    "train.py": "experiment=", "eval.py": "checkpoint=", "eval_reasoning.py": "checkpoint=",
    "infer.py": "checkpoint=", "extract_features.py": "input_dir=", "import_official.py": "ckpt=",
    "export.py": "out=",
    "inspect_model.py": "model=", "score_openset.py": "gold=", "bench.py": "checkpoint=", "demo.py": "demo_dir=", "make_synthetic.py": "out_dir=",
    "app.py": "checkpoint=", "make_instructions.py": "data_root=", "make_synthetic_images.py": "key=value",
    "bench_faces.py": "detectors=", "demo_text.py": "per_label=",
}
# Scripts with arguments of their own (not the launcher's key=value convention): the lock checks of the Makefile
# and CI, which need nothing of the project installed.
OWN_ARGUMENTS: set[str] = {"check_lock.py"}


pytestmark = pytest.mark.usefixtures("restore_logging")


def exits(code: int, fn, *args) -> None:
    with pytest.raises(SystemExit) as exit_:
        fn(*args)
    assert exit_.value.code == code


def one_line_error(capsys, fn, argv: list[str]) -> str:
    exits(2, fn, argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith("error: ")
    return line


def test_every_tool_is_covered():
    assert {p.name for p in (REPO / "tools").glob("*.py")} == set(TOOLS) | OWN_ARGUMENTS


@pytest.mark.parametrize("script", sorted(TOOLS))
def test_help_prints_the_project_usage(script, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(REPO / "tools" / script), "--help"])
    exits(0, runpy.run_path, str(REPO / "tools" / script), None, "__main__")
    out = capsys.readouterr().out
    assert out.startswith("usage: ") and TOOLS[script] in out and "key=value" in out


def test_bad_overrides_are_one_line_naming_the_key(capsys):
    assert "unknown key pahts.eva" in one_line_error(capsys, evaluate.main, ["pahts.eva=/m/eva.pth"])
    assert "model.llm_arch" in one_line_error(capsys, train.main, ["model.llm_arch={hidden_size: 8"])
    line = one_line_error(capsys, train.main, ["model=llama"])
    assert "model=llama: no such model; use one of emotion_llama3_1_8b, emotion_llama_7b" in line and ", tiny" in line
    assert "not key=value" in one_line_error(capsys, train.main, ["experiment", "tiny_coarse"])
    assert "task=" in one_line_error(capsys, infer.main, ["clip.mp4", "--task", "reason"])
    assert "a comma" in one_line_error(capsys, evaluate.main, ["protocol=score,generate"])
    assert "missing input_dir=... output_dir=..." in one_line_error(capsys, extract.main, ["model=tiny"])
    assert "give at least one video" in one_line_error(capsys, infer.main, ["json=true"])


def test_bench_faces_takes_the_launchers_overrides(capsys):
    import bench_faces

    line = one_line_error(capsys, bench_faces.main, ["detectors=[haar,foo]"])
    assert "detectors=[haar,foo]" in line and "unknown foo" in line
    assert "repeats=0" in one_line_error(capsys, bench_faces.main, ["repeats=0"])
    assert "unknown key detector " in one_line_error(capsys, bench_faces.main, ["detector=haar"])
    assert "key=value" in one_line_error(capsys, bench_faces.main, ["--repeats", "2"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when there is no GPU")
def test_a_missing_gpu_is_one_line(capsys):
    assert "needs a CUDA GPU" in one_line_error(capsys, evaluate.main, ["device=cuda"])
    assert "needs a CUDA GPU" in one_line_error(capsys, extract.main, ["input_dir=v", "output_dir=f", "device=cuda:1"])
    assert "device=tpu" in one_line_error(capsys, infer.main, ["clip.mp4", "device=tpu"])


def test_extraction_device_maps_to_lightning():
    assert extract.lightning_devices("cpu", 1) == ("cpu", 1)
    if torch.cuda.is_available():
        assert extract.lightning_devices("cuda:0", 1) == ("gpu", [0])
        assert extract.lightning_devices("cuda", 2) == ("gpu", 2)
        with pytest.raises(UserError, match="devices"):
            extract.lightning_devices("cuda:0", 2)


def test_arguments_overrides_and_literal_text(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("take=2.mp4").write_bytes(b"")
    seen = {}

    def main(cfg, call):
        seen.update(cfg=cfg, call=call)
        return 3

    argv = ["a.mp4", "take=2.mp4", "subtitle=It's fine, (really)", "batch_size=2", "paths.llm=/m/Llama (2)",
            "card=null"]
    assert cli.run("infer", main, argv, positional="VIDEO", literal=("subtitle", "card")) == 3
    cfg, call = seen["cfg"], seen["call"]
    assert call.positional == ["a.mp4", "take=2.mp4"]
    assert cfg.subtitle == "It's fine, (really)" and cfg.batch_size == 2 and cfg.card is None
    assert call.named_paths(cfg) == {"llm": "/m/Llama (2)"}  # only the paths named on the command line


def test_user_errors_and_interrupts(capsys, tmp_path):
    def fails(cfg, call):
        raise UserError("the checkpoint is missing:\n  pass checkpoint=DIR")

    def interrupted(cfg, call):
        raise KeyboardInterrupt

    # An existing folder passes the settings check, so the command's own error is the one shown.
    argv = [f"checkpoint={tmp_path}"]
    assert one_line_error(capsys, lambda a: cli.run("eval", fails, a), argv) == (
        "error: the checkpoint is missing: pass checkpoint=DIR")
    exits(130, cli.run, "eval", interrupted, argv)
    assert capsys.readouterr().err.strip() == "interrupted"


def test_one_handler_prints_project_info_and_library_warnings_once(capsys, tmp_path):
    import lightning as L

    def main(cfg, call):
        logging.getLogger("emotion_llama.demo").info("stage 1 done")
        logging.getLogger("lightning.pytorch.x").warning("a library warning")
        logging.getLogger("transformers.x").info("library chatter")
        L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)  # "GPU available ..." and a tip

    cli.run("eval", main, [f"checkpoint={tmp_path}"])
    assert capsys.readouterr().err.splitlines() == ["stage 1 done", "warning: lightning: a library warning"]


def test_import_helper_composes_the_preset():
    cfg = import_official.model_config("emotion_llama_7b", "/m/llama (1)", ["model.lora.r=2"])
    assert cfg.preset == "emotion_llama_7b" and cfg.lora.r == 2 and cfg.llm_path == "/m/llama (1)"


def test_real_processes_answer_in_one_line():
    """A script and a console entry point, as a user starts them (the only two new processes here)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "train.py"), "pahts.eva=X"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: unknown key pahts.eva") and "--help" in line
    entry = Path(sys.executable).with_name("emotion-llama-infer")
    if not entry.exists():
        pytest.skip("console entry points not installed: pip install -e .")
    proc = subprocess.run([str(entry), "--help"], capture_output=True, text=True, env=env, timeout=120, cwd="/")
    assert proc.returncode == 0 and proc.stdout.startswith("usage: emotion-llama-infer VIDEO|DIR")
    assert "checkpoint=" in proc.stdout and "task=emotion|reason" in proc.stdout


@pytest.mark.parametrize(("command", "target"), [
    ("evaluate", "emotion_llama.evaluation.evaluate.evaluate"),
    ("reason", "emotion_llama.evaluation.reasoning.evaluate_reasoning"),
])
def test_eval_and_reason_pass_on_the_weight_paths_named_and_only_those(command, target, tmp_path, monkeypatch,
                                                                      restore_logging):
    """One rule for every command: the paths.* named on the command line (tiny_encoders included) replace the
    checkpoint's saved weight paths; the config's defaults never do."""
    import importlib

    module, name = target.rsplit(".", 1)
    seen = {}

    def record(cfg, *args, paths=None, **kwargs):
        seen["paths"] = dict(paths if paths is not None else args[-1])
        raise SystemExit(0)

    monkeypatch.setattr(importlib.import_module(module), name, record)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    main = importlib.import_module(f"emotion_llama.commands.{command}").main
    with pytest.raises(SystemExit):
        main([f"checkpoint={ckpt}", f"paths.tiny_encoders={tmp_path / 'enc'}", f"paths.output_dir={tmp_path}"])
    assert seen["paths"] == {"tiny_encoders": str(tmp_path / "enc"), "output_dir": str(tmp_path)}
