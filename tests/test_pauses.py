"""Pause-aligned chunks (salmonn.pauses): cuts land in pauses, never past the maximum, nothing is lost, and audio
without pauses is cut hard at the maximum."""

from __future__ import annotations

import numpy as np
import pytest

from salmonn.pauses import FRAME_SECONDS, iter_pause_chunks, pause_chunks, pause_cut

RATE = 16000


def tone(seconds: float, level: float = 0.5, hz: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (level * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def hiss(seconds: float, level: float, seed: int = 0) -> np.ndarray:
    """Low background noise (a pause in a real recording is rarely digital silence)."""
    return (level * np.random.default_rng(seed).standard_normal(round(seconds * RATE))).astype(np.float32)


def bursts(lengths: list[float], gaps: list[float], noise: float = 1e-3) -> np.ndarray:
    """Tone bursts of `lengths` s separated by noisy gaps of `gaps` s (len(gaps) == len(lengths) - 1)."""
    parts = [tone(lengths[0], hz=300)]
    for k, (gap, length) in enumerate(zip(gaps, lengths[1:])):
        parts += [hiss(gap, noise, seed=k), tone(length, hz=300 + 50 * k)]
    return np.concatenate(parts)


def boundaries(chunks: list[np.ndarray]) -> np.ndarray:
    """Sample index where each chunk but the last ends."""
    return np.cumsum([len(c) for c in chunks])[:-1]


def test_the_cut_lands_in_the_silence_between_two_bursts_not_at_the_maximum():
    wav = bursts([12.0, 8.0], [0.5])  # a 0.5 s gap from 12 s to 12.5 s; 20.5 s in all
    chunks = pause_chunks(wav, RATE, 15.0)
    assert len(chunks) == 2
    cut = boundaries(chunks)[0] / RATE
    assert 12.0 < cut < 12.5, cut  # in the gap (a fixed cut would be at 15 s, inside the second burst)
    assert abs(cut - 12.25) <= 2 * FRAME_SECONDS  # its middle
    fixed = [wav[i:i + 15 * RATE] for i in range(0, len(wav), 15 * RATE)]
    assert boundaries(fixed)[0] / RATE == 15.0  # what the fixed segments do


def test_the_longest_pause_in_range_wins_and_pauses_before_half_the_maximum_are_not_cuts():
    # gaps: 1.0 s at 4-5 s (before half of 20 s: a chunk that short is not wanted), 0.1 s at 11-11.1 s, 0.4 s at
    # 15.1-15.5 s
    wav = bursts([4.0, 6.0, 4.0, 10.0], [1.0, 0.1, 0.4])
    cut = pause_cut(wav, RATE, 20 * RATE) / RATE
    assert 15.1 < cut < 15.5, cut
    # with the 0.4 s gap made as short as the other (15.1-15.2 s), the later one is taken (fewer chunks)
    wav = bursts([4.0, 6.0, 4.0, 10.0], [1.0, 0.1, 0.1])
    assert 15.1 < pause_cut(wav, RATE, 20 * RATE) / RATE < 15.2


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("max_seconds", [2.0, 7.5, 30.0])
def test_no_chunk_exceeds_the_maximum_and_the_chunks_concatenate_to_the_input(seed, max_seconds):
    rng = np.random.default_rng(seed)
    lengths = list(rng.uniform(0.3, 9.0, size=12))  # some bursts longer than the maximum: hard cuts there
    gaps = list(rng.uniform(0.02, 0.8, size=11))
    wav = bursts(lengths, gaps, noise=float(rng.choice([0.0, 1e-4, 1e-2])))
    chunks = pause_chunks(wav, RATE, max_seconds)
    assert max(len(c) for c in chunks) <= round(max_seconds * RATE)
    assert all(len(c) > 0 for c in chunks)
    joined = np.concatenate(chunks)
    assert joined.dtype == wav.dtype and np.array_equal(joined, wav)  # not a sample dropped, added or changed
    assert all(len(c) >= max_seconds * RATE / 2 for c in chunks[:-1])  # no needlessly short chunk


def test_audio_without_pauses_falls_back_to_hard_cuts_at_the_maximum():
    for wav in (tone(70.0), hiss(70.0, 0.1)):  # a steady tone, steady noise: no frame is a pause
        chunks = pause_chunks(wav, RATE, 20.0)
        assert [len(c) / RATE for c in chunks] == [20.0, 20.0, 20.0, 10.0]
        assert np.array_equal(np.concatenate(chunks), wav)


def test_short_audio_is_one_chunk_and_streaming_gives_the_same_chunks():
    wav = bursts([3.0, 4.0, 2.0, 6.0, 5.0, 9.0, 1.0], [0.3, 0.05, 0.6, 0.2, 0.4, 0.1])
    assert [len(c) for c in pause_chunks(wav[:10 * RATE], RATE, 10.0)] == [10 * RATE]
    whole = pause_chunks(wav, RATE, 10.0)
    assert len(whole) >= 3
    rng = np.random.default_rng(0)
    splits = np.sort(rng.choice(len(wav), size=9, replace=False))
    streamed = list(iter_pause_chunks(np.split(wav, splits), RATE, 10.0))  # blocks as a decoder yields them
    assert [len(c) for c in streamed] == [len(c) for c in whole]
    assert all(np.array_equal(a, b) for a, b in zip(streamed, whole))
    with pytest.raises(ValueError, match="positive"):
        pause_chunks(wav, RATE, 0)


def test_other_sample_rates_measure_the_same_seconds():
    wav16 = bursts([12.0, 8.0], [0.5])
    wav8 = wav16[::2].copy()  # 8 kHz: same timing
    cut = boundaries(pause_chunks(wav8, 8000, 15.0))[0] / 8000
    assert 12.0 < cut < 12.5
