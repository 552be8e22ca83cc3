"""A greedy loop of our own for one beam (model.greedy_loop): the prompt's forward, then one LLM step per token,
picking the most likely token, with none of transformers' generate() machinery around each step (logits
processors, stopping criteria, input preparation, mask rebuilding). With model.compile the step is the compiled
`__call__` transformers itself uses, over a static KV cache that is kept between calls.

It answers exactly what generate() answers for plain greedy decoding (EOS suppressed before min_new_tokens,
no_repeat_ngram_size, finished rows padded, stop after EOS in every row); anything else (beams, sampling,
penalties, stop strings, scores) goes through generate().
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from .config import GenerateConfig
from .llm_runtime import cache_length, compile_config

COMPILED_ROWS = 8  # compiled batches are padded to a multiple of this (each batch size compiles once, for minutes)


def handles(gen: GenerateConfig, return_scores: bool) -> bool:
    """Whether the loop decodes these options (plain greedy); the rest goes through generate()."""
    return (gen.num_beams == 1 and not gen.do_sample and gen.repetition_penalty == 1.0 and not gen.stop
            and not return_scores)


def repeated_ngram_ends(history: list[int], n: int) -> list[int]:
    """The tokens that would end an n-gram already in `history` (transformers' no_repeat_ngram_size): those that
    followed an earlier occurrence of its last n - 1 tokens."""
    if n < 1 or len(history) < n:
        return []
    tail = history[len(history) - n + 1:]
    return [history[i + n - 1] for i in range(len(history) - n + 1) if history[i:i + n - 1] == tail]


def _static_cache(llm: nn.Module, batch: int, length: int, like: torch.Tensor):
    """A static KV cache of `length` positions, reused (reset) across calls of the same batch size, so the
    compiled step sees the same tensors and is not compiled again."""
    from transformers import StaticCache
    key = (batch, length, like.dtype, like.device)
    caches = llm.__dict__.setdefault("_salmonn_static_caches", {})
    if key not in caches:
        caches.clear()  # one live cache: memory does not grow with every shape seen
        caches[key] = StaticCache(config=llm.config, max_cache_len=length)
    cache = caches[key]
    cache.reset()
    return cache


def _pad_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    """`x` [B, ...] with its last row repeated up to `rows` rows (they decode like it and are dropped)."""
    return torch.cat([x, x[-1:].expand(rows - x.shape[0], *x.shape[1:])]) if rows > x.shape[0] else x


def _cache_keyword(llm: nn.Module) -> str:
    """The KV cache's keyword: `cache` since transformers 5.20, `past_key_values` before (vLLM pins < 5.20); an
    unknown keyword would be swallowed by **kwargs and every step would see only its own token."""
    return "cache" if "cache" in inspect.signature(type(llm).forward).parameters else "past_key_values"


def _step_function(llm: nn.Module, compile: bool):
    if not compile:
        return llm
    return llm.get_compiled_call(compile_config())


@torch.no_grad()
def greedy_decode(llm: nn.Module, embeds: torch.Tensor, mask: torch.Tensor, gen: GenerateConfig, eos: int, pad: int,
                  compile: bool = False, streamer=None) -> torch.Tensor:
    """Left-padded prompt embeddings [B, T, d] and mask [B, T] -> generated ids [B, n] (n <= max_new_tokens;
    rows that ended early continue with `pad`). `llm` is the causal LM (under any peft wrapper)."""
    rows, prompt_len = mask.shape
    steps = gen.max_new_tokens
    if compile:  # batches of 2..8 rows all run as 8: a long-form tail batch reuses the compiled step
        padded = rows if rows == 1 else -(-rows // COMPILED_ROWS) * COMPILED_ROWS
        embeds, mask = _pad_rows(embeds, padded), _pad_rows(mask, padded)
    batch = mask.shape[0]
    if compile:
        length = cache_length(prompt_len + steps)
        cache = _static_cache(llm, batch, length, embeds)
        full_mask = torch.ones(batch, length, dtype=mask.dtype, device=mask.device)  # [B, L]
        full_mask[:, :prompt_len] = mask  # future positions are hidden by the causal mask
    else:
        from transformers import DynamicCache
        cache, full_mask = DynamicCache(config=llm.config), mask
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)  # [B, T] left padding: rows start at 0
    cache_kwarg = _cache_keyword(llm)
    out = llm(inputs_embeds=embeds, attention_mask=full_mask, position_ids=positions, **{cache_kwarg: cache},
              cache_position=torch.arange(prompt_len, device=mask.device), use_cache=True, logits_to_keep=1)
    step = _step_function(llm, compile)
    if streamer is not None:
        streamer.put(torch.empty(batch, 0, dtype=torch.long))  # generate() first hands over the (empty) prompt
    position = positions[:, -1:]  # [B, 1]
    unfinished = torch.ones(batch, dtype=torch.bool, device=mask.device)
    chosen: list[torch.Tensor] = []
    history: list[list[int]] = [[] for _ in range(batch)]  # each row's ids, for no_repeat_ngram_size
    for index in range(steps):
        logits = out.logits[:, -1, :].float()  # [B, V]
        if index < gen.min_new_tokens:
            logits[:, eos] = -float("inf")
        if gen.no_repeat_ngram_size:
            for row, ids in enumerate(history):
                logits[row, repeated_ngram_ends(ids, gen.no_repeat_ngram_size)] = -float("inf")
        token = torch.where(unfinished, logits.argmax(-1), pad)  # [B]
        chosen.append(token)
        if gen.no_repeat_ngram_size:
            for ids, picked in zip(history, token.tolist()):
                ids.append(picked)
        if streamer is not None:
            streamer.put(token.cpu())
        unfinished &= token != eos
        if index == steps - 1 or not bool(unfinished.any()):
            break
        position = position + 1
        if not compile:
            full_mask = torch.cat([full_mask, torch.ones_like(full_mask[:, :1])], dim=1)  # [B, T + i + 1]
        out = step(input_ids=token[:, None], attention_mask=full_mask, position_ids=position,
                   **{cache_kwarg: cache},
                   cache_position=torch.tensor([prompt_len + index], device=mask.device), use_cache=True)
    if streamer is not None:
        streamer.end()
    return torch.stack(chosen, dim=1)[:rows]  # [B, n] without the padding rows
