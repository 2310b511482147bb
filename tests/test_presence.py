"""The per-clip modality presence mask: absent modalities leak nothing; all present changes nothing."""

import pytest
import torch
import torch.nn.functional as F
from test_model import LABELS, SHAPES, batch, features, model, tiny_cfg, tokenizer  # noqa: F401

from emotion_llama.model.fusion import MODALITIES, PRESENT, _positions
from emotion_llama.model.sequences import pad_batch

IMAGE = torch.tensor([True, True, False, False])  # EVA and a face, no motion, no audio
TEXT_ONLY = torch.zeros(4, dtype=torch.bool)


def with_presence(feats, *rows):
    return {**feats, PRESENT: torch.stack(rows)}


def reference_logits(fusion, ids, mask, feats):
    """Logits of the fusion computation written out without any presence handling: projected tokens
    scattered onto the placeholders, the LLM run on the result."""
    is_mm = (ids == fusion.video_token_id) | (ids == fusion.feature_token_id)
    embeds = fusion.llm.get_input_embeddings()(ids.masked_fill(is_mm, 0))
    embeds = embeds.masked_scatter(is_mm.unsqueeze(-1), fusion.project(feats).to(embeds.dtype))
    return fusion.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=_positions(mask)).logits


@torch.no_grad()
def test_all_present_is_bit_identical_to_the_plain_computation(tokenizer, model):  # noqa: F811
    ids, mask, labels = batch(tokenizer, model, ["happy", "sad"])
    feats = features(2)
    plain = reference_logits(model, ids, mask, feats)
    for f in (feats, with_presence(feats, torch.ones(4, dtype=torch.bool), torch.ones(4, dtype=torch.bool))):
        out = model(ids, mask, f, labels=labels)
        assert torch.equal(out.logits, plain)
    prompt_ids, prompt_mask, _ = batch(tokenizer, model, [""], padding_side="left")
    cands = [[5, 6], [7]]
    one = features(1)
    assert torch.equal(model.score_labels(prompt_ids, prompt_mask, one, cands),
                       model.score_labels(prompt_ids, prompt_mask, with_presence(one, torch.ones(4).bool()), cands))


@torch.no_grad()
@pytest.mark.parametrize("absent", MODALITIES)
def test_features_of_an_absent_modality_do_not_reach_the_logits(tokenizer, model, absent):  # noqa: F811
    ids, mask, labels = batch(tokenizer, model, ["happy"])
    present = torch.tensor([m != absent for m in MODALITIES])
    feats = with_presence(features(1, seed=0), present)
    changed = dict(feats)
    changed[absent] = features(1, seed=1)[absent] * 100
    left_out = {k: v for k, v in feats.items() if k != absent}
    base = model(ids, mask, feats, labels=labels)
    for other in (changed, left_out):
        out = model(ids, mask, other, labels=labels)
        assert torch.equal(out.logits, base.logits) and torch.equal(out.loss, base.loss)
    # ...while the same change with the modality present does move them.
    moved = model(ids, mask, {**changed, PRESENT: torch.ones(1, 4, dtype=torch.bool)}, labels=labels)
    assert not torch.allclose(moved.logits, base.logits)


@torch.no_grad()
def test_a_clip_scores_the_same_alone_and_in_a_mixed_left_padded_batch(tokenizer, model):  # noqa: F811
    """Masked placeholders in the middle of left-padded prompts: each clip's scores do not depend on its
    neighbours, and an image clip without motion/audio equals itself scored alone."""
    video, image, text = features(1, 0), features(1, 1), features(1, 2)
    rows = [torch.ones(4, dtype=torch.bool), IMAGE, TEXT_ONLY]
    prompt_ids, prompt_mask, _ = batch(tokenizer, model, ["", "", ""], padding_side="left")
    # Different subtitles make the prompts different lengths so that padding is exercised.
    from emotion_llama.model.prompts import PromptParts, emotion_instruction
    from emotion_llama.model.sequences import encode_prompt

    seqs = [encode_prompt(tokenizer, PromptParts(s, "emotion", emotion_instruction(LABELS)),
                          model.num_video_tokens, model.num_feature_tokens)
            for s in ("a much longer subtitle than the others", "short", "")]
    ids, mask = pad_batch(seqs, tokenizer.pad_token_id, "left")
    feats = {m: torch.cat([video[m], image[m], text[m]]) for m in video}
    cands = [[5, 6, 7], [8]]
    together = model.score_labels(ids, mask, with_presence(feats, *rows), cands)
    for i, row in enumerate(rows):
        alone_ids, alone_mask = pad_batch([seqs[i]], tokenizer.pad_token_id, "left")
        alone = model.score_labels(alone_ids, alone_mask, with_presence({m: feats[m][i:i + 1] for m in feats}, row),
                                   cands)
        torch.testing.assert_close(together[i], alone[0], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_scoring_matches_the_loss_with_absent_modalities(tokenizer, model):  # noqa: F811
    """Closed-set scoring (cached prompt + candidates) agrees with the teacher-forced training loss when
    placeholders are masked: the positions after the masked tokens line up in both paths."""
    from emotion_llama.model.sequences import encode_answer

    feats = with_presence(features(1), IMAGE)
    prompt_ids, prompt_mask, _ = batch(tokenizer, model, [""], padding_side="left")
    answer = encode_answer(tokenizer, "happy")
    score = model.score_labels(prompt_ids, prompt_mask, feats, [answer])[0, 0]
    ids = torch.cat([prompt_ids, torch.tensor([answer])], dim=1)
    mask = torch.ones_like(ids)
    labels = torch.full_like(ids, -100)
    labels[0, -len(answer):] = torch.tensor(answer)
    out = model(ids, mask, feats, labels=labels)
    n = len(answer)
    logp = F.log_softmax(out.logits[0, -n - 1:-1].float(), -1).gather(-1, ids[0, -n:, None]).squeeze(-1)
    torch.testing.assert_close(score, logp.sum(), atol=1e-5, rtol=1e-5)


def test_a_present_modality_without_features_is_refused(tokenizer, model):  # noqa: F811
    ids, mask, _ = batch(tokenizer, model, ["happy"])
    feats = {k: v for k, v in features(1).items() if k != "hubert"}
    with pytest.raises(ValueError, match="no hubert features"):
        model(ids, mask, feats)
    with pytest.raises(ValueError, match="present"):
        model(ids, mask, {**features(1), PRESENT: torch.ones(1, 3, dtype=torch.bool)})
