"""Reading a connector trained to spell (SALMONN-mini's CTC query, `model.ctc_query`): the parts that training
(train/ctc.py: the loss) and decoding (salmonn.rescoring) share. A cosine classifier against the LLM's own input
embedding table turns each audio token of the spelling query into scores over the vocabulary; the blank is one
token of the tokenizer (`model.ctc_blank`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import ConfigError


def blank_id(tokenizer, text: str) -> int:
    """The one token id of `text` that stands for CTC's blank (run.ctc_blank)."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise ConfigError(f"run.ctc_blank: {text!r} is {len(ids)} tokens for this tokenizer; it must be exactly one")
    return ids[0]


def query_tokens(tokens: torch.Tensor, queries: int, query: int | None) -> torch.Tensor:
    """A clip's audio tokens [L * Q, d] (window-major, Q = queries per window) of one query per window, or all of
    them (query None): what run.ctc_query / run.gender_query select."""
    if query is None:
        return tokens
    return tokens.view(-1, queries, tokens.shape[-1])[:, query]  # [L * Q, d] -> [L, d]


def ctc_logits(tokens: torch.Tensor, table: torch.Tensor, scale: float) -> torch.Tensor:
    """Audio tokens [..., d] -> scaled cosine similarity with every embedding row [..., V]."""
    return scale * F.normalize(tokens.float(), dim=-1) @ F.normalize(table.float(), dim=-1).T


def best_path(scores: torch.Tensor, blank: int) -> list[int]:
    """CTC best path of per-token scores [L, V] (logits or log-probabilities): argmax, repeats merged, blanks dropped."""
    best = scores.argmax(-1).tolist()
    return [b for i, b in enumerate(best) if b != blank and (i == 0 or b != best[i - 1])]
