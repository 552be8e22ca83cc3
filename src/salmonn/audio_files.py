"""Reading audio files and the bytes of files: soundfile where libsndfile reads the container (WAV, FLAC, Ogg...),
PyAV (FFmpeg) for everything else; whole (`read_file`, `decode_bytes`) or block by block (`open_blocks`), with
one-line errors for missing, empty, truncated, corrupt and non-audio input."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import BinaryIO, Iterator

import av
import numpy as np
import soundfile as sf

from salmonn.errors import AudioError
from salmonn.frames import SAMPLE_RATE

WAV_UNKNOWN_DATA_SIZE = 0x7FFF0000  # bytes; streaming writers put a placeholder at or above this
STREAM_BLOCK_SECONDS = 10  # s of source audio decoded at a time by open_blocks


def read_file(path: Path, label: str) -> tuple[np.ndarray, int]:
    """Decode a file on disk -> samples [N, C] float32 and its rate."""
    check_path(path, label)
    with open(path, "rb") as file:
        head = file.read(16)
    if not soundfile_first(head):
        return _read_with_av(str(path), label)
    try:
        samples, rate = _read_with_soundfile(path)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        return _read_with_av(str(path), label)
    with open(path, "rb") as file:
        _check_wav_complete(file, label)
    return samples, rate


def decode_bytes(data: bytes, label: str) -> tuple[np.ndarray, int]:
    """Decode the content of an encoded file -> samples [N, C] float32 and its rate."""
    if not data:
        raise AudioError(f"{label}: no data (0 bytes); pass the content of an audio file")
    buffer = io.BytesIO(data)
    if not soundfile_first(data[:16]):
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


def soundfile_first(head: bytes) -> bool:
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


def check_path(path: Path, label: str) -> None:
    """AudioError for a path that is missing, a directory or empty."""
    if not path.exists():
        raise AudioError(f"{label}: file not found; check the path")
    if path.is_dir():
        raise AudioError(f"{label}: is a directory, not an audio file; give the path of a file")
    if path.stat().st_size == 0:
        raise AudioError(f"{label}: file is empty (0 bytes); re-export or re-download it")


def open_blocks(file: Path | BinaryIO, label: str):
    """(sample rate, generator of [n, C] float32 blocks) for a file (a path or the file's bytes in a BytesIO),
    soundfile first where it reads the container, else PyAV. The first block is decoded before returning, so a
    file neither can read fails here."""
    with (open(file, "rb") if isinstance(file, Path) else contextlib.nullcontext(file)) as raw:
        head = raw.read(16)
        if soundfile_first(head):
            _check_wav_complete(raw, label)
        raw.seek(0)
    source = str(file) if isinstance(file, Path) else file
    if soundfile_first(head):
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
