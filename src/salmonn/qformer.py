"""Window-level Q-Former connector (SALMONN §1): fuse the two encoders, cut 0.33 s windows, one query per window.

The Q-Former itself is transformers' `Blip2QFormerModel` (BERT-style, cross-attention in every layer, post-LN),
which matches the reference's LAVIS `BertModel` numerically. Its state dict is renamed on the fly to the
reference layout (`speech_Qformer.bert.encoder.layer.0.crossattention.self.key.weight`, ...), so released
checkpoints load with strict key checks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel

# (ours, reference) name parts inside `speech_Qformer.`; the reference's LAVIS BertModel layout on the right.
_RENAMES = [
    ("bert.layernorm.", "bert.embeddings.LayerNorm."),
    (".attention.attention.", ".attention.self."),
    (".crossattention.attention.", ".crossattention.self."),
]


def _rename(name: str, reverse: bool) -> str:
    for ours, theirs in _RENAMES:
        old, new = (theirs, ours) if reverse else (ours, theirs)
        name = new + name[len(old):] if old.startswith("bert.") and name.startswith(old) else name.replace(old, new)
    return name


def to_reference_name(name: str) -> str:
    """Name inside our QFormer -> the reference's LAVIS name."""
    return _rename(name, reverse=False)


def from_reference_name(name: str) -> str:
    """The reference's LAVIS name -> name inside our QFormer."""
    return _rename(name, reverse=True)


class QFormer(nn.Module):
    """`Blip2QFormerModel` under `.bert`, whose state dict speaks the reference's names."""

    def __init__(self, hidden_size: int, num_heads: int, intermediate_size: int, num_layers: int,
                 encoder_width: int):
        super().__init__()
        config = Blip2QFormerConfig(hidden_size=hidden_size, num_attention_heads=num_heads,
                                    intermediate_size=intermediate_size, num_hidden_layers=num_layers,
                                    cross_attention_frequency=1, encoder_hidden_size=encoder_width,
                                    layer_norm_eps=1e-12, hidden_act="gelu")
        self.bert = Blip2QFormerModel(config)
        self.register_state_dict_post_hook(self._rename_out)
        self.register_load_state_dict_pre_hook(self._rename_in)

    @staticmethod
    def _rename_out(module, state_dict, prefix, local_metadata):
        for key in [k for k in state_dict if k.startswith(prefix)]:
            state_dict[prefix + to_reference_name(key[len(prefix):])] = state_dict.pop(key)

    @staticmethod
    def _rename_in(module, state_dict, prefix, *args):
        for key in [k for k in state_dict if k.startswith(prefix)]:
            state_dict[prefix + from_reference_name(key[len(prefix):])] = state_dict.pop(key)

    def forward(self, queries: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """queries [W, Q, H] attend to frames [W, K, C] -> [W, Q, H]."""
        return self.bert(query_embeds=queries, encoder_hidden_states=frames).last_hidden_state


def fuse_encoders(speech: torch.Tensor, audio: torch.Tensor | None) -> torch.Tensor:
    """Concatenate normalised Whisper [B, T, Cs] and BEATs [B, T', Ca] features, zero-padding the shorter in time."""
    if audio is None:
        return speech
    length = max(speech.shape[1], audio.shape[1])
    speech = F.pad(speech, (0, 0, 0, length - speech.shape[1]))
    audio = F.pad(audio, (0, 0, 0, length - audio.shape[1])).to(speech.dtype)
    return torch.cat([speech, audio], dim=-1)  # [B, T, Cs + Ca]


def split_windows(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """[B, T, C] -> [B * L, kernel, C] with L = (T - kernel) // stride + 1 (trailing frames dropped)."""
    windows = x.unfold(1, kernel, stride)  # [B, L, C, kernel]
    return windows.transpose(2, 3).reshape(-1, kernel, x.shape[-1])  # [B, L, kernel, C] -> [B * L, kernel, C]
