"""salmonn.frames: the token counts every part of the project uses are the ones the model produces."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from salmonn.config import ModelConfig
from salmonn.frames import clip_tokens, segment_samples, window_size

SECONDS = [0.4, 1.0, 7.77, 30.0, 30.5, 45.0, 61.0]


def _clip(seconds: float) -> tuple[np.ndarray, int]:
    rng = np.random.default_rng(int(seconds * 100))
    return (0.1 * rng.standard_normal(round(seconds * 16000))).astype(np.float32), 16000


@pytest.mark.parametrize("overrides", [{}, {"whisper_full_window": False}, {"long_audio": "truncate"},
                                       {"whisper_full_window": False, "second_stride": 0.166667}])
def test_counts_equal_the_models_tokens(tiny_model, monkeypatch, overrides):
    for key, value in overrides.items():
        monkeypatch.setattr(tiny_model.config.model, key, value)
    tokens = tiny_model.encode_audio([_clip(s) for s in SECONDS])
    assert [t.shape[0] for t in tokens] == [clip_tokens(round(s * 16000), tiny_model.config.model) for s in SECONDS]


def test_segments_and_windows():
    assert segment_samples(100) == [16000]  # padded to 1 s
    assert segment_samples(480000) == [480000]
    assert segment_samples(480001) == [480000, 16000]
    assert segment_samples(1_000_000, "truncate") == [480000]
    assert window_size(0.333333) == 17 and window_size(0.166667) == 8
    faithful = ModelConfig()
    assert clip_tokens(10 * 16000, faithful) == 88 and clip_tokens(45 * 16000, faithful) == 176
    fast = dataclasses.replace(faithful, whisper_full_window=False)
    assert clip_tokens(10 * 16000, fast) == (500 - 17) // 17 + 1  # 500 frames of 20 ms


def test_training_lengths_follow_the_config():
    from salmonn.train.data import Sample
    sample = Sample("m:1", "a.wav", [], "hi", "asr", None, 10.0, [1, 2, 3])
    faithful = ModelConfig()
    mini = dataclasses.replace(faithful, whisper_full_window=False, second_stride=0.166667)
    assert sample.length(faithful) == 88 + 3
    assert sample.length(mini) == (500 - 17) // 8 + 1 + 3  # was 88 + 3 whatever the config
