import logging
import os
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

# Two cores: one intra-op thread per process keeps the suite from oversubscribing.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
# The benchmark and demo drivers are scripts, not library modules: tests import them from tools/.
sys.path.append(str(Path(__file__).resolve().parents[1] / "tools"))


@pytest.fixture(scope="session")
def tiny_shapes():
    from emotion_llama.encoders.build import encoder_shapes
    from emotion_llama.model.config import ModelConfig

    return encoder_shapes(ModelConfig())


@pytest.fixture(scope="session")
def merr_folder(tmp_path_factory, tiny_shapes):
    """A small MERR-style folder (annotations, captions, subtitles) with random cached features."""
    from emotion_llama.datasets.common import Sample, write_subtitles
    from emotion_llama.datasets.features import FEATURE_DIRS
    from emotion_llama.datasets.merr import write_merr_json, write_merr_txt
    from emotion_llama.labels import MERR_LABELS

    root = tmp_path_factory.mktemp("merr")
    rng = np.random.default_rng(0)
    samples = {"train": [], "val": []}
    coarse, fine, subs = {}, {}, {}
    for i in range(27):
        label = MERR_LABELS[i % 9]
        name = f"clip_{i:03d}"
        split = "val" if i >= 18 else "train"
        samples[split].append(Sample(name, label, n_frames=20))
        coarse[name] = {"caption": f"The person looks {label} and speaks."}
        fine[name] = {"smp_reason_caption": f"The face and the voice suggest {label}."}
        subs[name] = "I am here" if i % 2 else ""
        for modality, folder in FEATURE_DIRS.items():
            dim = tiny_shapes.dims[modality]
            shape = (1 + tiny_shapes.eva_patches, dim) if modality == "eva" else (dim,)
            (root / folder).mkdir(exist_ok=True)
            np.save(root / folder / f"{name}.npy", rng.standard_normal(shape).astype(np.float16 if modality == "eva" else np.float32))
    (root / "splits").mkdir()
    for split, rows in samples.items():
        write_merr_txt(root / "splits" / f"{split}.txt", rows)
    write_merr_json(root / "coarse.json", coarse)
    write_merr_json(root / "fine.json", fine)
    write_subtitles(root / "subtitles.csv", subs)
    return root


class StopAfterFirstEpoch(L.Callback):
    """Simulates an interrupted run: stops once the first epoch (and its checkpoint) is done."""

    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


def train_overrides(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"paths.output_dir={out}",
        f"data.root={root}",
        f"data.features_dir={root}",
        f"data.coarse_json={root}/coarse.json",
        f"data.fine_json={root}/fine.json",
        "data.generate=null",
        "data.batch_size=4",
        "trainer.enable_progress_bar=false",
        *extra,
    ]


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` are skipped, not failed, on a machine without CUDA."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


def save_tiny_checkpoint(out: Path, lora_b_std: float | None = None) -> Path:
    """An untrained checkpoint: the tiny preset's encoders (their real shapes) with a smaller random LLM.

    ``lora_b_std`` draws LoRA B (zero at init) from N(0, std) so that a wrong adapter load would show.
    """
    from emotion_llama.encoders.build import encoder_shapes
    from emotion_llama.model.builder import build_model, build_tokenizer
    from emotion_llama.model.checkpoint import save_checkpoint
    from emotion_llama.model.config import ModelConfig

    arch = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=4, max_position_embeddings=1024)
    cfg = ModelConfig(llm_arch=arch, lora=dict(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"]))
    tokenizer = build_tokenizer(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, tokenizer, encoder_shapes(cfg))
    if lora_b_std is not None:
        for name, p in model.llm.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=lora_b_std)
    return save_checkpoint(model, cfg, tokenizer, out)


@pytest.fixture
def restore_logging():
    """The launcher installs its handler on the root logger; later tests get the logging they had."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="module")
def one_thread():
    """Networks this small run faster on one thread than split over cores that other work keeps busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def save_tiny_lm(folder: Path) -> Path:
    """A random 1-layer Llama with a tiny BPE tokenizer, saved in ``folder`` like any Hugging Face model folder
    (the local-model paths of instruction generation and answer extraction run on it)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from emotion_llama.model.tokenizer import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(vocab_size=400)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
