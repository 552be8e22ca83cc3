"""`salmonn serve --engine vllm`: vLLM's OpenAI server on the exported SALMONN-mini, through the real `openai`
client: the same clip and instruction give `salmonn infer`'s text (alone, 16 concurrent, streamed), and bad
requests get a 400 that names the problem."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from .conftest import CLIPS, ENGINE_ENV, EXAMPLES, OWN_TASK, PROMPTS, TASKS, audio_message

START_SECONDS = 300  # export + engine start take about a minute on 2 cores


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = dict(os.environ, SALMONN_VLLM_CACHE=str(tmp_path_factory.mktemp("cache")), **ENGINE_ENV)
    command = [sys.executable, "-m", "salmonn.cli", "serve", "--engine", "vllm", "--eager-step", "--port", str(port),
               "--log-level", "warning", "--model-name", "salmonn-mini"]
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    import openai
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=120)
    deadline = time.monotonic() + START_SECONDS
    while True:
        try:
            client.models.list()
            break
        except openai.APIConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"the vLLM server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(2)
    yield client
    process.terminate()
    process.wait(60)


def _answer(client, clip, instruction, **kwargs):
    return client.chat.completions.create(model="salmonn-mini", messages=audio_message(EXAMPLES / clip, instruction),
                                          **kwargs)


def test_models_lists_the_served_name(server):
    assert [m.id for m in server.models.list().data] == ["salmonn-mini"]


def test_same_text_as_salmonn_infer(server, mini):
    for clip, task in OWN_TASK.items():
        reply = _answer(server, clip, PROMPTS[task])
        assert reply.choices[0].message.content == mini.generate([str(EXAMPLES / clip)], PROMPTS[task])[0].text
        assert reply.choices[0].finish_reason == "stop"


def test_sixteen_concurrent_clients(server, mini):
    requests = [(clip, PROMPTS[task]) for clip in CLIPS for task in TASKS]
    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda r: _answer(server, *r).choices[0].message.content, requests))
    assert replies == [mini.generate([str(EXAMPLES / clip)], text)[0].text for clip, text in requests]


def test_streaming_gives_the_same_text(server):
    whole = _answer(server, "cello.flac", PROMPTS["instrument"]).choices[0].message.content
    chunks = list(_answer(server, "cello.flac", PROMPTS["instrument"], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def _bad_request(client, messages) -> str:
    import openai
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="salmonn-mini", messages=messages)
    return str(caught.value)


def test_bad_requests_are_400s_that_name_the_problem(server):
    garbage = base64.b64encode(b"this is not audio at all" * 10).decode()
    messages = [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": garbage,
                                                                                    "format": "wav"}},
                                             {"type": "text", "text": "Describe the audio."}]}]
    assert "audio" in _bad_request(server, messages).lower()
    system = [{"role": "system", "content": "Be brief."}] + audio_message(EXAMPLES / "dog.flac", "What is it?")
    assert "no system slot" in _bad_request(server, system)


def test_too_long_audio_is_refused_with_our_message(server, tmp_path):
    import soundfile as sf
    path = tmp_path / "long.flac"
    sf.write(path, np.zeros(16000 * 601, dtype=np.float32), 16000)
    assert "longer than max_audio_seconds=600" in _bad_request(server, audio_message(path, "Describe the audio."))
