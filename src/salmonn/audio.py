"""Audio front end: load any audio as 16 kHz mono, probe its length, cut a clip into 30 s segments (streaming
files as it goes) and batch them. Reading files is `audio_files`; the encoders' input features are `features`.

Differences from the reference: files at other sample rates are resampled (the reference reads
them as if they were 16 kHz), formats that soundfile cannot read are decoded with PyAV, and clips
longer than 30 s are split into segments instead of being cut.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import BinaryIO, Iterator, Union

import av
import numpy as np
import soundfile as sf
import soxr
import torch

from salmonn.audio_files import check_path, decode_bytes, open_blocks, read_file, soundfile_first
from salmonn.errors import AudioError
from salmonn.frames import MIN_SAMPLES, SAMPLE_RATE, SEGMENT_SAMPLES

RESAMPLE_QUALITY = "VHQ"  # soxr's very-high-quality filter


AudioSource = Union[str, os.PathLike, bytes, bytearray, memoryview, np.ndarray, torch.Tensor]


# ---------------------------------------------------------------------------------------------
# loading


def load_audio(
    source: AudioSource,
    sample_rate: int | None = None,
    *,
    channel: str = "first",
    resample: bool = True,
    name: str | None = None,
) -> np.ndarray:
    """Return `source` as a float32 mono waveform [N] at SAMPLE_RATE.

    source: a path (anything soundfile reads; otherwise decoded with PyAV: mp3, m4a, opus, video
    containers...), the bytes of an encoded file, or samples as a numpy array / torch tensor of
    shape [N] or [N, channels] (then `sample_rate` is required; integer PCM is scaled to [-1, 1]).
    For files and bytes the rate comes from the file; a `sample_rate` given with them must match it.
    channel: "first" keeps the first channel (the reference's behaviour), "mean" downmixes.
    name: what error messages call the source (default: the path, "<bytes>" or "<array>").
    Raises AudioError for unreadable, empty or non-finite audio.
    """
    if channel not in ("first", "mean"):
        raise ValueError(f"channel must be 'first' or 'mean', got {channel!r}")
    if isinstance(source, (str, os.PathLike)):
        label = name or str(source)
        samples, rate = read_file(Path(source), label)
        _check_given_rate(sample_rate, rate, label)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "<bytes>"
        samples, rate = decode_bytes(bytes(source), label)
        _check_given_rate(sample_rate, rate, label)
    elif isinstance(source, (np.ndarray, torch.Tensor)):
        label = name or "<array>"
        if sample_rate is None:
            raise AudioError(f"{label}: samples given without a sample rate; pass sample_rate=<Hz>")
        samples, rate = _array_to_float(source, label), int(sample_rate)
    else:
        raise AudioError(
            f"{name or '<input>'}: cannot load audio from a {type(source).__name__}; "
            "pass a path, file bytes, or a numpy array / torch tensor of samples"
        )
    _check_samples(samples, label)
    wav = _to_mono(samples, channel)
    return _to_sample_rate(wav, rate, resample, label)


def probe_seconds(source: AudioSource, sample_rate: int | None = None) -> float | None:
    """Duration in seconds from the header (files, bytes) or the shape (arrays), without decoding; None when it
    cannot be told cheaply (the decoder then reports any problem). Used to refuse over-long audio up front."""
    if isinstance(source, (np.ndarray, torch.Tensor)):
        return source.shape[0] / sample_rate if sample_rate and source.ndim >= 1 else None
    if isinstance(source, (bytes, bytearray, memoryview)):
        file = io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        if not Path(source).is_file():
            return None
        file = str(source)
    else:
        return None
    try:
        head = (open(file, "rb").read(16) if isinstance(file, str) else bytes(source[:16]))
        if soundfile_first(head):
            info = sf.info(file)
            return info.frames / info.samplerate if info.samplerate else None
        with av.open(file, mode="r") as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is not None and stream.duration and stream.time_base:
                return float(stream.duration * stream.time_base)
            return container.duration / 1e6 if container.duration else None
    except Exception:  # noqa: BLE001 - probing is best effort; decoding gives the real error
        return None


def _check_given_rate(sample_rate: int | None, file_rate: int, label: str) -> None:
    if sample_rate is not None and int(sample_rate) != file_rate:
        raise AudioError(
            f"{label}: the file is {file_rate} Hz but sample_rate={sample_rate} was given; "
            "leave sample_rate unset for files (the output is always 16 kHz)"
        )


def _array_to_float(samples: np.ndarray | torch.Tensor, label: str) -> np.ndarray:
    """Samples [N] or [N, C] of any numeric dtype -> float32 [N, C]; integer PCM scaled to [-1, 1]."""
    if isinstance(samples, torch.Tensor):
        samples = samples.detach().cpu()
        if samples.is_floating_point() and samples.dtype != torch.float64:
            samples = samples.float()  # numpy has no bfloat16
        samples = samples.numpy()
    samples = np.asarray(samples)
    if samples.ndim == 1:
        samples = samples[:, None]  # [N] -> [N, 1]
    if samples.ndim != 2:
        raise AudioError(f"{label}: samples must have shape [N] or [N, channels], got {samples.shape}")
    if 0 < samples.shape[0] < samples.shape[1]:
        raise AudioError(
            f"{label}: shape {samples.shape} has more channels than samples; "
            "pass [samples, channels] (transpose a [channels, samples] array)"
        )
    return _pcm_to_float(samples, label)


def _pcm_to_float(samples: np.ndarray, label: str) -> np.ndarray:
    if np.issubdtype(samples.dtype, np.floating):
        return samples.astype(np.float32, copy=False)
    if np.issubdtype(samples.dtype, np.signedinteger):
        full_scale = float(2 ** (8 * samples.dtype.itemsize - 1))  # int16 -> 32768
        return (samples.astype(np.float64) / full_scale).astype(np.float32)
    if np.issubdtype(samples.dtype, np.unsignedinteger):
        midpoint = float(2 ** (8 * samples.dtype.itemsize - 1))  # uint8 -> 128
        return ((samples.astype(np.float64) - midpoint) / midpoint).astype(np.float32)
    raise AudioError(f"{label}: samples of dtype {samples.dtype} are not audio; pass float or integer PCM")


def _check_samples(samples: np.ndarray, label: str) -> None:
    if samples.shape[0] == 0:
        raise AudioError(f"{label}: contains no samples; check the file (it may be truncated)")
    if not np.isfinite(samples).all():
        raise AudioError(f"{label}: contains NaN or infinite samples; fix or re-export the audio")


def _to_mono(samples: np.ndarray, channel: str) -> np.ndarray:
    """[N, C] -> [N]."""
    if channel == "first":
        return np.ascontiguousarray(samples[:, 0])
    return samples.mean(axis=1, dtype=np.float64).astype(np.float32)


def _to_sample_rate(wav: np.ndarray, rate: int, resample: bool, label: str) -> np.ndarray:
    if rate == SAMPLE_RATE:
        return wav
    if rate <= 0:
        raise AudioError(f"{label}: invalid sample rate {rate} Hz; give the true rate in Hz")
    if not resample:
        raise AudioError(
            f"{label}: sample rate is {rate} Hz, not {SAMPLE_RATE} Hz; enable resampling (resample=True)"
        )
    wav = soxr.resample(wav, rate, SAMPLE_RATE, quality=RESAMPLE_QUALITY).astype(np.float32, copy=False)
    if wav.shape[0] == 0:
        raise AudioError(f"{label}: too short to resample to {SAMPLE_RATE} Hz; give a longer clip")
    return wav


# ---------------------------------------------------------------------------------------------
# streaming: long files segment by segment


def iter_segments(
    source: AudioSource,
    sample_rate: int | None = None,
    *,
    channel: str = "first",
    resample: bool = True,
    name: str | None = None,
    max_seconds: float | None = None,
) -> Iterator[np.ndarray]:
    """Yield `source` as consecutive 16 kHz mono segments of SEGMENT_SAMPLES (the last one shorter, and every one
    zero-padded to MIN_SAMPLES), decoding files as it goes: memory holds one segment and a decoder block, not the
    whole file. The samples are exactly those of split_segments(load_audio(...)) (soxr streams bit-exactly), and
    every problem load_audio reports is reported here too, with the same words; a file longer than `max_seconds`
    stops with an AudioError as soon as that is clear. The bytes of a file are decoded the same way (a short
    file that declares no duration cannot make its decoder expand hours of audio); arrays are loaded whole.
    """
    if channel not in ("first", "mean"):
        raise ValueError(f"channel must be 'first' or 'mean', got {channel!r}")
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "<bytes>"
        if not source:
            raise AudioError(f"{label}: no data (0 bytes); pass the content of an audio file")
        file: Path | BinaryIO = io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        label = name or str(source)
        file = Path(source)
        check_path(file, label)
    else:
        wav = load_audio(source, sample_rate, channel=channel, resample=resample, name=name)
        _check_length(len(wav), max_seconds, name or "<array>")
        for segment in split_segments(wav):
            yield pad_to_min(segment)
        return
    rate, blocks = open_blocks(file, label)
    try:
        _check_given_rate(sample_rate, rate, label)
        if rate <= 0:
            raise AudioError(f"{label}: invalid sample rate {rate} Hz; give the true rate in Hz")
        if rate != SAMPLE_RATE and not resample:
            raise AudioError(
                f"{label}: sample rate is {rate} Hz, not {SAMPLE_RATE} Hz; enable resampling (resample=True)"
            )
        yield from _stream_segments(blocks, rate, channel, max_seconds, label)
    finally:
        blocks.close()


def _stream_segments(blocks: Iterator[np.ndarray], rate: int, channel: str, max_seconds: float | None,
                     label: str) -> Iterator[np.ndarray]:
    """Decoder blocks [n, C] at `rate` -> 16 kHz mono segments (see iter_segments)."""
    stream = None
    if rate != SAMPLE_RATE:
        stream = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality=RESAMPLE_QUALITY)
    pending: list[np.ndarray] = []
    buffered = emitted = decoded = 0
    for block in blocks:  # [n, C] float32
        if not np.isfinite(block).all():
            raise AudioError(f"{label}: contains NaN or infinite samples; fix or re-export the audio")
        decoded += block.shape[0]
        mono = _to_mono(block, channel)
        if stream is not None:
            mono = stream.resample_chunk(mono, last=False)
        pending.append(mono)
        buffered += mono.shape[0]
        _check_length(emitted + buffered, max_seconds, label, partial=True)
        while buffered >= SEGMENT_SAMPLES:
            joined = np.concatenate(pending)
            yield joined[:SEGMENT_SAMPLES]
            emitted += SEGMENT_SAMPLES
            pending, buffered = [joined[SEGMENT_SAMPLES:]], joined.shape[0] - SEGMENT_SAMPLES
    if decoded == 0:
        raise AudioError(f"{label}: contains no samples; check the file (it may be truncated)")
    if stream is not None:
        pending.append(stream.resample_chunk(np.zeros(0, np.float32), last=True))
    rest = np.concatenate(pending).astype(np.float32, copy=False)
    _check_length(emitted + rest.shape[0], max_seconds, label)
    if emitted == 0 and rest.shape[0] == 0:
        raise AudioError(f"{label}: too short to resample to {SAMPLE_RATE} Hz; give a longer clip")
    for start in range(0, rest.shape[0], SEGMENT_SAMPLES):
        yield pad_to_min(rest[start : start + SEGMENT_SAMPLES])


LENGTH_PROBE_SLACK = 1.25  # header durations may be bitrate estimates: refuse before decoding only well above


def audio_name(item) -> str:
    """What messages call an audio item: its path, or <bytes> / <array>."""
    if isinstance(item, tuple):
        item = item[0]
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return "<bytes>"
    if isinstance(item, (np.ndarray, torch.Tensor)):
        return "<array>"
    return f"<{type(item).__name__}>"


def clip_segments(item, sample_rate: int | None = None, *, channel: str = "first", resample: bool = True,
                  long_audio: str = "segment", max_seconds: float | None = None) -> Iterator[np.ndarray]:
    """One clip (a path, bytes, an array, or an (array, rate) pair) -> its <=30 s segments as they are decoded.

    long_audio="truncate" keeps the first 30 s (the reference's cut; nothing after it is decoded). Otherwise audio
    longer than `max_seconds` is refused: before decoding when the header already tells, else as soon as it is
    clear. AudioError naming the item for anything unusable.
    """
    if isinstance(item, tuple):
        item, sample_rate = item
    name = audio_name(item)
    truncate = long_audio == "truncate"
    probed = None if truncate else probe_seconds(item, sample_rate)
    if probed is not None and max_seconds is not None and probed > LENGTH_PROBE_SLACK * max_seconds + 1:
        raise AudioError(f"{name}: about {probed:.0f} s is longer than max_audio_seconds={max_seconds:g}; "
                         f"raise it (model.max_audio_seconds=...) or cut the file")
    segments = iter_segments(item, sample_rate, channel=channel, resample=resample, name=name,
                             max_seconds=None if truncate else max_seconds)
    if not truncate:
        yield from segments
        return
    first = next(segments)
    segments.close()
    yield first


class AudioTooLong(AudioError):
    """Audio longer than the `max_seconds` it was loaded with."""


def _check_length(samples: int, max_seconds: float | None, label: str, partial: bool = False) -> None:
    if max_seconds is None or samples <= max_seconds * SAMPLE_RATE:
        return
    seconds = f"more than {max_seconds:g} s" if partial else f"{samples / SAMPLE_RATE:.1f} s"
    raise AudioTooLong(f"{label}: {seconds} is longer than max_audio_seconds={max_seconds:g}; "
                     "raise it (model.max_audio_seconds=...) or cut the file")


# ---------------------------------------------------------------------------------------------
# segments and batches


def pad_to_min(wav: np.ndarray) -> np.ndarray:
    """Zero-pad at the end to MIN_SAMPLES (1 s), as the reference does; longer clips unchanged."""
    if wav.shape[0] >= MIN_SAMPLES:
        return wav
    return np.pad(wav, (0, MIN_SAMPLES - wav.shape[0]))


def split_segments(wav: np.ndarray, segment_samples: int = SEGMENT_SAMPLES) -> list[np.ndarray]:
    """Consecutive segments of `segment_samples` (views); the last may be shorter (padded to 1 s).

    A clip no longer than one segment is returned as [wav], unchanged.
    """
    if wav.shape[0] <= segment_samples:
        return [wav]
    segments = [wav[start : start + segment_samples] for start in range(0, wav.shape[0], segment_samples)]
    segments[-1] = pad_to_min(segments[-1])
    return segments


def batch_waveforms(wavs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad at the end to the longest -> raw_wav float32 [B, N], padding_mask bool [B, N] (True = pad)."""
    if len(wavs) == 0:
        raise ValueError("batch_waveforms needs at least one waveform")
    lengths = torch.tensor([len(wav) for wav in wavs])  # [B]
    raw_wav = torch.zeros(len(wavs), int(lengths.max()), dtype=torch.float32)  # [B, N]
    for row, wav in enumerate(wavs):
        raw_wav[row, : len(wav)] = torch.as_tensor(np.asarray(wav, dtype=np.float32))
    padding_mask = torch.arange(raw_wav.shape[1])[None, :] >= lengths[:, None]  # [B, N]
    return raw_wav, padding_mask
