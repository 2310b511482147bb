"""tools/bench.py MODE [key=value ...]: every mode measures a tiny set and prints one parseable JSON line per
measurement."""

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from bench import TABLE_END, append_rows, bench_encoders, main, prepare_set, preset_config, random_real_model

from emotion_llama.model.builder import build_tokenizer

REQUIRED = {"mode", "machine", "device", "dtype", "preset", "batch", "throughput", "peak_mem_mb"}


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory) -> Path:
    # Made once for the module: 27 clips (train and test get 9 each), their features and (on first use) the random tiny model.
    root = tmp_path_factory.mktemp("bench")
    prepare_set(None, root, clips_per_label=3, workers=0, cfg=preset_config("tiny"))
    return root


def bench(capsys, work_dir: Path, *args: str) -> list[dict]:
    assert main([*args, f"work_dir={work_dir}", "clips_per_label=3", "threads=1"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    results = [json.loads(line) for line in lines]
    assert results and all(REQUIRED <= set(r) for r in results)
    return results


@pytest.mark.slow
def test_train_measures_each_variant_and_appends_rows(capsys, work_dir, tmp_path):
    table = tmp_path / "BENCHMARKS.md"
    results = bench(capsys, work_dir, "train", "batch=2", "steps=1", "warmup=1",
                    "variants=[fp32,fp32+ckpt]", f"append={table}", "date=2026-11-22")
    assert [r["variant"] for r in results] == ["fp32", "fp32+ckpt"]
    assert all(r["tokens_per_s"] > 0 and r["steps_per_s"] > 0 and r["mfu"] is None for r in results)
    text = table.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| 2026-11-22")]
    assert len(rows) == 2 and "variant=fp32+ckpt" in rows[1] and "tools/bench.py train batch=2" in rows[0]
    assert text.index(rows[1]) < text.index(TABLE_END)


@pytest.mark.slow
def test_eval_compares_our_protocol_with_the_original_on_the_same_model(capsys, work_dir):
    (result,) = bench(capsys, work_dir, "eval", "max_new_tokens=4", "clips=2", "min_time=0.1")
    assert result["original_clips"] == 2 and result["original_batch"] == 1
    assert 1 <= result["original_mean_new_tokens"] <= 4
    assert result["speedup"] == pytest.approx(result["ours_clips_per_s"] / result["original_clips_per_s"])
    assert set(result["original_labels"]) <= {"neutral", "angry", "happy", "sad", "worried", "surprise",
                                               "fear", "contempt", "doubt"}


@pytest.mark.slow
def test_extract_reports_decoding_beside_full_extraction(capsys, work_dir):
    (result,) = bench(capsys, work_dir, "extract", "clips=2")
    assert result["clips"] == 2 and result["extracted_ok"] == 2
    assert result["decode_clips_per_s"] > 0 and result["extract_clips_per_s"] > 0


@pytest.mark.slow
def test_infer_reports_cold_and_warm_latency(capsys, work_dir):
    (result,) = bench(capsys, work_dir, "infer", "clips=1")
    assert result["cold_s"] > 0 and result["warm_videos"] == 1 and result["warm_mean_ms"] > 0


def one_line_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    (line,) = err.strip().splitlines()
    return line


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when there is no GPU")
def test_real_size_training_without_a_gpu_fails_in_one_sentence(capsys):
    assert "needs a CUDA GPU but none is visible" in one_line_error(capsys, ["train", "model=emotion_llama_7b", "device=cuda"])
    assert "pass device=cuda" in one_line_error(capsys, ["train", "model=emotion_llama_7b", "device=cpu"])


def test_mode_and_keys_are_checked_before_anything_runs(capsys):
    assert "give one mode" in one_line_error(capsys, ["fit"])
    assert "give one mode" in one_line_error(capsys, ["steps=3"])
    assert "--steps" in one_line_error(capsys, ["train", "--steps", "3"])
    assert "unknown key step" in one_line_error(capsys, ["train", "step=3"])
    assert "model=NAME" in one_line_error(capsys, ["train", "model.lora.r=2"])


def test_appended_rows_stay_in_the_table_when_sections_follow(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    append_rows(path, ["| a |\n"])
    path.write_text(path.read_text() + "\n## Later section\n\ntext\n")
    append_rows(path, ["| b |\n"])
    text = path.read_text()
    assert text.index("| a |") < text.index("| b |") < text.index(TABLE_END) < text.index("## Later section")
    assert text.count("| date | machine |") == 1


@pytest.mark.parametrize(("preset", "vocab"), [("emotion_llama_7b", 32000), ("emotion_qwen2_5_7b", 152064)])
def test_the_real_size_benchmark_model_is_the_one_training_builds(preset, vocab):
    """At real size the benchmark builds through build_model (fp32 trainables, the base in bf16) and keeps the
    LLM's real vocabulary under the small prompt tokenizer: checked on the meta device, no memory used."""
    cfg = preset_config(preset)
    tokenizer = build_tokenizer(replace(cfg, llm_path=None, tokenizer_path=None), ["a smile"])
    model = random_real_model(cfg, tokenizer, torch.device("meta"))
    assert model.llm.get_input_embeddings().weight.shape[0] == vocab
    trainable = {p.dtype for p in model.parameters() if p.requires_grad}
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert trainable == {torch.float32} and frozen == {torch.bfloat16}


def test_presets_are_composed_as_the_commands_compose_them():
    """A preset that inherits another through its Hydra defaults list (tiny_qwen2 is tiny with a Qwen2 LLM) is
    composed, and the paths named on the command line still reach it."""
    qwen = preset_config("tiny_qwen2")
    assert qwen.preset == "tiny_qwen2" and qwen.encoder_size == "tiny" and qwen.llm_arch["model_type"] == "qwen2"
    assert qwen.llm_arch["hidden_size"] == preset_config("tiny").llm_arch["hidden_size"]  # inherited from tiny
    real = preset_config("emotion_qwen2_5_7b", {"llm": "/models/qwen", "eva": "/models/eva.pth"})
    assert real.llm_path == "/models/qwen" and real.encoder_paths["eva"] == "/models/eva.pth"
    assert real.llm_arch["vocab_size"] == 152064 and real.lora.r == 64  # its own shape, the 7B preset's LoRA


def test_real_size_encoders_without_weights_are_random_at_their_real_size():
    """Extraction at real size with no encoder paths: random weights of the real architectures (checked on the
    meta device, no memory used); the commands themselves keep refusing a real preset without its weights."""
    encoders = bench_encoders(preset_config("emotion_llama_7b"), torch.device("meta"))
    assert list(encoders) == ["eva", "mae", "videomae", "hubert"]
    assert encoders["eva"].num_features == 1408 and encoders["eva"].num_patches == 1024
    assert sum(p.numel() for p in encoders["eva"].parameters()) > 0.9e9


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when there is no GPU")
def test_real_size_random_scoring_and_extraction_need_a_gpu(capsys):
    assert "pass device=cuda" in one_line_error(capsys, ["eval", "model=emotion_qwen2_5_7b", "device=cpu"])
    assert "pass device=cuda" in one_line_error(capsys, ["extract", "model=emotion_llama_7b", "device=cpu"])


def test_stage_is_a_bench_key_despite_the_stage_config_group(capsys):
    assert "use stage=coarse or stage=fine" in one_line_error(capsys, ["train", "stage=middle"])


@pytest.mark.slow
def test_eval_at_real_encoder_size_scores_random_weights_alone(capsys, work_dir, monkeypatch):
    """The real-size scoring path (a random model, random features of the real encoders' shapes, our protocol
    only), run on the CPU with the tiny LLM in place of the 7B one."""
    import bench as bench_module

    tiny = bench_module.preset_config
    monkeypatch.setattr(bench_module, "preset_config", lambda preset, paths=None: replace(
        tiny(preset, paths), encoder_size="real", encoder_paths={}) if preset == "tiny" else tiny(preset, paths))
    monkeypatch.setattr(bench_module, "needs_gpu", lambda *args: None)
    (result,) = bench(capsys, work_dir, "eval", "original=false", "batch=8", "min_time=0.1")
    assert result["weights"] == "random" and result["features"] == "random, in memory"
    assert result["clips"] == 16 and result["labels"] == 9 and result["ours_clips_per_s"] > 0
    assert result["original_protocol"] is None and "original_clips" not in result


GPU_CHECK = Path(__file__).resolve().parents[1] / "tools" / "gpu_check.sh"


@pytest.mark.slow
def test_gpu_check_dry_run_writes_every_measurement(tmp_path):
    """tools/gpu_check.sh --dry-run: the GPU script's steps on the CPU with the tiny presets, one JSON file."""
    out = tmp_path / "check" / "gpu_check.json"
    env = {**os.environ, "WORK_DIR": str(tmp_path / "work"), "PYTHON": sys.executable}
    done = subprocess.run([str(GPU_CHECK), "--dry-run", f"out={out}"], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"wrote {out}" in done.stdout
    report = json.loads(out.read_text())
    assert report["dry_run"] is True and report["ok"] is True and 0 < report["total_wall_s"] < 600
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == ["prepare", "train_llama2_7b", "train_qwen2_5_7b", "eval_llama2_7b", "eval_qwen2_5_7b",
                           "extract_real_encoders", "mem_24gb_llama2_7b", "mem_24gb_qwen2_5_7b"]
    assert all(s["status"] == "ok" and s["error"] is None and s["results"] for s in steps.values())

    def finite(result: dict, *keys: str) -> None:
        for key in keys:
            assert isinstance(result[key], (int, float)) and math.isfinite(result[key]) and result[key] > 0, key

    for name in ("train_llama2_7b", "train_qwen2_5_7b"):
        results = steps[name]["results"]
        assert [r["variant"] for r in results] == ["bf16", "bf16+ckpt"]
        for r in results:
            finite(r, "tokens_per_s", "mfu", "peak_mem_mb", "peak_flops")
    for name in ("eval_llama2_7b", "eval_qwen2_5_7b"):
        (r,) = steps[name]["results"]
        assert r["batch"] == 16 and r["labels"] == 9 and r["original_protocol"] is None
        finite(r, "ours_clips_per_s", "peak_mem_mb")
    (r,) = steps["extract_real_encoders"]["results"]
    finite(r, "decode_clips_per_s", "extract_clips_per_s", "peak_mem_mb")
    for name in ("mem_24gb_llama2_7b", "mem_24gb_qwen2_5_7b"):
        (r,) = steps[name]["results"]
        assert r["batch"] == 1 and r["variant"] == "bf16+ckpt" and r["stage"] == "fine"
        finite(r, "tokens_per_s", "peak_mem_mb")
    assert {r["preset"] for s in report["steps"] for r in s["results"] if "preset" in r} == {"tiny", "tiny_qwen2"}
