"""The HTTP app: OpenAI-compatible chat completions and transcriptions, models, health, and the web demo.

Every request is validated and its audio decoded on the request side (in a thread pool); only the generate()
call runs on the model's worker thread, through the dynamic batcher. Every failure is answered with an
OpenAI-style error body `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import SalmonnError
from .batcher import Batcher, Job, QueueFull
from .engine import ASR_INSTRUCTION, Engine, Turn
from .schemas import APIError, Decoding, bad, parse_chat, parse_decoding

log = logging.getLogger("salmonn.serve")
STATIC = Path(__file__).resolve().parent / "static"
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a")
FINGERPRINT = f"salmonn-{__version__}"


@dataclasses.dataclass
class ServeSettings:
    max_batch_size: int = 8  # rows per generate() call
    max_wait_ms: float = 10.0  # how long the oldest request waits for others to batch with
    max_queue: int = 128  # pending requests beyond this get 503
    request_timeout: float = 300.0  # seconds from arrival to answer (504 after)
    max_body_mb: float = 25.0  # request body limit (413 above); OpenAI's audio upload limit is 25 MB
    max_tokens_limit: int = 1024  # largest max_tokens a request may ask for
    max_n: int = 8  # largest n
    api_key: str | None = None  # when set, /v1/* need "Authorization: Bearer KEY"
    examples_dir: str | None = None  # clips the demo offers (a fixed allow-list of the files found at start)


def default_examples_dir() -> Path | None:
    """The project's ../shared/audio when this runs from a checkout, else clips bundled in the package."""
    for candidate in (Path(__file__).resolve().parents[4] / "shared" / "audio", STATIC.parent / "examples"):
        if candidate.is_dir():
            return candidate
    return None


def find_examples(directory: str | Path | None) -> dict[str, Path]:
    """name -> file, fixed at start: the demo asks for clips by name and only these names are served."""
    folder = Path(directory) if directory else default_examples_dir()
    if folder is None or not folder.is_dir():
        return {}
    return {p.name: p.resolve() for p in sorted(folder.iterdir())
            if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()}


# ---------------------------------------------------------------------------------------------- body limit
class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: 413 for a body over `max_bytes` (declared by Content-Length, or counted while read)."""

    DRAIN_LIMIT = 256 * 2 ** 20  # read (and drop) up to this much of a refused body so the client sees the 413

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or {}).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            if int(declared) <= self.DRAIN_LIMIT:
                while (await receive()).get("more_body"):
                    pass
            response = error_response(too_large(self.max_bytes))
            return await response(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge()
            return message

        await self.app(scope, counted, send)


def too_large(max_bytes: int) -> APIError:
    return APIError(413, f"request body is larger than this server's limit of {max_bytes / 2 ** 20:g} MB",
                    None, "request_too_large")


def error_response(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


# ---------------------------------------------------------------------------------------------- the work
@dataclasses.dataclass
class Work:
    rows: list  # (16 kHz waveform, full prompt)
    overrides: dict
    lora_scale: float
    streamer: Any = None


def _freeze(overrides: dict) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in overrides.items()))


def finish(answer, overrides: dict, defaults, tokenizer) -> tuple[str, str]:
    """(text, finish_reason): text cut before the first stop sequence; "length" when max_tokens ran out
    without an end of sequence or a stop sequence."""
    text = answer.text
    stops = overrides.get("stop", defaults.stop) or []
    cuts = [text.find(s) for s in stops if s in text]
    if cuts:
        return text[: min(cuts)], "stop"
    if stops and any(s in tokenizer.decode(answer.token_ids, skip_special_tokens=True) for s in stops):
        return text, "stop"  # the model already cut the text before the stop sequence
    limit = overrides.get("max_new_tokens", defaults.max_new_tokens)
    return text, "length" if len(answer.token_ids) >= limit else "stop"


class _Cancelled(Exception):
    """Raised inside generate() by the streamer when the client has gone away."""


class _Streamer:
    """transformers streamer protocol (put/end), called on the worker thread: forwards new token ids."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue, cancelled: threading.Event):
        self.loop, self.queue, self.cancelled, self.first = loop, queue, cancelled, True

    def put(self, value) -> None:
        if self.cancelled.is_set():
            raise _Cancelled()
        if self.first and value.dim() > 1:  # the prompt (empty for inputs_embeds): not part of the answer
            self.first = False
            return
        self.first = False
        self.loop.call_soon_threadsafe(self.queue.put_nowait, ("ids", value.reshape(-1).tolist()))

    def end(self) -> None:
        pass


def _safe_text(text: str, stops: list[str]) -> tuple[str, bool]:
    """The part of a partial answer that can be sent now, and whether a stop sequence was reached. Holds back
    leading/trailing whitespace (the final answer is stripped), an unfinished UTF-8 character, and a tail that
    may be the start of a stop sequence."""
    text = text.lstrip()
    cuts = [text.find(s) for s in stops if s in text]
    if cuts:
        return text[: min(cuts)], True
    text = text.rstrip().rstrip("\ufffd")
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                hold = max(hold, k)
                break
    return (text[: len(text) - hold] if hold else text), False


# ---------------------------------------------------------------------------------------------- the app
def create_app(engine: Engine, settings: ServeSettings | None = None) -> FastAPI:
    settings = settings or ServeSettings()
    examples = find_examples(settings.examples_dir)
    defaults = engine.defaults

    def run_jobs(jobs: list[Job]) -> list:
        work: list[Work] = [job.payload for job in jobs]
        rows = [row for w in work for row in w.rows]
        answers = engine.run(rows, work[0].overrides, work[0].lora_scale, streamer=work[0].streamer)
        out, start = [], 0
        for w in work:
            out.append(answers[start:start + len(w.rows)])
            start += len(w.rows)
        return out

    batcher = Batcher(run_jobs, settings.max_batch_size, settings.max_wait_ms, settings.max_queue)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        batcher.stop()

    app = FastAPI(title="SALMONN", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.engine, app.state.batcher, app.state.settings = engine, batcher, settings
    app.add_middleware(BodyLimit, max_bytes=int(settings.max_body_mb * 2 ** 20))

    # ------------------------------------------------------------------ errors
    @app.exception_handler(APIError)
    async def _api_error(request, err: APIError):
        return error_response(err)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, err: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code)
        return error_response(APIError(err.status_code, str(err.detail), None, code))

    @app.exception_handler(Exception)
    async def _unexpected(request, err: Exception):
        log.exception("unexpected error")
        return error_response(APIError(500, f"internal error ({type(err).__name__})", None, "internal_error"))

    def authorize(request: Request) -> None:
        if not settings.api_key:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.api_key.encode()):
            raise APIError(401, "missing or wrong API key: send 'Authorization: Bearer KEY'", None, "invalid_api_key")

    async def read_json(request: Request) -> Any:
        try:
            raw = await request.body()
        except BodyTooLarge:
            raise too_large(int(settings.max_body_mb * 2 ** 20)) from None
        if not raw.strip():
            raise bad("the request body is empty: send a JSON object", None, "invalid_json")
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise bad(f"the request body is not valid JSON ({err})", None, "invalid_json") from None

    async def decode_audio(data: bytes, param: str):
        try:
            return await run_in_threadpool(engine.load_audio, data, param)
        except SalmonnError as err:
            raise bad(str(err), param, "invalid_audio") from None

    def job_for(rows: list, overrides: dict, lora: float, alone: bool = False, streamer=None, on_start=None) -> Job:
        key = (_freeze(overrides), lora)
        if "seed" in overrides:  # a seeded request runs on its own, so that its seed alone fixes its answer
            key += (uuid.uuid4().hex,)
        return Job(key=key, payload=Work(rows, overrides, lora, streamer), rows=len(rows), alone=alone,
                   on_start=on_start)

    def submit(job: Job):
        try:
            return batcher.submit(job)
        except QueueFull as err:
            raise APIError(503, f"the server is busy ({err}); retry later", None, "server_busy") from None

    def worker_error(err: BaseException) -> APIError:
        if isinstance(err, APIError):
            return err
        if isinstance(err, SalmonnError):
            return bad(str(err), None, "invalid_request")
        log.error("generation failed: %s: %s", type(err).__name__, err)
        return APIError(500, f"generation failed ({type(err).__name__}: {err})", None, "internal_error")

    def timed_out() -> APIError:
        return APIError(504, f"the request did not finish within {settings.request_timeout:g} s", None, "timeout")

    async def wait(job: Job, deadline: float):
        future = asyncio.wrap_future(submit(job))
        try:
            return await asyncio.wait_for(future, max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            batcher.cancel(job)
            raise timed_out() from None
        except asyncio.CancelledError:
            batcher.cancel(job)
            raise
        except Exception as err:  # noqa: BLE001 - raised by the worker
            raise worker_error(err) from None

    def lora_of(decoding: Decoding) -> float:
        return engine.default_lora_scale if decoding.lora_scale is None else decoding.lora_scale

    # ------------------------------------------------------------------ routes
    @app.get("/health")
    async def health():
        return {"status": "ok", "model": engine.name, "queued": batcher.queued, "busy": batcher.busy,
                "stats": dict(batcher.stats)}

    @app.get("/v1/models")
    async def models(request: Request):
        authorize(request)
        return {"object": "list", "data": [_model_card(engine.name)]}

    @app.get("/v1/models/{name}")
    async def model(name: str, request: Request):
        authorize(request)
        if name != engine.name:
            raise APIError(404, f"model '{name}' does not exist; this server serves '{engine.name}'", "model",
                           "model_not_found")
        return _model_card(engine.name)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        deadline = time.monotonic() + settings.request_timeout
        authorize(request)
        req = parse_chat(await read_json(request), settings.max_tokens_limit, settings.max_n)
        wav = await decode_audio(req.audio, req.audio_param)
        try:
            prompt = engine.build_prompt(req.turns)
        except SalmonnError as err:
            raise bad(str(err), "messages", "invalid_prompt") from None
        overrides = req.decoding.overrides(defaults, settings.max_tokens_limit)
        lora = lora_of(req.decoding)
        sampling = overrides.get("do_sample", defaults.do_sample)
        beams = overrides.get("num_beams", defaults.num_beams)
        prompt_tokens = engine.prompt_tokens(prompt, wav)
        meta = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
                "model": engine.name, "system_fingerprint": FINGERPRINT}
        if req.stream and req.decoding.n == 1 and beams == 1:
            return await stream_tokens(meta, wav, prompt, overrides, lora, prompt_tokens, req.include_usage,
                                       deadline)
        rows = req.decoding.n if sampling else 1  # deterministic decoding gives n identical answers
        answers = await wait(job_for([(wav, prompt)] * rows, overrides, lora), deadline)
        answers = answers * req.decoding.n if not sampling else answers
        choices = [finish(a, overrides, defaults, engine.model.tokenizer) for a in answers]
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": sum(len(a.token_ids) for a in answers),
                 "total_tokens": prompt_tokens + sum(len(a.token_ids) for a in answers)}
        if req.stream:
            return sse(_whole_choices_stream(meta, choices, usage if req.include_usage else None))
        return {**meta, "choices": [{"index": i, "message": {"role": "assistant", "content": text, "refusal": None},
                                     "logprobs": None, "finish_reason": reason}
                                    for i, (text, reason) in enumerate(choices)], "usage": usage}

    async def stream_tokens(meta, wav, prompt, overrides, lora, prompt_tokens, include_usage, deadline):
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()
        job = job_for([(wav, prompt)], overrides, lora, alone=True,
                      streamer=_Streamer(loop, queue, cancelled),
                      on_start=lambda: loop.call_soon_threadsafe(queue.put_nowait, ("start", None)))
        future = submit(job)

        def done(f):
            with contextlib.suppress(RuntimeError):  # the loop may be closed at shutdown
                loop.call_soon_threadsafe(queue.put_nowait, ("done", f))
        future.add_done_callback(done)
        try:  # the answer's status is decided here: errors before the first token are plain HTTP errors
            kind, value = await asyncio.wait_for(queue.get(), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            batcher.cancel(job)
            cancelled.set()
            raise timed_out() from None
        except asyncio.CancelledError:
            batcher.cancel(job)
            cancelled.set()
            raise
        if kind == "done":
            raise worker_error(RuntimeError("cancelled") if value.cancelled() else
                               value.exception() or RuntimeError("no answer"))
        tokenizer = engine.model.tokenizer
        stops = overrides.get("stop", defaults.stop) or []

        async def events() -> AsyncIterator[str]:
            finished = False
            try:
                yield _chunk(meta, {"role": "assistant", "content": ""}, None, include_usage)
                ids: list[int] = []
                sent, stopped = "", False
                while True:
                    try:
                        kind, value = await asyncio.wait_for(queue.get(), max(0.0, deadline - time.monotonic()))
                    except asyncio.TimeoutError:
                        cancelled.set()
                        yield _sse_data(timed_out().body())
                        return
                    if kind == "ids":
                        if stopped:
                            continue
                        ids += value
                        text, stopped = _safe_text(tokenizer.decode(ids, skip_special_tokens=True), stops)
                        if text.startswith(sent) and len(text) > len(sent):
                            yield _chunk(meta, {"content": text[len(sent):]}, None, include_usage)
                            sent = text
                    elif kind == "done":
                        finished = True
                        if value.cancelled() or value.exception() is not None:
                            err = worker_error(value.exception() or RuntimeError("cancelled"))
                            yield _sse_data(err.body())
                            return
                        answer = value.result()[0]
                        text, reason = finish(answer, overrides, defaults, engine.model.tokenizer)
                        if text.startswith(sent) and len(text) > len(sent):
                            yield _chunk(meta, {"content": text[len(sent):]}, None, include_usage)
                        elif not text.startswith(sent):
                            log.warning("streamed text %r is not a prefix of the answer %r", sent, text)
                        yield _chunk(meta, {}, reason, include_usage)
                        if include_usage:
                            n = len(answer.token_ids)
                            yield _sse_data({**meta, "object": "chat.completion.chunk", "choices": [],
                                             "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": n,
                                                       "total_tokens": prompt_tokens + n}})
                        yield "data: [DONE]\n\n"
                        return
            finally:
                if not finished:  # the client went away or we gave up: stop generating
                    cancelled.set()
                    batcher.cancel(job)

        return sse(events())

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request):
        deadline = time.monotonic() + settings.request_timeout
        authorize(request)
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise bad("send multipart/form-data with a 'file' field holding the audio", "file", "invalid_type")
        try:
            form = await request.form(max_files=1, max_fields=32)
        except BodyTooLarge:
            raise too_large(int(settings.max_body_mb * 2 ** 20)) from None
        except Exception as err:  # noqa: BLE001 - starlette's MultiPartException and friends
            raise bad(f"could not parse the multipart body ({err})", None, "invalid_multipart") from None
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise bad("missing 'file': upload the audio as a multipart file field named 'file'", "file",
                          "missing_required_parameter")
            data = await upload.read()
            response_format = form.get("response_format") or "json"
            if response_format not in ("json", "text"):
                raise bad(f"response_format must be 'json' or 'text' (got {response_format!r})", "response_format",
                          "unsupported_value")
            fields = {}
            for name in ("temperature",):
                if isinstance(form.get(name), str) and form.get(name).strip():
                    try:
                        fields[name] = float(form.get(name))
                    except ValueError:
                        raise bad(f"'{name}' must be a number", name, "invalid_type") from None
            decoding = parse_decoding(fields, settings.max_tokens_limit, 1)
        finally:
            await form.close()
        wav = await decode_audio(data, "file")
        prompt = engine.build_prompt([Turn(ASR_INSTRUCTION, audio=True)])
        overrides = decoding.overrides(defaults, settings.max_tokens_limit)
        answer = (await wait(job_for([(wav, prompt)], overrides, engine.default_lora_scale), deadline))[0]
        text, _ = finish(answer, overrides, defaults, engine.model.tokenizer)
        if response_format == "text":
            return PlainTextResponse(text)
        prompt_tokens = engine.prompt_tokens(prompt, wav)
        n = len(answer.token_ids)
        return {"text": text, "usage": {"type": "tokens", "input_tokens": prompt_tokens, "output_tokens": n,
                                        "total_tokens": prompt_tokens + n}}

    # ------------------------------------------------------------------ web demo
    index_html = (STATIC / "index.html").read_text(encoding="utf-8")

    @app.get("/")
    @app.get("/demo")
    async def demo_page():
        return HTMLResponse(index_html)

    @app.get("/demo/info")
    async def demo_info():
        return {"model": engine.name, "auth_required": bool(settings.api_key), "examples": list(examples),
                "max_audio_seconds": engine.max_audio_seconds, "max_tokens_limit": settings.max_tokens_limit,
                "defaults": {"max_tokens": min(defaults.max_new_tokens, settings.max_tokens_limit),
                             "num_beams": defaults.num_beams,
                             "temperature": defaults.temperature if defaults.do_sample else 0.0,
                             "top_p": defaults.top_p, "lora_scale": engine.default_lora_scale}}

    @app.get("/demo/examples/{name}")
    async def demo_example(name: str):
        path = examples.get(name)  # looked up in the allow-list only: never joined onto a directory
        if path is None:
            raise APIError(404, f"no example clip named {name!r}", "name", "not_found")
        return FileResponse(path, media_type=_media_type(path))

    return app


def _media_type(path: Path) -> str:
    return {".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg", ".ogg": "audio/ogg",
            ".opus": "audio/ogg", ".m4a": "audio/mp4"}.get(path.suffix.lower(), "application/octet-stream")


def _model_card(name: str) -> dict:
    return {"id": name, "object": "model", "created": 0, "owned_by": "salmonn"}


def _sse_data(obj: dict) -> str:
    return "data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n\n"


def _chunk(meta: dict, delta: dict, finish_reason: str | None, include_usage: bool, index: int = 0) -> str:
    obj = {**meta, "object": "chat.completion.chunk",
           "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
    if include_usage:
        obj["usage"] = None
    return _sse_data(obj)


def _whole_choices_stream(meta: dict, choices: list[tuple[str, str]], usage: dict | None):
    """A stream of answers that were decoded all at once (beam search, n > 1): one content chunk per choice."""
    async def events():
        for i, (text, reason) in enumerate(choices):
            yield _chunk(meta, {"role": "assistant", "content": ""}, None, usage is not None, i)
            if text:
                yield _chunk(meta, {"content": text}, None, usage is not None, i)
            yield _chunk(meta, {}, reason, usage is not None, i)
        if usage is not None:
            yield _sse_data({**meta, "object": "chat.completion.chunk", "choices": [], "usage": usage})
        yield "data: [DONE]\n\n"
    return events()


def sse(events) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
