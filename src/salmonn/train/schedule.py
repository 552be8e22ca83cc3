"""The reference optimiser: AdamW with two parameter groups and a per-iteration warmup + cosine learning rate.

Faithful to the reference trainer (LAVIS `LinearWarmupCosineLRScheduler`, `get_optimizer`):
- weight decay on trainable tensors with ndim >= 2 whose name contains none of "bias", "ln", "bn"; none on the rest;
- iteration t of epoch e (T = e * iters_per_epoch + t): while T < warmup_steps,
  lr = min(init_lr, warmup_start_lr + (init_lr - warmup_start_lr) * t / max(warmup_steps, 1)) -- note the
  reference uses the within-epoch t here, which only matters when warmup is longer than an epoch;
  afterwards lr = (init_lr - min_lr) * 0.5 * (1 + cos(pi * T / (max_epoch * iters_per_epoch))) + min_lr.
- The reference sets the rate before every iteration and steps the optimizer every accum_grad_iters iterations,
  so an optimizer step uses the rate of its last iteration.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch

NO_DECAY_MARKERS = ("bias", "ln", "bn")


def lr_at(iteration: int, iters_per_epoch: int, max_epoch: int, init_lr: float, min_lr: float,
          warmup_steps: int, warmup_start_lr: float) -> float:
    """Learning rate of global iteration `iteration` (0-based), exactly as the reference scheduler sets it."""
    start = warmup_start_lr if warmup_start_lr >= 0 else init_lr
    if iteration < warmup_steps:
        within_epoch = iteration % iters_per_epoch
        return min(init_lr, start + (init_lr - start) * within_epoch / max(warmup_steps, 1))
    total = max_epoch * iters_per_epoch
    return (init_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * iteration / total)) + min_lr


class WarmupCosine:
    """Stateless schedule over optimizer steps (its state is the step number the trainer saves)."""

    def __init__(self, optims, iters_per_epoch: int, accum_grad_iters: int = 1):
        self.optims, self.iters_per_epoch, self.accum = optims, iters_per_epoch, accum_grad_iters

    @property
    def total_steps(self) -> int:
        return self.optims.max_epoch * self.iters_per_epoch // self.accum

    def lr(self, step: int) -> float:
        """Rate of optimizer step `step` (0-based): the rate of its last iteration."""
        o = self.optims
        return lr_at(step * self.accum + self.accum - 1, self.iters_per_epoch, o.max_epoch, o.init_lr, o.min_lr,
                     o.warmup_steps, o.warmup_start_lr)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        lr = self.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr


def decays(name: str, param: torch.Tensor) -> bool:
    """The reference's rule: weight decay on >=2-D tensors whose name has no bias/ln/bn."""
    return param.ndim >= 2 and not any(m in name for m in NO_DECAY_MARKERS)


def build_optimizer(named_params: Iterable[tuple[str, torch.Tensor]], optims) -> torch.optim.AdamW:
    """AdamW over trainable (reference name, parameter) pairs in the reference's two groups: decay, no decay."""
    decay, no_decay = [], []
    for name, param in named_params:
        if param.requires_grad:
            (decay if decays(name, param) else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": float(optims.weight_decay)},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=float(optims.init_lr), betas=(optims.beta1, optims.beta2), eps=optims.eps,
                             weight_decay=float(optims.weight_decay))
