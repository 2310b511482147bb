"""An independent reference of what the original Emotion-LLaMA release computes, for parity tests.

Written from ``shared/REFERENCE.md`` ("Token-exact prompts and inputs of the release") only; it never imports
the project's prompt, sequence or tokenizer code, so a test that compares the two catches a drift on either
side. Everything here uses the real LLaMA-2 SentencePiece model (``sentencepiece.SentencePieceProcessor``)
and plain torch.

What the release ran (MiniGPT-v2 base, transformers 4.35 with the slow ``LlamaTokenizer``, peft 0.2):

* Training (``prompt_wrap``): the example text is wrapped as ``"[INST] {} [/INST]"``, split at
  ``<VideoHere>`` and at ``<FeatureHere>``; each text segment is tokenized on its own with
  ``add_special_tokens=False`` (so each starts with SentencePiece's dummy prefix ``▁``); one BOS is put in
  front of the whole sequence; the answer ``f"{answer}</s>"`` is tokenized on its own and follows the ``]`` of
  ``[/INST]`` directly.
* Evaluation (``get_context_emb``): roles ``("<s>[INST] ", " [/INST]")``, the prompt is split at
  ``<VideoHere>`` only, the first segment is tokenized WITH special tokens (the tokenizer's BOS), and all the
  multimodal tokens go where ``<VideoHere>`` was; ``<FeatureHere>`` stays in the text as characters.

The slow tokenizer of transformers 4.35 in its legacy mode (the behaviour the shared tokenizer README names
as the release's: ``LlamaTokenizer(vocab_file=..., legacy=True)``) first splits the text at its special
tokens (``<unk>``, ``<s>``, ``</s>``: they become ids 0, 1, 2, with no stripping of the spaces around them)
and encodes each remaining non-empty chunk with ``sp_model.encode``, i.e. WITH the dummy prefix.
``SentencePieceProcessor.encode`` on its own does not know special tokens: ``sp.encode("<s>")`` gives the
ordinary pieces ``▁<``, ``s``, ``>`` (529, 29879, 29958), never id 1. :func:`slow_encode` models the slow
tokenizer; on text without those three strings it is exactly ``sp.encode``. (Checked once against
transformers 4.35.2's slow ``LlamaTokenizer`` on the real ``tokenizer.model``; the test module keeps the
ids it gave as literals.)
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

BOS_ID, EOS_ID, UNK_ID = 1, 2, 0
SPECIAL_PIECES = {"<unk>": UNK_ID, "<s>": BOS_ID, "</s>": EOS_ID}
VIDEO = "<VideoHere>"
FEATURE = "<FeatureHere>"

RELEASE_MERR_ORDER: tuple[str, ...] = (
    "happy", "sad", "neutral", "angry", "worried", "surprise", "fear", "contempt", "doubt",
)
RELEASE_MER_ORDER: tuple[str, ...] = RELEASE_MERR_ORDER[:6]
ANSWER_MAX_WORDS = 50

# MiniGPT-v2's names of the trained tensors in the release's .pth (peft 0.2 LoRA names have no ".default.").
LORA_PREFIX = "llama_model.base_model.model."
PROJ_EVA, PROJ_CLS = "llama_proj", "cls_tk_llama_proj"
PROJ_FEATS = ("feats_llama_proj1", "feats_llama_proj2", "feats_llama_proj3")  # face MAE, VideoMAE, HuBERT
FEATURE_KEYS = ("mae", "videomae", "hubert")
EVA_MERGE = 4


# ---------------------------------------------------------------------------------------------- text
def release_instruction(labels: Sequence[str] = RELEASE_MERR_ORDER) -> str:
    return "Please determine which emotion label in the video represents: " + ", ".join(labels) + "."


def release_answer_text(text: str, max_words: int = ANSWER_MAX_WORDS) -> str:
    """The ``blip_caption`` text processor the release applies to every training answer.

    REFERENCE.md: lowercase; each of ``.!"()*#:;~`` -> a space; runs of spaces collapsed; stripped; first 50
    words. The collapse is written as the processor's ``\\s{2,}`` (a run of two or more whitespace
    characters becomes one space), which is the same on spaces; a lone tab or newline is left alone.
    """
    text = re.sub(r"([.!\"()*#:;~])", " ", text.lower())
    text = re.sub(r"\s{2,}", " ", text)
    text = text.rstrip("\n").strip(" ")
    words = text.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else text


def release_example_text(sentence: str, task: str, instruction: str) -> str:
    """The dataset's text of one example (before the chat wrap): note ``{sentence}.`` and the double space."""
    character_line = f"The person in video says: {sentence}. "
    return f"<video>{VIDEO}</video> <feature>{FEATURE}</feature> {character_line} [{task}] {instruction} "


def release_train_text(sentence: str, task: str, instruction: str) -> str:
    return f"[INST] {release_example_text(sentence, task, instruction)} [/INST]"


def release_train_segments(sentence: str, task: str, instruction: str) -> list[str]:
    """The three text segments of the training layout: before the video run, between the runs, after."""
    head, rest = _split_once(release_train_text(sentence, task, instruction), VIDEO)
    middle, tail = _split_once(rest, FEATURE)
    return [head, middle, tail]


def release_eval_text(sentence: str, task: str, instruction: str) -> str:
    """The evaluation conversation: roles ``("<s>[INST] ", " [/INST]")`` around the same example text."""
    return "<s>[INST] " + release_example_text(sentence, task, instruction) + " [/INST]"


def release_eval_segments(sentence: str, task: str, instruction: str) -> list[str]:
    return list(_split_once(release_eval_text(sentence, task, instruction), VIDEO))


def _split_once(text: str, marker: str) -> tuple[str, str]:
    parts = text.split(marker)
    if len(parts) != 2:
        raise ValueError(f"expected exactly one {marker} in {text!r}")
    return parts[0], parts[1]


# ----------------------------------------------------------------------------------------------- ids
def slow_encode(sp, text: str) -> list[int]:
    """transformers 4.35's slow ``LlamaTokenizer`` (legacy) with ``add_special_tokens=False``.

    The special-token strings are split out of the text as their ids; every other non-empty chunk is
    ``sp.encode``-d on its own (dummy prefix included); the spaces around a special token are kept.
    """
    ids: list[int] = []
    for chunk in re.split(r"(<unk>|<s>|</s>)", text):
        if not chunk:
            continue
        ids.extend([SPECIAL_PIECES[chunk]] if chunk in SPECIAL_PIECES else sp.encode(chunk))
    return ids


def release_answer_ids(sp, answer: str) -> list[int]:
    """``f"{answer}</s>"`` tokenized on its own: the answer's pieces then EOS (id 2)."""
    return slow_encode(sp, answer + "</s>")


def release_train_ids(
    sp,
    sentence: str,
    task: str,
    instruction: str,
    n_video: int,
    n_feature: int,
    video_id: int,
    feature_id: int,
    answer: str | None = None,
) -> list[int]:
    """BOS + seg0 + video run + seg1 + feature run + seg2 (+ the answer's ids and EOS, exactly as given)."""
    seg0, seg1, seg2 = (slow_encode(sp, s) for s in release_train_segments(sentence, task, instruction))
    ids = [BOS_ID, *seg0, *[video_id] * n_video, *seg1, *[feature_id] * n_feature, *seg2]
    if answer is not None:
        ids += release_answer_ids(sp, answer)
    return ids


def release_eval_ids(
    sp,
    sentence: str,
    task: str,
    instruction: str,
    n_video: int,
    n_feature: int,
    video_id: int,
    feature_id: int,
) -> list[int]:
    """The evaluation layout's ids.

    BOS handling: the first segment, ``"<s>[INST] <video>"``, is tokenized with ``add_special_tokens=True``:
    the tokenizer adds its BOS (1) and the slow 4.35 tokenizer also splits the LITERAL ``<s>`` out of the text
    as the special token (1), so the sequence opens with [1, 1] and then the legacy encoding of
    ``"[INST] <video>"`` (``▁[`` 518 ...). (``sp.encode`` alone would have given 529, 29879, 29958 for the
    literal; a non-legacy 4.35 tokenizer would have given ``[`` 29961 instead of ``▁[`` 518 after it.)
    All the multimodal positions follow at ``<VideoHere>``: the ``n_video`` EVA positions then the
    ``n_feature`` MAE/VideoMAE/HuBERT/CLS positions (written with ``video_id`` and ``feature_id`` so that the
    kinds stay visible; the release inserts the 260 embeddings there as one block, in this order). The second
    segment keeps ``<FeatureHere>`` as ordinary characters.
    """
    seg0, seg1 = release_eval_segments(sentence, task, instruction)
    return [BOS_ID, *slow_encode(sp, seg0), *[video_id] * n_video, *[feature_id] * n_feature, *slow_encode(sp, seg1)]


# ------------------------------------------------------------------------------------------ tensors
def placeholder_runs(ids: Sequence[int], video_id: int, feature_id: int) -> list[tuple[str, list[int]]]:
    """The id list cut into ("text", ids) and ("video"/"feature", ids) runs, in order."""
    runs: list[tuple[str, list[int]]] = []
    for i in ids:
        kind = "video" if i == video_id else "feature" if i == feature_id else "text"
        if runs and runs[-1][0] == kind:
            runs[-1][1].append(i)
        else:
            runs.append((kind, [i]))
    return runs


def release_embeds(llm, ids: Sequence[int], mm_embeds: Tensor, video_id: int, feature_id: int) -> Tensor:
    """(1, L, H): text runs through the LLM's embedding table, placeholder runs from ``mm_embeds`` (1, M, H).

    The multimodal tokens are consumed in order (the EVA tokens at the video run, then MAE, VideoMAE,
    HuBERT, CLS at the feature run); every video placeholder must come before every feature placeholder and
    the placeholders must number exactly M.
    """
    if mm_embeds.dim() != 3 or mm_embeds.shape[0] != 1:
        raise ValueError(f"mm_embeds must be (1, M, H), got {tuple(mm_embeds.shape)}")
    table = llm.get_input_embeddings()
    device = table.weight.device
    pieces, used, feature_seen = [], 0, False
    for kind, run in placeholder_runs(ids, video_id, feature_id):
        if kind == "text":
            pieces.append(table(torch.tensor([run], device=device)))
            continue
        if kind == "video" and feature_seen:
            raise ValueError("a video placeholder follows a feature placeholder")
        feature_seen |= kind == "feature"
        pieces.append(mm_embeds[:, used : used + len(run)].to(table.weight.dtype))
        used += len(run)
    if used != mm_embeds.shape[1]:
        raise ValueError(f"{used} placeholders for {mm_embeds.shape[1]} multimodal tokens")
    return torch.cat(pieces, dim=1)


@torch.no_grad()
def release_logits(llm, embeds: Tensor) -> Tensor:
    """(1, L, V) logits of one plain forward (positions 0..L-1, no mask, no cache)."""
    return llm(inputs_embeds=embeds, use_cache=False).logits.float()


@torch.no_grad()
def release_score(llm, prompt_embeds: Tensor, answer_ids: Sequence[int]) -> float:
    """Sum of log p(answer token | prompt, previous answer tokens), by one full forward of prompt + answer."""
    table = llm.get_input_embeddings()
    answer = torch.tensor([list(answer_ids)], device=table.weight.device)
    embeds = torch.cat([prompt_embeds, table(answer).to(prompt_embeds.dtype)], dim=1)
    logits = release_logits(llm, embeds)[0]  # (P + A, V)
    p = prompt_embeds.shape[1]
    logp = F.log_softmax(logits[p - 1 : p - 1 + answer.shape[1]], dim=-1)  # position t predicts token t+1
    return float(logp.gather(1, answer[0].unsqueeze(1)).sum())


def release_label_scores(sp, llm, prompt_embeds: Tensor, labels: Sequence[str]) -> list[float]:
    """Closed-set scores: each label scored as ``sp.encode(label) + [EOS]`` after the prompt."""
    return [release_score(llm, prompt_embeds, release_answer_ids(sp, label)) for label in labels]


def ranking(scores: Sequence[float]) -> list[int]:
    """Indices from best to worst (stable on ties)."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


# ----------------------------------------------------------------------------- release checkpoints
@torch.no_grad()
def release_project(state: Mapping[str, Tensor], features: Mapping[str, Tensor]) -> Tensor:
    """(B, P/4 + 4, H): the release's projections with the checkpoint's raw tensors (x @ W.T + b).

    EVA (B, 1+P, De): token 0 is CLS; the P patch tokens are merged four consecutive ones at a time
    (a view to (B, P/4, 4*De)) for ``llama_proj``; order EVA patches, MAE, VideoMAE, HuBERT, CLS.
    """

    def linear(name: str, x: Tensor) -> Tensor:
        return x.float() @ state[f"{name}.weight"].float().T + state[f"{name}.bias"].float()

    eva = features["eva"].float()
    b, n, d = eva.shape
    patches = eva[:, 1:].reshape(b, (n - 1) // EVA_MERGE, EVA_MERGE * d)
    video = linear(PROJ_EVA, patches)
    feats = [linear(proj, features[key].float()) for proj, key in zip(PROJ_FEATS, FEATURE_KEYS, strict=True)]
    cls = linear(PROJ_CLS, eva[:, 0])
    return torch.cat([video, torch.stack([*feats, cls], dim=1)], dim=1)


@torch.no_grad()
def release_merge_lora(base_llm, state: Mapping[str, Tensor], r: int, alpha: float):
    """A copy of ``base_llm`` (a plain LlamaForCausalLM) with every LoRA pair of ``state`` merged:
    W + B @ A * alpha / r (peft 0.2's scaling). Returns (model, number of merged pairs)."""
    llm = copy.deepcopy(base_llm)
    params = dict(llm.named_parameters())
    merged = 0
    for key, a in state.items():
        if not (key.startswith(LORA_PREFIX) and key.endswith(".lora_A.weight")):
            continue
        stem = key[len(LORA_PREFIX) : -len(".lora_A.weight")]
        b = state[f"{LORA_PREFIX}{stem}.lora_B.weight"]
        params[f"{stem}.weight"].add_((b.float() @ a.float()) * (alpha / r))
        merged += 1
    return llm, merged
