"""Auxiliary CTC loss that spells a transcript in LLM tokens from the audio tokens (`run.ctc_weight`).

Why (SALMONN-mini): with ~1.4 h of speech, the LM loss alone reaches the connector only through the LLM's
attention, and a 135M LLM learns to read its audio tokens too slowly to transcribe (docs/mini/README.md). CTC
supervises every audio token directly: a cosine classifier against the LLM's own (frozen) input-embedding table
asks each token to point at the embedding of the word piece it hears, or at the blank token's, in order. The
LLM then only has to copy what it reads. No parameter is added: the classifier is the embedding table.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import ConfigError


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


def ctc_loss_sum(tokens: Sequence[torch.Tensor], targets: Sequence[Sequence[int]], table: torch.Tensor,
                 blank: int, scale: float) -> tuple[torch.Tensor, int]:
    """Summed CTC loss of each row's audio tokens [L_i, d] against its target ids, and the number of target ids.
    A row whose target cannot fit its tokens contributes zero (zero_infinity), never NaN."""
    lengths = torch.tensor([t.shape[0] for t in tokens])
    x = torch.nn.utils.rnn.pad_sequence(list(tokens), batch_first=True)  # [B, L, d]
    log_probs = ctc_logits(x, table, scale).log_softmax(-1).transpose(0, 1)  # [L, B, V]
    flat = torch.tensor([i for t in targets for i in t], dtype=torch.long)
    sizes = torch.tensor([len(t) for t in targets])
    loss = F.ctc_loss(log_probs, flat, lengths, sizes, blank=blank, reduction="sum", zero_infinity=True)
    return loss, int(sizes.sum())


@torch.no_grad()
def ctc_greedy(tokens: torch.Tensor, table: torch.Tensor, blank: int, scale: float = 1.0) -> list[int]:
    """Best path of one row's audio tokens [L, d]: argmax per token, repeats merged, blanks dropped."""
    return best_path(ctc_logits(tokens, table, scale), blank)


def best_path(scores: torch.Tensor, blank: int) -> list[int]:
    """CTC best path of per-token scores [L, V] (logits or log-probabilities): argmax, repeats merged, blanks dropped."""
    best = scores.argmax(-1).tolist()
    return [b for i, b in enumerate(best) if b != blank and (i == 0 or b != best[i - 1])]
