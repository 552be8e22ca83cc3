"""A real `salmonn serve` subprocess on a free loopback port with the reference-tiny fixture, shared by the tests."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import AUDIO, FIXTURE

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

API_KEY = "test-key-123"
MAX_AUDIO_SECONDS = 25  # music.wav (20 s) passes, 30 s is refused
MAX_BODY_MB = 2


class Server:
    def __init__(self, process: subprocess.Popen, port: int, log: Path):
        self.process, self.port, self.log = process, port, log
        self.url = f"http://127.0.0.1:{port}"

    def request(self, method: str, path: str, body: bytes | str | dict | None = None, headers: dict | None = None,
                auth: bool = True, timeout: float = 120) -> tuple[int, dict | str, dict]:
        """(status, parsed JSON or text, headers) of one raw HTTP request."""
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        headers = dict(headers or {})
        if auth:
            headers.setdefault("Authorization", f"Bearer {API_KEY}")
        if body is not None:
            headers.setdefault("Content-Type", "application/json")
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            raw = response.read().decode(errors="replace")
            try:
                parsed = json.loads(raw)
            except json.JSONDecodeError:
                parsed = raw
            return response.status, parsed, dict(response.getheaders())
        finally:
            conn.close()

    def health(self) -> dict:
        status, body, _ = self.request("GET", "/health", auth=False, timeout=30)
        assert status == 200, body
        return body


@contextlib.contextmanager
def running_server(log: Path, overrides: tuple[str, ...] = ()):
    """A `salmonn serve` subprocess with the fixture (greedy, 8 new tokens, + `overrides`), up until the block ends."""
    command = [sys.executable, "-c", "import sys; from salmonn.cli import main; sys.exit(main())", "serve",
               "--config", str(FIXTURE / "config.yaml"), "--host", "127.0.0.1", "--port", "0", "--api-key", API_KEY,
               "--max-batch-size", "8", "--max-wait-ms", "20", "--max-audio-seconds", str(MAX_AUDIO_SECONDS),
               "--max-body-mb", str(MAX_BODY_MB), "--max-tokens-limit", "64", "--examples", str(AUDIO), "--log-level",
               "warning", "--eager-step",  # (compiling the step would take minutes here)
               "num_beams=1", "max_new_tokens=8", *overrides]
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONWARNINGS": "ignore"})
    try:
        deadline, port = time.monotonic() + 240, None
        while port is None:
            if process.poll() is not None:
                pytest.fail(f"salmonn serve exited with {process.returncode}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"salmonn serve did not start:\n{log.read_text()}")
            match = re.search(r"at http://localhost:(\d+)", log.read_text())
            port = int(match.group(1)) if match else None
            time.sleep(0.2)
        server = Server(process, port, log)
        assert server.health()["status"] == "ok"
        yield server
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    with running_server(tmp_path_factory.mktemp("serve") / "server.log") as running:
        yield running


def b64(path: Path | str) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode()


def audio_message(data_b64: str, text: str | None, fmt: str = "wav") -> list[dict]:
    content = [{"type": "input_audio", "input_audio": {"data": data_b64, "format": fmt}}]
    if text is not None:
        content.append({"type": "text", "text": text})
    return [{"role": "user", "content": content}]
