"""EmoVIT's backbone: InstructBLIP (an instruction-aware Q-Former between a ViT and a causal LM).

The model is transformers' :class:`~transformers.InstructBlipForConditionalGeneration` (``self.blip``), read
from a local folder or built small and random. It plugs into the project as a :class:`PlaceholderFusion`,
like :class:`~emotion_llama.model.fusion.EmotionLLaMA`: the prompt holds ``num_query_tokens`` ``<VideoHere>``
placeholders (and no ``<FeatureHere>`` one) where the image's tokens go; training, closed-set scoring and
generation are the shared ones.

Image tokens, as in InstructBLIP::

    vision_model(image) -> Q-Former(query_tokens, cross-attending the image, self-attending the instruction)
    -> language_projection -> (B, num_query_tokens, H)

The Q-Former reads the instruction text. It is taken from ``features["qformer_input_ids"]`` (with
``features["qformer_attention_mask"]``) when the batch carries them; otherwise the prompt text is recovered
from the LLM ids: the prompt positions (``features["prompt_mask"]``, which :meth:`InstructBlipEmotion.forward`
derives from the labels: every position whose label is ignored; without it every position, which is the
prompt at generation and scoring time) minus placeholders and special tokens, decoded by the LLM tokenizer and
encoded by the Q-Former's BERT tokenizer (truncated to ``qformer_max_length``, 128 as in InstructBLIP). The
Q-Former therefore never reads a training answer.

``features = {"image": (B, 3, S, S) pixel values (see :class:`ImageTransform`), "present": (B, 4) bool,
optional}``; the image counts as the ``eva`` modality (column 0 of ``present``). An absent image's tokens are
zeroed and masked out by :class:`PlaceholderFusion`, and ``"image"`` may then be left out.

As in EmoVIT, the vision encoder and the LLM are frozen (in ``dtype``, e.g. bf16); the Q-Former, the query
tokens and the language projection are trained, in fp32. :meth:`InstructBlipEmotion.trainable_state_dict`
holds exactly those weights.

A model folder is the layout transformers' ``InstructBlipForConditionalGeneration.save_pretrained`` plus
``InstructBlipProcessor.save_pretrained`` write (``Salesforce/instructblip-vicuna-7b``'s): ``config.json`` and
the safetensors, ``preprocessor_config.json`` (image size, mean, std), the LLM tokenizer at the top and the
Q-Former tokenizer in ``qformer_tokenizer/``.
"""

from __future__ import annotations

import json
import logging
import string
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import normalizers, pre_tokenizers
from torch import Tensor
from transformers import (
    AutoTokenizer,
    BertTokenizer,
    BlipImageProcessor,
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
    PreTrainedTokenizerBase,
)
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from emotion_llama.errors import UserError, WeightsNotFoundError
from emotion_llama.labels import DFEW_LABELS, MERR_LABELS
from emotion_llama.model.fusion import IMAGE, MODALITIES, PlaceholderFusion, presence
from emotion_llama.model.llm import LLAMA2_7B, llm_config
from emotion_llama.model.prompts import (
    DESCRIBE_POOL,
    FEATURE_TOKEN,
    REASON_POOL,
    USER_TEMPLATE,
    VIDEO_TOKEN,
    format_chat,
    instruction_pool,
)
from emotion_llama.model.sequences import IGNORE_INDEX
from emotion_llama.model.tokenizer import base_vocab_size
from emotion_llama.runtime import LOCAL_PLAIN

log = logging.getLogger(__name__)

TRAINABLE_DTYPE = torch.float32
QFORMER_TOKENIZER_DIR = "qformer_tokenizer"  # where InstructBlipProcessor.save_pretrained puts it
QFORMER_MAX_LENGTH = 128  # InstructBLIP's max_txt_len for the Q-Former's instruction
# Optional entries of ``features``.
QFORMER_INPUT_IDS = "qformer_input_ids"
QFORMER_ATTENTION_MASK = "qformer_attention_mask"
PROMPT_MASK = "prompt_mask"
IMAGE_MODALITY = MODALITIES.index("eva")
# Trained parts of ``self.blip`` (with ``train_llm`` also the LLM).
TRAINABLE_PARTS = ("query_tokens", "qformer", "language_projection")

# The tiny preset, in transformers' own config fields (``instructblip_arch``); the LLM's are ``TINY_LLM_ARCH``.
TINY_ARCH: dict[str, Any] = {
    "vision_config": dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, initializer_range=0.02),
    "qformer_config": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           cross_attention_frequency=1, max_position_embeddings=256),
    "num_query_tokens": 8,
}
# A frozen random LLM needs initial weights larger than transformers' default std of 0.02: at 0.02 its next-token
# distribution stays almost uniform whatever its input, and no query tokens could steer it towards an answer.
TINY_LLM_ARCH: dict[str, Any] = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                                     initializer_range=0.2)
# InstructBLIP (Vicuna-7B v1.1): EVA ViT-g/14 without its last block at 224 px, a 12-layer BERT-base Q-Former
# (cross-attention every 2nd layer, 32 queries, BERT's vocabulary + [DEC]), Vicuna-7B (LLaMA-7B's shape).
VICUNA7B_ARCH: dict[str, Any] = {
    "vision_config": dict(image_size=224, patch_size=14, hidden_size=1408, intermediate_size=6144,
                          num_hidden_layers=39, num_attention_heads=16, layer_norm_eps=1e-6, qkv_bias=True),
    "qformer_config": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           cross_attention_frequency=2, max_position_embeddings=512, vocab_size=30523),
    "num_query_tokens": 32,
}
VICUNA7B_LLM_ARCH: dict[str, Any] = dict(max_position_embeddings=2048, rms_norm_eps=1e-6)

# EmoVIT's categorical instruction (EmoSet labels), so the tiny Q-Former vocabulary holds its words.
_EMOVIT_TEXT = (
    "Please select the emotion closest to the image from the following options: amusement, anger, awe, "
    "contentment, disgust, excitement, fear and sadness (Do not provide answers outside of the candidates "
    "options.) Please answer in the following format: Predict emotion: brightness colorfulness object "
    "facial_expression human_action scene image picture photo"
)


class InstructBlipLoadError(UserError, ValueError):
    """A folder that is not a complete InstructBLIP model folder."""


# ------------------------------------------------------------------------------------------------ the model
class InstructBlipEmotion(PlaceholderFusion):
    """InstructBLIP as a placeholder-fusion backbone (see the module doc).

    ``llm`` is ``blip.language_model`` (a property, so the LLM's weights are registered once, under
    ``blip.language_model.``).
    """

    reads_pixels = True

    def __init__(
        self,
        blip: InstructBlipForConditionalGeneration,
        llm_tokenizer: PreTrainedTokenizerBase | None,
        qformer_tokenizer: PreTrainedTokenizerBase | None,
        image_processor: BlipImageProcessor | None = None,
        video_token_id: int | None = None,
        feature_token_id: int | None = None,
        qformer_max_length: int = QFORMER_MAX_LENGTH,
        train_llm: bool = False,
    ):
        super().__init__()
        if not blip.config.use_decoder_only_language_model:
            raise ValueError("only InstructBLIP models with a causal (decoder-only) language model are supported")
        self.blip = blip
        self.llm_tokenizer = llm_tokenizer
        self.qformer_tokenizer = qformer_tokenizer
        self.image_processor = image_processor or default_image_processor(blip.config.vision_config.image_size)
        if llm_tokenizer is not None:
            if video_token_id is None:
                video_token_id = llm_tokenizer.convert_tokens_to_ids(VIDEO_TOKEN)
            if feature_token_id is None:
                feature_token_id = llm_tokenizer.convert_tokens_to_ids(FEATURE_TOKEN)
        if video_token_id is None or feature_token_id is None:
            raise ValueError("pass the LLM tokenizer or both placeholder ids")
        self.video_token_id = int(video_token_id)
        self.feature_token_id = int(feature_token_id)
        self.qformer_max_length = qformer_max_length
        self.train_llm = train_llm
        self.set_trainable()

    # ---------------------------------------------------------------- PlaceholderFusion interface
    @property
    def llm(self) -> torch.nn.Module:
        return self.blip.language_model

    @property
    def num_video_tokens(self) -> int:
        return self.blip.config.num_query_tokens

    @property
    def num_feature_tokens(self) -> int:
        return 0

    @property
    def token_modalities(self) -> list[int]:
        return [IMAGE_MODALITY] * self.num_video_tokens

    def multimodal_tokens(self, input_ids: Tensor, features: Mapping[str, Tensor]) -> Tensor:
        """The image's query tokens after the language projection: (B, num_query_tokens, H), in fp32."""
        batch = input_ids.shape[0]
        image = features.get(IMAGE)
        if image is None:
            if bool(presence(features, batch, input_ids.device)[:, IMAGE_MODALITY].any()):
                raise ValueError("no image in a batch in which the image is present")
            proj = self.blip.language_projection
            return torch.zeros(batch, self.num_video_tokens, proj.out_features,
                               dtype=proj.weight.dtype, device=input_ids.device)
        if image.shape[0] != batch:
            raise ValueError(f"{image.shape[0]} images for {batch} sequences")
        qformer_ids, qformer_mask = self.qformer_inputs(input_ids, features)
        return self.image_tokens(image, qformer_ids, qformer_mask)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        features: Mapping[str, Tensor],
        labels: Tensor | None = None,
    ):
        """The shared forward; with ``labels``, the Q-Former reads only the prompt (the positions whose label is
        ignored), never the answer."""
        if labels is not None and PROMPT_MASK not in features and QFORMER_INPUT_IDS not in features:
            features = {**features, PROMPT_MASK: (labels == IGNORE_INDEX) & attention_mask.bool()}
        return super().forward(input_ids, attention_mask, features, labels)

    # ---------------------------------------------------------------- the parts
    def image_tokens(
        self, pixel_values: Tensor, qformer_input_ids: Tensor, qformer_attention_mask: Tensor | None = None
    ) -> Tensor:
        """What ``blip.get_image_features(...).pooler_output`` computes, with the frozen vision tower run without
        autograd in its own dtype and its output handed to the fp32 Q-Former."""
        blip = self.blip
        vision = blip.vision_model
        vision_param = next(vision.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and vision_param.requires_grad):
            image_embeds = vision(pixel_values=pixel_values.to(device=vision_param.device, dtype=vision_param.dtype),
                                  return_dict=True).last_hidden_state  # (B, 1+P, Dv)
        qformer_dtype = blip.query_tokens.dtype
        image_embeds = image_embeds.to(qformer_dtype)
        batch, device = image_embeds.shape[0], image_embeds.device
        queries = blip.query_tokens.expand(batch, -1, -1)
        query_mask = torch.ones(queries.shape[:-1], dtype=torch.long, device=device)
        qformer_input_ids = qformer_input_ids.to(device)
        if qformer_attention_mask is None:
            qformer_attention_mask = torch.ones_like(qformer_input_ids)
        out = blip.qformer(
            input_ids=qformer_input_ids,
            attention_mask=torch.cat([query_mask, qformer_attention_mask.to(device=device, dtype=torch.long)], dim=1),
            query_embeds=queries,
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=device),
            return_dict=True,
        )
        return blip.language_projection(out.last_hidden_state[:, : queries.shape[1]])

    def qformer_inputs(self, input_ids: Tensor, features: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The Q-Former's instruction ids and mask: given in ``features``, else recovered from ``input_ids``."""
        if QFORMER_INPUT_IDS in features:
            ids = features[QFORMER_INPUT_IDS]
            mask = features.get(QFORMER_ATTENTION_MASK)
            return ids, torch.ones_like(ids) if mask is None else mask
        enc = self.encode_instructions(self.instruction_texts(input_ids, features.get(PROMPT_MASK)))
        return enc[QFORMER_INPUT_IDS].to(input_ids.device), enc[QFORMER_ATTENTION_MASK].to(input_ids.device)

    def instruction_texts(self, input_ids: Tensor, prompt_mask: Tensor | None = None) -> list[str]:
        """The prompt text of each sequence: the LLM ids at ``prompt_mask`` (default: all), without placeholders
        and special tokens (BOS, EOS, padding), decoded by the LLM tokenizer, whitespace collapsed."""
        if self.llm_tokenizer is None:
            raise ValueError("the Q-Former's instruction cannot be recovered without the LLM tokenizer")
        keep = (input_ids != self.video_token_id) & (input_ids != self.feature_token_id)
        if prompt_mask is not None:
            keep &= prompt_mask.to(device=keep.device, dtype=torch.bool)
        ids, keep = input_ids.cpu(), keep.cpu()
        rows = [row[k].tolist() for row, k in zip(ids, keep, strict=True)]
        texts = self.llm_tokenizer.batch_decode(rows, skip_special_tokens=True)
        return [" ".join(t.split()) for t in texts]

    def encode_instructions(self, texts: list[str]) -> dict[str, Tensor]:
        """``qformer_input_ids``/``qformer_attention_mask`` of ``texts`` (the data pipeline may store these in
        ``features`` instead of letting the model recover the prompt)."""
        if self.qformer_tokenizer is None:
            raise ValueError("the model has no Q-Former tokenizer")
        enc = self.qformer_tokenizer(list(texts), padding="longest", truncation=True,
                                     max_length=self.qformer_max_length, return_tensors="pt")
        return {QFORMER_INPUT_IDS: enc["input_ids"], QFORMER_ATTENTION_MASK: enc["attention_mask"]}

    def preprocess(self, images) -> Tensor:
        """Pixel values (B, 3, S, S) of PIL images or HxWx3 uint8 arrays (one or a list), as the folder's
        image processor makes them."""
        return ImageTransform(self.image_processor).batch(images)

    # ---------------------------------------------------------------- what is trained
    def is_trainable_key(self, name: str) -> bool:
        """Whether ``name`` (a ``state_dict()`` key of this model) is a trained weight."""
        parts = TRAINABLE_PARTS + (("language_model",) if self.train_llm else ())
        rest = name.removeprefix("blip.")
        return rest != name and any(rest == p or rest.startswith(p + ".") for p in parts)

    def set_trainable(self) -> None:
        """Vision tower (and LLM, unless ``train_llm``) frozen; the Q-Former, query tokens and projection trained
        in fp32."""
        for name, param in self.named_parameters():
            param.requires_grad_(self.is_trainable_key(name))
        blip = self.blip
        blip.qformer.to(TRAINABLE_DTYPE)
        blip.language_projection.to(TRAINABLE_DTYPE)
        blip.query_tokens.data = blip.query_tokens.data.to(TRAINABLE_DTYPE)
        if self.train_llm:
            blip.language_model.to(TRAINABLE_DTYPE)

    def train(self, mode: bool = True):
        """The frozen vision tower stays in eval mode (as in EmoVIT); the LLM follows ``mode`` (LLaMA has no
        dropout, and activation checkpointing needs training mode)."""
        super().train(mode)
        if not any(p.requires_grad for p in self.blip.vision_model.parameters()):
            self.blip.vision_model.eval()
        return self

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """The trained weights under their ``state_dict()`` names (``blip.qformer.*``, ``blip.query_tokens``,
        ``blip.language_projection.*``; drop ``blip.`` for transformers' InstructBLIP names)."""
        return {k: v for k, v in self.state_dict().items() if self.is_trainable_key(k)}

    def load_trainable_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Load exactly the trained weights: a missing or an unexpected key is an error."""
        want = set(self.trainable_state_dict())
        missing, unexpected = sorted(want - set(state)), sorted(set(state) - want)
        if missing or unexpected:
            raise InstructBlipLoadError(
                f"trainable weights do not match the model: {len(missing)} missing (e.g. {missing[:1]}), "
                f"{len(unexpected)} unexpected (e.g. {unexpected[:1]})"
            )
        result = self.load_state_dict(dict(state), strict=False)
        assert not result.unexpected_keys and not (want & set(result.missing_keys))

    def save_pretrained(self, folder: str | Path, state_dict: Mapping[str, Tensor] | None = None) -> Path:
        """A folder :func:`load_instructblip` reads back: the InstructBLIP model (all of it, as it is now),
        ``preprocessor_config.json``, the LLM tokenizer and ``qformer_tokenizer/``.

        ``state_dict``: the weights to write, under this model's ``state_dict()`` names, instead of its own
        tensors (e.g. the full state gathered from the ranks of a sharded run); it must hold every weight."""
        folder = Path(folder)
        if state_dict is None:
            self.blip.save_pretrained(folder)
        else:
            names = [n for n, _ in self.named_parameters()]
            missing = sorted(set(names) - set(state_dict))
            if missing:
                raise ValueError(f"the state to save lacks {len(missing)} weights, e.g. {missing[0]}")
            own = self.blip.state_dict()
            blip_state = {k: state_dict.get("blip." + k, v) for k, v in own.items()}
            self.blip.save_pretrained(folder, state_dict={k: v.detach().contiguous() for k, v in blip_state.items()})
        self.image_processor.save_pretrained(folder)
        if self.qformer_tokenizer is not None:
            self.qformer_tokenizer.save_pretrained(folder / QFORMER_TOKENIZER_DIR)
        if self.llm_tokenizer is not None:
            self.llm_tokenizer.save_pretrained(folder)
        return folder


# ------------------------------------------------------------------------------------------------ images
def default_image_processor(image_size: int) -> BlipImageProcessor:
    """InstructBLIP's image processing at ``image_size``: bicubic resize to a square, CLIP mean and std."""
    return BlipImageProcessor(size={"height": image_size, "width": image_size}, image_mean=OPENAI_CLIP_MEAN,
                              image_std=OPENAI_CLIP_STD, do_convert_rgb=True)


def load_image_processor(folder: str | Path | None = None, image_size: int = 224) -> BlipImageProcessor:
    """The image processor of a model folder (its ``preprocessor_config.json``), else the default at ``image_size``."""
    if folder is not None and (Path(folder) / "preprocessor_config.json").is_file():
        return BlipImageProcessor.from_pretrained(str(folder), local_files_only=True)
    return default_image_processor(image_size)


class ImageTransform:
    """PIL image or HxWx3 uint8 array -> (3, S, S) float pixel values; picklable (for DataLoader workers)."""

    def __init__(self, processor: BlipImageProcessor | str | Path | None = None, image_size: int = 224):
        if processor is None or isinstance(processor, (str, Path)):
            processor = load_image_processor(processor, image_size)
        self.processor = processor

    @property
    def image_size(self) -> int:
        return int(self.processor.size["height"])

    def batch(self, images) -> Tensor:
        if isinstance(images, np.ndarray) and images.ndim == 3 or not isinstance(images, (list, tuple)):
            images = [images]
        images = [_rgb_array(im) for im in images]
        return self.processor(images=images, return_tensors="pt")["pixel_values"].float()

    def __call__(self, image) -> Tensor:
        return self.batch([image])[0]


def _rgb_array(image) -> np.ndarray:
    array = np.array(image.convert("RGB")) if hasattr(image, "convert") else np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected an RGB image or an HxWx3 uint8 array, got {array.dtype} {array.shape}")
    return array if array.flags.writeable else array.copy()


# ------------------------------------------------------------------------------------------------ building
def instructblip_config(
    llm_vocab_size: int,
    arch: Mapping[str, Any] | None = None,
    llm_arch: Mapping[str, Any] | None = None,
    qformer_vocab_size: int | None = None,
) -> InstructBlipConfig:
    """An InstructBlipConfig: ``arch`` holds transformers' ``vision_config``/``qformer_config`` fields and
    ``num_query_tokens`` (missing ones: transformers' defaults, which are Vicuna-7B InstructBLIP's); the LLM is a
    LLaMA of LLaMA-2-7B's shape overridden by ``llm_arch`` (:func:`~emotion_llama.model.llm.llm_config`)."""
    arch = dict(arch or {})
    unknown = set(arch) - {"vision_config", "qformer_config", "num_query_tokens"}
    if unknown:
        raise ValueError(f"unknown InstructBLIP arch keys {sorted(unknown)}; expected vision_config, "
                         "qformer_config, num_query_tokens")
    qformer = dict(arch.get("qformer_config") or {})
    if qformer_vocab_size is not None:
        qformer["vocab_size"] = qformer_vocab_size
    return InstructBlipConfig(
        vision_config=dict(arch.get("vision_config") or {}),
        qformer_config=qformer,
        text_config=llm_config(llm_vocab_size, **dict(llm_arch or {})),
        num_query_tokens=int(arch.get("num_query_tokens", 32)),
    )


def build_instructblip(
    config: InstructBlipConfig,
    llm_tokenizer: PreTrainedTokenizerBase | None,
    qformer_tokenizer: PreTrainedTokenizerBase | None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    seed: int | None = 0,
    qformer_max_length: int = QFORMER_MAX_LENGTH,
    train_llm: bool = False,
) -> InstructBlipEmotion:
    """A randomly initialised InstructBLIP of ``config`` on ``device`` (``'meta'``: shapes only; the
    tokenizers may then be None and the placeholders take the ids right after the LLM's vocabulary).

    The query tokens are drawn from N(0, 0.02) as InstructBLIP initialises them (transformers zeroes them,
    which leaves every query alike). ``seed`` seeds the initialisation without touching the global RNG.
    """
    device = torch.device(device) if device is not None else torch.get_default_device()
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        with torch.device(device):
            blip = InstructBlipForConditionalGeneration(config)
            if device.type != "meta":
                with torch.no_grad():
                    blip.query_tokens.normal_(0.0, config.qformer_config.initializer_range)
    blip.vision_model.to(dtype)
    blip.language_model.to(dtype)
    ids = {}
    if llm_tokenizer is None:
        ids = dict(video_token_id=config.text_config.vocab_size, feature_token_id=config.text_config.vocab_size + 1)
    return InstructBlipEmotion(blip, llm_tokenizer, qformer_tokenizer,
                               default_image_processor(config.vision_config.image_size),
                               qformer_max_length=qformer_max_length, train_llm=train_llm, **ids)


def build_tiny_qformer_tokenizer(extra_texts: Iterable[str] = (), max_words: int = 512) -> BertTokenizer:
    """A small uncased BERT WordPiece tokenizer (``[PAD]`` 0, ``[UNK]``, ``[CLS]``, ``[SEP]``, ``[MASK]``) whose
    vocabulary is every printable ASCII character, alone and as a ``##`` continuation (so no ASCII text gives
    ``[UNK]``), plus the ``max_words`` most frequent words of the project's prompts and label names (and
    ``extra_texts``). Deterministic: the same text always gives the same vocabulary."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    texts = [format_chat(USER_TEMPLATE), _EMOVIT_TEXT, *REASON_POOL, *DESCRIBE_POOL]
    texts += list(instruction_pool("emotion", MERR_LABELS)) + list(instruction_pool("emotion", DFEW_LABELS))
    texts += [t for t in extra_texts if t]
    normalizer, splitter = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    counts = Counter(word for text in texts for word, _ in splitter.pre_tokenize_str(normalizer.normalize_str(text)))
    alphabet = sorted(set(string.printable.lower()) - set(string.whitespace))
    vocab = {t: i for i, t in enumerate(specials)}
    for piece in alphabet + ["##" + ch for ch in alphabet]:
        vocab.setdefault(piece, len(vocab))
    for word, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max_words]:
        vocab.setdefault(word, len(vocab))
    return BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=512)


def build_tiny_instructblip(
    llm_tokenizer: PreTrainedTokenizerBase,
    seed: int = 0,
    arch: Mapping[str, Any] | None = None,
    llm_arch: Mapping[str, Any] | None = None,
    qformer_tokenizer: PreTrainedTokenizerBase | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    qformer_max_length: int = QFORMER_MAX_LENGTH,
    train_llm: bool = False,
) -> InstructBlipEmotion:
    """A random tiny InstructBLIP (``TINY_ARCH``/``TINY_LLM_ARCH`` unless given) whose LLM covers
    ``llm_tokenizer``'s vocabulary, with a tiny Q-Former tokenizer (built unless given)."""
    qformer_tokenizer = qformer_tokenizer or build_tiny_qformer_tokenizer()
    config = instructblip_config(base_vocab_size(llm_tokenizer), TINY_ARCH if arch is None else arch,
                                 TINY_LLM_ARCH if llm_arch is None else llm_arch, len(qformer_tokenizer))
    return build_instructblip(config, llm_tokenizer, qformer_tokenizer, dtype=dtype, device=device, seed=seed,
                              qformer_max_length=qformer_max_length, train_llm=train_llm)


def save_tiny_instructblip(
    folder: str | Path, llm_tokenizer: PreTrainedTokenizerBase, seed: int = 0, **kwargs
) -> Path:
    """Write a random tiny InstructBLIP model folder (see :func:`build_tiny_instructblip` for ``kwargs``)."""
    return build_tiny_instructblip(llm_tokenizer, seed=seed, **kwargs).save_pretrained(folder)


# ------------------------------------------------------------------------------------------------ loading
def load_qformer_tokenizer(folder: str | Path | None, path: str | Path | None = None,
                           config_key: str = "model.qformer_tokenizer_path") -> PreTrainedTokenizerBase:
    """The Q-Former tokenizer from ``path``, else from ``folder/qformer_tokenizer``."""
    where = Path(path) if path is not None else Path(folder) / QFORMER_TOKENIZER_DIR
    if not where.is_dir():
        raise WeightsNotFoundError("Q-Former tokenizer", where, config_key)
    return AutoTokenizer.from_pretrained(str(where), local_files_only=True)


def load_instructblip(
    folder: str | Path,
    llm_tokenizer: PreTrainedTokenizerBase,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    qformer_tokenizer_path: str | Path | None = None,
    qformer_max_length: int = QFORMER_MAX_LENGTH,
    train_llm: bool = False,
    config_key: str = "paths.instructblip",
) -> InstructBlipEmotion:
    """InstructBLIP from a local model folder, frozen parts in ``dtype``, read straight onto ``device``.

    Fails (one line naming the folder) when the folder is missing, is not an InstructBLIP folder, or lacks any
    weight (transformers would initialise it randomly and only warn). The LLM's embedding and output rows are
    extended, with the mean of the existing rows, when the project tokenizer's vocabulary (without the
    placeholders, which never reach the LLM) is larger than the LLM's.
    """
    folder = Path(folder)
    device = torch.device(device) if device is not None else torch.get_default_device()
    if not folder.is_dir():
        raise WeightsNotFoundError("InstructBLIP", folder, config_key)
    check_instructblip_folder(folder, config_key)
    qformer_tokenizer = load_qformer_tokenizer(folder, qformer_tokenizer_path)
    blip = read_instructblip(folder, dtype, device)
    if llm_tokenizer is not None:
        extend_vocabulary(blip, base_vocab_size(llm_tokenizer))
    model = InstructBlipEmotion(blip, llm_tokenizer, qformer_tokenizer, load_image_processor(folder),
                                qformer_max_length=qformer_max_length, train_llm=train_llm)
    return model.to(device)


def check_instructblip_folder(folder: Path, config_key: str = "paths.instructblip") -> None:
    """Refuse, in one line naming the folder, a folder whose ``config.json`` is not an InstructBLIP model's."""
    config_file = folder / "config.json"
    try:
        model_type = json.loads(config_file.read_text()).get("model_type") if config_file.is_file() else None
    except (ValueError, UnicodeDecodeError, AttributeError):
        model_type = "<unreadable config.json>"
    if model_type != "instructblip":
        raise InstructBlipLoadError(
            f"{folder} is not an InstructBLIP model folder (its config.json must have model_type 'instructblip', "
            f"found {model_type!r}): set {config_key} to a folder saved by InstructBlipForConditionalGeneration"
        )


def read_instructblip(folder: str | Path, dtype: torch.dtype = torch.float32,
                      device: str | torch.device | None = None) -> InstructBlipForConditionalGeneration:
    """``InstructBlipForConditionalGeneration.from_pretrained(folder)`` in ``dtype``, read straight onto ``device``,
    refusing (one line naming the folder) a folder that lacks any weight: transformers would initialise it
    randomly and only warn."""
    folder = Path(folder)
    device = torch.device(device) if device is not None else torch.get_default_device()
    placement = {} if device.type == "cpu" else {"device_map": device}
    blip, info = InstructBlipForConditionalGeneration.from_pretrained(
        str(folder), dtype=dtype, output_loading_info=True, **LOCAL_PLAIN, **placement
    )
    fresh = sorted(set(info.get("missing_keys", ())) | {str(k[0]) if isinstance(k, tuple) else str(k)
                                                         for k in info.get("mismatched_keys", ())})
    if fresh:
        raise InstructBlipLoadError(
            f"{folder}: {len(fresh)} weights are missing or of another shape (e.g. {fresh[0]}); "
            "the folder is incomplete or not an InstructBLIP checkpoint"
        )
    if info.get("unexpected_keys"):
        unexpected = sorted(info["unexpected_keys"])
        log.warning("%s: %d unexpected weights ignored, e.g. %s", folder, len(unexpected), unexpected[:3])
    return blip


def extend_vocabulary(blip: InstructBlipForConditionalGeneration, vocab_size: int) -> None:
    """Give the LLM at least ``vocab_size`` embedding and output rows, the new ones the mean of the old."""
    llm = blip.language_model
    old = llm.get_input_embeddings().weight.shape[0]
    if old >= vocab_size:
        return
    log.info("extending the LLM's vocabulary from %d to %d tokens", old, vocab_size)
    llm.resize_token_embeddings(vocab_size, mean_resizing=False)
    with torch.no_grad():
        for module in (llm.get_input_embeddings(), llm.get_output_embeddings()):
            if module is not None:
                module.weight[old:] = module.weight[:old].float().mean(0).to(module.weight.dtype)
    blip.config.text_config.vocab_size = vocab_size


def build_instructblip_backbone(
    llm_tokenizer: PreTrainedTokenizerBase | None,
    *,
    path: str | Path | None = None,
    arch: Mapping[str, Any] | None = None,
    llm_arch: Mapping[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    qformer_tokenizer_path: str | Path | None = None,
    qformer_max_length: int = QFORMER_MAX_LENGTH,
    train_llm: bool = False,
    weights_required: bool = False,
    seed: int = 0,
    config_key: str = "paths.instructblip",
) -> InstructBlipEmotion:
    """The backbone a model config asks for: loaded from ``path``; random from ``arch``/``llm_arch`` when path
    is None (the tiny preset; refused when ``weights_required``); shapes only on the meta device (``path`` is
    then ignored and the tokenizers may be missing)."""
    device = torch.device(device) if device is not None else torch.get_default_device()
    if device.type == "meta":
        qformer_tokenizer = None
        vocab = (base_vocab_size(llm_tokenizer) if llm_tokenizer is not None
                 else (llm_arch or {}).get("vocab_size", LLAMA2_7B["vocab_size"]))
        config = instructblip_config(vocab, arch, llm_arch)
        return build_instructblip(config, llm_tokenizer, qformer_tokenizer, dtype=dtype, device=device,
                                  qformer_max_length=qformer_max_length, train_llm=train_llm)
    if path is None:
        if weights_required:
            raise WeightsNotFoundError("InstructBLIP", "<unset>", config_key)
        if llm_tokenizer is None:
            raise ValueError("a random InstructBLIP needs the LLM tokenizer")
        qformer_tokenizer = (load_qformer_tokenizer(None, qformer_tokenizer_path)
                             if qformer_tokenizer_path is not None else None)
        return build_tiny_instructblip(llm_tokenizer, seed=seed, arch=arch, llm_arch=llm_arch,
                                       qformer_tokenizer=qformer_tokenizer, dtype=dtype, device=device,
                                       qformer_max_length=qformer_max_length, train_llm=train_llm)
    return load_instructblip(path, llm_tokenizer, dtype=dtype, device=device,
                             qformer_tokenizer_path=qformer_tokenizer_path, qformer_max_length=qformer_max_length,
                             train_llm=train_llm, config_key=config_key)
