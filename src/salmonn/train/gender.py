"""Auxiliary speaker-gender loss on the audio tokens (`run.gender_weight`, SALMONN-mini).

Why: a linear probe reads the speaker's gender from Whisper's frames (0.94) but hardly from mini-v2c's audio tokens
(0.71, scripts/mini/results/history/gender_probe_v2c.json): trained by CTC to spell words, the Q-Former drops the voice, and
800 stage-2 gender samples under the LM loss did not bring it back. This loss asks the clip mean of one query per
window (`run.gender_query`) to point at the embedding of its gender word ("male" / "female"), with the same
cosine classifier as the CTC loss (train/ctc.py) restricted to the label words: no parameter is added, and what
the tokens learn is said in the LLM's own embedding space.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .ctc import ctc_logits


def label_ids(tokenizer, labels: Sequence[str]) -> list[int]:
    """The one token id of each gender label (run.gender_labels)."""
    ids = [tokenizer(label, add_special_tokens=False).input_ids for label in labels]
    bad = [label for label, i in zip(labels, ids) if len(i) != 1]
    if bad:
        raise ConfigError(f"run.gender_labels: {bad} are not one token each for this tokenizer; choose labels that are")
    return [i[0] for i in ids]


def gender_loss(tokens: Sequence[torch.Tensor], labels: Sequence[int], table: torch.Tensor, scale: float
                ) -> tuple[torch.Tensor, float]:
    """Mean cross-entropy of each row's mean audio token [L_i, d] -> [d] against its label (an index into the
    label rows of `table` [K, d]), and the accuracy."""
    means = torch.stack([t.mean(0) for t in tokens])  # [B, d]
    logits = ctc_logits(means, table, scale)  # [B, K]
    target = torch.tensor(labels, device=logits.device)
    return F.cross_entropy(logits, target), float((logits.argmax(-1) == target).float().mean())
