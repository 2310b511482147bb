"""The inference core: a loaded checkpoint that scores candidate labels and generates answers for batches of
clips, with one device and dtype policy.

Evaluation (:mod:`emotion_llama.evaluation.evaluate`), EMER-style reasoning, inference on videos
(:mod:`emotion_llama.inference.video`) and the benchmarks all run the model through :class:`InferenceCore`;
none of them encodes prompts, pads, picks a device or sets autocast itself.

- Device, precision and the weight paths a user names: the policy of :mod:`emotion_llama.runtime` (bf16
  autocast on a GPU; the ``paths.*`` named replace the checkpoint's saved ones, the others are kept).
- Inputs: the clips' encoder features, or, for a model that encodes images itself (EmoVIT's InstructBLIP,
  :attr:`InferenceCore.reads_pixels`), their pixel values ``{"image": (B, 3, S, S), "present": ...}`` made by
  :attr:`InferenceCore.image_transform`.
- Prompt layout: ``train`` (default), the release's training layout, which its checkpoint (and every one this
  project trains) was trained on and for which closed-set scores are meaningful; or ``release_eval``, the
  release's evaluation layout (a second BOS, all multimodal tokens at ``<VideoHere>``), which reproduces the
  published MER2023-SEMI figure only with the released checkpoint under greedy generation. See
  :mod:`emotion_llama.model.sequences`. The emotion instruction lists MERR labels in the release's order; the
  scores' columns stay in the order of the ``labels`` given.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from emotion_llama.errors import UserError
from emotion_llama.labels import MERR_LABELS
from emotion_llama.model.chat import chat_format, check_prompt_layout
from emotion_llama.model.checkpoint import load_checkpoint, read_config, read_labels
from emotion_llama.model.config import ModelConfig
from emotion_llama.model.fusion import PlaceholderFusion
from emotion_llama.model.instructblip import ImageTransform
from emotion_llama.model.prompts import LAYOUTS, PromptParts, answer_text, canonical_instruction
from emotion_llama.model.sequences import encode_answer, encode_prompt, pad_batch
from emotion_llama.runtime import (
    ENCODER_PATH_KEYS,
    INSTRUCTBLIP_PATH_KEY,
    LLM_PATH_KEY,
    TINY_ENCODERS_KEY,
    autocast,
    resolve_device,
    tiny_encoder_paths,
)


def checkpoint_overrides(ckpt_dir: str | Path, paths: Mapping[str, object] | None) -> dict:
    """Model-config overrides from the ``paths.*`` values a user named: those given replace the
    checkpoint's, the others keep the checkpoint's saved values. ``tiny_encoders`` moves the whole
    folder of the tiny preset's pre-trained encoders (a path named explicitly still wins)."""
    paths = {k: v for k, v in (paths or {}).items() if v}
    out: dict = {}
    if LLM_PATH_KEY in paths:
        out["llm_path"] = str(paths[LLM_PATH_KEY])
    if INSTRUCTBLIP_PATH_KEY in paths:
        out["instructblip_path"] = str(paths[INSTRUCTBLIP_PATH_KEY])
    given = {k: str(paths[k]) for k in ENCODER_PATH_KEYS if k in paths}
    if TINY_ENCODERS_KEY in paths:
        given = {**tiny_encoder_paths(paths[TINY_ENCODERS_KEY]), **given}
    if given:
        out["encoder_paths"] = {**read_config(ckpt_dir).encoder_paths, **given}
    return out


class InferenceCore:
    """A model (the fusion model or InstructBLIP) and its tokenizer on one device: closed-set scoring and
    generation over batches.

    A batch is a list of subtitles (one per clip, ``""`` for none) and the clips' features
    ``{modality: (B, ...)}``; the core builds the prompts, pads them on the left, moves everything to its
    device and runs the model under the device's autocast policy.
    """

    def __init__(self, model: PlaceholderFusion, tokenizer, config: ModelConfig | None = None,
                 device: str | torch.device = "cpu", layout: str = "train"):
        check_prompt_layout(tokenizer, layout)
        self.layout = layout
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.config = config
        self._candidates: dict[tuple[str, ...], list[list[int]]] = {}
        self._image_transform: ImageTransform | None = None
        # The label set the checkpoint was trained on, when it records one (see read_labels).
        self.labels: list[str] | None = None

    @classmethod
    def load(cls, checkpoint: str | Path, paths: Mapping[str, object] | None = None,
             device: str | torch.device | None = "auto", layout: str = "train") -> InferenceCore:
        """Load ``checkpoint`` with the ``paths`` a user named merged over its saved weight paths
        (see :func:`checkpoint_overrides`; pass only what the user named, not a config's defaults);
        ``layout``: the prompt layout, ``train`` or ``release_eval`` (see the module doc)."""
        if layout not in LAYOUTS:  # before minutes of loading
            raise UserError(f"prompt_layout={layout} is not a prompt layout: use {' or '.join(LAYOUTS)}")
        if layout != "train" and read_config(checkpoint).prompt_format != "release":
            raise UserError(f"prompt_layout={layout} is the release's LLaMA-2 evaluation layout; {checkpoint} is "
                            "prompted through its chat template: use prompt_layout=train")
        resolved = resolve_device(device)
        model, config, tokenizer = load_checkpoint(checkpoint, checkpoint_overrides(checkpoint, paths), resolved)
        core = cls(model, tokenizer, config, resolved, layout)
        core.labels = read_labels(checkpoint)
        return core

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device)

    @property
    def reads_pixels(self) -> bool:
        """Whether the model encodes images itself (InstructBLIP): its inputs are pixel values, not features."""
        return self.model.reads_pixels

    @property
    def image_transform(self) -> ImageTransform:
        """HxWx3 uint8 RGB image -> the (3, S, S) pixel values the model was trained on (its image processor)."""
        if not self.reads_pixels:
            raise UserError("this checkpoint's model reads encoder features, not pixel values: extract features "
                            "(tools/extract_features.py) for it")
        if self._image_transform is None:
            self._image_transform = ImageTransform(self.model.image_processor)
        return self._image_transform

    # ------------------------------------------------------------------------------------------ prompts

    def prompts(self, subtitles: Sequence[str], task: str, instruction: str, media: str = "video",
                answer_room: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prompt ids and attention mask, (B, L) each, on the core's device, in the core's layout.
        Each prompt leaves ``answer_room`` of the model's positions free (a longer subtitle is cut: see
        :func:`~emotion_llama.model.sequences.encode_prompt`)."""
        n_video, n_feature = self.model.num_video_tokens, self.model.num_feature_tokens
        budget = self.model.max_positions - answer_room
        seqs = [encode_prompt(self.tokenizer, PromptParts(s, task, instruction, media), n_video, n_feature,
                              self.layout, max_length=budget) for s in subtitles]
        ids, mask = pad_batch(seqs, self.tokenizer.pad_token_id, "left")
        return ids.to(self.device), mask.to(self.device)

    def candidates(self, labels: Sequence[str], media: str = "video") -> list[list[int]]:
        """Each label's answer ids (the answer text + EOS), exactly as training writes the answer."""
        key = (tuple(labels), media)
        if key not in self._candidates:
            self._candidates[key] = [encode_answer(self.tokenizer, answer_text(label, media)) for label in labels]
        return self._candidates[key]

    def _features(self, features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {m: t.to(self.device) for m, t in features.items()}

    # ------------------------------------------------------------------------------------------ model calls

    @torch.no_grad()
    def score(self, subtitles: Sequence[str], features: Mapping[str, torch.Tensor],
              labels: Sequence[str] = MERR_LABELS, media: str = "video") -> torch.Tensor:
        """Log-likelihood of each label as the answer to the emotion prompt listing ``labels``: (B, K), fp32, CPU.
        ``media``: ``video`` (the release's prompt), ``image`` or ``text`` (EmoVIT's instruction and answer)."""
        candidates = self.candidates(labels, media)
        ids, mask = self.prompts(subtitles, "emotion", canonical_instruction("emotion", labels, media), media,
                                 answer_room=max(map(len, candidates)))
        with self.autocast():
            logp = self.model.score_labels(ids, mask, self._features(features), candidates)
        return logp.float().cpu()

    @torch.no_grad()
    def generate(self, subtitles: Sequence[str], features: Mapping[str, torch.Tensor], task: str = "emotion",
                 labels: Sequence[str] = MERR_LABELS, max_new_tokens: int = 64, media: str = "video",
                 instruction: str | None = None) -> list[str]:
        """Greedy answers to the task's canonical instruction (the emotion one lists ``labels``), or to
        ``instruction`` when given (in the same user template, under the same task tag: e.g. MER-UniBench's
        open-vocabulary question)."""
        instruction = canonical_instruction(task, labels, media) if instruction is None else instruction
        ids, mask = self.prompts(subtitles, task, instruction, media, answer_room=max_new_tokens)
        with self.autocast():
            new = self.model.generate(ids, mask, self._features(features), max_new_tokens=max_new_tokens,
                                      pad_token_id=self.tokenizer.pad_token_id,
                                      eos_token_id=chat_format(self.tokenizer).stop_ids)
        return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
