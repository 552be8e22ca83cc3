"""Audio front end: reference fixture reproduction, file formats, bad inputs, segments, fbank."""

from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from salmonn.audio import (MIN_SAMPLES, SAMPLE_RATE, SEGMENT_SAMPLES, batch_waveforms, load_audio, pad_to_min,
                           split_segments)
from salmonn.features import FBANK_MEAN, FBANK_STD, beats_fbank, kaldi_fbank, whisper_log_mel
from salmonn.errors import AudioError

from .conftest import AUDIO, FIXTURE, ROOT

FIXTURE_CLIPS = ["excitement.wav", "mountain.wav"]


@pytest.fixture(scope="session")
def shared_folder() -> None:
    """The reference fixture and clips next to the checkout (../shared): a test that needs them fails, never
    skips, when they are missing, so that a CI run cannot pass without checking fixture parity."""
    missing = [str(p) for p in (FIXTURE, AUDIO) if not p.is_dir()]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: the audio tests need the shared fixtures and clips in "
                    f"../shared next to the checkout ({ROOT})")


needs_shared = pytest.mark.usefixtures("shared_folder")


# ---------------------------------------------------------------------------------------------
# helpers


def read_reference(path: Path) -> np.ndarray:
    """What the reference reads: soundfile float, first channel, no resampling."""
    samples, _ = sf.read(path, dtype="float32", always_2d=True)
    return samples[:, 0]


def encode_with_av(path: Path, wav: np.ndarray, rate: int, codec: str, *, with_video: bool = False) -> None:
    """Write mono float32 `wav` with PyAV (FFmpeg's own encoders; no ffmpeg CLI needed)."""
    with av.open(str(path), mode="w") as container:
        audio_stream = container.add_stream(codec, rate=rate)
        audio_stream.layout = "mono"
        if with_video:
            video_stream = container.add_stream("mpeg4", rate=10)
            video_stream.width, video_stream.height, video_stream.pix_fmt = 32, 32, "yuv420p"
        frame_size = audio_stream.codec_context.frame_size or 1024
        for start in range(0, len(wav), frame_size):
            chunk = np.ascontiguousarray(wav[None, start : start + frame_size], dtype=np.float32)  # [1, n]
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            container.mux(audio_stream.encode(frame))
        container.mux(audio_stream.encode(None))
        if with_video:
            for index in range(math.ceil(len(wav) / rate * 10)):
                image = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
                image.pts = index
                container.mux(video_stream.encode(image))
            container.mux(video_stream.encode(None))


def best_correlation(decoded: np.ndarray, source: np.ndarray, max_lag: int = 4096) -> float:
    """Max normalised cross-correlation over lags up to `max_lag` (codecs may add a delay)."""
    size = 1 << (len(decoded) + len(source)).bit_length()
    cross = np.fft.irfft(np.fft.rfft(decoded, size) * np.conj(np.fft.rfft(source, size)), size)
    lags = np.r_[cross[: max_lag + 1], cross[-max_lag:]]
    return float(lags.max() / np.sqrt(np.dot(decoded, decoded) * np.dot(source, source)))


@pytest.fixture(scope="module")
def mountain() -> np.ndarray:
    return read_reference(AUDIO / "mountain.wav")


@pytest.fixture(scope="module")
def reference_io() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(FIXTURE / "io.safetensors"))


@pytest.fixture(scope="module")
def whisper_extractor():
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor.from_pretrained(str(FIXTURE / "whisper"))


@pytest.fixture(scope="module")
def fixture_wavs() -> list[np.ndarray]:
    return [pad_to_min(load_audio(AUDIO / name)) for name in FIXTURE_CLIPS]


# ---------------------------------------------------------------------------------------------
# reference fixture


@needs_shared
def test_fixture_raw_wav_and_padding_mask_exact(fixture_wavs, reference_io):
    raw_wav, padding_mask = batch_waveforms(fixture_wavs)
    assert raw_wav.dtype == torch.float32 and padding_mask.dtype == torch.bool
    assert torch.equal(raw_wav, reference_io["raw_wav"])
    assert torch.equal(padding_mask, reference_io["padding_mask"])
    assert padding_mask[0].any() and not padding_mask[1].any()  # the short clip is the padded one


@needs_shared
def test_fixture_spectrogram(fixture_wavs, reference_io, whisper_extractor):
    spectrogram = whisper_log_mel(fixture_wavs, whisper_extractor)
    assert spectrogram.shape == reference_io["spectrogram"].shape == (2, 80, 3000)
    assert (spectrogram - reference_io["spectrogram"]).abs().max() < 5e-5  # measured 1.3e-5


@needs_shared
def test_fixture_spectrogram_per_clip_equals_batched_and_padded(fixture_wavs, reference_io, whisper_extractor):
    """Each row is the clip's own log-mel: batching adds nothing, and the batch's zero padding is
    invisible because the extractor zero-pads to 30 s anyway (the reference's choice cannot matter)."""
    batched = whisper_log_mel(fixture_wavs, whisper_extractor)
    for row, wav in enumerate(fixture_wavs):
        assert torch.equal(whisper_log_mel([wav], whisper_extractor)[0], batched[row])
    padded_rows = list(reference_io["raw_wav"].numpy())
    assert torch.equal(whisper_log_mel(padded_rows, whisper_extractor), batched)
    # the log-mel floor is per clip (max - 8): the rows differ where a shared max would not
    assert batched[0].min() != batched[1].min()


@needs_shared
def test_fixture_beats_fbank(reference_io):
    fbank = beats_fbank(reference_io["raw_wav"])
    expected = reference_io["beats_fbank"]
    assert fbank.shape == expected.shape == (2, 1 + (39548 - 400) // 160, 128)
    assert fbank.dtype == torch.float32
    assert (fbank - expected).abs().max() < 8e-5  # measured 5.1e-5 (reference float32 FFT rounding)
    assert (fbank - expected).abs().mean() < 1e-6


# ---------------------------------------------------------------------------------------------
# bad inputs


def _write_bad_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.wav"
    good = tmp_path / "good.wav"
    sf.write(good, np.full(8000, 0.1, np.float32), SAMPLE_RATE, subtype="PCM_16")
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "zero_samples":
        sf.write(path, np.zeros(0, np.float32), SAMPLE_RATE)
    elif kind == "truncated_data":
        path.write_bytes(good.read_bytes()[:1000])
    elif kind == "truncated_header":
        path.write_bytes(good.read_bytes()[:30])
    elif kind == "text":
        path.write_text("this is a text file, not audio\n" * 50)
    elif kind == "directory":
        path.mkdir()
    elif kind == "nan":
        sf.write(path, np.array([0.1, np.nan] * 4000, np.float32), SAMPLE_RATE, subtype="FLOAT")
    return path  # "missing": never created


@pytest.mark.parametrize(
    "kind, problem",
    [
        ("empty", "empty"),
        ("zero_samples", "no samples"),
        ("truncated_data", "truncated"),
        ("truncated_header", "cannot decode"),
        ("text", "cannot decode"),
        ("directory", "directory"),
        ("missing", "not found"),
        ("nan", "NaN"),
    ],
)
def test_bad_file_raises_audio_error_naming_file(tmp_path, kind, problem):
    path = _write_bad_file(tmp_path, kind)
    with pytest.raises(AudioError) as raised:
        load_audio(path)
    message = str(raised.value)
    assert str(path) in message and problem in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "samples, problem",
    [
        (np.array([0.1, np.nan, 0.2], np.float32), "NaN"),
        (np.array([0.1, np.inf, 0.2]), "NaN or infinite"),
        (np.zeros(0, np.float32), "no samples"),
        (np.zeros((2, 16000), np.float32), "transpose"),
        (np.zeros((4, 4, 4), np.float32), "shape"),
    ],
)
def test_bad_array_raises_audio_error(samples, problem):
    with pytest.raises(AudioError, match=problem) as raised:
        load_audio(samples, SAMPLE_RATE)
    assert str(raised.value).startswith("<array>")


def test_array_needs_sample_rate_and_name_is_used():
    with pytest.raises(AudioError, match="sample_rate"):
        load_audio(np.zeros(100, np.float32))
    with pytest.raises(AudioError, match=r"^clip-7: .*NaN"):
        load_audio(np.array([np.nan]), SAMPLE_RATE, name="clip-7")


def test_undecodable_bytes():
    with pytest.raises(AudioError, match="^<bytes>: cannot decode"):
        load_audio(b"definitely not an audio file" * 10)


def test_silence_is_fine(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(4000, np.float32), SAMPLE_RATE)
    wav = load_audio(path)
    assert wav.shape == (4000,) and not wav.any()


# ---------------------------------------------------------------------------------------------
# channels, rates, dtypes


@needs_shared
def test_stereo_first_channel_and_mean():
    stereo, _ = sf.read(AUDIO / "duck.wav", dtype="float32")  # [N, 2]
    first = load_audio(AUDIO / "duck.wav")
    mean = load_audio(AUDIO / "duck.wav", channel="mean")
    assert first.dtype == mean.dtype == np.float32 and first.shape == mean.shape == (stereo.shape[0],)
    np.testing.assert_array_equal(first, stereo[:, 0])
    np.testing.assert_allclose(mean, stereo.mean(axis=1), atol=1e-7)
    assert not np.array_equal(first, mean)


def test_stereo_array_channels_that_differ():
    tone = np.sin(np.linspace(0, 200 * np.pi, 16000)).astype(np.float32)
    stereo = np.stack([tone, 0.5 * tone], axis=1)  # [N, 2]
    np.testing.assert_array_equal(load_audio(stereo, SAMPLE_RATE), tone)
    np.testing.assert_allclose(load_audio(stereo, SAMPLE_RATE, channel="mean"), 0.75 * tone, atol=1e-7)
    with pytest.raises(ValueError):
        load_audio(stereo, SAMPLE_RATE, channel="left")


@needs_shared
def test_44k1_file_is_resampled_to_16k(tmp_path, mountain):
    path = tmp_path / "mountain_44k.wav"
    sf.write(path, soxr.resample(mountain, SAMPLE_RATE, 44100, quality="VHQ"), 44100, subtype="FLOAT")
    wav = load_audio(path)
    assert wav.dtype == np.float32
    assert abs(len(wav) - len(mountain)) <= 1
    n = min(len(wav), len(mountain))
    assert np.abs(wav[:n] - mountain[:n]).max() < 0.02
    assert np.corrcoef(wav[:n], mountain[:n])[0, 1] > 0.999
    with pytest.raises(AudioError, match=r"mountain_44k\.wav: sample rate is 44100 Hz.*resampl"):
        load_audio(path, resample=False)
    with pytest.raises(AudioError, match="44100 Hz but sample_rate=16000"):
        load_audio(path, SAMPLE_RATE)


def test_array_at_other_rate_is_resampled():
    seconds = 2
    tone_48k = np.sin(2 * np.pi * 440 * np.arange(48000 * seconds) / 48000).astype(np.float32)
    wav = load_audio(tone_48k, 48000)
    expected = np.sin(2 * np.pi * 440 * np.arange(SAMPLE_RATE * seconds) / SAMPLE_RATE)
    assert len(wav) == SAMPLE_RATE * seconds
    assert np.abs(wav[500:-500] - expected[500:-500]).max() < 1e-3


@needs_shared
def test_int16_arrays_scaled_like_soundfile():
    as_int16, _ = sf.read(AUDIO / "mountain.wav", dtype="int16")
    np.testing.assert_array_equal(load_audio(as_int16, SAMPLE_RATE), read_reference(AUDIO / "mountain.wav"))
    extremes = np.array([-32768, 0, 16384, 32767], np.int16)
    np.testing.assert_allclose(load_audio(extremes, SAMPLE_RATE), [-1.0, 0.0, 0.5, 32767 / 32768])
    stereo = np.stack([extremes, -extremes], axis=1)  # [N, 2] int16
    np.testing.assert_allclose(load_audio(stereo, SAMPLE_RATE), [-1.0, 0.0, 0.5, 32767 / 32768])


def test_torch_tensor_input():
    tensor = torch.linspace(-0.5, 0.5, 1000, dtype=torch.float64)
    wav = load_audio(tensor, SAMPLE_RATE)
    assert wav.dtype == np.float32
    np.testing.assert_allclose(wav, tensor.numpy(), atol=1e-7)
    np.testing.assert_allclose(load_audio(tensor.to(torch.bfloat16), SAMPLE_RATE), tensor.numpy(), atol=4e-3)


# ---------------------------------------------------------------------------------------------
# compressed formats and containers (decoded with soundfile where it can, else PyAV)


@needs_shared
@pytest.mark.parametrize(
    "filename, codec, rate",
    [
        ("clip.mp3", "mp3", 16000),
        ("clip.ogg", "libopus", 48000),
        ("clip.m4a", "aac", 44100),
        ("clip.flac", "flac", 16000),
    ],
)
def test_compressed_formats(tmp_path, mountain, filename, codec, rate):
    path = tmp_path / filename
    encode_with_av(path, soxr.resample(mountain, SAMPLE_RATE, rate, quality="VHQ"), rate, codec)
    wav = load_audio(path)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(len(wav) - len(mountain)) / SAMPLE_RATE < 0.08  # codec padding, at most a few frames
    assert best_correlation(wav, mountain) > 0.98


@needs_shared
def test_video_container_audio_stream_and_bytes(tmp_path, mountain):
    path = tmp_path / "clip.mp4"
    encode_with_av(path, mountain, SAMPLE_RATE, "aac", with_video=True)
    with av.open(str(path)) as container:
        assert {stream.type for stream in container.streams} == {"audio", "video"}
    wav = load_audio(path)
    assert abs(len(wav) - len(mountain)) / SAMPLE_RATE < 0.08
    assert best_correlation(wav, mountain) > 0.98
    np.testing.assert_array_equal(load_audio(path.read_bytes()), wav)


def test_video_without_audio_stream(tmp_path):
    path = tmp_path / "silent_film.mp4"
    with av.open(str(path), mode="w") as container:
        video_stream = container.add_stream("mpeg4", rate=10)
        video_stream.width, video_stream.height, video_stream.pix_fmt = 32, 32, "yuv420p"
        for index in range(5):
            image = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            image.pts = index
            container.mux(video_stream.encode(image))
        container.mux(video_stream.encode(None))
    with pytest.raises(AudioError, match=r"silent_film\.mp4: .*no audio stream"):
        load_audio(path)


# ---------------------------------------------------------------------------------------------
# segments and batches


def test_pad_to_min():
    short = np.ones(1000, np.float32)
    padded = pad_to_min(short)
    assert padded.shape == (MIN_SAMPLES,) and padded.dtype == np.float32
    assert padded[:1000].all() and not padded[1000:].any()
    long = np.ones(MIN_SAMPLES + 1, np.float32)
    assert pad_to_min(long) is long


def test_split_segments_65_seconds():
    wav = np.arange(65 * SAMPLE_RATE, dtype=np.float32)
    pieces = split_segments(wav)
    assert [len(piece) / SAMPLE_RATE for piece in pieces] == [30, 30, 5]
    np.testing.assert_array_equal(np.concatenate(pieces), wav)


def test_split_segments_short_tail_is_padded_and_short_clip_unchanged():
    wav = np.ones(SEGMENT_SAMPLES + 100, np.float32)
    pieces = split_segments(wav)
    assert [len(piece) for piece in pieces] == [SEGMENT_SAMPLES, MIN_SAMPLES]
    assert pieces[1][:100].all() and not pieces[1][100:].any()
    exactly_30s = np.ones(SEGMENT_SAMPLES, np.float32)
    assert len(split_segments(exactly_30s)) == 1 and split_segments(exactly_30s)[0] is exactly_30s
    tiny_segments = split_segments(np.ones(25, np.float32), segment_samples=10)
    assert [len(piece) for piece in tiny_segments] == [10, 10, MIN_SAMPLES]


def test_batch_waveforms_pads_at_end():
    raw_wav, padding_mask = batch_waveforms([np.ones(3, np.float32), np.full(5, 2.0, np.float32)])
    assert raw_wav.tolist() == [[1, 1, 1, 0, 0], [2, 2, 2, 2, 2]]
    assert padding_mask.tolist() == [[False, False, False, True, True], [False] * 5]


# ---------------------------------------------------------------------------------------------
# Kaldi fbank


def naive_kaldi_fbank(wav: np.ndarray, num_mel_bins: int, rate: int = 16000) -> np.ndarray:
    """Frame-by-frame float64 Kaldi fbank written from the recipe, for comparison."""
    length, shift, fft_size = int(rate * 0.025), int(rate * 0.010), 512
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(length) / (length - 1))) ** 0.85

    def mel(freq):
        return 1127.0 * np.log(1.0 + np.asarray(freq) / 700.0)

    edges = np.linspace(mel(20.0), mel(rate / 2), num_mel_bins + 2)
    bin_mel = mel(np.arange(fft_size // 2 + 1) * rate / fft_size)
    banks = np.zeros((num_mel_bins, fft_size // 2 + 1))
    for m in range(num_mel_bins):
        rising = (bin_mel - edges[m]) / (edges[m + 1] - edges[m])
        falling = (edges[m + 2] - bin_mel) / (edges[m + 2] - edges[m + 1])
        banks[m] = np.maximum(0.0, np.minimum(rising, falling))
    banks[:, -1] = 0.0  # Kaldi leaves the Nyquist bin out
    rows = []
    for start in range(0, len(wav) - length + 1, shift):
        frame = wav[start : start + length].astype(np.float64)
        frame = frame - frame.mean()
        frame = frame - 0.97 * np.concatenate([frame[:1], frame[:-1]])
        power = np.abs(np.fft.rfft(frame * window, fft_size)) ** 2
        rows.append(np.log(np.maximum(banks @ power, np.finfo(np.float32).eps)))
    return np.array(rows)


def test_kaldi_fbank_matches_frame_by_frame_recipe():
    rng = np.random.default_rng(0)
    wav = (rng.standard_normal(5000) * 3000).astype(np.float32)
    wav[2000:2600] = 0.0  # a silent stretch reaches the log floor
    fbank = kaldi_fbank(torch.from_numpy(wav)[None], num_mel_bins=80)
    assert fbank.shape == (1, 1 + (5000 - 400) // 160, 80)
    np.testing.assert_allclose(fbank[0].numpy(), naive_kaldi_fbank(wav, 80), atol=1e-5)


@needs_shared
def test_kaldi_fbank_batch_equals_per_clip():
    clips = [load_audio(AUDIO / name)[:40000] for name in ("music.wav", "gunshots.wav", "duck.wav")]
    batch = torch.from_numpy(np.stack(clips)) * 2**15  # [3, 40000]
    batched = kaldi_fbank(batch)
    for row in range(len(clips)):
        assert torch.equal(batched[row], kaldi_fbank(batch[row : row + 1])[0])


def test_beats_fbank_normalisation():
    wav = torch.zeros(1, 1000)  # silence: every bin at the log floor
    floor = math.log(torch.finfo(torch.float32).eps)
    expected = (floor - FBANK_MEAN) / (2 * FBANK_STD)
    assert torch.allclose(beats_fbank(wav), torch.full((1, 4, 128), expected))


def test_fixture_tests_fail_when_the_shared_folder_is_missing(tmp_path):
    """A checkout without ../shared next to it: the parity tests fail (they must not pass on another machine's
    absolute path, nor skip)."""
    import shutil
    import subprocess
    import sys

    checkout = tmp_path / "checkout"
    (checkout / "tests").mkdir(parents=True)
    for name in ("__init__.py", "conftest.py", "test_audio.py"):
        shutil.copy(ROOT / "tests" / name, checkout / "tests" / name)
    node = "tests/test_audio.py::test_fixture_raw_wav_and_padding_mask_exact"
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", node], cwd=checkout,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "1 error" in result.stdout, result.stdout[-2000:]
    assert f"{tmp_path / 'shared' / 'audio'} not found: the audio tests need the shared fixtures" in result.stdout
