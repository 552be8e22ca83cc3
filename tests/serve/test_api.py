"""The OpenAI-compatible API of a real server, driven by the official `openai` client."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import pytest
import soundfile as sf

from ..conftest import AUDIO
from .conftest import API_KEY, audio_message, b64

openai = pytest.importorskip("openai")

CLIPS = ["excitement.wav", "mountain.wav", "duck.wav", "gunshots.wav"]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=300)


def chat(client, clip_b64: str, text: str, fmt: str = "wav", **kwargs):
    return client.chat.completions.create(model="salmonn", messages=audio_message(clip_b64, text, fmt), **kwargs)


def test_models_and_health(client, server):
    assert [m.id for m in client.models.list().data] == ["salmonn"]
    health = server.health()
    assert health["status"] == "ok" and health["model"] == "salmonn"


def test_chat_completion_greedy_and_usage(client):
    clip = b64(AUDIO / "mountain.wav")
    response = chat(client, clip, "What is the speaker asking?", temperature=0, max_tokens=5)
    assert response.object == "chat.completion" and response.id.startswith("chatcmpl-")
    [choice] = response.choices
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "length"  # the random fixture never says </s> within 5 tokens
    # 2.5 s of audio = one 30 s segment = 88 audio tokens, + BOS + the templated instruction's tokens
    assert response.usage.completion_tokens == 5
    assert response.usage.prompt_tokens > 88 + 1
    assert response.usage.total_tokens == response.usage.prompt_tokens + 5
    again = chat(client, clip, "What is the speaker asking?", temperature=0, max_tokens=5)
    assert again.choices[0].message.content == choice.message.content  # deterministic
    longer = chat(client, clip, "What is the speaker asking? Answer in detail please.", temperature=0, max_tokens=5)
    assert longer.usage.prompt_tokens > response.usage.prompt_tokens


def test_streaming_matches_non_streaming(client):
    clip = b64(AUDIO / "excitement.wav")
    whole = chat(client, clip, "Describe the audio.", temperature=0, max_tokens=8)
    chunks = list(chat(client, clip, "Describe the audio.", temperature=0, max_tokens=8, stream=True,
                       stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(deltas) >= 2  # it really streams, token by token
    assert "".join(deltas) == whole.choices[0].message.content
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_stream_wire_format_is_openai_sse(server):
    body = {"model": "salmonn", "stream": True, "max_tokens": 3, "temperature": 0,
            "messages": audio_message(b64(AUDIO / "excitement.wav"), "Describe the audio.")}
    status, text, headers = server.request("POST", "/v1/chat/completions", body)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = text.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    assert all(e.startswith("data: {") for e in events[:-2])


def test_stop_sequence_cuts_the_answer(client):
    clip = b64(AUDIO / "mountain.wav")
    full = chat(client, clip, "What is said?", temperature=0, max_tokens=8).choices[0].message.content
    stop = full[3:6]
    assert len(stop) == 3
    cut = chat(client, clip, "What is said?", temperature=0, max_tokens=8, stop=[stop])
    assert cut.choices[0].message.content == full[: full.find(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed = chat(client, clip, "What is said?", temperature=0, max_tokens=8, stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == full[: full.find(stop)]


def test_n_sampling_seed_and_lora_scale(client):
    clip = b64(AUDIO / "excitement.wav")
    kwargs = dict(temperature=1.5, max_tokens=6, n=3, seed=7)
    first = chat(client, clip, "Describe the audio.", **kwargs)
    second = chat(client, clip, "Describe the audio.", **kwargs)
    texts = [c.message.content for c in first.choices]
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert texts == [c.message.content for c in second.choices]  # the seed fixes the samples
    assert len(set(texts)) > 1  # three different samples
    greedy = chat(client, clip, "Describe the audio.", temperature=0, max_tokens=6).choices[0].message.content
    no_lora = chat(client, clip, "Describe the audio.", temperature=0, max_tokens=6, extra_body={"lora_scale": 0.0})
    assert no_lora.choices[0].message.content != greedy  # the extension field reaches the model
    # ... and does not leak into later requests
    assert chat(client, clip, "Describe the audio.", temperature=0, max_tokens=6).choices[0].message.content == greedy


def test_other_formats_and_multi_turn(client):
    wav, rate = sf.read(AUDIO / "mountain.wav", dtype="float32")
    answers = {}
    for fmt, subtype in (("wav", None), ("flac", None), ("ogg", "VORBIS"), ("mp3", "MPEG_LAYER_III")):
        buffer = io.BytesIO()
        sf.write(buffer, wav, rate, format=fmt.upper() if fmt != "mp3" else "MP3", subtype=subtype)
        import base64
        data = base64.b64encode(buffer.getvalue()).decode()
        answers[fmt] = chat(client, data, "What is said?", fmt=fmt, temperature=0, max_tokens=4)
        assert answers[fmt].choices[0].message.content
    assert answers["flac"].choices[0].message.content == answers["wav"].choices[0].message.content  # lossless
    messages = audio_message(b64(AUDIO / "mountain.wav"), "What is said?") + [
        {"role": "assistant", "content": answers["wav"].choices[0].message.content},
        {"role": "user", "content": "Say it again, shorter."}]
    follow_up = client.chat.completions.create(model="salmonn", messages=messages, temperature=0, max_tokens=4)
    assert follow_up.choices[0].message.content
    assert follow_up.usage.prompt_tokens > answers["wav"].usage.prompt_tokens  # the earlier turns are in the prompt


def test_transcriptions(client, server):
    with open(AUDIO / "mountain.wav", "rb") as f:
        result = client.audio.transcriptions.create(model="whisper-1", file=f)
    assert isinstance(result.text, str) and result.text
    with open(AUDIO / "mountain.wav", "rb") as f:
        text = client.audio.transcriptions.create(model="salmonn", file=f, response_format="text")
    assert text.strip() == result.text
    # it is the chat answer to the ASR instruction
    asked = chat(client, b64(AUDIO / "mountain.wav"), "Recognize the speech and give me the transcription.")
    assert asked.choices[0].message.content == result.text


def test_32_concurrent_requests_equal_single_answers(client, server):
    """Greedy answers with two decoding settings, sent all at once, are exactly the answers the same requests get
    one at a time, and no generate() call is larger than --max-batch-size (how they batch is
    test_hostile.test_requests_that_wait_together_are_batched_up_to_the_limit; how fast: benchmarks/)."""
    clips = {name: b64(AUDIO / name) for name in CLIPS}
    settings = [("What is said?", {"max_tokens": 4}),
                ("Describe the audio.", {"max_tokens": 6, "extra_body": {"lora_scale": 0.5}})]
    specs = [(name, prompt, kwargs) for name in CLIPS for prompt, kwargs in settings]  # 8 distinct requests

    def ask(spec):
        name, prompt, kwargs = spec
        return chat(client, clips[name], prompt, temperature=0, **kwargs).choices[0].message.content

    single = {i: ask(spec) for i, spec in enumerate(specs)}  # one at a time
    before = server.health()["stats"]
    jobs = [i % len(specs) for i in range(32)]
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda i: ask(specs[i]), jobs))
    after = server.health()["stats"]
    assert answers == [single[i] for i in jobs]
    assert after["requests"] - before["requests"] == 32
    assert after["max_batch_rows"] <= 8  # never more than --max-batch-size rows in one call
