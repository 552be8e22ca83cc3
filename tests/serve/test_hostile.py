"""Hostile and unlucky clients against the HTTP app with a fake engine (issue 17, items 6 and 8): clients that give
up, a full queue, a shutdown under load, a cut-off upload, and batching without timing assumptions."""

from __future__ import annotations

import signal
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

from salmonn.serve.app import ServeSettings
from salmonn.serve.commands import make_server

from .fakes import BODY, BlockingEngine, serving, wait_until
from .test_errors import check_error, multipart

CHAT = "/v1/chat/completions"


def post(server, body=BODY, timeout: float = 120):
    return server.request("POST", CHAT, body, None, False, timeout)


def occupy_worker(pool, server, engine):
    """One request that holds the model (the gate is closed) so that the next ones queue."""
    running = pool.submit(post, server)
    wait_until(lambda: engine.calls)
    return running


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_clients_that_gave_up_leave_the_queue_and_never_run(stream):
    engine = BlockingEngine()
    body = {**BODY, "stream": True, "temperature": 0, "num_beams": 1} if stream else BODY
    with serving(engine, ServeSettings(max_batch_size=1, max_wait_ms=0, max_queue=2, request_timeout=300)) as (
            server, _, _), ThreadPoolExecutor(4) as pool:
        running = occupy_worker(pool, server, engine)
        for _ in range(2):  # two clients wait a little, then hang up
            with pytest.raises((socket.timeout, TimeoutError)):
                post(server, body, timeout=0.5)
        wait_until(lambda: server.health()["queued"] == 0)
        waiting = pool.submit(post, server)  # a slot is free again: queued, not refused
        wait_until(lambda: server.health()["queued"] == 1)
        engine.gate.set()
        assert running.result(30)[0] == 200 and waiting.result(30)[0] == 200
        assert server.health()["stats"]["dropped"] == 2
    assert engine.calls == [1, 1]  # the abandoned requests were never computed


def test_a_full_queue_refuses_before_reading_the_body_and_says_when_to_retry():
    engine = BlockingEngine()
    with serving(engine, ServeSettings(max_batch_size=1, max_wait_ms=0, max_queue=1, request_timeout=300)) as (
            server, _, _), ThreadPoolExecutor(4) as pool:
        occupy_worker(pool, server, engine)
        queued = pool.submit(post, server)
        wait_until(lambda: server.health()["queued"] == 1)
        decoded = engine.decoded
        for body in (BODY, '{"not": "even valid JSON'):
            status, answer, headers = post(server, body)
            check_error(status, answer, 503, "server_busy", None, "busy")
            assert int(headers["retry-after"]) >= 1
        assert engine.decoded == decoded  # no audio was decoded for the refused requests
        assert server.health()["stats"]["rejected"] == 2
        engine.gate.set()
        assert queued.result(30)[0] == 200


def test_shutdown_refuses_the_queue_and_waits_for_running_requests_only_the_drain_timeout():
    engine = BlockingEngine()  # its generate() never finishes on its own within the test
    settings = ServeSettings(max_batch_size=1, max_wait_ms=0, max_queue=8, request_timeout=300, drain_timeout=1)
    make = lambda app: make_server(app, "warning", settings.drain_timeout)  # noqa: E731
    with serving(engine, settings, make) as (client, server, thread), ThreadPoolExecutor(4) as pool:
        occupy_worker(pool, client, engine)
        queued = [pool.submit(post, client) for _ in range(2)]
        wait_until(lambda: client.health()["queued"] == 2)
        server.handle_exit(signal.SIGTERM, None)
        for future in queued:
            status, answer, headers = future.result(30)
            check_error(status, answer, 503, "server_busy", None, "shutting down")
            assert "retry-after" in headers
        thread.join(30)
        assert not thread.is_alive()  # the running request was given drain_timeout, not its whole generation
    assert engine.calls == [1]


def test_a_cut_off_upload_is_named_as_such():
    engine = BlockingEngine()
    body, content_type = multipart({"model": "whisper-1"}, {"file": ("a.wav", b"RIFF" + bytes(5000))})
    with serving(engine, ServeSettings()) as (server, _, _):
        status, answer, _ = server.request("POST", "/v1/audio/transcriptions", body[: len(body) // 2],
                                           {"Content-Type": content_type}, auth=False)
    check_error(status, answer, 400, "invalid_multipart", None, "cut off")


def test_requests_that_wait_together_are_batched_up_to_the_limit():
    """Batching as behaviour: requests with the same settings that queue behind a busy worker share calls of at
    most max_batch_size rows; other settings never join them."""
    engine = BlockingEngine()
    with serving(engine, ServeSettings(max_batch_size=4, max_wait_ms=0, max_queue=64)) as (server, _, _), \
            ThreadPoolExecutor(12) as pool:
        running = occupy_worker(pool, server, engine)
        same = [pool.submit(post, server) for _ in range(6)]
        other = [pool.submit(post, server, {**BODY, "max_tokens": 1}) for _ in range(2)]
        wait_until(lambda: server.health()["queued"] == 8)
        engine.gate.set()
        assert all(f.result(30)[0] == 200 for f in [running, *same, *other])
    assert sorted(engine.calls[1:]) == [2, 2, 4]  # 6 alike in calls of 4 and 2, the 2 others together
