"""Auxiliary CTC loss that spells a transcript in LLM tokens from the audio tokens (`run.ctc_weight`).

Why (SALMONN-mini): with ~1.4 h of speech, the LM loss alone reaches the connector only through the LLM's
attention, and a 135M LLM learns to read its audio tokens too slowly to transcribe (docs/mini/history.md, v1). CTC
supervises every audio token directly: a cosine classifier against the LLM's own (frozen) input-embedding table
asks each token to point at the embedding of the word piece it hears, or at the blank token's, in order. The
LLM then only has to copy what it reads. No parameter is added: the classifier is the embedding table.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..ctc import best_path, blank_id, ctc_logits, query_tokens  # noqa: F401 - train.step, gender


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
