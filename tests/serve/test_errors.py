"""Every malformed or refused request gets the right 4xx with an OpenAI-style error body; the server survives."""

from __future__ import annotations

import base64
import http.client
import io
import json

import numpy as np
import pytest
import soundfile as sf

from ..conftest import AUDIO
from .conftest import API_KEY, MAX_BODY_MB, audio_message, b64

CLIP = b64(AUDIO / "excitement.wav")


def wav_b64(seconds: float, rate: int = 8000) -> str:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(int(seconds * rate), np.float32), rate, format="WAV", subtype="PCM_16")
    return base64.b64encode(buffer.getvalue()).decode()


def chat_body(messages, **extra) -> dict:
    return {"model": "salmonn", "max_tokens": 2, "temperature": 0, "messages": messages, **extra}


def text_message(role: str, text: str) -> dict:
    return {"role": role, "content": text}


CASES = {
    # name: (body, expected status, expected code, expected param or None, words in the message)
    "malformed json": ('{"model": "salmonn", "messages": [', 400, "invalid_json", None, "JSON"),
    "empty body": ("", 400, "invalid_json", None, "empty"),
    "body is a list": ("[1, 2]", 400, "invalid_type", None, "object"),
    "no messages": ({"model": "salmonn"}, 400, "missing_required_parameter", "messages", "messages"),
    "bad base64": (chat_body(audio_message("not base64!!", "Describe.")), 400, "invalid_base64",
                   "messages[0].content[0].input_audio.data", "base64"),
    "undecodable audio": (chat_body(audio_message(base64.b64encode(b"\x00garbage" * 500).decode(), "Describe.")),
                          400, "invalid_audio", "messages[0].content[0].input_audio.data", "decode"),
    "truncated wav": (chat_body(audio_message(base64.b64encode(base64.b64decode(CLIP)[:30]).decode(), "Hi")),
                      400, "invalid_audio", "messages[0].content[0].input_audio.data", ""),
    "missing audio": (chat_body([text_message("user", "Describe the audio.")]), 400, "missing_audio", "messages",
                      "input_audio"),
    "missing text": (chat_body(audio_message(CLIP, None)), 400, "missing_text", "messages[0].content", "text"),
    "blank text": (chat_body(audio_message(CLIP, "   ")), 400, "missing_text", "messages[0].content", "text"),
    "audio_url part": (chat_body([{"role": "user", "content": [
        {"type": "audio_url", "audio_url": {"url": "file:///etc/passwd"}}, {"type": "text", "text": "Hi"}]}]),
        400, "unsupported_content", "messages[0].content[0].type", "never fetches"),
    "file path as data": (chat_body(audio_message("/work/shared/audio/duck.wav", "Describe.")), 400,
                          "invalid_audio", "messages[0].content[0].input_audio.data", "file path"),
    "url as data": (chat_body(audio_message("https://example.com/a.wav", "Describe.")), 400, "invalid_audio",
                    "messages[0].content[0].input_audio.data", "URL"),
    "system message": (chat_body([text_message("system", "Be brief.")] + audio_message(CLIP, "Describe.")), 400,
                       "unsupported_message", "messages[0].role", "system"),
    "two clips": (chat_body([{"role": "user", "content": audio_message(CLIP, "Describe.")[0]["content"] * 2}]),
                  400, "too_many_audio", "messages[0].content[2].input_audio.data", "one audio"),
    "last message from assistant": (chat_body(audio_message(CLIP, "Describe.") + [text_message("assistant", "x")]),
                                    400, "invalid_value", "messages[1].role", "last message"),
    "tool role": (chat_body([{"role": "tool", "content": "x"}] + audio_message(CLIP, "Hi")), 400, "invalid_value",
                  "messages[0].role", "role"),
    "placeholder in text": (chat_body(audio_message(CLIP, "Describe <SpeechHere> please")), 400, "invalid_prompt",
                            "messages", "SpeechHere"),
    "unknown audio format": (chat_body(audio_message(CLIP, "Hi", fmt="exe")), 400, "invalid_value",
                             "messages[0].content[0].input_audio.format", "format"),
    "temperature too high": (chat_body(audio_message(CLIP, "Hi"), temperature=5), 400, "invalid_value",
                             "temperature", "temperature"),
    "max_tokens zero": (chat_body(audio_message(CLIP, "Hi"), max_tokens=0), 400, "invalid_value", "max_tokens", ""),
    "max_tokens over the server limit": (chat_body(audio_message(CLIP, "Hi"), max_tokens=100000), 400,
                                         "invalid_value", "max_tokens", "<= 64"),
    "max_tokens not a number": (chat_body(audio_message(CLIP, "Hi"), max_tokens="ten"), 400, "invalid_type",
                                "max_tokens", "integer"),
    "n too large": (chat_body(audio_message(CLIP, "Hi"), n=1000), 400, "invalid_value", "n", ""),
    "negative no_repeat_ngram_size": (chat_body(audio_message(CLIP, "Hi"), no_repeat_ngram_size=-1), 400,
                                      "invalid_value", "no_repeat_ngram_size", ">= 0"),
    "negative lora_scale": (chat_body(audio_message(CLIP, "Hi"), lora_scale=-1), 400, "invalid_value", "lora_scale",
                            ""),
    "stream not a bool": (chat_body(audio_message(CLIP, "Hi"), stream="yes"), 400, "invalid_type", "stream", ""),
    "bad stop": (chat_body(audio_message(CLIP, "Hi"), stop=[1, 2]), 400, "invalid_type", "stop", ""),
    "tools": (chat_body(audio_message(CLIP, "Hi"), tools=[{"type": "function"}]), 400, "unsupported_parameter",
              "tools", ""),
    "audio too long": (chat_body(audio_message(wav_b64(30), "Describe.")), 400, "invalid_audio",
                       "messages[0].content[0].input_audio.data", "longer than"),
    # issue 17.1: a long stop string took minutes and gigabytes
    "stop string too long": (chat_body(audio_message(CLIP, "Hi"), stop=["a" * 40_000]), 400, "invalid_value", "stop",
                             "at most 256 characters"),
    "five stop strings": (chat_body(audio_message(CLIP, "Hi"), stop=list("abcde")), 400, "invalid_value", "stop",
                          "at most 4"),
    # issue 17.5: lone surrogates and deep nesting were 500s
    "lone surrogate in a user message": (chat_body(audio_message(CLIP, "Hi \ud800 there")), 400, "invalid_text",
                                         "messages[0].content[1].text", "surrogate"),
    "lone surrogate in an assistant message": (
        chat_body(audio_message(CLIP, "Hi") + [text_message("assistant", "\udfff"), text_message("user", "And?")]),
        400, "invalid_text", "messages[1].content", "surrogate"),
    "lone surrogate in stop": (chat_body(audio_message(CLIP, "Hi"), stop=["ok", "\ud800"]), 400, "invalid_text",
                               "stop[1]", "surrogate"),
    "100,000-deep JSON": ("[" * 100_000 + "]" * 100_000, 400, "invalid_json", None, "nested"),
    # issue 17.3: prompts longer than the LLM's context (512 positions in the fixture)
    "prompt far over the context": (chat_body(audio_message(CLIP, "word " * 20_000)), 400,
                                    "context_length_exceeded", "messages", "context of 512 tokens"),
    "prompt and max_tokens over the context": (chat_body(audio_message(CLIP, "a " * 380), max_tokens=64), 400,
                                               "context_length_exceeded", "messages", "max_tokens is 64"),
}


def check_error(status, body, expected_status, code, param=None, words=""):
    assert status == expected_status, body
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["param"] == param, error
    assert words.lower() in error["message"].lower(), error
    assert "\n" not in error["message"] and "Traceback" not in error["message"]


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_chat_requests_get_4xx(server, name):
    body, status, code, param, words = CASES[name]
    got, answer, _ = server.request("POST", "/v1/chat/completions", body)
    check_error(got, answer, status, code, param, words)


def test_auth(server):
    body = chat_body(audio_message(CLIP, "Hi"))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}):
        status, answer, _ = server.request("POST", "/v1/chat/completions", body, headers=headers, auth=False)
        check_error(status, answer, 401, "invalid_api_key")
    status, answer, _ = server.request("GET", "/v1/models", auth=False)
    check_error(status, answer, 401, "invalid_api_key")
    assert server.request("GET", "/health", auth=False)[0] == 200  # health needs no key


def test_body_over_the_limit_is_413(server):
    big = "A" * (MAX_BODY_MB * 2 ** 20 + 10)
    status, answer, _ = server.request("POST", "/v1/chat/completions", chat_body(audio_message(big, "Hi")))
    check_error(status, answer, 413, "request_too_large", None, "limit")


def test_chunked_body_over_the_limit_is_413(server):
    """No Content-Length: the server counts while it reads."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        chunks = (b"x" * 2 ** 18 for _ in range(4 * MAX_BODY_MB + 2))
        conn.request("POST", "/v1/chat/completions", body=chunks, encode_chunked=True,
                     headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json",
                              "Transfer-Encoding": "chunked"})
        response = conn.getresponse()
        check_error(response.status, json.loads(response.read()), 413, "request_too_large", None, "limit")
    finally:
        conn.close()


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = "salmonn-test-boundary"
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, data) in files.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                  f'Content-Type: application/octet-stream\r\n\r\n'.encode() + data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize("name, fields, files, code, param", [
    ("no file", {"model": "whisper-1"}, {}, "missing_required_parameter", "file"),
    ("undecodable file", {"model": "whisper-1"}, {"file": ("a.wav", b"RIFF nonsense" * 10)}, "invalid_audio", "file"),
    ("empty file", {"model": "whisper-1"}, {"file": ("a.wav", b"")}, "invalid_audio", "file"),
    ("srt format", {"model": "whisper-1", "response_format": "srt"},
     {"file": ("a.wav", (AUDIO / "excitement.wav").read_bytes())}, "unsupported_value", "response_format"),
])
def test_malformed_transcription_requests_get_400(server, name, fields, files, code, param):
    body, content_type = multipart(fields, files)
    status, answer, _ = server.request("POST", "/v1/audio/transcriptions", body, {"Content-Type": content_type})
    check_error(status, answer, 400, code, param)


def test_transcription_needs_multipart(server):
    status, answer, _ = server.request("POST", "/v1/audio/transcriptions", {"file": CLIP})
    check_error(status, answer, 400, "invalid_type", "file")


def test_unknown_paths_and_examples(server):
    status, answer, _ = server.request("GET", "/v1/nothing")
    check_error(status, answer, 404, "not_found")
    for name in ("../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "config.yaml"):
        status, answer, _ = server.request("GET", f"/demo/examples/{name}", auth=False)
        assert status == 404, (name, answer)
    status, data, headers = server.request("GET", "/demo/examples/duck.wav", auth=False)
    assert status == 200 and headers["content-type"] == "audio/wav"


def test_server_survives_everything(server):
    """Runs last in this module: after all of the above the process is alive and still answers."""
    assert server.process.poll() is None
    assert server.health()["status"] == "ok"
    status, answer, _ = server.request("POST", "/v1/chat/completions", chat_body(audio_message(CLIP, "Hi")))
    assert status == 200 and answer["choices"][0]["message"]["content"] is not None
