"""Validation's listening check: scoring each clip with another clip's audio."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from salmonn.train.trainer import TrainStep


@torch.no_grad()
def test_rolled_tokens_score_each_target_with_the_next_clips_audio(tiny_model, expected, fixture_clips):
    first, second = tiny_model.encode_audio(fixture_clips)
    tokens = [first, 10 * torch.randn_like(second)]  # the random fixture barely listens: make the clips differ
    step = TrainStep(tiny_model)
    prompts, texts = [expected["train_prompt"]] * 2, expected["texts"]
    batch = {"prompts": prompts, "targets": texts}
    own, count, _ = step.per_sample(batch, tokens)
    other, other_count, _ = step.per_sample(batch, tokens[1:] + tokens[:1])
    _, logits, labels = tiny_model([tokens[1], tokens[0]], prompts, texts)
    swapped = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], reduction="none").sum(-1)
    assert torch.equal(count, other_count)
    assert torch.allclose(other, swapped, atol=1e-4)
    assert (own - other).abs().min() > 1e-2
