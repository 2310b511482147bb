"""The Emotion-LLaMA fusion model: modality projectors + placeholder scatter + a LoRA-tuned causal LM.

Encoders run upstream (feature extraction or the inference pipeline); this model receives their outputs:
``features = {"eva": (B, 1+P, De), "mae": (B, Dm), "videomae": (B, Dv), "hubert": (B, Dh)}`` and token ids
in which every ``<VideoHere>`` id stands for one projected EVA token and every ``<FeatureHere>`` id for one
of the MAE, VideoMAE, HuBERT and EVA-CLS tokens, in that order.

Missing modalities: ``features["present"]`` (optional) is a (B, 4) bool mask over :data:`MODALITIES` (a
video: all present; an image: EVA, and MAE when a face was found; text alone: none). A modality's tokens
are then zero vectors that no position attends to (the attention mask is cleared at their placeholders),
so nothing of an absent modality's features reaches the logits, and its tensor may be left out of
``features`` altogether. Without the mask, or with every modality present, the computation is exactly the
one without this mechanism.

:class:`PlaceholderFusion` holds what every backbone shares (placeholder scatter, presence masking,
training loss, generation, closed-set scoring); a backbone supplies its multimodal tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from peft import PeftModel
from torch import Tensor, nn

from emotion_llama.model.llm import enable_checkpointing

# Utterance-level modalities, in their order inside <FeatureHere>; the EVA CLS token comes last.
FEATURE_MODALITIES: tuple[str, ...] = ("mae", "videomae", "hubert")
# The columns of the presence mask ``features[PRESENT]``.
MODALITIES: tuple[str, ...] = ("eva", "mae", "videomae", "hubert")
PRESENT = "present"
# Pixel values (B, 3, S, S) of a still image, for a backbone that encodes images itself (InstructBLIP); the image
# is the ``eva`` column of the presence mask.
IMAGE = "image"
EVA_MERGE = 4  # neighbouring EVA patch tokens concatenated into one LLM token (1024 -> 256 at 448 px)


def presence(features: Mapping[str, Tensor], batch: int, device: torch.device) -> Tensor:
    """The (B, 4) bool presence mask of a batch: ``features["present"]``, or all present without one."""
    mask = features.get(PRESENT)
    if mask is None:
        return torch.ones(batch, len(MODALITIES), dtype=torch.bool, device=device)
    if mask.shape != (batch, len(MODALITIES)):
        raise ValueError(f"features['present'] must be ({batch}, {len(MODALITIES)}), got {tuple(mask.shape)}")
    return mask.to(device=device, dtype=torch.bool)


def build_projector(kind: str, in_dim: int, out_dim: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    if kind == "mlp2x_gelu":
        return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
    raise ValueError(f"unknown projector type {kind!r}; expected 'linear' or 'mlp2x_gelu'")


class PlaceholderFusion(nn.Module):
    """A causal LM whose prompt holds placeholder ids where a backbone's multimodal tokens go.

    Subclasses set ``self.llm``, ``video_token_id``, ``feature_token_id`` and implement
    :meth:`multimodal_tokens` and :attr:`token_modalities`; every ``<VideoHere>`` placeholder must precede every
    ``<FeatureHere>`` one, and the tokens fill them in order.
    """

    # Whether the model encodes images itself (pixel values in ``features["image"]``) rather than reading cached
    # encoder features: the one backbone difference callers ask about.
    reads_pixels: bool = False
    # modality -> the array shape of its cached feature file; None for a model that reads pixels.
    feature_shapes: dict[str, tuple[int, ...]] | None = None

    llm: nn.Module
    video_token_id: int
    feature_token_id: int

    @property
    def num_video_tokens(self) -> int:
        raise NotImplementedError

    @property
    def num_feature_tokens(self) -> int:
        raise NotImplementedError

    @property
    def num_multimodal_tokens(self) -> int:
        return self.num_video_tokens + self.num_feature_tokens

    @property
    def max_positions(self) -> int:
        """The LLM's positions: a prompt and its answer must fit in them."""
        return self.llm.config.max_position_embeddings

    def enable_activation_checkpointing(self) -> None:
        """Recompute the LLM's decoder layers in the backward pass (the base model under LoRA's wrapper)."""
        enable_checkpointing(self.base_llm)

    @property
    def base_llm(self) -> nn.Module:
        """The transformers model under LoRA's wrapper (the LLM itself when it has none: an export)."""
        return self.llm.get_base_model() if isinstance(self.llm, PeftModel) else self.llm

    @property
    def token_modalities(self) -> list[int]:
        """For each multimodal token in prompt order, the index into :data:`MODALITIES` it comes from."""
        raise NotImplementedError

    def multimodal_tokens(self, input_ids: Tensor, features: Mapping[str, Tensor]) -> Tensor:
        """All multimodal tokens of each sequence in prompt order: (B, num_multimodal_tokens, H)."""
        raise NotImplementedError

    def _placeholders(self, input_ids: Tensor) -> tuple[Tensor, Tensor]:
        is_video = input_ids == self.video_token_id
        is_mm = is_video | (input_ids == self.feature_token_id)
        counts = is_mm.sum(dim=1)
        if not torch.all(counts == self.num_multimodal_tokens):
            raise ValueError(
                f"each sequence needs {self.num_multimodal_tokens} placeholder tokens, got {counts.tolist()}"
            )
        # One row-major scatter keeps the order only if every video placeholder precedes the features.
        video_seen = is_video.long().cumsum(1)
        if torch.any((is_mm & ~is_video) & (video_seen < self.num_video_tokens)):
            raise ValueError("<VideoHere> placeholders must come before <FeatureHere> placeholders")
        return is_video, is_mm

    def _token_presence(self, features: Mapping[str, Tensor], batch: int, device: torch.device) -> Tensor | None:
        """(B, M) bool: which multimodal tokens come from a present modality; None when all do."""
        if features.get(PRESENT) is None:
            return None
        present = presence(features, batch, device)
        if bool(present.all()):
            return None
        return present[:, torch.as_tensor(self.token_modalities, device=device)]

    def embed(self, input_ids: Tensor, features: Mapping[str, Tensor]) -> Tensor:
        """Token embeddings with the multimodal tokens scattered onto the placeholder positions (the tokens of
        absent modalities as zeros)."""
        _, is_mm = self._placeholders(input_ids)
        embeds = self.llm.get_input_embeddings()(input_ids.masked_fill(is_mm, 0))  # (B, L, H)
        mm = self.multimodal_tokens(input_ids, features).to(embeds.dtype)  # (B, M, H)
        keep = self._token_presence(features, input_ids.shape[0], input_ids.device)
        if keep is not None:
            mm = mm * keep.unsqueeze(-1).to(mm.dtype)
        return embeds.masked_scatter(is_mm.unsqueeze(-1), mm)

    def mask_absent(self, input_ids: Tensor, attention_mask: Tensor, features: Mapping[str, Tensor]) -> Tensor:
        """``attention_mask`` with the placeholders of absent modalities cleared (unchanged when all present)."""
        keep = self._token_presence(features, input_ids.shape[0], input_ids.device)
        if keep is None:
            return attention_mask
        _, is_mm = self._placeholders(input_ids)
        visible = torch.ones_like(is_mm).masked_scatter(is_mm, keep)
        return attention_mask * visible.to(attention_mask.dtype)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        features: Mapping[str, Tensor],
        labels: Tensor | None = None,
    ):
        embeds = self.embed(input_ids, features)
        attention_mask = self.mask_absent(input_ids, attention_mask, features)
        return self.llm(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=_positions(attention_mask),
            labels=labels,
            use_cache=False,
        )

    @torch.no_grad()
    def generate(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        features: Mapping[str, Tensor],
        max_new_tokens: int = 64,
        **kwargs,
    ) -> Tensor:
        """Greedy (by default) continuation of left-padded prompts; returns only the new token ids."""
        embeds = self.embed(input_ids, features)
        attention_mask = self.mask_absent(input_ids, attention_mask, features)
        kwargs.setdefault("do_sample", False)
        return self.llm.generate(
            inputs_embeds=embeds, attention_mask=attention_mask, max_new_tokens=max_new_tokens, **kwargs
        )

    @torch.no_grad()
    def score_labels(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        features: Mapping[str, Tensor],
        candidates: Sequence[Sequence[int]],
    ) -> Tensor:
        """Log-probability of each candidate continuation after each (left-padded) prompt: (B, K), fp32.

        The prompt is run once and only its last position's logits are computed (``logits_to_keep=1``).
        Each candidate is then run on the shared key/value cache, all clips together, and the cache is
        cropped back to the prompt afterwards: memory is one cache of the prompts, O(B*L), plus the
        logits of one candidate, O(B*C*V), whatever the number of candidates K (no K copies of the
        cache, no logits at prompt positions). A candidate's last token is only scored, never fed.
        """
        b = input_ids.shape[0]
        embeds = self.embed(input_ids, features)
        attention_mask = self.mask_absent(input_ids, attention_mask, features)
        out = self.llm(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=_positions(attention_mask),
            use_cache=True,
            logits_to_keep=1,
        )
        first_logp = F.log_softmax(out.logits[:, -1].float(), dim=-1)  # (B, V)
        cache = out.cache
        del out
        start = attention_mask.sum(1, keepdim=True)  # (B, 1) position of each clip's first answer token
        ones = attention_mask.new_ones(b, 1)
        scores = []
        for cand in candidates:
            tok = torch.as_tensor(list(cand), dtype=input_ids.dtype, device=input_ids.device)  # (C,)
            if tok.numel() == 0:
                raise ValueError("every candidate needs at least one token")
            score = first_logp[:, tok[0]]  # (B,)
            fed = tok[:-1].expand(b, -1)  # (B, C-1): token j predicts token j+1
            if fed.shape[1]:
                logits = self.llm(
                    input_ids=fed,
                    attention_mask=torch.cat([attention_mask, ones.expand(b, fed.shape[1])], dim=1),
                    position_ids=start + torch.arange(fed.shape[1], device=fed.device),
                    cache=cache,
                    use_cache=True,
                ).logits  # (B, C-1, V)
                cache.crop(-fed.shape[1])  # back to the prompt (a negative count removes that many tokens)
                logp = F.log_softmax(logits.float(), dim=-1)
                score = score + logp.gather(-1, tok[1:].expand(b, -1).unsqueeze(-1)).squeeze(-1).sum(1)
            scores.append(score)
        return torch.stack(scores, dim=1)  # (B, K)


class EmotionLLaMA(PlaceholderFusion):
    def __init__(
        self,
        llm: nn.Module,
        feature_dims: Mapping[str, int],
        eva_dim: int,
        eva_patches: int,
        video_token_id: int,
        feature_token_id: int,
        projector: str = "linear",
    ):
        super().__init__()
        if eva_patches % EVA_MERGE:
            raise ValueError(f"EVA patch count {eva_patches} is not a multiple of {EVA_MERGE}")
        self.llm = llm
        self.video_token_id = video_token_id
        self.feature_token_id = feature_token_id
        self.eva_patches = eva_patches
        # The array shape of each modality's cached feature file (what a FeatureStore checks on reading).
        self.feature_shapes = {"eva": (1 + eva_patches, eva_dim), **{m: (feature_dims[m],) for m in FEATURE_MODALITIES}}
        hidden = llm.get_input_embeddings().embedding_dim
        self.projectors = nn.ModuleDict(
            {
                "eva_patch": build_projector(projector, eva_dim * EVA_MERGE, hidden),
                "eva_cls": build_projector(projector, eva_dim, hidden),
                **{m: build_projector(projector, feature_dims[m], hidden) for m in FEATURE_MODALITIES},
            }
        )

    @property
    def num_video_tokens(self) -> int:
        return self.eva_patches // EVA_MERGE

    @property
    def num_feature_tokens(self) -> int:
        return len(FEATURE_MODALITIES) + 1

    @property
    def token_modalities(self) -> list[int]:
        eva = MODALITIES.index("eva")
        return [eva] * self.num_video_tokens + [MODALITIES.index(m) for m in FEATURE_MODALITIES] + [eva]

    def multimodal_tokens(self, input_ids: Tensor, features: Mapping[str, Tensor]) -> Tensor:
        return self.project(features, batch=input_ids.shape[0])

    def project(self, features: Mapping[str, Tensor], batch: int | None = None) -> Tensor:
        """All modality tokens of each clip in prompt order: (B, num_multimodal_tokens, H). A modality left
        out of ``features`` (allowed only when the presence mask marks it absent) gives zero tokens."""
        param = next(self.projectors.parameters())
        dtype, device = param.dtype, param.device
        hidden = self.llm.get_input_embeddings().embedding_dim
        if batch is None:
            batch = next(t.shape[0] for k, t in features.items() if k != PRESENT)
        present = presence(features, batch, device)
        for i, m in enumerate(MODALITIES):
            if m not in features and bool(present[:, i].any()):
                raise ValueError(f"no {m} features for a batch in which that modality is present")
        eva = features.get("eva")  # (B, 1+P, De)
        if eva is None:
            video = torch.zeros(batch, self.num_video_tokens, hidden, dtype=dtype, device=device)
            cls = torch.zeros(batch, hidden, dtype=dtype, device=device)
        else:
            b, n, d = eva.shape
            if n - 1 != self.eva_patches:
                raise ValueError(f"expected {self.eva_patches} EVA patch tokens, got {n - 1}")
            # Consecutive raster-order patches are merged, as the original reshape does.
            patches = eva[:, 1:].reshape(b, self.num_video_tokens, EVA_MERGE * d)  # (B, P/4, 4*De)
            video = self.projectors["eva_patch"](patches.to(dtype))  # (B, P/4, H)
            cls = self.projectors["eva_cls"](eva[:, 0].to(dtype))
        feats = [self.projectors[m](features[m].to(dtype)) if m in features
                 else torch.zeros(batch, hidden, dtype=dtype, device=device) for m in FEATURE_MODALITIES]
        feats.append(cls)
        return torch.cat([video, torch.stack(feats, dim=1)], dim=1)  # (B, P/4 + 4, H)


def _positions(attention_mask: Tensor) -> Tensor:
    """Position ids that start at 0 on each sequence's first real token (left or right padding)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)

