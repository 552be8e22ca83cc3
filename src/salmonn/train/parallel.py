"""Several processes: DDP around the training step, or FSDP2 over the LLM's decoder layers with the replicated
trainable tensors averaged by hand; the global gradient norm over both kinds."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from ..errors import ConfigError
from . import dist
from .dist import DistEnv


def wrap_ddp(step_module: nn.Module, env: DistEnv) -> nn.Module:
    """DDP over the trainable parameters only: the frozen weights come from the same files on every rank, so
    DDP need not broadcast them (GBs for a 13B LLM)."""
    from torch.nn.parallel import DistributedDataParallel as DDP
    ids = [env.device.index] if env.device.type == "cuda" else None
    frozen = [n for n, p in step_module.named_parameters() if not p.requires_grad]
    DDP._set_params_and_buffers_to_ignore_for_model(step_module, frozen + [n for n, _ in step_module.named_buffers()])
    return DDP(step_module, device_ids=ids, broadcast_buffers=False)


@dataclasses.dataclass
class ShardedLLM:
    layers: list[nn.Module]  # the FSDP-sharded decoder layers
    replicated: list[torch.Tensor]  # trainable tensors outside them: averaged after backward (average_grads)


def shard_llm(model: nn.Module, env: DistEnv) -> ShardedLLM:
    """FSDP2: shard every decoder layer of the LLM; the rest (encoders, Q-Former, embeddings, head) stays
    replicated on env.device."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    base = model.causal_lm
    layers = getattr(getattr(base, "model", base), "layers", None)
    if layers is None:
        raise ConfigError("run.parallel=fsdp: cannot find the LLM's decoder layers (model.layers)")
    _move_all_but(model, {id(m) for layer in layers for m in layer.modules()}, env.device)
    mesh = init_device_mesh(env.device.type, (env.world,))
    dtypes = {p.dtype for p in layers.parameters()}
    policy = MixedPrecisionPolicy(param_dtype=min(dtypes, key=lambda d: torch.finfo(d).bits),
                                  reduce_dtype=torch.float32) if len(dtypes) > 1 else MixedPrecisionPolicy()
    for layer in layers:
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    replicated = [p for p in model.parameters() if p.requires_grad and type(p).__name__ != "DTensor"]
    return ShardedLLM(list(layers), replicated)


def _move_all_but(model: nn.Module, skip: set[int], device: torch.device) -> None:
    """Move every module's own parameters and buffers to device, except the modules in skip (FSDP moves those
    shard by shard)."""
    for module in model.modules():
        if id(module) in skip:
            continue
        for p in module.parameters(recurse=False):
            p.data = p.data.to(device)
        for key, b in list(module.named_buffers(recurse=False)):
            module._buffers[key] = b.to(device)


class FsdpNoSync:
    """Skip FSDP2's gradient reduce-scatter for all but the last micro-batch of a step."""

    def __init__(self, modules: list[nn.Module]):
        self.modules = modules

    def __enter__(self):
        for m in self.modules:
            m.set_requires_gradient_sync(False)

    def __exit__(self, *exc):
        for m in self.modules:
            m.set_requires_gradient_sync(True)


def average_grads(params: list[torch.Tensor], world: int) -> None:
    """Average the gradients of replicated tensors over the processes (one all-reduce)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce_sum(flat)
    flat /= world
    at = 0
    for g in grads:
        g.copy_(flat[at:at + g.numel()].view_as(g))
        at += g.numel()


def clip_grad_norm(grads: list[torch.Tensor], max_norm: float, device: torch.device) -> float:
    """Global gradient norm over replicated and sharded (DTensor) gradients; clip to max_norm when > 0."""
    if not grads:
        return 0.0
    local = [g.to_local() for g in grads if type(g).__name__ == "DTensor"]
    plain = [g for g in grads if type(g).__name__ != "DTensor"]
    sq_plain = sum((g.detach().float().pow(2).sum() for g in plain), torch.zeros((), device=device))
    sq_shard = sum((g.detach().float().pow(2).sum() for g in local), torch.zeros((), device=device))
    if local:
        sq_shard = dist.all_reduce_sum(sq_shard.to(device))
    norm = float((sq_plain.to(device) + sq_shard).sqrt())
    if max_norm > 0 and math.isfinite(norm) and norm > max_norm:
        coef = max_norm / (norm + 1e-6)
        for g in grads:
            g.mul_(coef)
    return norm
