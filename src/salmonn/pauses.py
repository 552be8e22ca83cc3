"""Pause-aligned chunks for the long-form mode: cut long audio where the speaker pauses, so that no chunk is longer
than a maximum and a word is not cut in two by a fixed 30 s boundary (`salmonn infer --long-form`, `pause` chunks).

A pure function of a float waveform and its sample rate. The level of each 25 ms frame (RMS, dB re full scale) is
measured over the first `max_samples` of what is left; a frame is quiet when it is near that window's noise floor
and clearly below its loud frames, or digitally silent. The cut goes to the middle of the longest run of quiet
frames between half the maximum and the maximum (the later run on a tie: fewer chunks); with no quiet frame there
(a tone, steady noise, music without rests) it is a hard cut at the maximum. Nothing is dropped or added: the
chunks concatenate back to the input exactly.
"""

from __future__ import annotations

import math
from typing import Iterable, Iterator

import numpy as np

# constants
FRAME_SECONDS = 0.025  # s, one level measurement (400 samples at 16 kHz)
FLOOR_PERCENTILE = 5.0  # %, of a window's frame levels: its noise floor
LOUD_PERCENTILE = 95.0  # %, of a window's frame levels: its loud level
QUIET_ABOVE_FLOOR_DB = 6.0  # dB: a frame at most this far above the floor is quiet...
MIN_CONTRAST_DB = 12.0  # dB: ...if it is also at least this far below the loud level (a tone has no pauses)
SILENCE_DBFS = -60.0  # dB re full scale: a frame this quiet is a pause in any window
LEVEL_EPS = 1e-10  # added to the mean square before the log: digital silence is -100 dB
MIN_CHUNK_FRACTION = 0.5  # a chunk that is not the last is 0.5 to 1 times the maximum length


def frame_levels(wav: np.ndarray, frame: int) -> np.ndarray:
    """Level in dB re full scale of each whole `frame`-sample frame: [N] -> [N // frame] (a partial tail is not
    measured)."""
    count = wav.shape[0] // frame
    frames = np.asarray(wav[: count * frame], dtype=np.float64).reshape(count, frame)  # [N'] -> [F, frame]
    return 10.0 * np.log10(np.mean(frames * frames, axis=1) + LEVEL_EPS)  # [F]


def quiet_frames(levels: np.ndarray) -> np.ndarray:
    """Which frames of a window are pauses: levels [F] dB -> bool [F]."""
    floor, loud = np.percentile(levels, [FLOOR_PERCENTILE, LOUD_PERCENTILE])
    threshold = min(floor + QUIET_ABOVE_FLOOR_DB, loud - MIN_CONTRAST_DB)
    return (levels <= threshold) | (levels <= SILENCE_DBFS)


def pause_cut(wav: np.ndarray, sample_rate: int, max_samples: int) -> int:
    """Where the first chunk of `wav` ends (a sample index in [1, max_samples]): the middle of the longest quiet run
    whose frames lie between MIN_CHUNK_FRACTION x max_samples and max_samples (the later one on a tie), or
    max_samples (a hard cut) when there is none. `wav` [N] may be longer than max_samples; only its first
    max_samples are looked at."""
    frame = max(1, round(FRAME_SECONDS * sample_rate))  # samples per frame
    levels = frame_levels(wav[:max_samples], frame)  # [F] frames wholly inside the window
    first = math.ceil(MIN_CHUNK_FRACTION * max_samples / frame)  # first frame a cut may fall in
    if levels.shape[0] <= first:
        return max_samples
    quiet = quiet_frames(levels)  # [F]
    quiet[:first] = False
    edges = np.diff(np.concatenate([[0], quiet.astype(np.int8), [0]]))  # [F + 1]: +1 a run starts, -1 it ended
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # [R] each, frame indices, end exclusive
    if starts.shape[0] == 0:
        return max_samples
    best = max(range(starts.shape[0]), key=lambda r: (ends[r] - starts[r], starts[r]))  # longest, then latest
    return max(1, min(max_samples, (starts[best] + ends[best]) * frame // 2))


def iter_pause_chunks(blocks: Iterable[np.ndarray], sample_rate: int, max_seconds: float) -> Iterator[np.ndarray]:
    """Consecutive float waveforms [n_i] (e.g. decoded segments of a file) -> pause-aligned chunks of at most
    `max_seconds` each, as soon as each is decided: memory holds at most one maximum chunk plus one block. The
    chunks concatenate to the concatenated blocks exactly."""
    if max_seconds <= 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")
    max_samples = max(1, round(max_seconds * sample_rate))
    buffer = np.zeros(0, np.float32)  # [n] not yet in a chunk
    for block in blocks:
        buffer = np.concatenate([buffer, np.asarray(block)]) if buffer.shape[0] else np.asarray(block)
        while buffer.shape[0] > max_samples:
            cut = pause_cut(buffer, sample_rate, max_samples)
            yield buffer[:cut]
            buffer = buffer[cut:]
    if buffer.shape[0]:
        yield buffer


def pause_chunks(wav: np.ndarray, sample_rate: int, max_seconds: float) -> list[np.ndarray]:
    """A float waveform [N] -> its pause-aligned chunks (views), each at most `max_seconds` long; audio no longer
    than that is one chunk. np.concatenate(pause_chunks(wav, ...)) equals wav."""
    return list(iter_pause_chunks([wav], sample_rate, max_seconds))
