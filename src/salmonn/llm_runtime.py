"""The LLM's runtime fast paths: changes to how the loaded LLM computes that leave its answers alone, chosen once
where the model is built (salmonn.builder calls `apply_fast_paths` with the config's model section):

    model.packed_gqa        one-token steps of a grouped-query LLM attend per key/value head (no repeat_kv copies)
    model.contiguous_head   the output head gets a contiguous input (a strided [B, 1, d] slice ran 100x slower)
    model.compile           the per-token step runs through torch.compile over a static KV cache; its linears with
                            one input row stream their weight (`stream_small_linears`)

Decoding policy (options, presets, the generate step) is salmonn.decoding; this module only makes the LLM fast.
Measured in benchmarks/decode_step.md.
"""

from __future__ import annotations

import types
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from .config import ModelConfig


def apply_fast_paths(llm: nn.Module, m: "ModelConfig") -> None:
    """Switch the LLM's fast paths on or off as the model section says (idempotent: call it again after changing
    model.packed_gqa / contiguous_head / compile on a built model)."""
    pack_gqa_steps(llm, m.packed_gqa)
    contiguous_head_input(llm, m.contiguous_head)
    stream_small_linears(llm, m.compile)


# ---------------------------------------------------------------------------------------------------- compiled step
COMPILE_CACHE_BUCKET = 256  # static KV cache lengths are rounded up to this: fewer recompilations
STREAMING_MAX_ROWS = 1  # compiled linears with one input row (a one-clip decoding step) stream their weight: with
#                         8 rows the weight-major reduction ran 3.4x slower than F.linear in bf16 (equal in fp32)


def compile_config():
    """transformers' CompileConfig for the per-token step, on any device (transformers compiles automatically only
    on CUDA)."""
    from transformers import CompileConfig
    config = CompileConfig(fullgraph=False, dynamic=False)
    config._compile_all_devices = True  # noqa: SLF001 - the documented switch has no public setter
    return config


def cache_length(length: int) -> int:
    """`length` rounded up to a COMPILE_CACHE_BUCKET multiple."""
    return -(-length // COMPILE_CACHE_BUCKET) * COMPILE_CACHE_BUCKET


def compiled_decoding(length: int) -> dict:
    """generate() arguments that run the per-token step through torch.compile with a static KV cache. The cache is
    sized in COMPILE_CACHE_BUCKET steps and transformers keeps the largest size seen, so a compiled step is reused
    across calls of the same batch size."""
    return {"cache_implementation": "static", "compile_config": compile_config(),
            "max_cache_len": cache_length(length)}


PACKED_GQA = "salmonn_packed_gqa"  # the attention implementation's registered name


def _packed_gqa_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                          filled_prompt_keys: bool = True, **kwargs):
    """transformers' sdpa attention, except that a one-token step of a grouped-query layer attends per key/value
    head: the query [B, H, 1, D] is viewed as [B, H_kv, H / H_kv, D] (the group's heads as query rows) against the
    cache's own [B, H_kv, L, D] keys and values. transformers does this only outside torch.compile; inside it, every
    compiled step copied the whole static cache H / H_kv times (repeat_kv) and ran one-row flash attention per head:
    20x slower attention on a 512-slot bf16 cache (benchmarks/decode_step.md). A prompt (several query tokens)
    runs transformers' sdpa, over only the keys its mask can see when the rest of the static cache is masked
    everywhere (filled_prompt_keys: the same terms of the softmax, summed in other blocks; 2.2x faster prompt
    attention at 204 of 512 slots)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    groups = getattr(module, "num_key_value_groups", 1)
    if (query.shape[2] == 1 and groups > 1 and kwargs.get("position_bias") is None and kwargs.get("softcap") is None
            and (attention_mask is None or attention_mask.shape[1] == 1)):
        batch, heads, _, dim = query.shape
        out = torch.nn.functional.scaled_dot_product_attention(
            query.reshape(batch, heads // groups, groups, dim), key, value, attn_mask=attention_mask,
            dropout_p=dropout, scale=scaling)  # [B, H_kv, H / H_kv, D]; a [B, 1, 1, L] mask broadcasts
        return out.reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None  # [B, 1, H, D]
    if (not torch.compiler.is_compiling() and filled_prompt_keys and attention_mask is not None
            and attention_mask.dtype == torch.bool and key.shape[2] > query.shape[2] == attention_mask.shape[-2] > 1
            and attention_mask.shape[-1] == key.shape[2] and not attention_mask[..., query.shape[2]:].any()):
        length = query.shape[2]  # a prompt into an empty static cache: the slots after it are masked everywhere
        key, value, attention_mask = key[:, :, :length], value[:, :, :length], attention_mask[..., :length]
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  **kwargs)


def pack_gqa_steps(llm: nn.Module, on: bool = True) -> None:
    """Switch an sdpa LLM to _packed_gqa_attention (on) or back to transformers' sdpa (off); other attention
    implementations (eager, flash) are left alone. Same masks as sdpa; prompts (several tokens) run sdpa itself."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    if PACKED_GQA not in AttentionInterface._global_mapping:  # noqa: SLF001 - register() writes this mapping
        AttentionInterface.register(PACKED_GQA, _packed_gqa_attention)
        AttentionMaskInterface.register(PACKED_GQA, sdpa_mask)
    configs = {id(c): c for c in (getattr(m, "config", None) for m in llm.modules())
               if getattr(c, "_attn_implementation", None) in ("sdpa", PACKED_GQA)}
    for config in configs.values():
        config._attn_implementation_internal = PACKED_GQA if on else "sdpa"  # noqa: SLF001 - no per-call setter


def _contiguous_input(module: nn.Module, args: tuple):
    if torch.compiler.is_compiling():  # a compiled step's [B, 1, d] input is contiguous; no guard on the switch
        return None
    if args and isinstance(args[0], torch.Tensor) and not args[0].is_contiguous():
        return (args[0].contiguous(), *args[1:])
    return None


def contiguous_head_input(llm: nn.Module, on: bool = True) -> None:
    """Give the output head (lm_head) a contiguous input (on: a forward pre-hook, installed once) or take it away. A prompt's forward keeps only
    the last position's hidden state (logits_to_keep=1), a strided [B, 1, d] slice of [B, T, d]: with B > 1,
    F.linear over that slice took 1.0-1.3 s in bf16 against 5-9 ms once contiguous (same values) for SALMONN-mini's
    49152 x 576 head (3.4x slower in fp32), every 8-segment long-form batch (benchmarks/decode_step.md)."""
    head = llm.get_output_embeddings() if hasattr(llm, "get_output_embeddings") else None
    if head is None:
        return
    handle = head.__dict__.get("_salmonn_contiguous_input")
    if on and handle is None:
        head._salmonn_contiguous_input = head.register_forward_pre_hook(_contiguous_input)
    elif not on and handle is not None:
        handle.remove()
        del head._salmonn_contiguous_input


def _streaming_linear_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """nn.Linear.forward, except inside torch.compile for a few input rows (a decoding step): the product is
    written as a weight-major reduction that inductor turns into one parallel, vectorised pass over the weight.
    Decoding is bound by reading the weights, and this reads them about twice as fast as BLAS's matrix-vector
    product on 2 AVX2 cores (benchmarks/RESULTS.md). Eager calls (the prompt) keep F.linear."""
    return _streaming_linear(x, self.weight, self.bias)


def _streaming_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    if torch.compiler.is_compiling() and x.dim() >= 2 and x.shape[:-1].numel() <= STREAMING_MAX_ROWS:
        rows = x.reshape(-1, x.shape[-1]).to(weight.dtype)  # [M, K]
        out = (weight[:, None, :] * rows[None, :, :]).sum(-1).t()  # [N, M, K] -> [N, M] -> [M, N]
        if bias is not None:
            out = out + bias
        return out.reshape(*x.shape[:-1], out.shape[-1])  # [..., N]
    return torch.nn.functional.linear(x, weight, bias)


def stream_small_linears(llm: nn.Module, on: bool = True) -> None:
    """Route the LLM's nn.Linear modules through _streaming_linear_forward (on; harmless to eager calls), or give
    them back nn.Linear's own forward (off)."""
    if bool(llm.__dict__.get("_salmonn_streaming_linears")) == on:
        return
    for module in llm.modules():
        if type(module) is nn.Linear:
            if on:
                module.forward = types.MethodType(_streaming_linear_forward, module)
            elif getattr(module.__dict__.get("forward"), "__func__", None) is _streaming_linear_forward:
                del module.forward
    llm._salmonn_streaming_linears = on
