"""Queue full (503) and request timeout (504) through the HTTP app served by uvicorn, with a fake engine whose
generate() blocks until the test lets it go."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from salmonn.decoding import Answer
from salmonn.serve.app import ServeSettings

from .fakes import BODY, BlockingEngine, serving
from .test_errors import check_error


@pytest.fixture
def fake_server():
    engine = BlockingEngine()
    with serving(engine, ServeSettings(max_batch_size=1, max_wait_ms=0, max_queue=2, request_timeout=2.0)) as (
            server, _, _):
        yield server, engine


def test_full_queue_is_503_and_slow_requests_are_504(fake_server):
    server, engine = fake_server
    with ThreadPoolExecutor(4) as pool:
        running = pool.submit(server.request, "POST", "/v1/chat/completions", BODY, None, False)
        while not engine.calls:
            time.sleep(0.01)
        queued = [pool.submit(server.request, "POST", "/v1/chat/completions", BODY, None, False) for _ in range(2)]
        while server.health()["queued"] < 2:
            time.sleep(0.01)
        status, body, _ = server.request("POST", "/v1/chat/completions", BODY, auth=False)
        check_error(status, body, 503, "server_busy", None, "busy")
        assert body["error"]["type"] == "server_error"
        # nobody lets the model go: all three time out after request_timeout = 2 s
        for future in [running, *queued]:
            status, body, _ = future.result(30)
            check_error(status, body, 504, "timeout", None, "2 s")
    assert server.health()["queued"] == 0  # the timed-out requests left the queue
    engine.gate.set()
    status, body, _ = server.request("POST", "/v1/chat/completions", BODY, auth=False)
    assert status == 200 and body["choices"][0]["message"]["content"] == "fine"
    assert engine.calls == [1, 1]  # the queued requests that timed out never reached the model


def test_streaming_request_times_out_before_it_starts(fake_server):
    server, engine = fake_server
    with ThreadPoolExecutor(2) as pool:
        blocker = pool.submit(server.request, "POST", "/v1/chat/completions", BODY, None, False)
        while not engine.calls:
            time.sleep(0.01)
        status, body, headers = server.request("POST", "/v1/chat/completions", {**BODY, "stream": True,
                                                                                "temperature": 0,
                                                                                "num_beams": 1}, auth=False)
        check_error(status, body, 504, "timeout")  # a plain HTTP error: the stream had not begun
        blocker.result(30)


class StreamingEngine(BlockingEngine):
    """Streams a token every 20 ms for up to 500 tokens; records whether the client's leaving stopped it."""

    def __init__(self):
        super().__init__()
        self.model = SimpleNamespace(tokenizer=SimpleNamespace(
            eos_token_id=None, decode=lambda ids, skip_special_tokens=True: "".join(f"t{i} " for i in ids),
            convert_ids_to_tokens=lambda token: f"t{token}"))
        self.puts, self.stopped = 0, threading.Event()

    def run(self, rows, overrides, lora_scale, streamer=None):
        import torch
        streamer.put(torch.zeros(1, 0, dtype=torch.long))
        try:
            for i in range(500):
                streamer.put(torch.tensor([i]))
                self.puts += 1
                time.sleep(0.02)
        except Exception:
            self.stopped.set()
            raise
        return [Answer(text="".join(f"t{i} " for i in range(500)).strip(), token_ids=list(range(500)))]


def test_a_client_leaving_a_stream_stops_its_generation():
    engine = StreamingEngine()
    with serving(engine, ServeSettings(max_batch_size=1, max_wait_ms=0, request_timeout=60)) as (server, _, _):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("POST", "/v1/chat/completions", body=json.dumps(
            {**BODY, "stream": True, "temperature": 0, "num_beams": 1}), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200
        seen = b""
        while b'"content":" t1"' not in seen:  # the answer is streaming (the role chunk, then deltas)
            chunk = response.read1(4096)
            assert chunk, seen
            seen += chunk
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
        assert engine.stopped.wait(10), f"generation went on after the client left ({engine.puts} tokens)"
        assert engine.puts < 500
        health = server.health()
        assert health["status"] == "ok" and health["queued"] == 0
