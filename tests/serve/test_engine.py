"""The server's engine on its own: audio limits that hold whatever a file claims, token counts that match the
model's real input, and the context limit (issue 17, items 2, 3 and 7)."""

from __future__ import annotations

import io
import tracemalloc
from types import SimpleNamespace

import av
import numpy as np
import pytest
import soundfile as sf

from salmonn import load_model
from salmonn.prompting import PromptTurn
from salmonn.serve.engine import AudioTooLong, ContextExceeded, Engine

from ..conftest import FIXTURE

RATE = 16000


def flac_in_matroska_without_duration(seconds: int) -> bytes:
    """Silence as FLAC in Matroska with the Duration element blanked out (a Void of the same size): a small file
    whose header does not say how long it is."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="matroska") as container:
        stream = container.add_stream("flac", rate=RATE)
        stream.layout = "mono"
        for start in range(0, seconds * RATE, RATE):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, RATE), np.int16), format="s16", layout="mono")
            frame.sample_rate, frame.pts = RATE, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    data = buffer.getvalue()
    at = data.index(b"\x44\x89\x88")  # Duration: id 0x4489, 8-byte float
    return data[:at] + b"\xec\x89" + bytes(9) + data[at + 11:]


def audio_only_engine(max_audio_seconds: float) -> Engine:
    engine = Engine.__new__(Engine)  # load_audio needs no model, only its audio settings
    engine.max_audio_seconds = max_audio_seconds
    engine.model = SimpleNamespace(config=SimpleNamespace(model=SimpleNamespace(channel="first", resample=True)))
    return engine


def test_audio_without_a_declared_duration_stops_decoding_at_the_limit():
    data = flac_in_matroska_without_duration(600)  # 10 minutes: 38 MB as float32 samples
    assert len(data) < 300_000
    engine = audio_only_engine(25)
    tracemalloc.start()
    try:
        with pytest.raises(AudioTooLong, match="longer than this server's limit of 25 s"):
            engine.load_audio(data, "file")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2 ** 20, f"decoded {peak / 2 ** 20:.0f} MB of audio to refuse it"


def test_audio_within_the_limit_is_decoded_exactly():
    data = flac_in_matroska_without_duration(20)
    assert len(audio_only_engine(25).load_audio(data)) == 20 * RATE


@pytest.fixture(scope="module")
def fast_engine():
    """The default model's layout: Whisper on each clip's own length (tokens grow with the clip)."""
    return Engine(load_model(FIXTURE / "config.yaml", ["model.whisper_full_window=false"]))


@pytest.mark.parametrize("seconds", [1.3, 10, 20, 45])
def test_audio_token_counts_are_the_models(fast_engine, seconds):
    wav = np.random.default_rng(0).standard_normal(int(seconds * RATE)).astype(np.float32) * 0.1
    [tokens] = fast_engine.model.encode_audio([(wav, RATE)])
    assert fast_engine.audio_tokens(wav) == tokens.shape[0]


def test_prompts_that_do_not_fit_the_context_are_refused(fast_engine):
    engine = fast_engine
    assert engine.context == 512
    wav = np.zeros(10 * RATE, np.float32)
    prompt = engine.build_prompt([PromptTurn("Describe the audio.", clips=1)])
    tokens = engine.prompt_tokens(prompt, wav)
    assert engine.prompt_tokens(prompt, wav, max_new_tokens=512 - tokens) == tokens  # exactly full: fits
    with pytest.raises(ContextExceeded, match=f"the prompt is {tokens} tokens .* max_tokens is {513 - tokens}"):
        engine.prompt_tokens(prompt, wav, max_new_tokens=513 - tokens)
    huge = engine.build_prompt([PromptTurn("word " * 200_000, clips=1)])
    with pytest.raises(ContextExceeded, match="at least"):  # refused without tokenising a megabyte
        engine.prompt_tokens(huge, wav, max_new_tokens=1)


def test_audio_whose_header_says_it_is_far_too_long_is_refused_before_decoding():
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(40 * 8000, np.float32), 8000, format="WAV", subtype="PCM_16")
    with pytest.raises(AudioTooLong, match="about 40 s is longer than this server's limit of 25 s"):
        audio_only_engine(25).load_audio(buffer.getvalue(), "file")
