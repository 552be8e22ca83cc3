"""BEATs audio-event encoder (Chen et al. 2022), written here because no maintained package ships it.

Parameter names follow the released `BEATs_iter3_plus_AS2M` checkpoints (`{"cfg", "model"}` files from
microsoft/unilm's beats/BEATs.py + backbone.py layout), so those state dicts load with strict key checks.
The module is built from the checkpoint's own `cfg`; nothing about its size is hard-coded.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .features import beats_fbank


@dataclasses.dataclass
class BEATsConfig:
    input_patch_size: int = 16  # fbank patch edge (frames x mel bins)
    embed_dim: int = 512  # patch embedding width
    conv_bias: bool = False  # bias on the patch-embedding conv
    encoder_layers: int = 12  # transformer depth
    encoder_embed_dim: int = 768  # transformer width (= output width)
    encoder_ffn_embed_dim: int = 3072  # feed-forward width
    encoder_attention_heads: int = 12  # attention heads
    activation_fn: str = "gelu"  # feed-forward activation
    layer_wise_gradient_decay_ratio: float = 1.0  # training-only gradient scaling; identity in forward
    layer_norm_first: bool = False  # pre-norm (True) or post-norm (False) layers
    deep_norm: bool = False  # DeepNorm residual scaling (2 * layers) ** 0.25
    dropout: float = 0.1  # residual dropout
    attention_dropout: float = 0.1  # attention-probability dropout
    activation_dropout: float = 0.0  # dropout after the FFN activation
    encoder_layerdrop: float = 0.0  # layer drop probability while training
    dropout_input: float = 0.0  # dropout on the projected patches
    conv_pos: int = 128  # kernel of the convolutional positional embedding
    conv_pos_groups: int = 16  # groups of that convolution
    relative_position_embedding: bool = False  # bucketed relative position bias
    num_buckets: int = 320  # relative position buckets
    max_distance: int = 1280  # distance at which buckets saturate
    gru_rel_pos: bool = False  # gate the relative position bias by the query
    finetuned_model: bool = False  # carries an AudioSet classification head
    predictor_dropout: float = 0.1  # dropout before the head
    predictor_class: int = 527  # AudioSet classes

    @classmethod
    def from_dict(cls, cfg: dict) -> "BEATsConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            warnings.warn(f"BEATs cfg keys not used by this implementation: {unknown}")
        return cls(**{k: v for k, v in cfg.items() if k in known})


def _activation(name: str):
    if name == "gelu":
        return lambda x: F.gelu(x.float()).type_as(x)
    if name == "relu":
        return F.relu
    if name == "gelu_accurate":
        return lambda x: F.gelu(x.float(), approximate="tanh").type_as(x)
    if name == "tanh":
        return torch.tanh
    if name == "linear":
        return lambda x: x
    raise ValueError(f"BEATs cfg activation_fn {name!r} is not supported (gelu, gelu_accurate, relu, tanh, linear)")


class WeightNormConv1d(nn.Module):
    """Conv1d with weight normalisation over dim 2, stored as `weight_g`/`weight_v` like torch's legacy weight_norm."""

    def __init__(self, channels: int, kernel: int, groups: int):
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel))
        self.weight_v = nn.Parameter(torch.empty(channels, channels // groups, kernel))
        self.bias = nn.Parameter(torch.zeros(channels))
        nn.init.normal_(self.weight_v, std=math.sqrt(4.0 / (kernel * channels)))
        self.padding, self.groups = kernel // 2, groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.weight_v
        weight = self.weight_g * v / v.norm(dim=(0, 1), keepdim=True)
        return F.conv1d(x, weight, self.bias, padding=self.padding, groups=self.groups)


class PositionalConv(nn.Sequential):
    """Convolutional positional embedding: weight-normed conv, 'same' trim for even kernels, GELU."""

    def __init__(self, channels: int, kernel: int, groups: int):
        super().__init__(WeightNormConv1d(channels, kernel, groups))
        self.trim = 1 if kernel % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T] -> [B, C, T]
        x = self[0](x)
        if self.trim:
            x = x[:, :, : -self.trim]
        return F.gelu(x)


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> torch.Tensor:
    """Bidirectional T5-style bucket index for every (query, key) pair: [T, T] long."""
    relative = torch.arange(length)[None, :] - torch.arange(length)[:, None]  # key - query
    half = num_buckets // 2
    buckets = (relative > 0).long() * half
    distance = relative.abs()
    max_exact = half // 2
    log_ratio = torch.log(distance.float() / max_exact) / math.log(max_distance / max_exact)
    large = (max_exact + log_ratio * (half - max_exact)).long().clamp(max=half - 1)
    return buckets + torch.where(distance < max_exact, distance, large)


class MultiheadAttention(nn.Module):
    """Self-attention with an optional (gated) bucketed relative position bias."""

    def __init__(self, cfg: BEATsConfig, has_relative_bias: bool):
        super().__init__()
        dim, heads = cfg.encoder_embed_dim, cfg.encoder_attention_heads
        self.heads, self.head_dim = heads, dim // heads
        self.dropout = cfg.attention_dropout
        self.num_buckets, self.max_distance = cfg.num_buckets, cfg.max_distance
        if has_relative_bias:
            self.relative_attention_bias = nn.Embedding(cfg.num_buckets, heads)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.gru_rel_pos = cfg.gru_rel_pos
        if cfg.gru_rel_pos:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, heads, 1, 1))

    def position_bias(self, length: int) -> torch.Tensor:
        """Relative position bias [H, T, T] from this layer's bucket table."""
        buckets = relative_position_buckets(length, self.num_buckets, self.max_distance)
        return self.relative_attention_bias(buckets.to(self.relative_attention_bias.weight.device)).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None, position_bias: torch.Tensor | None):
        batch, length, dim = x.shape
        q, k, v = (proj(x).view(batch, length, self.heads, self.head_dim).transpose(1, 2)  # [B, H, T, hd]
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        bias = None  # additive attention bias, broadcast to [B, H, T, T] (no zero tensor: 0 + x is x)
        if position_bias is not None:
            bias = position_bias.to(q.dtype)  # [H, T, T]
            if self.gru_rel_pos:
                gates = self.grep_linear(q).view(batch, self.heads, length, 2, 4).sum(-1)  # [B, H, T, 2]
                gate_a, gate_b = torch.sigmoid(gates).chunk(2, dim=-1)  # [B, H, T, 1] each
                bias = (gate_a * (gate_b * self.grep_a - 1.0) + 2.0) * bias  # [B, H, T, T]
        if key_padding_mask is not None:
            pad = key_padding_mask[:, None, None, :]  # [B, 1, 1, T]
            if bias is not None and bias.shape == (batch, self.heads, length, length):
                bias = bias.masked_fill_(pad, float("-inf"))  # the gated bias is a fresh tensor: fill it in place
            else:
                bias = (bias if bias is not None else torch.zeros(length, length, dtype=q.dtype, device=q.device)
                        ).masked_fill(pad, float("-inf"))
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, dim))  # [B, T, C]


class EncoderLayer(nn.Module):
    """One BEATs transformer layer (post-norm with DeepNorm scaling, or pre-norm)."""

    def __init__(self, cfg: BEATsConfig, has_relative_bias: bool):
        super().__init__()
        dim = cfg.encoder_embed_dim
        self.self_attn = MultiheadAttention(cfg, has_relative_bias)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, cfg.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_embed_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.activation = _activation(cfg.activation_fn)
        self.dropout, self.activation_dropout = cfg.dropout, cfg.activation_dropout
        self.layer_norm_first = cfg.layer_norm_first
        self.residual_scale = math.pow(2 * cfg.encoder_layers, 0.25) if cfg.deep_norm else 1.0

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.dropout(self.activation(self.fc1(x)), self.activation_dropout, self.training)
        return F.dropout(self.fc2(x), self.dropout, self.training)

    def forward(self, x, key_padding_mask, position_bias):
        if self.layer_norm_first:
            x = x + F.dropout(self.self_attn(self.self_attn_layer_norm(x), key_padding_mask, position_bias),
                              self.dropout, self.training)
            return x + self._feed_forward(self.final_layer_norm(x))
        attn = F.dropout(self.self_attn(x, key_padding_mask, position_bias), self.dropout, self.training)
        x = self.self_attn_layer_norm(x * self.residual_scale + attn)
        return self.final_layer_norm(x * self.residual_scale + self._feed_forward(x))


class TransformerEncoder(nn.Module):
    def __init__(self, cfg: BEATsConfig):
        super().__init__()
        dim = cfg.encoder_embed_dim
        self.pos_conv = PositionalConv(dim, cfg.conv_pos, cfg.conv_pos_groups)
        relative = cfg.relative_position_embedding
        self.layers = nn.ModuleList(EncoderLayer(cfg, has_relative_bias=relative) for _ in range(cfg.encoder_layers))
        if relative:  # layer 0 owns the bucket table; the others alias it (and so appear under their own keys)
            for layer in self.layers[1:]:
                layer.self_attn.relative_attention_bias = self.layers[0].self_attn.relative_attention_bias
        self.relative = relative
        self.layer_norm = nn.LayerNorm(dim)
        self.layer_norm_first = cfg.layer_norm_first
        self.dropout, self.layerdrop = cfg.dropout, cfg.encoder_layerdrop

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
        if padding_mask is not None:
            x = x.masked_fill(padding_mask[..., None], 0.0)
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)  # conv over time: [B, T, C] -> [B, C, T] and back
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = F.dropout(x, self.dropout, self.training)
        bias = self.layers[0].self_attn.position_bias(x.shape[1]) if self.relative else None
        for layer in self.layers:
            if self.training and self.layerdrop > 0 and torch.rand(()) < self.layerdrop:
                continue
            x = layer(x, padding_mask, bias)
        return self.layer_norm(x) if self.layer_norm_first else x


def reduce_padding_mask(padding_mask: torch.Tensor, length: int) -> torch.Tensor:
    """The reference's mask reduction: drop the remainder, view [B, length, k], `all` over k."""
    extra = padding_mask.shape[1] % length
    if extra:
        padding_mask = padding_mask[:, :-extra]
    return padding_mask.view(padding_mask.shape[0], length, -1).all(-1)  # [B, N] -> [B, length, N // length] -> [B, length]


class BEATs(nn.Module):
    """BEATs encoder: Kaldi fbank -> 16x16 patches -> projection -> transformer; `extract_features` as released."""

    def __init__(self, cfg: BEATsConfig):
        super().__init__()
        self.cfg = cfg
        self.patch = cfg.input_patch_size
        self.patch_embedding = nn.Conv2d(1, cfg.embed_dim, kernel_size=self.patch, stride=self.patch,
                                         bias=cfg.conv_bias)
        self.layer_norm = nn.LayerNorm(cfg.embed_dim)
        self.post_extract_proj = (nn.Linear(cfg.embed_dim, cfg.encoder_embed_dim)
                                  if cfg.embed_dim != cfg.encoder_embed_dim else None)
        self.encoder = TransformerEncoder(cfg)
        if cfg.finetuned_model:
            self.predictor = nn.Linear(cfg.encoder_embed_dim, cfg.predictor_class)

    def patches_per_clip(self, num_samples: torch.Tensor) -> torch.Tensor:
        """Number of output tokens a clip of `num_samples` 16 kHz samples gets on its own."""
        frames = torch.div(num_samples - 400, 160, rounding_mode="floor") + 1  # 25 ms frames every 10 ms, snip edges
        return torch.div(frames, self.patch, rounding_mode="floor") * (128 // self.patch)

    def extract_features(self, raw_wav: torch.Tensor, padding_mask: torch.Tensor | None = None,
                         exact_padding: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """raw_wav [B, N] (16 kHz, zero-padded) -> features [B, 8 * floor(frames / 16), C] and the token padding mask.

        exact_padding=False reproduces the reference's mask reduction; True masks exactly the tokens a clip would
        not have on its own, so a padded batch gives each clip its single-clip features.
        """
        fbank = beats_fbank(raw_wav).to(self.patch_embedding.weight.dtype)  # [B, frames, 128]
        features = self.patch_embedding(fbank.unsqueeze(1))  # [B, D, frames // 16, 128 // 16]
        features = features.reshape(features.shape[0], features.shape[1], -1).transpose(1, 2)  # [B, P, D], time-major
        features = self.layer_norm(features)
        if padding_mask is not None:
            if exact_padding:
                lengths = self.patches_per_clip((~padding_mask).sum(-1))
                padding_mask = torch.arange(features.shape[1], device=features.device)[None, :] >= lengths[:, None]
            else:
                padding_mask = reduce_padding_mask(reduce_padding_mask(padding_mask, fbank.shape[1]), features.shape[1])
        if self.post_extract_proj is not None:
            features = self.post_extract_proj(features)
        features = F.dropout(features, self.cfg.dropout_input, self.training)
        return self.encoder(features, padding_mask), padding_mask
