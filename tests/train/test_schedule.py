"""The reference optimiser: two AdamW groups and the per-iteration warmup + cosine rate."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from salmonn.train.config import OptimConfig
from salmonn.train.schedule import WarmupCosine, build_optimizer, lr_at


def test_warmup_then_cosine_as_the_reference():
    args = dict(iters_per_epoch=3000, max_epoch=30, init_lr=3e-5, min_lr=1e-5, warmup_steps=3000,
                warmup_start_lr=1e-6)
    assert lr_at(0, **args) == pytest.approx(1e-6)
    assert lr_at(1500, **args) == pytest.approx(1e-6 + (3e-5 - 1e-6) * 0.5)
    assert lr_at(2999, **args) == pytest.approx(1e-6 + (3e-5 - 1e-6) * 2999 / 3000)
    cosine = lambda t: (3e-5 - 1e-5) * 0.5 * (1 + math.cos(math.pi * t / 90000)) + 1e-5  # noqa: E731
    for t in (3000, 45000, 89999):
        assert lr_at(t, **args) == pytest.approx(cosine(t), rel=1e-12)
    # the reference's warmup counts iterations within the epoch (visible when warmup outlasts an epoch)
    assert lr_at(1200, **{**args, "iters_per_epoch": 1000}) == pytest.approx(1e-6 + (3e-5 - 1e-6) * 200 / 3000)


def test_an_optimizer_step_takes_the_rate_of_its_last_iteration():
    o = OptimConfig(max_epoch=2, warmup_steps=4, warmup_start_lr=0.0, init_lr=1.0, min_lr=0.0)
    schedule = WarmupCosine(o, iters_per_epoch=8, accum_grad_iters=2)
    assert schedule.total_steps == 8
    assert [schedule.lr(s) for s in (0, 1)] == pytest.approx([0.25, 0.75])
    assert schedule.lr(7) == pytest.approx(0.5 * (1 + math.cos(math.pi * 15 / 16)))


def test_weight_decay_groups_follow_the_reference_rule():
    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 4)  # weight decays, bias does not
            self.ln_speech = nn.LayerNorm(4)  # 1-D: no decay
            self.kiln = nn.Parameter(torch.zeros(4, 4))  # 2-D but "ln" in the name: no decay (reference)
            self.frozen = nn.Parameter(torch.zeros(4, 4), requires_grad=False)

    toy = Toy()
    opt = build_optimizer(toy.named_parameters(), OptimConfig())
    decay, no_decay = opt.param_groups
    assert [p is toy.proj.weight for p in decay["params"]] == [True]
    assert {id(p) for p in no_decay["params"]} == {id(toy.proj.bias), id(toy.ln_speech.weight), id(toy.ln_speech.bias),
                                         id(toy.kiln)}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert decay["betas"] == (0.9, 0.999)
