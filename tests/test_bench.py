"""tools/bench.py MODE [key=value ...]: every mode measures a tiny set and prints one parseable JSON line per
measurement."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from bench import TABLE_END, append_rows, main, prepare_set, preset_config, random_real_model

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


def test_the_real_size_benchmark_model_is_the_one_training_builds():
    """At real size the benchmark builds through build_model (fp32 trainables, the base in bf16) and keeps the
    LLM's real vocabulary under the small prompt tokenizer: checked on the meta device, no memory used."""
    cfg = preset_config("emotion_llama_7b")
    tokenizer = build_tokenizer(replace(cfg, llm_path=None, tokenizer_path=None), ["a smile"])
    model = random_real_model(cfg, tokenizer, torch.device("meta"))
    assert model.llm.get_input_embeddings().weight.shape[0] == 32000
    trainable = {p.dtype for p in model.parameters() if p.requires_grad}
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert trainable == {torch.float32} and frozen == {torch.bfloat16}
