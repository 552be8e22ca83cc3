"""The window-level Q-Former connector: reference names, window arithmetic, fusion."""

from __future__ import annotations

import torch

from salmonn.frames import window_size
from salmonn.qformer import QFormer, from_reference_name, fuse_encoders, split_windows, to_reference_name


def test_reference_names_round_trip():
    pairs = {
        "bert.layernorm.weight": "bert.embeddings.LayerNorm.weight",
        "bert.encoder.layer.0.attention.attention.query.weight": "bert.encoder.layer.0.attention.self.query.weight",
        "bert.encoder.layer.1.crossattention.attention.key.bias": "bert.encoder.layer.1.crossattention.self.key.bias",
        "bert.encoder.layer.1.crossattention.output.LayerNorm.bias":
            "bert.encoder.layer.1.crossattention.output.LayerNorm.bias",
        "bert.encoder.layer.0.output_query.dense.weight": "bert.encoder.layer.0.output_query.dense.weight",
    }
    for ours, theirs in pairs.items():
        assert to_reference_name(ours) == theirs
        assert from_reference_name(theirs) == ours


def test_state_dict_speaks_reference_names_and_loads_them_back():
    a = QFormer(32, 4, 64, 2, encoder_width=40)
    state = a.state_dict()
    assert "bert.encoder.layer.0.crossattention.self.key.weight" in state
    assert state["bert.encoder.layer.0.crossattention.self.key.weight"].shape == (32, 40)
    assert not any(".attention.attention." in k or "bert.layernorm" in k for k in state)
    b = QFormer(32, 4, 64, 2, encoder_width=40)
    b.load_state_dict(state, strict=True)
    a.eval(), b.eval()
    q, x = torch.randn(3, 1, 32), torch.randn(3, 17, 40)
    assert torch.equal(a(q, x), b(q, x))


def test_windows_match_the_paper_arithmetic():
    assert window_size(0.333333) == 17
    x = torch.arange(2 * 1500 * 3, dtype=torch.float32).reshape(2, 1500, 3)
    windows = split_windows(x, 17, 17)
    assert windows.shape == (2 * 88, 17, 3)  # floor((1500 - 17) / 17) + 1 = 88, trailing 4 frames dropped
    assert torch.equal(windows[1], x[0, 17:34])
    assert torch.equal(windows[88], x[1, :17])
    overlapping = split_windows(x, 17, 8)
    assert overlapping.shape[0] == 2 * ((1500 - 17) // 8 + 1)


def test_fusion_zero_pads_the_shorter_stream():
    speech, audio = torch.ones(1, 5, 2), torch.full((1, 3, 4), 2.0)
    fused = fuse_encoders(speech, audio)
    assert fused.shape == (1, 5, 6)
    assert torch.equal(fused[0, 3:, 2:], torch.zeros(2, 4))
    assert fuse_encoders(speech, None) is speech
