"""OpenAI request parsing and validation, and OpenAI-style errors.

Requests are validated by hand (not by a pydantic model) so that every rejection names the exact field in
OpenAI's `param` ("messages[0].content[1].input_audio.data") with a message that says what to send instead.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
import re
from typing import Any

from ..config import GenerateConfig, optional_fields
from ..decoding import MAX_STOP_CHARS, MAX_STOP_STRINGS
from ..prompting import PromptTurn

AUDIO_FORMATS = ("wav", "mp3", "flac", "ogg", "opus", "m4a", "aac", "webm", "mp4")
MAX_BEAMS = 8
MAX_LORA_SCALE = 10.0


class APIError(Exception):
    """An error answered as `{"error": {"message", "type", "param", "code"}}` with an HTTP status."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers
        self.type = type or {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
                             413: "invalid_request_error", 429: "rate_limit_error", 503: "server_error",
                             504: "timeout_error"}.get(status, "server_error" if status >= 500 else
                                                       "invalid_request_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param, code)


REQUEST_DECODING = ("temperature", "top_p", "top_k", "num_beams", "repetition_penalty", "no_repeat_ngram_size", "stop",
                    "seed")  # GenerateConfig's fields that a request sets under their own names


def _overrides(self, defaults, max_tokens_limit: int) -> dict[str, Any]:
    """GenerateConfig overrides for model.generate. temperature 0 = deterministic search (greedy, or beam search
    with num_beams > 1); temperature > 0 = sampling (num_beams 1 unless asked); absent = the config's."""
    o: dict[str, Any] = {"max_new_tokens": min(self.max_tokens or defaults.max_new_tokens, max_tokens_limit)}
    if self.temperature is not None:
        o["do_sample"] = self.temperature > 0
        if self.temperature > 0:
            o["temperature"] = self.temperature
            o["num_beams"] = 1
    for name in REQUEST_DECODING:
        if name != "temperature" and getattr(self, name) is not None:
            o[name] = list(self.stop) if name == "stop" else getattr(self, name)
    if not o.get("do_sample", defaults.do_sample):
        o.pop("seed", None)  # only sampling uses it
    return o


Decoding = dataclasses.make_dataclass(  # GenerateConfig's request fields (None = the server config's) + OpenAI's own
    "Decoding",
    [("max_tokens", int | None, None), *optional_fields(GenerateConfig, REQUEST_DECODING), ("n", int, 1),
     ("lora_scale", float | None, None)],
    namespace={"overrides": _overrides, "__module__": __name__,
               "__doc__": "The decoding a request asks for; None = the server config's `generate:` value."})


@dataclasses.dataclass
class ChatRequest:
    turns: list[PromptTurn]
    audio: bytes
    audio_param: str
    decoding: Decoding
    stream: bool = False
    include_usage: bool = False
    model: str | None = None


# ---------------------------------------------------------------------------------------------- field checks
def _number(body: dict, name: str, low: float, high: float, *, integer: bool = False, low_open: bool = False):
    if name not in body or body[name] is None:
        return None
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer()))):
        raise bad(f"'{name}' must be {'an integer' if integer else 'a number'}, got {value!r}", name, "invalid_type")
    if isinstance(value, float) and not math.isfinite(value):
        raise bad(f"'{name}' must be finite, got {value!r}", name)
    if value < low or value > high or (low_open and value == low):
        bounds = f"{'>' if low_open else '>='} {low:g} and <= {high:g}"
        raise bad(f"'{name}' must be {bounds}, got {value!r}", name)
    return int(value) if integer else float(value)


def parse_decoding(body: dict, max_tokens_limit: int, max_n: int) -> Decoding:
    d = Decoding()
    d.max_tokens = _number(body, "max_completion_tokens", 1, max_tokens_limit, integer=True)
    if d.max_tokens is None:
        d.max_tokens = _number(body, "max_tokens", 1, max_tokens_limit, integer=True)
    d.temperature = _number(body, "temperature", 0, 2)
    d.top_p = _number(body, "top_p", 0, 1, low_open=True)
    d.top_k = _number(body, "top_k", 0, 1_000_000, integer=True)
    d.num_beams = _number(body, "num_beams", 1, MAX_BEAMS, integer=True)
    d.repetition_penalty = _number(body, "repetition_penalty", 0, 10, low_open=True)
    d.no_repeat_ngram_size = _number(body, "no_repeat_ngram_size", 0, 1000, integer=True)
    d.seed = _number(body, "seed", -(2 ** 63), 2 ** 63 - 1, integer=True)
    d.n = _number(body, "n", 1, max_n, integer=True) or 1
    d.lora_scale = _number(body, "lora_scale", 0, MAX_LORA_SCALE)
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
            raise bad("'stop' must be a non-empty string or a list of non-empty strings", "stop", "invalid_type")
        for i, s in enumerate(stops):
            check_text(s, "stop" if isinstance(stop, str) else f"stop[{i}]")
        if len(stops) > MAX_STOP_STRINGS:
            raise bad(f"'stop' takes at most {MAX_STOP_STRINGS} sequences, got {len(stops)}", "stop")
        longest = max(stops, key=len, default="")  # "stop": [] is no stop sequence
        if len(longest) > MAX_STOP_CHARS:
            raise bad(f"a stop sequence may be at most {MAX_STOP_CHARS} characters, got {len(longest)}", "stop")
        d.stop = stops or None
    if d.seed is not None:  # torch.manual_seed takes 0 .. 2**64-1
        d.seed %= 2 ** 64
    return d


def check_unsupported(body: dict) -> None:
    if body.get("tools") or body.get("functions"):
        raise bad("tools / function calling are not supported by SALMONN", "tools", "unsupported_parameter")
    if body.get("logprobs"):
        raise bad("logprobs are not supported by this server", "logprobs", "unsupported_parameter")
    fmt = body.get("response_format")
    if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        raise bad("only response_format {\"type\": \"text\"} is supported", "response_format",
                  "unsupported_parameter")
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise bad("SALMONN answers in text only: modalities must be [\"text\"]", "modalities",
                  "unsupported_parameter")


_SURROGATE = re.compile(r"[\ud800-\udfff]")


def check_text(text: str, param: str) -> str:
    """`text`, unless it holds a lone UTF-16 surrogate (a JSON "\\ud800" escape), which no tokenizer can encode."""
    found = _SURROGATE.search(text)
    if found:
        raise bad(f"the text holds a lone UTF-16 surrogate (\\u{ord(found.group()):04x} at character "
                  f"{found.start()}), which is not a character: send valid Unicode", param, "invalid_text")
    return text


# ---------------------------------------------------------------------------------------------- messages
_URLISH = re.compile(r"^\s*(https?|ftp|file|s3|gs)://|^\s*[/~.]|^[A-Za-z]:\\")
_NOT_FETCHED = ("this server never fetches URLs or reads files named by a client: send the audio bytes inline "
                "as {\"type\": \"input_audio\", \"input_audio\": {\"data\": BASE64, \"format\": \"wav\"}}")


def decode_base64_audio(data: Any, param: str) -> bytes:
    if not isinstance(data, str) or not data.strip():
        raise bad("input_audio.data must be a non-empty base64 string of the audio file's bytes", param,
                  "invalid_audio")
    if data.startswith("data:"):  # a data URL ("data:audio/wav;base64,....") carries its bytes inline
        head, _, data = data.partition(",")
        if ";base64" not in head:
            raise bad("a data: URL in input_audio.data must be base64-encoded", param, "invalid_base64")
    elif _URLISH.match(data) and not _looks_base64(data):
        raise bad(f"input_audio.data looks like a URL or file path; {_NOT_FETCHED}", param, "invalid_audio")
    try:
        raw = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise bad("input_audio.data is not valid base64", param, "invalid_base64") from None
    if not raw:
        raise bad("input_audio.data decodes to no bytes", param, "invalid_audio")
    return raw


def _looks_base64(data: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9+/=\s]+", data) is not None and len("".join(data.split())) % 4 == 0


def _message_parts(content: Any, param: str) -> list[tuple[str, Any, str]]:
    """(kind, value, param) for a message's content: ("text", str) or ("audio", (data, format))."""
    if isinstance(content, str):
        return [("text", check_text(content, param), param)]
    if not isinstance(content, list):
        raise bad("message content must be a string or a list of content parts", param, "invalid_type")
    parts = []
    for j, part in enumerate(content):
        where = f"{param}[{j}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise bad("each content part must be an object with a 'type'", where, "invalid_type")
        kind = part["type"]
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise bad("a text part needs a string 'text'", f"{where}.text", "invalid_type")
            parts.append(("text", check_text(part["text"], f"{where}.text"), f"{where}.text"))
        elif kind == "input_audio":
            audio = part.get("input_audio")
            if not isinstance(audio, dict):
                raise bad("an input_audio part needs an object 'input_audio' with 'data' and 'format'",
                          f"{where}.input_audio", "invalid_type")
            fmt = audio.get("format")
            if fmt is not None and (not isinstance(fmt, str) or fmt.lower() not in AUDIO_FORMATS):
                raise bad(f"input_audio.format must be one of {', '.join(AUDIO_FORMATS)}; got {fmt!r}",
                          f"{where}.input_audio.format")
            parts.append(("audio", audio.get("data"), f"{where}.input_audio.data"))
        elif kind in ("audio_url", "image_url", "file", "input_file", "input_image", "video_url"):
            raise bad(f"content part type '{kind}' is not supported: {_NOT_FETCHED}", f"{where}.type",
                      "unsupported_content")
        else:
            raise bad(f"unknown content part type '{kind}' (use 'text' and 'input_audio')", f"{where}.type",
                      "unsupported_content")
    return parts


def parse_chat(body: Any, max_tokens_limit: int, max_n: int) -> ChatRequest:
    """Validate a /v1/chat/completions body (the conversation rules: `parse_messages`)."""
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object", None, "invalid_type")
    check_unsupported(body)
    decoding = parse_decoding(body, max_tokens_limit, max_n)
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise bad("'stream' must be a boolean", "stream", "invalid_type")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise bad("'stream_options' must be an object", "stream_options", "invalid_type")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise bad("'model' must be a string", "model", "invalid_type")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad("'messages' must be a non-empty list of messages", "messages",
                  "missing_required_parameter" if messages is None else "invalid_type")
    turns, (data, param) = parse_messages(messages)
    return ChatRequest(turns=turns, audio=decode_base64_audio(data, param), audio_param=param, decoding=decoding,
                       stream=stream, include_usage=bool(options.get("include_usage")), model=model)


def parse_messages(messages: list) -> tuple[list[PromptTurn], tuple[Any, str]]:
    """(conversation turns, (the clip's base64 data, its param)). Rules (documented in the README, Serving):
    - exactly one input_audio part in the conversation, in a user message (SALMONN hears one clip per prompt);
    - system / developer messages are refused (SALMONN's template has no system slot);
    - user and assistant messages alternate (consecutive user messages are joined), the last one is a user
      message with non-empty text; earlier turns are rendered in the template's multi-turn form.
    """
    turns: list[PromptTurn] = []
    audio: tuple[Any, str] | None = None
    last_role = None
    for i, message in enumerate(messages):
        role, text, audios = _message(message, f"messages[{i}]")
        if role == "assistant":
            if last_role != "user":
                raise bad("an assistant message must follow a user message", f"messages[{i}].role")
            turns[-1] = dataclasses.replace(turns[-1], answer=text)
        elif last_role == "user":  # consecutive user messages form one turn
            turns[-1] = dataclasses.replace(turns[-1], user=" ".join(t for t in (turns[-1].user, text) if t))
        else:
            turns.append(PromptTurn(user=text))
        for value, where in audios:
            if audio is not None:
                raise bad("only one audio clip per conversation is supported (SALMONN hears one clip per prompt)",
                          where, "too_many_audio")
            audio = (value, where)
            turns[-1] = dataclasses.replace(turns[-1], clips=1)
        last_role = role
    last = len(messages) - 1
    if last_role != "user":
        raise bad("the last message must be a user message (the instruction to answer)", f"messages[{last}].role")
    if audio is None:
        raise bad("no audio: add a content part {\"type\": \"input_audio\", \"input_audio\": {\"data\": BASE64, "
                  "\"format\": \"wav\"}} to a user message", "messages", "missing_audio")
    if not turns[-1].user:
        raise bad("no instruction: the last user message needs a text part saying what to do with the audio",
                  f"messages[{last}].content", "missing_text")
    return turns, audio


def _message(message: Any, param: str) -> tuple[str, str, list[tuple[Any, str]]]:
    """(role, its text parts joined, [(audio data, param)]) of one message."""
    if not isinstance(message, dict):
        raise bad("each message must be an object with 'role' and 'content'", param, "invalid_type")
    role = message.get("role")
    if role in ("system", "developer"):
        raise bad(f"'{role}' messages are not supported: SALMONN's prompt template has no system slot; put the "
                  "instruction in the user message", f"{param}.role", "unsupported_message")
    if role not in ("user", "assistant"):
        raise bad(f"message role must be 'user' or 'assistant', got {role!r}", f"{param}.role")
    parts = _message_parts(message.get("content"), f"{param}.content")
    text = " ".join(value.strip() for kind, value, _ in parts if kind == "text" and value.strip())
    audios = [(value, where) for kind, value, where in parts if kind == "audio"]
    if role == "assistant" and audios:
        raise bad("assistant messages cannot carry audio", audios[0][1], "unsupported_content")
    return role, text, audios


def parse_transcription(form, max_tokens_limit: int) -> tuple[Any, str, Decoding]:
    """(the uploaded file, response_format, decoding) of a /v1/audio/transcriptions form."""
    upload = form.get("file")
    if isinstance(upload, str) or upload is None or not hasattr(upload, "read"):
        raise bad("missing 'file': upload the audio as a multipart file field named 'file'", "file",
                  "missing_required_parameter")
    response_format = form.get("response_format") or "json"
    if response_format not in ("json", "text"):
        raise bad(f"response_format must be 'json' or 'text' (got {response_format!r})", "response_format",
                  "unsupported_value")
    fields = {}
    temperature = form.get("temperature")
    if isinstance(temperature, str) and temperature.strip():
        try:
            fields["temperature"] = float(temperature)
        except ValueError:
            raise bad("'temperature' must be a number", "temperature", "invalid_type") from None
    return upload, response_format, parse_decoding(fields, max_tokens_limit, 1)
