"""The real-size preset's figures, built on the meta device without weights."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from conftest import CONF_DIR
from emotion_llama.model.config import ModelConfig
from emotion_llama.model.inspect import inspect_model


def preset(name: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return ModelConfig.from_cfg(compose(config_name="inspect_model", overrides=[f"model={name}"]))


def test_real_size_figures_match_the_paper():
    info = inspect_model(preset("emotion_llama_7b"))
    assert info["lora_params"] == 33_554_432
    assert info["multimodal_tokens"] == 260 and info["video_tokens"] == 256
    assert info["llm_hidden_size"] == 4096
    assert info["params"]["llm"] == pytest.approx(6.74e9, rel=0.01)
    assert info["params"]["eva"] == pytest.approx(0.987e9, rel=0.02)
    assert info["params"]["hubert"] == pytest.approx(315e6, rel=0.02)
    assert info["params"]["mae"] == pytest.approx(303e6, rel=0.02)
    assert info["params"]["videomae"] == pytest.approx(305e6, rel=0.02)
    # Trainable: LoRA plus the projectors (Linear 5632->4096, 1408->4096, 3 x 1024->4096).
    projectors = (5632 + 1408 + 3 * 1024) * 4096 + 5 * 4096
    assert info["params"]["projectors"] == projectors
    assert info["trainable_params"] == info["lora_params"] + projectors


def test_tiny_preset_figures():
    info = inspect_model(preset("tiny"))
    assert info["multimodal_tokens"] == 16 + 4
    assert info["llm_hidden_size"] == 128


@pytest.mark.slow
def test_cli_prints_one_json_object():
    tool = Path(__file__).resolve().parents[1] / "tools" / "inspect_model.py"
    proc = subprocess.run([sys.executable, str(tool), "model=emotion_llama_7b"], capture_output=True, text=True,
                          check=True)
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["lora_params"] == 33_554_432 and info["multimodal_tokens"] == 260
