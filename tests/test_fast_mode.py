"""Fast mode (model.whisper_full_window=False): Whisper encodes each clip's own length instead of 30 s.

Token counts follow the frames, a padded batch gives every clip its single-clip tokens and answer, and the
default (faithful) mode is untouched.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from salmonn import load_model
from salmonn import audio as A
from salmonn import whisper as W
from salmonn.features import whisper_log_mel
from salmonn.frames import frames_for, tokens_for_frames

from .conftest import AUDIO, FIXTURE

CLIPS = [AUDIO / "excitement.wav", AUDIO / "mountain.wav", AUDIO / "gunshots.wav", AUDIO / "music.wav"]


@pytest.fixture(scope="module")
def fast_model():
    return load_model(FIXTURE / "config.yaml", ["model.whisper_full_window=false"])


def _expected_tokens(samples: int) -> int:
    """(frames - 17) // 17 + 1 per <=30 s segment, frames = ceil(samples / 320)."""
    total = 0
    for start in range(0, samples, A.SEGMENT_SAMPLES):
        n = max(min(A.SEGMENT_SAMPLES, samples - start), A.MIN_SAMPLES)
        frames = -(-n // 320)
        total += (frames - 17) // 17 + 1
    return total


def test_faithful_mode_is_the_default_and_keeps_its_shapes(tiny_model):
    assert tiny_model.config.model.whisper_full_window is True
    segments = list(tiny_model.clip_segments(str(CLIPS[0])))
    spectrogram = whisper_log_mel(segments, tiny_model.feature_extractor)
    raw, mask = A.batch_waveforms(segments)
    with torch.no_grad():
        frozen = tiny_model.encode(spectrogram, raw, mask)
    assert frozen.speech_frames is None and frozen.speech.shape[1] == 1500
    assert tiny_model.encode_audio([str(CLIPS[0])])[0].shape[0] == 88


def test_full_length_masked_encode_equals_the_encoder(tiny_model):
    wav = np.random.default_rng(0).standard_normal(A.SEGMENT_SAMPLES).astype(np.float32) * 0.1
    mel = whisper_log_mel([wav], tiny_model.feature_extractor)
    with torch.no_grad():
        full = tiny_model.speech_encoder(mel).last_hidden_state
        ours = W.encode(tiny_model.speech_encoder, mel, frames_for(torch.tensor([len(wav)])))
    assert ours.shape == full.shape and (ours - full).abs().max() < 1e-5


def test_token_counts_follow_each_clips_frames(fast_model):
    rng = np.random.default_rng(1)
    arrays = [(0.1 * rng.standard_normal(int(s * 16000)).astype(np.float32), 16000) for s in (0.4, 7.77, 45.0)]
    items = [str(c) for c in CLIPS] + arrays
    lengths = [len(A.load_audio(c)) for c in CLIPS] + [len(a) for a, _ in arrays]
    tokens = fast_model.encode_audio(items)
    assert [t.shape[0] for t in tokens] == [_expected_tokens(max(n, A.MIN_SAMPLES)) for n in lengths]
    assert tokens[2].shape[0] == 29  # gunshots, 10 s: 500 frames -> 29 windows instead of 88
    assert tokens[-1].shape[0] == 88 + 44  # 45 s: a full 30 s segment, then 15 s


@torch.no_grad()
def test_batch_equals_single_clips(fast_model):
    items = [str(c) for c in CLIPS]
    single = [fast_model.encode_audio([c])[0] for c in items]
    batch = fast_model.encode_audio(items)
    for a, b in zip(single, batch):
        assert a.shape == b.shape and (a - b).abs().max() < 1e-5
    prompt = "Describe the audio."
    answers = fast_model.generate(items, prompt, num_beams=1, max_new_tokens=8, min_new_tokens=8)
    assert [a.token_ids for a in answers] == \
        [fast_model.generate(c, prompt, num_beams=1, max_new_tokens=8, min_new_tokens=8)[0].token_ids for c in items]


def test_fast_mode_without_beats_and_the_window_fallbacks(fast_model):
    counts = tokens_for_frames(torch.tensor([1, 16, 17, 33, 34, 1500]), fast_model.config.model)
    assert counts.tolist() == [1, 1, 1, 1, 2, 88]
    model = load_model(FIXTURE / "config.yaml", ["model.whisper_full_window=false", "model.beats_path=",
                                                          "model.ckpt="])
    with torch.no_grad():
        tokens = model.encode_audio([str(CLIPS[1]), str(CLIPS[2])])
    assert [t.shape[0] for t in tokens] == [7, 29]


def test_compiled_decoding_keeps_the_reference_greedy_ids(expected, fixture_clips):
    """model.compile=true: static KV cache + torch.compile'd per-token step; same answers on the fixture."""
    model = load_model(FIXTURE / "config.yaml", ["model.compile=true"])
    for clip, prompt, ref in zip(fixture_clips, expected["generate_prompts"], expected["generated_ids"]):
        assert model.generate(clip, prompt, templated=True, num_beams=1, max_new_tokens=12)[0].token_ids == ref[1:]
