"""The encoders' input features: Whisper's log-mel (transformers' feature extractor) and BEATs' Kaldi fbank
(torchaudio.compliance.kaldi.fbank's numbers, written here so torchaudio is not needed)."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from salmonn.frames import SAMPLE_RATE


# BEATs fbank input (torchaudio.compliance.kaldi.fbank defaults unless noted)
FBANK_NUM_MEL_BINS = 128  # BEATs' setting (Kaldi default is 23)


FBANK_FRAME_LENGTH_MS = 25.0  # ms -> 400 samples at 16 kHz


FBANK_FRAME_SHIFT_MS = 10.0  # ms -> 160 samples at 16 kHz


FBANK_WAV_SCALE = 2**15  # BEATs feeds int16-range samples to Kaldi


FBANK_MEAN = 15.41663  # log-mel units, BEATs normalisation


FBANK_STD = 6.55582  # log-mel units, BEATs normalisation


PREEMPHASIS = 0.97  # Kaldi preemphasis-coefficient


POVEY_EXPONENT = 0.85  # povey window = hann(periodic=False) ** 0.85


MEL_LOW_FREQ = 20.0  # Hz, Kaldi low-freq


LOG_FLOOR = torch.finfo(torch.float32).eps  # Kaldi's floor before log (float32 epsilon)


def whisper_log_mel(wavs: list[np.ndarray], feature_extractor) -> torch.Tensor:
    """Whisper log-mel [B, n_mels, 3000] of each (unpadded) clip, padded/trimmed to 30 s by the
    transformers WhisperFeatureExtractor itself (one batched call: same numbers as per clip).
    Clips longer than 30 s are trimmed by the extractor: split them first (split_segments)."""
    clips = [np.asarray(wav, dtype=np.float32) for wav in wavs]
    features = feature_extractor(clips, sampling_rate=SAMPLE_RATE, return_tensors="pt")
    return features.input_features  # [B, n_mels, 3000]


def kaldi_fbank(
    waveforms: torch.Tensor,
    num_mel_bins: int = FBANK_NUM_MEL_BINS,
    sample_rate: int = SAMPLE_RATE,
    frame_length_ms: float = FBANK_FRAME_LENGTH_MS,
    frame_shift_ms: float = FBANK_FRAME_SHIFT_MS,
) -> torch.Tensor:
    """Log mel filterbank [B, n_frames, num_mel_bins] of waveforms [B, N], computed as
    torchaudio.compliance.kaldi.fbank does with its defaults (dither 0, snip_edges, povey window,
    power spectrum, no energy term), one clip per row.

    Computed in float64, returned in the input's float dtype: float32 FFT rounding (which differs
    between backends) shows in the lowest mel bins, where DC removal leaves little energy.
    """
    if waveforms.dim() != 2:
        raise ValueError(f"kaldi_fbank expects waveforms [B, N], got shape {tuple(waveforms.shape)}")
    out_dtype = waveforms.dtype if waveforms.is_floating_point() else torch.float32
    frame_length = int(sample_rate * frame_length_ms * 0.001)  # samples, 400 at 16 kHz
    frame_shift = int(sample_rate * frame_shift_ms * 0.001)  # samples, 160 at 16 kHz
    if waveforms.shape[1] < frame_length:
        raise ValueError(f"kaldi_fbank needs at least {frame_length} samples, got {waveforms.shape[1]}")
    fft_size = 1 << (frame_length - 1).bit_length()  # next power of two, 512
    frames = waveforms.double().unfold(1, frame_length, frame_shift)  # [B, N] -> [B, F, frame_length]
    frames = _prepare_frames(frames)
    spectrum = torch.fft.rfft(frames, n=fft_size).abs().pow(2.0)  # [B, F, fft_size // 2 + 1]
    banks = _kaldi_mel_banks(num_mel_bins, fft_size, float(sample_rate))  # [M, fft_size // 2 + 1]
    banks = banks.to(spectrum.device)
    mel_energies = torch.matmul(spectrum, banks.T)  # [B, F, M]
    return mel_energies.clamp_min(LOG_FLOOR).log().to(out_dtype)


def _prepare_frames(frames: torch.Tensor) -> torch.Tensor:
    """Per frame [..., L]: remove DC offset, pre-emphasise (first sample replicated), povey window."""
    frames = frames - frames.mean(dim=-1, keepdim=True)
    previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)  # x[n-1], with x[-1] := x[0]
    frames = frames - PREEMPHASIS * previous
    window = torch.hann_window(frames.shape[-1], periodic=False, dtype=frames.dtype, device=frames.device)
    return frames * window.pow(POVEY_EXPONENT)


def _mel(freq: torch.Tensor | float) -> torch.Tensor | float:
    """Kaldi's mel scale: 1127 ln(1 + f / 700)."""
    if isinstance(freq, torch.Tensor):
        return 1127.0 * (1.0 + freq / 700.0).log()
    return 1127.0 * math.log(1.0 + freq / 700.0)


@functools.lru_cache(maxsize=8)
def _kaldi_mel_banks(num_bins: int, fft_size: int, sample_rate: float) -> torch.Tensor:
    """Triangular (in mel) filters from MEL_LOW_FREQ to Nyquist -> [num_bins, fft_size // 2 + 1] float64;
    the Nyquist column is zero, as in Kaldi."""
    nyquist = 0.5 * sample_rate
    low_mel, high_mel = _mel(MEL_LOW_FREQ), _mel(nyquist)
    mel_step = (high_mel - low_mel) / (num_bins + 1)
    bin_index = torch.arange(num_bins, dtype=torch.float64).unsqueeze(1)  # [M, 1]
    left = low_mel + bin_index * mel_step  # [M, 1]
    center = low_mel + (bin_index + 1.0) * mel_step
    right = low_mel + (bin_index + 2.0) * mel_step
    fft_bin_freq = (sample_rate / fft_size) * torch.arange(fft_size // 2, dtype=torch.float64)  # [K], Hz
    fft_bin_mel = _mel(fft_bin_freq).unsqueeze(0)  # [K] -> [1, K]
    rising = (fft_bin_mel - left) / (center - left)  # [M, K]
    falling = (right - fft_bin_mel) / (right - center)  # [M, K]
    banks = torch.clamp(torch.minimum(rising, falling), min=0.0)  # [M, K]
    return torch.nn.functional.pad(banks, (0, 1))  # [M, K] -> [M, K + 1]


def beats_fbank(raw_wav: torch.Tensor) -> torch.Tensor:
    """BEATs input: normalised 128-bin Kaldi fbank of raw_wav [B, N] in int16 range -> [B, frames, 128]."""
    fbank = kaldi_fbank(raw_wav * FBANK_WAV_SCALE, num_mel_bins=FBANK_NUM_MEL_BINS)  # [B, F, 128]
    return (fbank - FBANK_MEAN) / (2 * FBANK_STD)
