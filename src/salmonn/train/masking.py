"""SpecAugment-style masking of the frozen Whisper frames during training (an addition; the reference has none).

The encoders are frozen and their outputs cached, so the masks fall on Whisper's output frames, not on the
spectrogram: spans of whole frames (time masks) and, per clip, a random share of the channels. The connector then
cannot lean on any one 0.2 s stretch or feature, which is what SpecAugment buys ASR models trained on few hours.
Masks use torch's global generator, whose state every checkpoint saves (resume stays exact); off by default.
"""

from __future__ import annotations

import torch


def time_mask(speech: torch.Tensor, frames: torch.Tensor | None, ratio: float, span: int) -> torch.Tensor:
    """[B, T, C] with about `ratio` of each clip's own frames (`frames` [B], None: all T) zeroed in spans of `span`."""
    batch, length, _ = speech.shape
    own = frames.tolist() if frames is not None else [length] * batch
    keep = torch.ones(batch, length, 1, dtype=speech.dtype, device=speech.device)  # [B, T, 1]
    for row, n in enumerate(own):
        spans = round(ratio * n / span)
        if spans == 0 or n <= span:
            continue
        starts = torch.randint(0, n - span + 1, (spans,))  # [spans]
        covered = (starts[:, None] + torch.arange(span)).flatten()  # [spans * span] frame indices
        keep[row, covered.to(speech.device)] = 0
    return speech * keep


def channel_mask(speech: torch.Tensor, ratio: float) -> torch.Tensor:
    """[B, T, C] with a random `ratio` of each clip's C channels zeroed in every frame."""
    batch, _, channels = speech.shape
    dropped = torch.rand(batch, 1, channels).argsort(dim=-1) < round(ratio * channels)  # [B, 1, C] exactly k per row
    return speech.masked_fill(dropped.to(speech.device), 0.0)
