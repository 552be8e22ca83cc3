"""The Whisper encoder, run on the full 30 s window (faithful) or only on each clip's own length (fast mode).

The faithful path is transformers' `WhisperEncoder.forward`. The fast path runs the same modules on the first
`frames` encoder frames of each clip; mel frames past a clip's end are zeroed and masked out of attention, so a
padded batch gives every clip exactly what it gets alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.models.whisper.modeling_whisper import WhisperEncoder

def encode(encoder: WhisperEncoder, features: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
    """Log-mel [B, n_mels, 3000] -> hidden states [B, 1500, d] (frames=None) or [B, max(frames), d].

    With `frames` ([B] ints), positions at or past a clip's own frame count are padding: their values are
    unspecified and must be ignored downstream.
    """
    if frames is None:
        return encoder(features).last_hidden_state
    length = int(frames.max())
    mel = features[..., : 2 * length]  # [B, n_mels, 2T]
    valid = torch.arange(2 * length, device=mel.device)[None, :] < 2 * frames.to(mel.device)[:, None]  # [B, 2T]
    mel = mel * valid[:, None, :]
    x = F.gelu(encoder.conv1(mel))
    x = F.gelu(encoder.conv2(x)).permute(0, 2, 1)  # [B, d, T] -> [B, T, d]
    x = x + encoder.embed_positions.weight[:length].to(x.dtype)
    keys = torch.arange(length, device=x.device)[None, :] < frames.to(x.device)[:, None]  # [B, T]
    mask = None
    if not bool(keys.all()):
        mask = torch.zeros(keys.shape, dtype=x.dtype, device=x.device).masked_fill(~keys, float("-inf"))
        mask = mask[:, None, None, :].expand(-1, 1, length, -1)  # [B, 1, T(query), T(key)]
    for layer in encoder.layers:
        x = layer(x, mask)
    return encoder.layer_norm(x)
