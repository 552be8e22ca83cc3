"""BEATs on its own: built from a checkpoint's cfg, padding handled, reference mask reduction kept."""

from __future__ import annotations

import math

import pytest
import torch

from salmonn.beats import BEATs, BEATsConfig, reduce_padding_mask, relative_position_buckets
from salmonn.checkpoint import load_beats

from .conftest import FIXTURE


@pytest.fixture(scope="module")
def beats() -> BEATs:
    return load_beats(FIXTURE / "beats.pt")


def test_module_is_built_from_the_checkpoint_cfg(beats):
    cfg = torch.load(FIXTURE / "beats.pt", weights_only=True)["cfg"]
    assert beats.cfg.encoder_embed_dim == cfg["encoder_embed_dim"] == 48
    assert len(beats.encoder.layers) == cfg["encoder_layers"]
    shared = {id(layer.self_attn.relative_attention_bias) for layer in beats.encoder.layers}
    assert len(shared) == 1  # one bucket table, owned by layer 0


@torch.no_grad()
def test_exact_padding_gives_each_clip_its_single_clip_features(beats):
    torch.manual_seed(0)
    short, long = torch.randn(21_000) * 0.1, torch.randn(40_000) * 0.1
    batch = torch.zeros(2, 40_000)
    batch[0, :21_000], batch[1] = short, long
    mask = torch.arange(40_000)[None] >= torch.tensor([[21_000], [40_000]])
    features, token_mask = beats.extract_features(batch, mask, exact_padding=True)
    alone, _ = beats.extract_features(short[None])
    n = alone.shape[1]
    assert n == beats.patches_per_clip(torch.tensor(21_000)).item()
    assert torch.allclose(features[0, :n], alone[0], atol=1e-5)
    assert token_mask[0, n:].all() and not token_mask[0, :n].any()
    reference, _ = beats.extract_features(batch, mask, exact_padding=False)
    assert not torch.allclose(reference[0, :n], alone[0], atol=1e-3)  # the reference's reduction leaks padding


def test_reference_mask_reduction_drops_the_remainder_and_requires_all():
    mask = torch.tensor([[False, False, True, True, True, True, True]])
    assert reduce_padding_mask(mask, 3).tolist() == [[False, True, True]]  # 7 % 3 = 1 dropped; pairs


def test_relative_buckets_are_symmetric_in_magnitude_and_saturate():
    buckets = relative_position_buckets(1000, num_buckets=320, max_distance=800)
    assert buckets[0, 0] == 0 and buckets[0, 1] == 161 and buckets[1, 0] == 1
    assert buckets.max() == 319 and buckets[999, 0] == 159  # far left saturates at half - 1
    max_exact = 80 // 1
    assert buckets[0, 79] == 160 + 79 and buckets[0, 80] >= 160 + max_exact


def test_unknown_cfg_keys_warn_and_bad_activation_fails():
    with pytest.warns(UserWarning, match="not used"):
        cfg = BEATsConfig.from_dict({"embed_dim": 8, "brand_new_key": 1})
    assert cfg.embed_dim == 8
    with pytest.raises(ValueError, match="activation_fn"):
        BEATs(BEATsConfig(embed_dim=16, encoder_embed_dim=16, encoder_layers=1, encoder_attention_heads=2,
                          encoder_ffn_embed_dim=8, conv_pos=4, conv_pos_groups=2, activation_fn="swishy"))


def test_deep_norm_scales_residuals():
    cfg = BEATsConfig(embed_dim=16, encoder_embed_dim=16, encoder_layers=3, encoder_attention_heads=2,
                      encoder_ffn_embed_dim=8, conv_pos=4, conv_pos_groups=2, deep_norm=True)
    assert BEATs(cfg).encoder.layers[0].residual_scale == pytest.approx(math.pow(6, 0.25))
