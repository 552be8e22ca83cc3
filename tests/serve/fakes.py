"""The HTTP app served by uvicorn in a thread on a loopback port, with fake engines whose generate() blocks until a
test lets it go (the real model is too quick to fill a queue deterministically)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from salmonn.config import GenerateConfig
from salmonn.decoding import Answer
from salmonn.serve.app import ServeSettings, create_app
from salmonn.serve.engine import Engine

from .conftest import Server, audio_message

uvicorn = pytest.importorskip("uvicorn")

CLIP = "UklGRg=="  # never decoded: the fake engine makes up the audio
BODY = {"model": "fake", "max_tokens": 2, "messages": audio_message(CLIP, "Hi")}


class BlockingEngine(Engine):
    """No model: every generate() call waits for `gate`; records the calls' row counts and the audio decoded."""

    def __init__(self):
        self.name, self.defaults, self.default_lora_scale, self.max_audio_seconds = "fake", GenerateConfig(), 1.0, 30
        self.gate, self.calls, self.decoded = threading.Event(), [], 0
        self.model = SimpleNamespace(tokenizer=None)

    def load_audio(self, data, label="audio"):
        self.decoded += 1
        return np.zeros(16000, np.float32)

    def build_prompt(self, turns):
        return f"USER: <Speech><SpeechHere></Speech> {turns[-1].user}\nASSISTANT:"

    def prompt_tokens(self, prompt, wav, max_new_tokens=None):
        return 100

    def run(self, rows, overrides, lora_scale, streamer=None):
        self.calls.append(len(rows))
        self.gate.wait(60)
        return [Answer(text="fine", token_ids=[5, 6]) for _ in rows]


@contextlib.contextmanager
def serving(engine: Engine, settings: ServeSettings, server_class=None):
    """(Server client, uvicorn server) for `engine` in a thread; the gate opens and the server stops on exit."""
    app = create_app(engine, settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    if server_class is None:
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    else:
        server = server_class(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield Server(None, sock.getsockname()[1], None), server, thread
    finally:
        getattr(engine, "gate", threading.Event()).set()
        server.should_exit = True
        thread.join(20)


def wait_until(condition, seconds: float = 20.0) -> None:
    """Poll `condition` until it holds (a bound for a broken server, not a timing assertion)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.02)
