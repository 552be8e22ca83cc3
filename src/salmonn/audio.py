"""Audio front end: load any audio file as 16 kHz mono, split it into 30 s segments, batch it,
and compute the two encoders' input features (Whisper log-mel, BEATs Kaldi fbank).

Differences from the reference: files at other sample rates are resampled (the reference reads
them as if they were 16 kHz), formats that soundfile cannot read are decoded with PyAV, and clips
longer than 30 s are split into segments instead of being cut.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import os
from pathlib import Path
from typing import BinaryIO, Iterator, Union

import av
import numpy as np
import soundfile as sf
import soxr
import torch

from salmonn.errors import AudioError
from salmonn.frames import MIN_SAMPLES, SAMPLE_RATE, SEGMENT_SAMPLES, SEGMENT_SECONDS  # noqa: F401 (re-exported)

RESAMPLE_QUALITY = "VHQ"  # soxr's very-high-quality filter
WAV_UNKNOWN_DATA_SIZE = 0x7FFF0000  # bytes; streaming writers put a placeholder at or above this

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
        samples, rate = _read_path(Path(source), label)
        _check_given_rate(sample_rate, rate, label)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "<bytes>"
        samples, rate = _decode_bytes(bytes(source), label)
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
        if _soundfile_first(head):
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


def _read_path(path: Path, label: str) -> tuple[np.ndarray, int]:
    """Decode a file on disk -> samples [N, C] float32 and its rate."""
    if not path.exists():
        raise AudioError(f"{label}: file not found; check the path")
    if path.is_dir():
        raise AudioError(f"{label}: is a directory, not an audio file; give the path of a file")
    if path.stat().st_size == 0:
        raise AudioError(f"{label}: file is empty (0 bytes); re-export or re-download it")
    with open(path, "rb") as file:
        head = file.read(16)
    if not _soundfile_first(head):
        return _read_with_av(str(path), label)
    try:
        samples, rate = _read_with_soundfile(path)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        return _read_with_av(str(path), label)
    with open(path, "rb") as file:
        _check_wav_complete(file, label)
    return samples, rate


def _decode_bytes(data: bytes, label: str) -> tuple[np.ndarray, int]:
    """Decode the content of an encoded file -> samples [N, C] float32 and its rate."""
    if not data:
        raise AudioError(f"{label}: no data (0 bytes); pass the content of an audio file")
    buffer = io.BytesIO(data)
    if not _soundfile_first(data[:16]):
        return _read_with_av(buffer, label)
    try:
        samples, rate = _read_with_soundfile(buffer)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        buffer.seek(0)
        return _read_with_av(buffer, label)
    _check_wav_complete(buffer, label)
    return samples, rate


# Containers libsndfile reads itself (WAV/RF64/W64, AIFF, FLAC, Ogg, CAF, AU). Everything else (MP3, MP4/M4A,
# ADTS AAC, Matroska/WebM, garbage) goes straight to FFmpeg: libsndfile's MP3 decoder prints resync notes on
# stderr for damaged or non-audio data, which would break one-line errors.
_SOUNDFILE_MAGIC = (b"RIFF", b"RIFX", b"RF64", b"BW64", b"riff", b"FORM", b"fLaC", b"OggS", b"caff", b".snd")


def _soundfile_first(head: bytes) -> bool:
    return head[:4] in _SOUNDFILE_MAGIC


def _read_with_soundfile(file) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(file, dtype="float32", always_2d=True)  # [N, C]
    return samples, int(rate)


def _check_wav_complete(file: BinaryIO, label: str) -> None:
    """Raise if a RIFF/WAVE file holds fewer data bytes than its header declares (a cut-off copy;
    soundfile would silently return only the part that is there)."""
    missing = _missing_wav_data_bytes(file)
    if missing > 0:
        raise AudioError(
            f"{label}: truncated: {missing} bytes of audio declared in the WAV header are missing; "
            "re-download or re-export the file"
        )


def _missing_wav_data_bytes(file: BinaryIO) -> int:
    """Declared minus present bytes of the 'data' chunk; 0 if complete, not WAV, or size unknown."""
    file_size = file.seek(0, io.SEEK_END)
    file.seek(0)
    header = file.read(12)
    if header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        return 0
    position = 12
    while position + 8 <= file_size:
        file.seek(position)
        chunk_id, chunk_size = file.read(4), int.from_bytes(file.read(4), "little")
        if chunk_id == b"data":
            if chunk_size >= WAV_UNKNOWN_DATA_SIZE:
                return 0
            return max(0, chunk_size - (file_size - position - 8))
        position += 8 + chunk_size + (chunk_size & 1)  # chunks are word-aligned
    return 0


def _read_with_av(file, label: str) -> tuple[np.ndarray, int]:
    """Decode the first audio stream with PyAV (FFmpeg) -> samples [N, C] float32 and its rate."""
    try:
        with av.open(file, mode="r") as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                raise AudioError(
                    f"{label}: not an audio file or it has no audio stream; "
                    "convert it to wav/flac/mp3"
                )
            if stream.codec_context is None:  # FFmpeg knows the container but has no decoder for the codec
                codec = getattr(stream.codec, "name", None) if hasattr(stream, "codec") else None
                raise AudioError(
                    f"{label}: unsupported audio codec ({codec or 'unknown codec id'}) in a "
                    f"{container.format.name} file; convert it to wav/flac"
                )
            declared = _declared_seconds(container, stream, file)
            samples, rate = _decode_stream(container, stream)
    except AudioError:
        raise
    except (av.FFmpegError, ValueError, OSError, EOFError) as error:
        reason = getattr(error, "strerror", None) or str(error).strip() or type(error).__name__
        raise AudioError(
            f"{label}: cannot decode ({reason}): the file is corrupt, truncated or not audio; "
            "check it or convert it to wav/flac"
        ) from None
    if declared is not None:
        decoded = samples.shape[0] / rate
        if decoded < TRUNCATED_FRACTION * declared and declared - decoded > TRUNCATED_MIN_SECONDS:
            raise AudioError(
                f"{label}: truncated: the header declares {declared:.1f} s but only {decoded:.1f} s "
                "could be decoded; re-download or re-export the file"
            )
    return samples, rate


TRUNCATED_FRACTION = 0.9  # decoded / declared duration below this (and ...)
TRUNCATED_MIN_SECONDS = 0.5  # ... more than this many seconds missing) means a cut-off file
# Containers whose declared duration FFmpeg may only estimate from the bitrate (no length in the header).
_ESTIMATED_DURATION_FORMATS = {"aac", "ac3", "eac3", "amr", "mp3"}


def _declared_seconds(container, stream, file) -> float | None:
    """The audio stream's duration as its header states it, or None when the header has none (raw streams,
    Ogg, MP3 without a Xing/Info/VBRI frame count): then FFmpeg's figure is a guess, not evidence of a cut."""
    if stream.duration is None or stream.time_base is None or stream.duration <= 0:
        return None
    names = set(container.format.name.split(","))
    if names & {"ogg"}:
        return None  # FFmpeg reads Ogg durations from the last page present: never longer than the data
    if names & _ESTIMATED_DURATION_FORMATS and not ("mp3" in names and _has_mp3_frame_count(file)):
        return None
    return float(stream.duration * stream.time_base)


def _has_mp3_frame_count(file) -> bool:
    """True if the first MPEG frame after any ID3v2 tag carries a Xing/Info/VBRI header (exact length)."""
    if isinstance(file, (str, os.PathLike)):
        with open(file, "rb") as handle:
            return _has_mp3_frame_count(handle)
    position = file.tell()
    try:
        file.seek(0)
        head = file.read(10)
        start = 0
        if head[:3] == b"ID3" and len(head) == 10:
            size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]  # synchsafe integer
            start = 10 + size + (10 if head[5] & 0x10 else 0)  # footer flag
        file.seek(start)
        frame = file.read(4096)
        return any(tag in frame for tag in (b"Xing", b"Info", b"VBRI"))
    finally:
        file.seek(position)


def _decode_stream(container, stream) -> tuple[np.ndarray, int]:
    """All frames of `stream` as planar float32, in the first frame's layout and rate."""
    chunks: list[np.ndarray] = []
    resampler = None
    for frame in container.decode(stream):
        if resampler is None:  # fix format, layout and rate to those of the first frame
            resampler = av.AudioResampler(format="fltp", layout=frame.layout, rate=frame.sample_rate)
            rate = frame.sample_rate
        chunks += [out.to_ndarray() for out in resampler.resample(frame)]  # each [C, n]
    if resampler is None:
        return np.zeros((0, 1), dtype=np.float32), stream.rate or SAMPLE_RATE
    chunks += [out.to_ndarray() for out in resampler.resample(None)]  # flush
    samples = np.concatenate(chunks, axis=1).T  # [C, N] -> [N, C]
    return np.ascontiguousarray(samples, dtype=np.float32), int(rate)


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


STREAM_BLOCK_SECONDS = 10  # s of source audio decoded at a time by iter_segments


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
        _check_path(file, label)
    else:
        wav = load_audio(source, sample_rate, channel=channel, resample=resample, name=name)
        _check_length(len(wav), max_seconds, name or "<array>")
        for piece in split_segments(wav):
            yield pad_to_min(piece)
        return
    rate, blocks = _open_blocks(file, label)
    try:
        _check_given_rate(sample_rate, rate, label)
        if rate <= 0:
            raise AudioError(f"{label}: invalid sample rate {rate} Hz; give the true rate in Hz")
        if rate != SAMPLE_RATE and not resample:
            raise AudioError(
                f"{label}: sample rate is {rate} Hz, not {SAMPLE_RATE} Hz; enable resampling (resample=True)"
            )
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
    finally:
        blocks.close()


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


def _check_path(path: Path, label: str) -> None:
    if not path.exists():
        raise AudioError(f"{label}: file not found; check the path")
    if path.is_dir():
        raise AudioError(f"{label}: is a directory, not an audio file; give the path of a file")
    if path.stat().st_size == 0:
        raise AudioError(f"{label}: file is empty (0 bytes); re-export or re-download it")


def _open_blocks(file: Path | BinaryIO, label: str):
    """(sample rate, generator of [n, C] float32 blocks) for a file (a path or the file's bytes in a BytesIO),
    soundfile first where it reads the container, else PyAV. The first block is decoded before returning, so a
    file neither can read fails here."""
    with (open(file, "rb") if isinstance(file, Path) else contextlib.nullcontext(file)) as raw:
        head = raw.read(16)
        if _soundfile_first(head):
            _check_wav_complete(raw, label)
        raw.seek(0)
    source = str(file) if isinstance(file, Path) else file
    if _soundfile_first(head):
        try:
            handle = sf.SoundFile(source)
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
            handle = None
        if handle is not None and handle.subtype == "OPUS":  # libsndfile returns garbage for Opus read in blocks
            handle.close()
            handle = None
        if handle is not None:
            try:
                first = handle.read(STREAM_BLOCK_SECONDS * handle.samplerate, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
                handle.close()
            else:
                return int(handle.samplerate), _soundfile_blocks(handle, first, label)
        if not isinstance(source, str):
            source.seek(0)
    return _av_blocks(source, label)


def _soundfile_blocks(handle, first: np.ndarray, label: str) -> Iterator[np.ndarray]:
    try:
        block = first
        while block.shape[0] > 0:
            yield block
            try:
                block = handle.read(STREAM_BLOCK_SECONDS * handle.samplerate, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as error:
                raise AudioError(f"{label}: cannot decode past {handle.tell() / handle.samplerate:.1f} s ({error}): "
                                 "the file is corrupt or truncated; re-export it") from None
    finally:
        handle.close()


def _av_blocks(file: str | BinaryIO, label: str):
    """Like _read_with_av, block by block: (rate of the first frame, generator of [n, C] float32 blocks)."""
    try:
        container = av.open(file, mode="r")
    except (av.FFmpegError, ValueError, OSError, EOFError) as error:
        raise _av_error(error, label) from None
    try:
        stream = next((s for s in container.streams if s.type == "audio"), None)
        if stream is None:
            raise AudioError(f"{label}: not an audio file or it has no audio stream; convert it to wav/flac/mp3")
        if stream.codec_context is None:
            codec = getattr(stream.codec, "name", None) if hasattr(stream, "codec") else None
            raise AudioError(f"{label}: unsupported audio codec ({codec or 'unknown codec id'}) in a "
                             f"{container.format.name} file; convert it to wav/flac")
        declared = _declared_seconds(container, stream, file)
        frames = container.decode(stream)
        first = next(frames, None)
    except AudioError:
        container.close()
        raise
    except (av.FFmpegError, ValueError, OSError, EOFError) as error:
        container.close()
        raise _av_error(error, label) from None
    if first is None:
        container.close()
        return stream.rate or SAMPLE_RATE, _no_blocks()
    rate = first.sample_rate
    return rate, _av_block_iter(container, frames, first, declared, label)


def _no_blocks() -> Iterator[np.ndarray]:
    yield from ()


def _av_block_iter(container, frames, first, declared: float | None, label: str) -> Iterator[np.ndarray]:
    resampler = av.AudioResampler(format="fltp", layout=first.layout, rate=first.sample_rate)
    rate, block_samples, decoded = first.sample_rate, STREAM_BLOCK_SECONDS * first.sample_rate, 0
    chunks: list[np.ndarray] = []
    held = 0
    try:
        frame = first
        while True:
            outs = resampler.resample(frame)
            for out in outs:
                chunks.append(out.to_ndarray())  # [C, n]
                held += chunks[-1].shape[1]
            if held >= block_samples or frame is None:
                if chunks:
                    block = np.ascontiguousarray(np.concatenate(chunks, axis=1).T, dtype=np.float32)
                    decoded += block.shape[0]
                    chunks, held = [], 0
                    yield block
            if frame is None:
                break
            try:
                frame = next(frames, None)
            except (av.FFmpegError, ValueError, OSError, EOFError) as error:
                raise _av_error(error, label) from None
        if declared is not None:
            seconds = decoded / rate
            if seconds < TRUNCATED_FRACTION * declared and declared - seconds > TRUNCATED_MIN_SECONDS:
                raise AudioError(
                    f"{label}: truncated: the header declares {declared:.1f} s but only {seconds:.1f} s "
                    "could be decoded; re-download or re-export the file"
                )
    finally:
        container.close()


def _av_error(error: Exception, label: str) -> AudioError:
    reason = getattr(error, "strerror", None) or str(error).strip() or type(error).__name__
    return AudioError(f"{label}: cannot decode ({reason}): the file is corrupt, truncated or not audio; "
                      "check it or convert it to wav/flac")


# ---------------------------------------------------------------------------------------------
# segments and batches


def pad_to_min(wav: np.ndarray) -> np.ndarray:
    """Zero-pad at the end to MIN_SAMPLES (1 s), as the reference does; longer clips unchanged."""
    if wav.shape[0] >= MIN_SAMPLES:
        return wav
    return np.pad(wav, (0, MIN_SAMPLES - wav.shape[0]))


def split_segments(wav: np.ndarray, segment_samples: int = SEGMENT_SAMPLES) -> list[np.ndarray]:
    """Consecutive pieces of `segment_samples` (views); the last may be shorter (padded to 1 s).

    A clip no longer than one segment is returned as [wav], unchanged.
    """
    if wav.shape[0] <= segment_samples:
        return [wav]
    pieces = [wav[start : start + segment_samples] for start in range(0, wav.shape[0], segment_samples)]
    pieces[-1] = pad_to_min(pieces[-1])
    return pieces


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


# ---------------------------------------------------------------------------------------------
# features


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
