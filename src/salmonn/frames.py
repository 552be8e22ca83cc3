"""Audio arithmetic in one place: samples -> 30 s segments -> Whisper frames -> Q-Former windows -> LLM tokens.

The model, training (sample lengths), serving (usage counts, context limits) and evaluation all count with
these functions, so a config change (a shorter window stride, Whisper on each clip's own length) changes every
count at once.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .config import ModelConfig

# hard-coded audio hyperparameters
SAMPLE_RATE = 16000  # Hz, what both encoders expect
MIN_SAMPLES = SAMPLE_RATE  # 1 s: the reference zero-pads shorter clips to this
SEGMENT_SECONDS = 30  # s, Whisper's window
SEGMENT_SAMPLES = SEGMENT_SECONDS * SAMPLE_RATE  # 480000 samples in one Whisper window
SAMPLES_PER_FRAME = 320  # 16 kHz samples per Whisper encoder frame: hop 160 x conv2 stride 2 (20 ms)
MAX_FRAMES = SEGMENT_SAMPLES // SAMPLES_PER_FRAME  # 1500 encoder frames in a 30 s window


def window_size(seconds: float) -> int:
    """Whisper frames per Q-Former window (or stride) as the reference rounds it: 0.333333 s -> 17 frames."""
    return round(MAX_FRAMES * seconds / SEGMENT_SECONDS)


def frames_for(num_samples: torch.Tensor | int) -> torch.Tensor:
    """Encoder frames that cover `num_samples` of audio (ceil), at most one full window."""
    samples = torch.as_tensor(num_samples)
    return torch.clamp(torch.div(samples + SAMPLES_PER_FRAME - 1, SAMPLES_PER_FRAME, rounding_mode="floor"),
                       1, MAX_FRAMES)


def segment_samples(num_samples: int, long_audio: str = "segment") -> list[int]:
    """Samples of each segment the encoders see for a clip of `num_samples` (what audio.iter_segments yields):
    30 s segments, the last shorter, each padded to 1 s; long_audio="truncate" keeps only the first."""
    count = max(1, math.ceil(num_samples / SEGMENT_SAMPLES))
    if long_audio == "truncate":
        count = 1
    lengths = [min(SEGMENT_SAMPLES, num_samples - k * SEGMENT_SAMPLES) for k in range(count)]
    return [max(n, MIN_SAMPLES) for n in lengths]


def tokens_for_frames(frames: torch.Tensor, model_config: ModelConfig) -> torch.Tensor:
    """Audio tokens of segments with these Whisper frame counts [B]: windows (frames - k) // s + 1 (at least one)
    times the queries per window; without the window-level Q-Former, the queries alone."""
    queries = model_config.num_speech_query_token
    if not model_config.window_level_Qformer:
        return torch.full_like(frames, queries)
    kernel, stride = window_size(model_config.second_per_window), window_size(model_config.second_stride)
    return (torch.div(frames.clamp(min=kernel) - kernel, stride, rounding_mode="floor") + 1) * queries


def segment_frames(num_samples: int, model_config: ModelConfig) -> int:
    """Whisper frames the connector sees for one segment: the full window (faithful) or the segment's own."""
    return MAX_FRAMES if model_config.whisper_full_window else int(frames_for(num_samples))


def clip_tokens(num_samples: int, model_config: ModelConfig) -> int:
    """LLM audio tokens of a clip of `num_samples` at 16 kHz, under this model config."""
    frames = [segment_frames(n, model_config) for n in segment_samples(num_samples, model_config.long_audio)]
    return int(tokens_for_frames(torch.tensor(frames), model_config).sum())
