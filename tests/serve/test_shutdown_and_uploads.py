"""Issue 32, items 3-6: a shutdown past --drain-timeout answers what still runs and exits on time, stalled uploads
are timed out and count against --max-queue, `"stop": []` means no stop strings, and clients that leave (an
aborted upload, a stream) are counted as dropped with one log line."""

from __future__ import annotations

import http.client
import json
import logging
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from salmonn.serve.app import ServeSettings
from salmonn.serve.commands import SHUTDOWN_GRACE, make_server

from .fakes import BODY, BlockingEngine, serving, wait_until
from .test_errors import check_error
from .test_limits import StreamingEngine

CHAT = "/v1/chat/completions"
STREAM = {**BODY, "stream": True, "temperature": 0, "num_beams": 1}


def raw_post(port: int, body: dict) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", CHAT, body=json.dumps(body), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def stalled_upload(port: int, path: str = CHAT, declared: int = 10_000) -> socket.socket:
    """A client that sends its headers and the start of its body, then nothing."""
    kind = "application/json" if path == CHAT else "multipart/form-data; boundary=b"
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {kind}\r\n"
                 f"Content-Length: {declared}\r\n\r\n".encode() + b"--b\r\n" + b" " * 100)
    return sock


def read_to_end(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_requests_running_past_the_drain_timeout_get_an_error_and_the_server_exits_on_time(stream):
    """Was: a plain-text 500 (a stream cut with no error event and no [DONE]) and an exit after drain + 5 s."""
    engine = StreamingEngine() if stream else BlockingEngine()  # neither finishes within the drain timeout
    settings = ServeSettings(max_batch_size=1, max_wait_ms=0, request_timeout=300, drain_timeout=1)
    make = lambda app: make_server(app, "warning", settings.drain_timeout)  # noqa: E731
    with serving(engine, settings, make) as (client, server, thread), ThreadPoolExecutor(1) as pool:
        running = pool.submit(raw_post, client.port, STREAM if stream else BODY)
        wait_until(lambda: engine.puts > 2 if stream else engine.calls)
        start = time.monotonic()
        server.handle_exit(signal.SIGTERM, None)
        status, text = running.result(30)
        thread.join(30)
        took = time.monotonic() - start
    assert not thread.is_alive() and took < settings.drain_timeout + SHUTDOWN_GRACE, took
    if stream:
        assert status == 200
        events = text.split("\n\n")
        assert events[-1] == "" and events[-2] == "data: [DONE]", events[-3:]
        error = json.loads(events[-3][len("data: "):])
        check_error(503, error, 503, "server_busy", None, "drain timeout")
    else:
        check_error(status, json.loads(text), 503, "server_busy", None, "drain timeout")


def test_stalled_uploads_time_out_and_count_against_the_queue():
    """Was: a stalled upload was never timed out and did not count against --max-queue."""
    engine = BlockingEngine()
    engine.gate.set()
    settings = ServeSettings(max_batch_size=1, max_wait_ms=0, max_queue=2, request_timeout=1.5)
    with serving(engine, settings) as (client, _, _):
        stalled = [stalled_upload(client.port), stalled_upload(client.port, "/v1/audio/transcriptions")]
        wait_until(lambda: client.health()["uploading"] == 2)
        status, answer, _ = client.request("POST", CHAT, BODY, auth=False)
        check_error(status, answer, 503, "server_busy", None, "2 uploading")
        for sock in stalled:  # answered 408 at the deadline, and the connection is closed
            head = read_to_end(sock).decode(errors="replace")
            assert head.startswith("HTTP/1.1 408"), head
            check_error(408, json.loads(head.split("\r\n\r\n", 1)[1]), 408, "timeout", None, "did not arrive")
            sock.close()
        assert client.health()["uploading"] == 0
        assert client.request("POST", CHAT, BODY, auth=False)[0] == 200


def test_an_empty_stop_list_means_no_stop_strings():
    """Was: `"stop": []` answered 500 (internal error (ValueError))."""
    from salmonn.serve.schemas import parse_chat
    assert parse_chat({**BODY, "stop": []}, 64, 1).decoding.stop is None
    engine = BlockingEngine()
    engine.gate.set()
    with serving(engine, ServeSettings()) as (client, _, _):
        status, answer, _ = client.request("POST", CHAT, {**BODY, "stop": []}, auth=False)
    assert status == 200 and answer["choices"][0]["message"]["content"] == "fine"


def test_an_aborted_upload_is_one_log_line_and_counted_as_dropped(caplog):
    """Was: "unexpected error" with an ASGI traceback (about 120 lines per abort), and not counted."""
    engine = BlockingEngine()
    engine.gate.set()
    with caplog.at_level(logging.INFO), serving(engine, ServeSettings()) as (client, _, _):
        for path in (CHAT, "/v1/audio/transcriptions"):
            sock = stalled_upload(client.port, path)
            wait_until(lambda: client.health()["uploading"] == 1)
            sock.close()
        wait_until(lambda: client.health()["stats"]["dropped"] == 2, 10)
        stats = client.health()["stats"]
    assert stats["errors"] == 0
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    lines = [r.getMessage() for r in caplog.records if r.name == "salmonn.serve"]
    assert len(lines) == 2 and all("hung up during its upload" in line for line in lines), lines


def test_a_client_leaving_a_stream_is_dropped_not_an_error():
    """Was: /health counted a client that left a stream under "errors"."""
    engine = StreamingEngine()
    with serving(engine, ServeSettings(max_batch_size=1, max_wait_ms=0, request_timeout=60)) as (client, _, _):
        conn = http.client.HTTPConnection("127.0.0.1", client.port, timeout=30)
        conn.request("POST", CHAT, body=json.dumps(STREAM), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.read1(4096)
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
        assert engine.stopped.wait(10)
        wait_until(lambda: not client.health()["busy"])
        stats = client.health()["stats"]
    assert (stats["dropped"], stats["errors"]) == (1, 0), stats
