"""Inference people can rely on (issue 3): any input, bad input, long audio, batches, decoding, streaming,
manifests, LoRA scale, devices and precision — all on the reference-tiny fixture.

The fixture's random LLM answers much the same whatever the audio, so equal answers alone prove little: where it
matters the tests also compare the audio tokens (the model's view of the clip) and the answers' log-probabilities.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from salmonn import audio as A
from salmonn.audio_files import STREAM_BLOCK_SECONDS
from salmonn.builder import resolve_device
from salmonn.config import load_config
from salmonn.decoding import PRESETS, TokenStreamer, decoding_config, hf_generate_kwargs
from salmonn.errors import AudioError, ConfigError, PromptError, SalmonnError
from salmonn.inference import answer_all, long_form, run_manifest
from salmonn.jsonl import read_jsonl, write_jsonl
from salmonn.prompting import format_prompt

from .conftest import AUDIO, FIXTURE

CONFIG = str(FIXTURE / "config.yaml")
PROMPT = "Describe the audio."
GREEDY = dict(num_beams=1, max_new_tokens=12)


@pytest.fixture(scope="module")
def mountain() -> np.ndarray:
    return A.load_audio(AUDIO / "mountain.wav")  # 2.5 s, 16 kHz mono speech


@pytest.fixture(scope="module")
def mountain_tokens(tiny_model):
    return tiny_model.encode_audio([str(AUDIO / "mountain.wav")])[0]


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a.float() - b.float()).abs().max().item()


def encode_with_av(path: Path, samples: np.ndarray, rate: int, codec: str, fmt: str | None = None,
                   video: bool = False) -> Path:
    """Write mono float samples with an FFmpeg encoder (optionally muxed with a small video stream)."""
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = "mono"
        if video:
            picture = container.add_stream("mpeg4", rate=10)
            picture.width, picture.height, picture.pix_fmt = 32, 32, "yuv420p"
            for index in range(int(len(samples) / rate * 10)):
                image = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
                image.pts = index
                container.mux(picture.encode(image))
            container.mux(picture.encode(None))
        frame = av.AudioFrame.from_ndarray(samples[None, :].astype(np.float32), format="flt", layout="mono")
        frame.sample_rate = rate
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=rate)
        for piece in resampler.resample(frame) + resampler.resample(None):
            container.mux(stream.encode(piece))
        container.mux(stream.encode(None))
    return path


# ------------------------------------------------------------------------------------------- any input
def _every_kind(tmp: Path, wav: np.ndarray) -> dict[str, object]:
    """The same 2.5 s of speech in every container, codec, rate, bit depth and channel count we accept."""
    at = {rate: soxr.resample(wav, 16000, rate, quality="VHQ") for rate in (22050, 44100, 48000)}
    kinds: dict[str, object] = {}
    for subtype in ("PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ULAW"):
        sf.write(tmp / f"{subtype}.wav", wav, 16000, subtype=subtype)
        kinds[f"wav {subtype}"] = str(tmp / f"{subtype}.wav")
    sf.write(tmp / "44k.wav", at[44100], 44100, subtype="PCM_16")
    kinds["wav 44.1 kHz"] = str(tmp / "44k.wav")
    sf.write(tmp / "48k.flac", at[48000], 48000, subtype="PCM_24")
    kinds["flac 24-bit 48 kHz"] = str(tmp / "48k.flac")
    sf.write(tmp / "22k.ogg", at[22050], 22050, format="OGG", subtype="VORBIS")
    kinds["ogg vorbis 22.05 kHz"] = str(tmp / "22k.ogg")
    kinds["mp3 44.1 kHz"] = str(encode_with_av(tmp / "a.mp3", at[44100], 44100, "libmp3lame"))
    kinds["m4a aac 48 kHz"] = str(encode_with_av(tmp / "a.m4a", at[48000], 48000, "aac"))
    kinds["adts aac 44.1 kHz"] = str(encode_with_av(tmp / "a.aac", at[44100], 44100, "aac", fmt="adts"))
    kinds["opus 48 kHz"] = str(encode_with_av(tmp / "a.opus", at[48000], 48000, "libopus"))
    kinds["mp4 video"] = str(encode_with_av(tmp / "v.mp4", at[48000], 48000, "aac", video=True))
    kinds["mkv video"] = str(encode_with_av(tmp / "v.mkv", at[48000], 48000, "libopus", video=True))
    noise = np.random.default_rng(0).normal(0, 0.1, (len(wav), 5)).astype(np.float32)
    sf.write(tmp / "six.wav", np.concatenate([wav[:, None], noise], 1), 16000, subtype="PCM_16")
    kinds["6-channel wav"] = str(tmp / "six.wav")
    kinds["bytes (flac)"] = (tmp / "48k.flac").read_bytes()
    kinds["int16 array"] = (np.round(wav * 32767).astype(np.int16), 16000)
    kinds["float64 array 48 kHz"] = (at[48000].astype(np.float64), 48000)
    kinds["torch tensor"] = (torch.from_numpy(wav.copy()), 16000)
    return kinds


# How far each kind's audio tokens may be from the 16 kHz WAV's, relative to how far silence is from it (the
# fixture's tokens move little with the audio, so absolute distances would say nothing). For scale: the same
# clip at half volume is 0.18 away, reversed 0.35, another clip 0.75.
LIMITS = {"wav PCM_U8": 0.25, "wav ULAW": 0.12, "m4a aac 48 kHz": 0.15, "adts aac 44.1 kHz": 0.15,
          "mp4 video": 0.15, "mkv video": 0.05, "mp3 44.1 kHz": 0.05, "opus 48 kHz": 0.05,
          "ogg vorbis 22.05 kHz": 0.06}
RESAMPLED = 0.02  # lossless at another rate: soxr VHQ there and back
EXACT = 1e-4  # the same samples in another container, depth, layout or type


def test_every_input_kind_gives_the_tokens_of_the_16k_wav(tiny_model, mountain, mountain_tokens, tmp_path):
    kinds = _every_kind(tmp_path, mountain)
    exact, differ = [], []
    for name, item in kinds.items():  # through the model's own loader: decode, channel, resample, segments
        segments = list(tiny_model.clip_segments(item))
        assert len(segments) == 1, name
        (exact if np.array_equal(segments[0], mountain) else differ).append(name)
    assert set(exact) >= {"wav PCM_16", "wav PCM_24", "wav PCM_32", "wav FLOAT", "wav DOUBLE", "6-channel wav",
                          "torch tensor"}  # same samples: the same tokens by construction
    controls = [(np.zeros_like(mountain), 16000), str(AUDIO / "duck.wav"), (mountain[::-1].copy(), 16000)]
    tokens = tiny_model.encode_audio([kinds[n] for n in differ] + controls)
    silence, other, reversed_ = tokens[-3:]
    scale = (mountain_tokens - silence).norm()

    def distance(t):
        return ((t - mountain_tokens).norm() / scale).item()

    assert distance(other) > 0.5 and distance(reversed_) > 0.25  # what a real difference looks like
    for name, t in zip(differ, tokens):
        limit = LIMITS.get(name, RESAMPLED if any(k in name for k in ("kHz", "flac")) else EXACT)
        assert t.shape == mountain_tokens.shape, name
        assert distance(t) < limit, (name, distance(t))


def test_44k1_file_and_its_16k_version_give_the_same_answer(tiny_model, tmp_path):
    wav = A.load_audio(AUDIO / "music.wav")
    path = tmp_path / "music_44k.wav"
    sf.write(path, soxr.resample(wav, 16000, 44100, quality="VHQ"), 44100, subtype="FLOAT")
    a16, a44 = tiny_model.generate([str(AUDIO / "music.wav"), str(path)], PROMPT, return_scores=True, **GREEDY)
    assert a16.token_ids == a44.token_ids
    assert a16.score == pytest.approx(a44.score, abs=0.05)


# ------------------------------------------------------------------------------------------- bad input
def _bad_inputs(tmp: Path) -> dict[str, tuple[object, str]]:
    """name -> (item, words its error must contain)."""
    good = tmp / "good.wav"
    sf.write(good, np.full(16000, 0.1, np.float32), 16000, subtype="PCM_16")
    (tmp / "empty.wav").write_bytes(b"")
    sf.write(tmp / "zero.wav", np.zeros(0, np.float32), 16000)
    (tmp / "cut.wav").write_bytes(good.read_bytes()[:3000])
    sf.write(tmp / "full.flac", np.sin(np.arange(64000) * 0.05).astype(np.float32) * 0.3, 16000)
    (tmp / "cut.flac").write_bytes((tmp / "full.flac").read_bytes()[:2000])
    encode_with_av(tmp / "full.mp3", np.sin(np.arange(96000) * 0.05).astype(np.float32) * 0.3, 16000, "libmp3lame")
    (tmp / "cut.mp3").write_bytes((tmp / "full.mp3").read_bytes()[:4000])
    (tmp / "noise.mp3").write_bytes(np.random.default_rng(1).integers(0, 256, 6000, dtype=np.uint8).tobytes())
    (tmp / "notes.m4a").write_text("these are my meeting notes, not audio\n" * 40)
    (tmp / "photo.wav").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(2000))
    sf.write(tmp / "nan.wav", np.array([0.1, np.nan] * 8000, np.float32), 16000, subtype="FLOAT")
    (tmp / "folder.wav").mkdir()
    pcm = np.zeros(16000, np.int16).tobytes()  # a WAV whose format tag (0x1234) no decoder knows
    fmt = struct.pack("<HHIIHH", 0x1234, 1, 16000, 32000, 2, 16)
    (tmp / "codec.wav").write_bytes(b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(pcm)) + b"WAVE"
                                    + b"fmt " + struct.pack("<I", len(fmt)) + fmt
                                    + b"data" + struct.pack("<I", len(pcm)) + pcm)
    return {
        "empty file": (str(tmp / "empty.wav"), "empty"),
        "zero samples": (str(tmp / "zero.wav"), "no samples"),
        "truncated wav": (str(tmp / "cut.wav"), "truncated"),
        "truncated flac": (str(tmp / "cut.flac"), "cannot decode"),
        "truncated mp3": (str(tmp / "cut.mp3"), "truncated"),
        "corrupt mp3": (str(tmp / "noise.mp3"), "cannot decode"),
        "text with audio extension": (str(tmp / "notes.m4a"), "cannot decode"),
        "image with audio extension": (str(tmp / "photo.wav"), "not an audio file"),
        "NaN samples": (str(tmp / "nan.wav"), "NaN"),
        "Inf samples": ((np.array([0.0, np.inf] * 8000, np.float32), 16000), "infinite"),
        "directory": (str(tmp / "folder.wav"), "directory"),
        "missing path": (str(tmp / "nowhere.wav"), "not found"),
        "unsupported codec": (str(tmp / "codec.wav"), "unsupported audio codec"),
        "not audio at all": (3.5, "cannot load audio"),
    }


def test_bad_items_fail_alone_with_one_line_naming_the_file(tiny_model, tmp_path, mountain_tokens):
    bad = _bad_inputs(tmp_path)
    silence = tmp_path / "silence.wav"
    sf.write(silence, np.zeros(32000, np.float32), 16000, subtype="PCM_16")
    items = [str(AUDIO / "mountain.wav")] + [item for item, _ in bad.values()] + [str(silence)]
    results = answer_all(tiny_model, items, PROMPT, batch_size=4, **GREEDY)
    single = tiny_model.generate(None, PROMPT, audio_tokens=[mountain_tokens], **GREEDY)[0]
    assert results[0].ok and results[0].answer.token_ids == single.token_ids
    assert results[-1].ok and len(results[-1].answer.token_ids) == 12  # all-silence: a normal answer
    for (name, (item, words)), result in zip(bad.items(), results[1:-1]):
        assert not result.ok, name
        assert words in result.error, (name, result.error)
        assert "\n" not in result.error
        if isinstance(item, str):
            assert result.error.startswith(item + ":"), (name, result.error)
    with pytest.raises(AudioError, match="empty"):  # the plain API raises the first problem
        tiny_model.generate([str(AUDIO / "mountain.wav"), bad["empty file"][0]], PROMPT, **GREEDY)


# ------------------------------------------------------------------------------------------- long audio
def test_ten_minute_file_is_encoded_in_bounded_chunks(tiny_model, tmp_path, monkeypatch):
    """20 segments go through the encoders 4 at a time (never all log-mels at once), in order. The encoders are
    replaced by a marker (each segment's first sample) to keep this fast; that a segment's real tokens are its
    30 s encoded alone is checked on a 65 s clip in test_model.py."""
    seconds = 600
    wav = 0.01 * np.sin(np.arange(seconds * 16000) * 0.01).astype(np.float32)
    wav[:: A.SEGMENT_SAMPLES] = np.arange(20) / 64  # segment k starts with the marker k / 64
    path = tmp_path / "ten_minutes.wav"
    sf.write(path, wav, 16000, subtype="FLOAT")
    batches: list[int] = []

    def marker_encoder(segments):
        batches.append(len(segments))
        assert all(len(s) <= A.SEGMENT_SAMPLES for s in segments)
        return [torch.full((88, 64), float(s[0])) for s in segments]

    monkeypatch.setattr(tiny_model, "encode_segments", marker_encoder)
    monkeypatch.setattr(tiny_model.config.model, "encode_batch_size", 4)
    tokens = tiny_model.encode_audio([str(path)])[0]
    assert batches == [4] * 5
    assert tokens.shape == (20 * 88, 64)
    assert torch.equal(tokens[::88, 0], torch.arange(20) / 64)  # concatenated in order, 88 tokens each
    batches.clear()
    two = tiny_model.encode_audio([str(path), (wav[: 45 * 16000], 16000)])  # clips share chunks, stay apart
    assert batches == [4] * 5 + [2] and two[1].shape == (176, 64)
    assert torch.equal(two[1][::88, 0], torch.tensor([0.0, 1 / 64]))


def test_files_are_decoded_segment_by_segment(tmp_path, monkeypatch):
    """A long file is read block by block as segments are asked for, and the segments are exactly the
    whole-file decode cut in 30 s pieces (soxr streams bit-exactly)."""
    music = A.load_audio(AUDIO / "music.wav")
    long = np.tile(music, 4)[: int(65.3 * 16000)]
    path = tmp_path / "long_44k.flac"
    sf.write(path, soxr.resample(long, 16000, 44100, quality="VHQ"), 44100, subtype="PCM_24")
    whole = [A.pad_to_min(s) for s in A.split_segments(A.load_audio(path))]
    streamed = list(A.iter_segments(path))
    assert [len(s) for s in streamed] == [480000, 480000, 84800]
    assert all(np.array_equal(a, b) for a, b in zip(whole, streamed))
    opus = encode_with_av(tmp_path / "long.opus", soxr.resample(long, 16000, 48000), 48000, "libopus")
    whole = np.concatenate(A.split_segments(A.load_audio(opus)))
    assert np.abs(np.concatenate(list(A.iter_segments(opus)))[: len(whole)] - whole).max() < 1e-5

    reads = []
    real_read = sf.SoundFile.read
    monkeypatch.setattr(sf.SoundFile, "read", lambda self, *a, **k: reads.append(1) or real_read(self, *a, **k))
    segments = A.iter_segments(path)
    next(segments)
    assert len(reads) * STREAM_BLOCK_SECONDS <= 40  # 30 s out: at most 40 s of the 65 s decoded
    segments.close()


def test_a_problem_found_mid_file_fails_that_clip_only(tiny_model, tmp_path, monkeypatch):
    wav = np.full(65 * 16000, 0.01, np.float32)
    wav[50 * 16000] = np.nan  # in the second segment: the first was already queued for the encoders
    sf.write(tmp_path / "late_nan.wav", wav, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="late_nan.wav: contains NaN"):
        list(A.iter_segments(tmp_path / "late_nan.wav"))
    monkeypatch.setattr(tiny_model, "encode_segments",
                        lambda segments: [torch.full((88, 64), float(s[0])) for s in segments])
    good = (np.full(16000, 0.5, np.float32), 16000)
    out = tiny_model.encode_audio([good, str(tmp_path / "late_nan.wav"), good], errors="return")
    assert isinstance(out[1], AudioError) and "NaN" in str(out[1])
    assert out[0].shape == out[2].shape == (88, 64) and torch.all(out[2] == 0.5)


def test_over_the_limit_is_refused_before_decoding(tiny_model, tmp_path, monkeypatch):
    path = tmp_path / "ninety.wav"
    sf.write(path, np.zeros(90 * 16000, np.int16), 16000)
    monkeypatch.setattr(tiny_model.config.model, "max_audio_seconds", 60.0)

    def never(*args, **kwargs):
        raise AssertionError("decoded a file that its header already shows is too long")

    monkeypatch.setattr(A, "load_audio", never)
    with pytest.raises(AudioError, match=r"ninety\.wav: about 90 s is longer than max_audio_seconds=60"):
        tiny_model.encode_audio([str(path)])


def test_just_over_the_limit_is_refused_after_decoding(tiny_model, monkeypatch):
    monkeypatch.setattr(tiny_model.config.model, "max_audio_seconds", 5.0)
    results = answer_all(tiny_model, [(np.zeros(int(5.5 * 16000), np.float32), 16000)], PROMPT, **GREEDY)
    assert "<array>: 5.5 s is longer than max_audio_seconds=5" in results[0].error


# ------------------------------------------------------------------------------------------- batches
@pytest.fixture(scope="module")
def mixed(tiny_model):
    """Clips of 2.5 s, 35 s (two segments) and 1.3 s with different prompts, and their single-clip tokens."""
    excitement, sr = sf.read(AUDIO / "excitement.wav", dtype="float32")
    items = [str(AUDIO / "mountain.wav"), (np.tile(excitement, 30)[: 35 * sr], sr), str(AUDIO / "excitement.wav")]
    prompts = [PROMPT, "Recognize the speech and give me the transcription.",
               "Is the speaker happy or sad? Answer in one word."]
    single = [tiny_model.encode_audio([item])[0] for item in items]
    return items, prompts, single


def test_batch_encoding_equals_single_clips(tiny_model, mixed):
    items, _, single = mixed
    batch = tiny_model.encode_audio(items)
    assert [t.shape[0] for t in batch] == [88, 176, 88]
    for b, s in zip(batch, single):
        assert _max_diff(b, s) < 1e-5


@pytest.mark.parametrize("num_beams", [1, 3])
def test_batch_answers_equal_single_answers_on_mixed_lengths_and_prompts(tiny_model, mixed, num_beams):
    _, prompts, tokens = mixed
    options = dict(num_beams=num_beams, max_new_tokens=6, return_scores=True)
    batch = tiny_model.generate(None, prompts, audio_tokens=tokens, **options)
    for t, p, b in zip(tokens, prompts, batch):
        alone = tiny_model.generate(None, p, audio_tokens=[t], **options)[0]
        assert b.token_ids == alone.token_ids
        assert b.score == pytest.approx(alone.score, abs=1e-4)  # same positions, same attention: same numbers


# ------------------------------------------------------------------------------------------- decoding
def _hf_kwargs(model, preset=None, **options) -> dict:
    return hf_generate_kwargs(decoding_config(model.config.generate, preset, **options), model.tokenizer)


def test_reference_preset_and_precedence(tiny_model):
    kwargs = _hf_kwargs(tiny_model, preset="reference")
    assert kwargs["num_beams"] == 4 and kwargs["max_new_tokens"] == 200 and kwargs["do_sample"] is False
    assert kwargs["repetition_penalty"] == 1.0 and kwargs["length_penalty"] == 1.0
    assert PRESETS["reference"]["top_p"] == 0.9 and PRESETS["reference"]["temperature"] == 1.0
    assert PRESETS["reference"]["min_length"] == 1
    assert _hf_kwargs(tiny_model, preset="reference", num_beams=1)["num_beams"] == 1  # flags win
    sampled = _hf_kwargs(tiny_model, preset="sample", top_p=0.5, top_k=7, temperature=0.7)
    assert (sampled["do_sample"], sampled["top_p"], sampled["top_k"], sampled["temperature"]) == (True, 0.5, 7, 0.7)
    with pytest.raises(ConfigError, match="did you mean 'num_beams'"):
        _hf_kwargs(tiny_model, num_beam=2)
    with pytest.raises(ConfigError, match="unknown preset"):
        _hf_kwargs(tiny_model, preset="fast")
    with pytest.raises(ConfigError, match="top_p"):
        _hf_kwargs(tiny_model, top_p=1.5)


def test_sampling_same_seed_same_answer_and_global_rng_untouched(tiny_model, mountain_tokens):
    def sample(seed, **extra):
        return tiny_model.generate(None, PROMPT, audio_tokens=[mountain_tokens], preset="sample", seed=seed,
                                   max_new_tokens=12, **extra)[0].token_ids

    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    first, again, other = sample(7), sample(7), sample(8)
    assert torch.equal(torch.rand(3), before)  # seeding a generation does not reseed the caller's RNG
    assert first == again and first != other
    greedy = tiny_model.generate(None, PROMPT, audio_tokens=[mountain_tokens], **GREEDY)[0].token_ids
    assert sample(9, top_k=1) == greedy  # top-k 1 sampling is greedy decoding
    assert first != greedy


def test_repetition_and_length_penalties(tiny_model, mountain_tokens):
    plain = tiny_model.generate(None, PROMPT, audio_tokens=[mountain_tokens], **GREEDY)[0].token_ids
    penalised = tiny_model.generate(None, PROMPT, audio_tokens=[mountain_tokens], repetition_penalty=3.0,
                                    **GREEDY)[0].token_ids
    assert len(set(penalised)) > len(set(plain))
    prompt = format_prompt(PROMPT, tiny_model.config.model.prompt_template)
    for penalty in (0.0, 2.0):
        answer = tiny_model.generate(None, PROMPT, audio_tokens=[mountain_tokens], num_beams=3, max_new_tokens=8,
                                     length_penalty=penalty, return_scores=True)[0]
        logprob = tiny_model.sequence_logprob(mountain_tokens, prompt, answer.token_ids)
        assert answer.score * len(answer.token_ids) ** penalty == pytest.approx(logprob, abs=1e-3)


def test_max_and_min_new_tokens(tiny_model, mountain_tokens):
    assert len(tiny_model.generate(None, PROMPT, audio_tokens=[mountain_tokens], num_beams=1,
                                   max_new_tokens=5)[0].token_ids) == 5
    eos = tiny_model.tokenizer.eos_token_id
    head = tiny_model.llama_model.get_output_embeddings()

    def favour_eos(module, inputs, logits):  # make the model want to stop at once
        logits[..., eos] += 50.0
        return logits

    handle = head.register_forward_hook(favour_eos)
    try:
        eager = tiny_model.generate(None, PROMPT, audio_tokens=[mountain_tokens], **GREEDY)[0]
        held = tiny_model.generate(None, PROMPT, audio_tokens=[mountain_tokens], min_new_tokens=3, **GREEDY)[0]
    finally:
        handle.remove()
    assert eager.token_ids == [] and eager.text == ""
    assert len(held.token_ids) == 3


def test_stop_strings_cut_text_and_ids(tiny_model, mountain_tokens, mixed):
    full = tiny_model.generate(None, PROMPT, audio_tokens=[mountain_tokens], **GREEDY)[0]
    stop = "umps"
    assert stop in full.text
    cut = tiny_model.generate(None, PROMPT, audio_tokens=[mountain_tokens], stop=[stop], **GREEDY)[0]
    assert cut.text == full.text[: full.text.index(stop)].rstrip()
    assert cut.token_ids == full.token_ids[: len(cut.token_ids)] and len(cut.token_ids) < len(full.token_ids)
    assert stop in tiny_model.tokenizer.decode(cut.token_ids)  # ids run up to the token that completed it
    _, prompts, tokens = mixed
    batch = tiny_model.generate(None, prompts, audio_tokens=tokens, stop=[stop], **GREEDY)
    for t, p, b in zip(tokens, prompts, batch):
        assert b == tiny_model.generate(None, p, audio_tokens=[t], stop=[stop], **GREEDY)[0]


# ------------------------------------------------------------------------------------------- streaming
def test_streamer_writes_the_answer_while_it_is_generated(tiny_model, mountain_tokens):
    events: list[tuple[str, str]] = []

    class Recorder(TokenStreamer):
        def put(self, value):
            events.append(("token", ""))
            super().put(value)

        def end(self):
            events.append(("end", ""))
            super().end()

    streamer = Recorder(tiny_model.tokenizer, write=lambda piece: events.append(("text", piece)))
    answer = tiny_model.generate(None, PROMPT, audio_tokens=[mountain_tokens], streamer=streamer, **GREEDY)[0]
    pieces = [piece for kind, piece in events if kind == "text"]
    assert "".join(pieces) == answer.text
    first_text = next(i for i, (kind, _) in enumerate(events) if kind == "text")
    assert len(pieces) >= 3 and first_text < len(events) - 5  # text appeared long before the end
    stopped: list[str] = []
    cut = tiny_model.generate(None, PROMPT, audio_tokens=[mountain_tokens], stop=["umps"], **GREEDY,
                              streamer=TokenStreamer(tiny_model.tokenizer, write=stopped.append, stop=["umps"]))[0]
    assert "".join(stopped) == cut.text
    with pytest.raises(ConfigError, match="num_beams=1"):
        tiny_model.generate(None, PROMPT, audio_tokens=[mountain_tokens], streamer=TokenStreamer(
            tiny_model.tokenizer, write=stopped.append), num_beams=2, max_new_tokens=4)


def test_cli_stream_prints_the_answer(capsys, tiny_model, mountain_tokens):
    from salmonn.cli import main
    clip = str(AUDIO / "mountain.wav")
    assert main(["infer", "--config", CONFIG, "--audio", clip, "--prompt", PROMPT, "--stream",
                 "--preset", "greedy", "--max-new-tokens", "12"]) == 0
    expected = tiny_model.generate(None, PROMPT, audio_tokens=[mountain_tokens], **GREEDY)[0].text
    assert capsys.readouterr().out == expected + "\n"
    assert main(["infer", "--config", CONFIG, "--audio", clip, "--prompt", PROMPT, "--stream"]) == 1
    assert "num_beams=1" in capsys.readouterr().err  # the config's default is 4-beam search


# ------------------------------------------------------------------------------------------- manifests
def _manifest(tmp: Path) -> Path:
    (tmp / "clips").mkdir()
    for name in ("mountain.wav", "excitement.wav"):
        (tmp / "clips" / name).write_bytes((AUDIO / name).read_bytes())
    lines = [
        {"audio": "clips/mountain.wav", "prompt": PROMPT, "id": "a"},
        {"audio": "clips/missing.wav", "prompt": PROMPT, "id": "b"},
        {"audio": "clips/excitement.wav", "prompt": "Is the speaker excited?", "id": "c"},
        {"path": str(AUDIO / "music.wav"), "id": "d"},  # no prompt: --prompt's
        {"audio": "clips/excitement.wav", "prompt": PROMPT, "id": "e"},
    ]
    path = tmp / "in.jsonl"
    write_jsonl(path, lines)
    return path


@pytest.fixture
def cached_encoder(tiny_model, monkeypatch):
    """encode_audio that encodes each file once per test (the manifest logic is under test, not the encoders)."""
    real, cache = tiny_model.encode_audio, {}

    def encode(items, sample_rate=None, *, errors="raise"):
        fresh = iter(real([i for i in items if not (isinstance(i, str) and i in cache)], sample_rate, errors=errors))
        out = []
        for item in items:
            tokens = cache[item] if isinstance(item, str) and item in cache else next(fresh)
            if isinstance(item, str) and isinstance(tokens, torch.Tensor):
                cache[item] = tokens
            out.append(tokens)
        return out

    monkeypatch.setattr(tiny_model, "encode_audio", encode)
    return cache


def test_manifest_order_errors_resume_and_retry(tiny_model, cached_encoder, tmp_path):
    manifest = _manifest(tmp_path)
    out = tmp_path / "out" / "answers.jsonl"
    stats = run_manifest(tiny_model, manifest, out, prompt="What is this?", batch_size=2, progress=False, **GREEDY)
    assert stats == {"answered": 4, "failed": 1, "skipped": 0, "redone": 0}
    lines = read_jsonl(out, strict=True)
    assert [line["line"] for line in lines] == [1, 2, 3, 4, 5]
    assert [line["id"] for line in lines] == ["a", "b", "c", "d", "e"]
    assert "missing.wav: file not found" in lines[1]["error"] and "text" not in lines[1]
    assert lines[3]["prompt"] == "What is this?"
    alone = tiny_model.generate(str(tmp_path / "clips" / "excitement.wav"), "Is the speaker excited?", **GREEDY)[0]
    assert lines[2]["token_ids"] == alone.token_ids and lines[2]["text"] == alone.text
    full = out.read_text()

    # a run killed mid-way: two lines written and a torn third; the re-run answers what is missing and the error
    out.write_text("".join(full.splitlines(keepends=True)[:2]) + '{"line": 3, "aud')
    stats = run_manifest(tiny_model, manifest, out, prompt="What is this?", batch_size=2, progress=False, **GREEDY)
    assert stats == {"answered": 3, "failed": 1, "skipped": 1, "redone": 0}
    assert out.read_text() == full

    # the missing clip appears; the re-run answers it and keeps manifest order
    (tmp_path / "clips" / "missing.wav").write_bytes((AUDIO / "mountain.wav").read_bytes())
    stats = run_manifest(tiny_model, manifest, out, prompt="What is this?", batch_size=2, progress=False, **GREEDY)
    assert stats == {"answered": 1, "failed": 0, "skipped": 4, "redone": 0}
    lines = read_jsonl(out, strict=True)
    assert [line["line"] for line in lines] == [1, 2, 3, 4, 5]
    assert lines[1]["token_ids"] == lines[0]["token_ids"]  # same clip, same prompt
    other = tmp_path / "other.jsonl"
    write_jsonl(other, [{"audio": "clips/excitement.wav", "prompt": PROMPT}])
    with pytest.raises(SalmonnError, match="not an answer to line 1 of .*other.jsonl"):
        run_manifest(tiny_model, other, out, progress=False, **GREEDY)  # never mixes two manifests' answers


def test_manifest_reruns_redo_what_changed_and_a_bad_line_fails_alone(tiny_model, cached_encoder, tmp_path):
    """Issue 32.7: one line of invalid JSON refused the whole run; a re-run with another prompt or decoding kept
    the old answers and said they were "already in" the output."""
    manifest = _manifest(tmp_path)
    rows = manifest.read_text().splitlines()
    manifest.write_text("\n".join([rows[0], '{"audio": "clips/x.wav", "prompt": ', rows[3]]) + "\n")
    out = tmp_path / "answers.jsonl"
    stats = run_manifest(tiny_model, manifest, out, prompt="What is this?", progress=False, **GREEDY)
    assert stats == {"answered": 2, "failed": 1, "skipped": 0, "redone": 0}
    first = read_jsonl(out, strict=True)
    assert [line["line"] for line in first] == [1, 2, 3]
    assert first[1]["error"].startswith(f"{manifest}:2: not valid JSON") and first[1]["audio"] is None
    assert first[0]["settings"]["max_new_tokens"] == 12 and first[0]["settings"]["num_beams"] == 1
    assert first[0]["settings"]["lora_scale"] == 1.0 and first[0]["settings"]["long_form"] is None

    same = run_manifest(tiny_model, manifest, out, prompt="What is this?", progress=False, **GREEDY)
    assert same == {"answered": 0, "failed": 1, "skipped": 2, "redone": 0}
    assert read_jsonl(out, strict=True) == first

    other_prompt = run_manifest(tiny_model, manifest, out, prompt="What do you hear?", progress=False, **GREEDY)
    assert other_prompt == {"answered": 1, "failed": 1, "skipped": 1, "redone": 1}  # line 3 takes --prompt
    assert read_jsonl(out, strict=True)[2]["prompt"] == "What do you hear?"

    shorter = run_manifest(tiny_model, manifest, out, prompt="What do you hear?", progress=False, num_beams=1,
                           max_new_tokens=3)
    assert shorter == {"answered": 2, "failed": 1, "skipped": 0, "redone": 2}
    lines = read_jsonl(out, strict=True)
    alone = tiny_model.generate(str(tmp_path / "clips" / "mountain.wav"), PROMPT, num_beams=1, max_new_tokens=3)[0]
    assert lines[0]["token_ids"] == alone.token_ids and lines[0]["settings"]["max_new_tokens"] == 3


def test_cli_manifest_with_progress_and_exit_status(tmp_path, capsys):
    from salmonn.cli import main
    manifest = _manifest(tmp_path)
    out = tmp_path / "out.jsonl"
    args = ["infer", "--config", CONFIG, "--manifest", str(manifest), "--output", str(out), "--prompt", "Hi?",
            "--batch-size", "3", "--num-beams", "1", "--max-new-tokens", "4"]
    assert main(args) == 1  # one line failed
    err = capsys.readouterr().err
    assert "5/5" in err  # tqdm progress
    assert "4 answered, 1 failed" in err and "run the same command again" in err
    assert len(out.read_text().splitlines()) == 5
    assert main(args) == 1  # still failing: the error was tried again (was: skipped, exit 0)
    assert "0 answered, 1 failed, 4 already in" in capsys.readouterr().err
    (tmp_path / "bad.jsonl").write_text(json.dumps({"audio": "clips/mountain.wav"}) + "\nnot json\n")
    args[4], args[6] = str(tmp_path / "bad.jsonl"), str(tmp_path / "o2.jsonl")
    assert main(args) == 1  # the bad line fails alone (was: the whole run refused)
    assert "1 answered, 1 failed" in capsys.readouterr().err
    lines = read_jsonl(tmp_path / "o2.jsonl", strict=True)
    assert "text" in lines[0] and "bad.jsonl:2: not valid JSON" in lines[1]["error"]


def test_cli_batches_with_a_bad_clip_answer_the_rest_like_single_clips(tiny_model, mixed, tmp_path, capsys):
    from salmonn.cli import main
    items, _, tokens = mixed
    tiny_model.set_lora_scale(0.0)
    try:  # what --lora-scale 0 must give: the base LLM's single-clip answers
        alone = [tiny_model.generate(None, PROMPT, audio_tokens=[t], num_beams=1, max_new_tokens=6)[0]
                 for t in (tokens[0], tokens[2])]
    finally:
        tiny_model.set_lora_scale(1.0)
    args = ["infer", "--config", CONFIG, "--audio", items[0], "--audio", str(tmp_path / "no.wav"), "--audio", items[2],
            "--prompt", PROMPT, "--batch-size", "2", "--num-beams", "1", "--max-new-tokens", "6", "--json",
            "--lora-scale", "0"]
    assert main(args) == 1
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [("error" in line) for line in lines] == [False, True, False]
    assert "no.wav: file not found" in lines[1]["error"]
    errors = [line for line in captured.err.splitlines() if "error:" in line]
    assert len(errors) == 2 and "no.wav: file not found" in errors[0] and "1 of 3 clips failed" in errors[1]
    assert "Traceback" not in captured.err
    assert [lines[0]["token_ids"], lines[2]["token_ids"]] == [a.token_ids for a in alone]
    assert alone[0].token_ids != tiny_model.generate(None, PROMPT, audio_tokens=[tokens[0]], num_beams=1,
                                                     max_new_tokens=6)[0].token_ids  # the flag mattered


# ------------------------------------------------------------------------------------------- LoRA scale
def test_lora_scale_changes_the_answer_without_reloading(tiny_model, mountain_tokens):
    answers = {}
    try:
        for scale in (1.0, 0.5, 0.0, 1.0):
            tiny_model.set_lora_scale(scale)
            answers.setdefault(scale, []).append(tiny_model.generate(
                None, PROMPT, audio_tokens=[mountain_tokens], return_scores=True, **GREEDY)[0])
    finally:
        tiny_model.set_lora_scale(1.0)
    assert answers[1.0][0] == answers[1.0][1]  # back to 1.0: the trained answer again
    assert answers[0.5][0].token_ids != answers[1.0][0].token_ids != answers[0.0][0].token_ids
    assert answers[0.5][0].token_ids != answers[0.0][0].token_ids
    scaling = [m.scaling["default"] for m in tiny_model.llama_model.modules()
               if isinstance(getattr(m, "scaling", None), dict)]
    assert scaling and all(s == 4.0 for s in scaling)


# ------------------------------------------------------------------------------------------- devices, precision
def test_device_choice_and_clear_errors():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="not a device"):
        resolve_device("gpu0")


def test_quantization_is_refused_on_cpu_before_loading(monkeypatch):
    from salmonn.builder import load_model

    def never(*args, **kwargs):
        raise AssertionError("loaded weights before refusing")

    monkeypatch.setattr("salmonn.builder.load_whisper_encoder", never)
    for args in (["model.quantize=8bit"], ["model.quantize=4bit"], ["model.low_resource=true"]):
        with pytest.raises(ConfigError, match="needs a CUDA GPU"):
            load_model(CONFIG, args + ["model.device=cpu"])  # cpu even where a GPU exists
    with pytest.raises(ConfigError, match="quantize must be one of"):
        load_config(CONFIG, ["model.quantize=3bit"])


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_on_cpu_answers_like_float32(tiny_model, mixed, dtype):
    from salmonn.builder import load_model
    half = load_model(CONFIG, [f"model.dtype={dtype}", "model.device=cpu"])
    want = getattr(torch, dtype)
    assert half.speech_encoder.conv1.weight.dtype == want and half.beats.patch_embedding.weight.dtype == want
    assert half.llama_model.get_input_embeddings().weight.dtype == want
    assert half.speech_Qformer.bert.layernorm.weight.dtype == torch.float32  # the small trained parts stay fp32
    items, prompts, tokens32 = mixed
    tokens = half.encode_audio([items[2]])
    assert torch.nn.functional.cosine_similarity(tokens[0].float(), tokens32[2], dim=-1).min() > 0.999
    a = half.generate(None, prompts[2], audio_tokens=tokens, return_scores=True, **GREEDY)[0]
    b = tiny_model.generate(None, prompts[2], audio_tokens=[tokens32[2]], return_scores=True, **GREEDY)[0]
    agree = sum(x == y for x, y in zip(a.token_ids, b.token_ids))
    assert agree >= 9, (a.token_ids, b.token_ids)
    assert a.score == pytest.approx(b.score, rel=0.05)


# ------------------------------------------------------------------------------------------- long audio
def test_audio_beyond_the_llm_context_is_refused_naming_long_form(tiny_model, mountain_tokens, tmp_path):
    long = (np.full(200 * 16000, 0.01, np.float32), 16000)  # 7 segments: 616 audio tokens > 512 positions
    assert tiny_model.context_length == 512
    with pytest.raises(PromptError, match="context of 512 positions.*--long-form"):
        tiny_model.generate(long, PROMPT, **GREEDY)
    results = answer_all(tiny_model, [long, str(AUDIO / "mountain.wav")], PROMPT, **GREEDY)
    assert "--long-form" in results[0].error and results[1].ok  # the other clip is still answered
    short = (np.full(10 * 16000, 0.01, np.float32), 16000)
    with pytest.raises(PromptError, match="max_new_tokens 500"):  # the answer's room counts too
        tiny_model.generate(short, PROMPT, num_beams=1, max_new_tokens=500)


def test_long_form_answers_each_segment_and_joins_them_in_order(tiny_model, tmp_path, capsys):
    from salmonn.cli import main
    clips = [A.load_audio(AUDIO / name) for name in ("music.wav", "gunshots.wav", "duck.wav", "mountain.wav")]
    wav = np.concatenate(clips * 5)[:200 * 16000]  # a 42.5 s cycle: every 30 s segment holds other sounds
    path = tmp_path / "long.wav"
    sf.write(path, wav, 16000)
    gen = decoding_config(tiny_model.config.generate, None, **GREEDY)
    seen = []
    answer = long_form(tiny_model, str(path), PROMPT, gen, batch_size=3, on_segment=seen.append, chunks="fixed")
    pieces = [wav[i:i + A.SEGMENT_SAMPLES] for i in range(0, len(wav), A.SEGMENT_SAMPLES)]
    alone = tiny_model.generate([(p, 16000) for p in pieces], PROMPT, **GREEDY)
    assert [a.token_ids for a in seen] == [a.token_ids for a in alone] and len(seen) == 7
    assert answer.text == " ".join(a.text for a in alone if a.text)
    tokens = tiny_model.encode_segments(pieces)  # the segments are different inputs (the tiny random LLM's
    assert all((a - b).abs().max() > 1e-3 for a, b in zip(tokens, tokens[1:-1]))  # answers barely show it)
    assert main(["infer", "--config", CONFIG, "--audio", str(path), "--prompt", PROMPT, "--long-form",
                 "--long-form-chunks", "fixed", "--num-beams", "1", "--max-new-tokens", "12"]) == 0
    assert capsys.readouterr().out.splitlines() == [a.text for a in alone]  # each segment's answer as it comes


def test_long_form_pause_chunks_answer_each_chunk_cut_in_the_silences(tiny_model, tmp_path, capsys):
    from salmonn.cli import main
    from salmonn.pauses import pause_chunks
    gap = np.zeros(16000, np.float32)  # 1 s between sounds
    clips = [A.load_audio(AUDIO / name)[:4 * 16000]  # <= 4 s each: every 6-12 s stretch holds a gap
             for name in ("mountain.wav", "duck.wav", "gunshots.wav", "excitement.wav")]
    wav = np.concatenate([part for clip in clips * 3 for part in (clip, gap)])  # 47.2 s
    path = tmp_path / "long.wav"
    sf.write(path, wav, 16000, subtype="FLOAT")
    chunks = pause_chunks(wav, 16000, 12.0)
    assert len(chunks) >= 3 and max(len(c) for c in chunks) <= 12 * 16000
    for cut in np.cumsum([len(c) for c in chunks])[:-1]:  # each cut is in a gap, not in a sound
        assert not wav[cut - 4000:cut + 4000].any(), cut / 16000  # 0.25 s of silence on either side
    gen = decoding_config(tiny_model.config.generate, None, **GREEDY)
    seen = []
    answer = long_form(tiny_model, str(path), PROMPT, gen, batch_size=2, on_segment=seen.append, chunks="pause",
                       max_seconds=12.0)
    alone = tiny_model.generate([(A.pad_to_min(c), 16000) for c in chunks], PROMPT, **GREEDY)
    assert [a.token_ids for a in seen] == [a.token_ids for a in alone]
    assert answer.text == " ".join(a.text for a in alone if a.text)
    assert answer.token_ids == [i for a in alone for i in a.token_ids]
    fixed = long_form(tiny_model, str(path), PROMPT, gen, chunks="fixed")  # 30 s segments: other pieces
    assert len(fixed.token_ids) != len(answer.token_ids) or fixed.token_ids != answer.token_ids
    assert main(["infer", "--config", CONFIG, "--audio", str(path), "--prompt", PROMPT, "--long-form",
                 "--long-form-chunks", "pause", "--long-form-seconds", "12", "--num-beams", "1",
                 "--max-new-tokens", "12"]) == 0
    assert capsys.readouterr().out.splitlines() == [a.text for a in alone]  # each chunk's answer as it comes
    manifest = tmp_path / "in.jsonl"
    write_jsonl(manifest, [{"audio": str(path), "prompt": PROMPT}])
    run_manifest(tiny_model, manifest, tmp_path / "out.jsonl", long_form=True, long_form_chunks="pause",
                 long_form_seconds=12.0, progress=False, **GREEDY)
    assert json.loads((tmp_path / "out.jsonl").read_text())["token_ids"] == answer.token_ids


def test_long_form_options_are_checked_before_any_work(tiny_model):
    from salmonn.cli import main
    from salmonn.inference import DEFAULT_LONG_FORM_CHUNKS, DEFAULT_PAUSE_SECONDS, long_form_chunking
    assert long_form_chunking(None, None) == (DEFAULT_LONG_FORM_CHUNKS, DEFAULT_PAUSE_SECONDS)
    assert long_form_chunking("fixed", None) == ("fixed", 30.0)
    gen = decoding_config(tiny_model.config.generate, None, **GREEDY)
    for chunks, seconds, message in [("silence", None, "must be one of pause, fixed"),
                                     ("pause", 45.0, "1 to 30 s"), ("pause", 0.5, "1 to 30 s"),
                                     ("fixed", 10.0, "fixed long-form segments are 30 s")]:
        with pytest.raises(ConfigError, match=message):
            long_form(tiny_model, "/no/such/file.wav", PROMPT, gen, chunks=chunks, max_seconds=seconds)
        with pytest.raises(ConfigError, match=message):
            answer_all(tiny_model, ["/no/such/file.wav"], PROMPT, long_form=True, long_form_chunks=chunks,
                       long_form_seconds=seconds)
    assert main(["infer", "--config", CONFIG, "--audio", "x.wav", "--prompt", PROMPT,
                 "--long-form-seconds", "10"]) == 1  # without --long-form
    assert main(["infer", "--config", CONFIG, "--audio", "x.wav", "--prompt", PROMPT, "--long-form",
                 "--long-form-chunks", "silence"]) == 1
