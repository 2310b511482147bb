"""Imagining utterances with a tiny random Stable Diffusion pipeline: offline loading, per-id seeds,
batching, the cache and its fingerprint, atomic writes."""

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from emotion_llama.datasets.dialogue import Utterance, with_context
from emotion_llama.errors import UserError
from emotion_llama.imagination import imagine as imagine_mod
from emotion_llama.imagination.imagine import (
    Imaginer,
    build_prompt,
    check_template,
    imagined_images,
    load_text_to_image,
    pipeline_fingerprint,
    utterance_seed,
)

SMALL = {"steps": 2, "size": 32, "guidance": 3.0, "device": "cpu"}


def _byte_level_chars() -> list[str]:
    """The 256 printable stand-ins that byte-level BPE (GPT-2, CLIP) uses for the bytes 0..255."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in keep]
    return [chr(c) for c in keep] + [chr(256 + i) for i in range(len(extra))]


def _clip_tokenizer(folder):
    """A tiny CLIP BPE tokenizer written from scratch: every byte, every byte at a word's end, a few merges."""
    from transformers import CLIPTokenizer

    merges = ["t h", "th e</w>", "a t</w>", "i s</w>"]
    vocab: dict[str, int] = {}
    for token in [*_byte_level_chars(), *(c + "</w>" for c in _byte_level_chars()),
                  *(m.replace(" ", "") for m in merges), "<|startoftext|>", "<|endoftext|>"]:
        vocab.setdefault(token, len(vocab))
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=24)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    """A Stable Diffusion pipeline of tiny random components, saved with save_pretrained."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    root = tmp_path_factory.mktemp("t2i")
    tokenizer = _clip_tokenizer(root / "bpe")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=8, attention_head_dim=2, norm_num_groups=2)
    vae = AutoencoderKL(block_out_channels=(4, 8), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=2)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=8, intermediate_size=16, num_attention_heads=2, num_hidden_layers=1,
        max_position_embeddings=24, projection_dim=8, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    out = root / "pipeline"
    pipe.save_pretrained(out)
    return out


@pytest.fixture
def utterances():
    return with_context([
        Utterance("dia0_utt0", "Where were you?", "Monica", "anger", "dia0", 0),
        Utterance("dia0_utt1", "I was at the park, it is sunny!", "Joey", "joy", "dia0", 1),
        Utterance("dia1_utt0", "I lost my keys.", "Ross", "sadness", "dia1", 0),
    ])


class CountingPipeline:
    """Wraps a pipeline and records the prompts and generators of each call."""

    def __init__(self, pipe):
        self.pipe, self.calls = pipe, []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        return self.pipe(**kwargs)


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def _stray_files(folder) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


def test_seeds_are_stable_hashes_of_the_id():
    # Fixed numbers: a seed must not depend on the process (Python's str hash is salted per run).
    assert utterance_seed("dia0_utt0") == 4727402272462150010
    assert utterance_seed("dia0_utt0", 1) == 5314866040120821384
    assert utterance_seed("dia0_utt1") != utterance_seed("dia0_utt0") and 0 <= utterance_seed("x") < 2**63


def test_templates_fill_utterance_speaker_and_context(utterances):
    template = check_template("{speaker} says '{utterance}' after: {context}")
    assert build_prompt(template, utterances[1], context_turns=2) == (
        "Joey says 'I was at the park, it is sunny!' after: Monica: Where were you?")
    assert build_prompt(template, utterances[0]).endswith("after: ")
    assert build_prompt("{utterance} ({context})", utterances[1], context_turns=0) == (
        "I was at the park, it is sunny! ()")
    for bad, message in [("{utterance} {mood}", "unknown placeholder {mood}"), ("a photo", "does not contain"),
                         ("{utterance", "not a valid template")]:
        with pytest.raises(UserError, match=message):
            check_template(bad)


def test_loader_refuses_folders_that_are_not_pipelines(tmp_path, pipeline_dir):
    with pytest.raises(UserError) as e:
        load_text_to_image(tmp_path)
    assert str(tmp_path) in str(e.value) and "paths.t2i" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UserError, match="does not exist"):
        Imaginer(tmp_path / "missing", tmp_path / "out")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text((pipeline_dir / "model_index.json").read_text())
    with pytest.raises(UserError, match="text_encoder is missing"):
        load_text_to_image(broken)
    shutil.copytree(pipeline_dir / "text_encoder", broken / "text_encoder")
    with pytest.raises(UserError, match="could not be loaded as a text-to-image pipeline"):
        load_text_to_image(broken)  # the other components are still missing


@pytest.mark.parametrize("component, weights", [("text_encoder", "model.safetensors"),
                                                ("unet", "diffusion_pytorch_model.safetensors")])
def test_loader_refuses_components_with_missing_weights(pipeline_dir, tmp_path, component, weights):
    folder = tmp_path / "pipeline"
    shutil.copytree(pipeline_dir, folder)
    tensors = load_file(folder / component / weights)
    dropped = sorted(tensors)[-1]
    save_file({k: v for k, v in tensors.items() if k != dropped}, folder / component / weights,
              metadata={"format": "pt"})
    with pytest.raises(UserError) as e:
        load_text_to_image(folder)
    message = str(e.value)
    assert f"{folder / component}: 1 weight(s) are missing" in message and dropped in message
    assert "\n" not in message


def test_images_are_drawn_in_batches_deterministically_and_recorded(pipeline_dir, utterances, tmp_path):
    pipe = load_text_to_image(pipeline_dir, "cpu")  # offline, from the saved folder
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    imaginer = Imaginer(pipeline_dir, tmp_path / "a", batch_size=2, **SMALL)
    imaginer._pipe = counting = CountingPipeline(pipe)
    result = imaginer.imagine(utterances)
    assert (result.drawn, result.cached) == (3, 0)
    # Two calls for three prompts, each with one CPU generator per prompt, seeded from the id.
    assert [len(c["prompt"]) for c in counting.calls] == [2, 1]
    gens = counting.calls[0]["generator"]
    assert isinstance(gens, list) and len(gens) == 2 and all(g.device.type == "cpu" for g in gens)
    assert counting.calls[0]["prompt"][0] == 'A photo of a person in a conversation, saying "Where were you?"'
    for u in utterances:
        path = tmp_path / "a" / "imagined" / f"{u.id}.png"
        assert result.paths[u.id] == path and Image.open(path).size == (32, 32)
    lines = [json.loads(x) for x in (tmp_path / "a" / "imagined" / "manifest.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == [u.id for u in utterances]
    assert lines[0]["seed"] == utterance_seed("dia0_utt0") and lines[0]["file"] == "dia0_utt0.png"
    assert lines[0]["fingerprint"] == imaginer.fingerprint and lines[1]["prompt"].endswith('sunny!"')
    assert imagined_images(tmp_path / "a") == result.paths

    # Another run elsewhere, one prompt per call: the same id gives the same picture.
    again = Imaginer(pipeline_dir, tmp_path / "b", batch_size=1, **SMALL)
    again._pipe = pipe
    again.imagine(list(reversed(utterances)))
    for u in utterances:
        a, b = _pixels(result.paths[u.id]), _pixels(tmp_path / "b" / "imagined" / f"{u.id}.png")
        assert np.abs(a - b).max() <= 1  # batch grouping may move a value by rounding, never more
    third = Imaginer(pipeline_dir, tmp_path / "c", batch_size=2, **SMALL)
    third._pipe = pipe
    third.imagine(utterances)
    for u in utterances:  # same grouping: the same bytes
        assert (tmp_path / "c" / "imagined" / f"{u.id}.png").read_bytes() == result.paths[u.id].read_bytes()
    pictures = [result.paths[u.id].read_bytes() for u in utterances]
    assert len(set(pictures)) == 3  # different ids, different pictures


def test_a_rerun_uses_the_cache_without_loading_the_pipeline(pipeline_dir, utterances, tmp_path, monkeypatch):
    first = Imaginer(pipeline_dir, tmp_path, **SMALL)
    first.imagine(utterances)
    before = {u.id: first.image_path(u.id).read_bytes() for u in utterances}

    def no_loading(*args, **kwargs):
        raise AssertionError("the pipeline was loaded although every image was done")

    monkeypatch.setattr(imagine_mod, "load_text_to_image", no_loading)
    result = Imaginer(pipeline_dir, tmp_path, **SMALL).imagine(utterances)
    assert (result.drawn, result.cached) == (0, 3)
    assert {u.id: result.paths[u.id].read_bytes() for u in utterances} == before


def test_a_different_fingerprint_or_prompt_draws_again(pipeline_dir, utterances, tmp_path):
    pipe = load_text_to_image(pipeline_dir, "cpu")

    def run(**overrides):
        imaginer = Imaginer(pipeline_dir, tmp_path, **{**SMALL, **overrides})
        imaginer._pipe = counting = CountingPipeline(pipe)
        result = imaginer.imagine(utterances)
        return imaginer, result, sum(len(c["prompt"]) for c in counting.calls)

    base, result, drawn = run()
    assert drawn == 3
    old = result.paths["dia0_utt0"].read_bytes()
    changed, result, drawn = run(steps=3)  # another setting: another fingerprint, everything redrawn
    assert drawn == 3 and result.drawn == 3 and changed.fingerprint != base.fingerprint
    assert result.paths["dia0_utt0"].read_bytes() != old
    _, result, drawn = run(steps=3)
    assert drawn == 0 and result.cached == 3
    _, result, drawn = run(steps=3, prompt_template="A painting: {utterance}")  # another prompt
    assert drawn == 3
    # Weights changed in place (same size, new time) count as another pipeline.
    weights = pipeline_dir / "unet" / "diffusion_pytorch_model.safetensors"
    fp = pipeline_fingerprint(pipeline_dir, {"steps": 3})
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert pipeline_fingerprint(pipeline_dir, {"steps": 3}) != fp
    assert pipeline_fingerprint(pipeline_dir, {"steps": 4}) != pipeline_fingerprint(pipeline_dir, {"steps": 3})
    _, result, drawn = run(steps=3, prompt_template="A painting: {utterance}")
    assert drawn == 3
    # Only the last manifest line of an id counts: every line now carries the newest fingerprint.
    lines = [json.loads(x) for x in (tmp_path / "imagined" / "manifest.jsonl").read_text().splitlines()]
    newest = {x["id"]: x["fingerprint"] for x in lines}
    assert len(lines) == 12 and set(newest.values()) == {lines[-1]["fingerprint"]}


def test_interrupted_runs_leave_only_whole_files_and_resume(pipeline_dir, utterances, tmp_path, monkeypatch):
    pipe = load_text_to_image(pipeline_dir, "cpu")
    calls = []

    def fail_on_second_batch(**kwargs):
        calls.append(kwargs)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return pipe(**kwargs)

    imaginer = Imaginer(pipeline_dir, tmp_path, batch_size=2, **SMALL)
    imaginer._pipe = fail_on_second_batch
    with pytest.raises(KeyboardInterrupt):
        imaginer.imagine(utterances)
    folder = tmp_path / "imagined"
    assert sorted(p.name for p in folder.iterdir()) == ["dia0_utt0.png", "dia0_utt1.png", "manifest.jsonl"]

    # A failure while a picture is being written leaves neither a partial file nor a manifest line.
    real_write = Path.write_bytes

    def partial_write(self, data):
        real_write(self, data[:16])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", partial_write)
    imaginer = Imaginer(pipeline_dir, tmp_path, batch_size=2, **SMALL)
    imaginer._pipe = pipe
    with pytest.raises(OSError, match="disk full"):
        imaginer.imagine(utterances)
    monkeypatch.undo()
    assert sorted(p.name for p in folder.iterdir()) == ["dia0_utt0.png", "dia0_utt1.png", "manifest.jsonl"]
    assert not _stray_files(folder)

    # A picture without its manifest line (and a line cut short) is never trusted: it is drawn again.
    (folder / "dia1_utt0.png").write_bytes(b"stale")
    with open(folder / "manifest.jsonl", "a") as f:
        f.write('{"id": "dia1_utt0", "file": "dia1_ut')
    imaginer = Imaginer(pipeline_dir, tmp_path, batch_size=2, **SMALL)
    imaginer._pipe = counting = CountingPipeline(pipe)
    result = imaginer.imagine(utterances)
    assert (result.drawn, result.cached) == (1, 2) and counting.calls[0]["prompt"] == [imaginer.prompt(utterances[2])]
    assert Image.open(io.BytesIO((folder / "dia1_utt0.png").read_bytes())).size == (32, 32)
    assert not _stray_files(folder)


def test_settings_are_checked_before_any_work(pipeline_dir, tmp_path, utterances):
    for kwargs, message in [({"size": 30}, "multiples of 8"), ({"steps": 0}, "at least 1"),
                            ({"batch_size": 0}, "batch size"), ({"dtype": "int8"}, "dtype=int8"),
                            ({"prompt_template": "{speaker}"}, "does not contain")]:
        with pytest.raises(UserError, match=message):
            Imaginer(pipeline_dir, tmp_path, **kwargs)
    imaginer = Imaginer(pipeline_dir, tmp_path, size=(16, 32), **{k: v for k, v in SMALL.items() if k != "size"})
    assert (imaginer.height, imaginer.width) == (16, 32)
    with pytest.raises(UserError, match="appears twice"):
        imaginer.imagine([utterances[0], utterances[0]])
    with pytest.raises(UserError, match="cannot name an image file"):
        imaginer.imagine([Utterance("../x", "hi", "A", "joy", "d", 0)])
