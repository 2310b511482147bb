"""Captions of images without one in their annotation, from a local image-captioning model folder.

BLIP folders (``model_type: blip``) load as ``BlipForConditionalGeneration``; any other folder that
``AutoModelForImageTextToText`` knows (BLIP-2, vision-encoder-decoder models such as ViT-GPT2, ...) loads
through it. The processor comes from the same folder. Captions are greedy, unconditional (no text prompt).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from emotion_llama.errors import MediaError
from emotion_llama.runtime import LOCAL_PLAIN, helper_dtype, model_folder, resolve_device


class Captioner:
    def __init__(self, model_dir: str | Path, device: str = "auto", max_new_tokens: int = 40, batch_size: int = 8):
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        self.path = model_folder(model_dir, "captioner", "image-captioning model (e.g. BLIP)",
                                 ", or give captions in the annotations")
        self.device = resolve_device(device)
        self.max_new_tokens, self.batch_size = max_new_tokens, max(1, batch_size)
        config = AutoConfig.from_pretrained(str(self.path), local_files_only=True)
        dtype = helper_dtype(self.device)
        if config.model_type == "blip":
            from transformers import BlipForConditionalGeneration as model_class
        else:
            model_class = AutoModelForImageTextToText
        self.model = model_class.from_pretrained(str(self.path), dtype=dtype, **LOCAL_PLAIN)
        self.model.to(self.device).eval()
        self.processor = AutoProcessor.from_pretrained(str(self.path), local_files_only=True)

    def settings(self) -> dict:
        return {"captioner": str(self.path.resolve()), "max_new_tokens": self.max_new_tokens}

    def __call__(self, images: Sequence[str | Path]) -> list[str]:
        captions = []
        for start in range(0, len(images), self.batch_size):
            captions += self._caption(images[start:start + self.batch_size])
        return captions

    def _caption(self, paths: Sequence[str | Path]) -> list[str]:
        import torch

        pictures = [_open_rgb(p) for p in paths]
        inputs = self.processor(images=pictures, return_tensors="pt").to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        prompt = inputs.get("input_ids")
        if prompt is not None and out.shape[1] > prompt.shape[1] and torch.equal(out[:, :prompt.shape[1]], prompt):
            out = out[:, prompt.shape[1]:]  # decoder-only captioners return their prompt first
        texts = self.processor.batch_decode(out, skip_special_tokens=True)
        return [" ".join(t.split()) for t in texts]


def _open_rgb(path: str | Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise MediaError(path, "image not found; check data_root") from None
    except (UnidentifiedImageError, OSError) as err:
        raise MediaError(path, f"cannot read the image ({err}); remove it from the split or replace the file") from None
