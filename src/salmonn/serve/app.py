"""The HTTP app: OpenAI-compatible chat completions and transcriptions, models, health, and the web demo.

A request is admitted (API key, room in the queue) before its body is read; it is then parsed, its audio decoded
and its prompt counted against the LLM's context on the request side (in a thread pool); only the generate()
call runs on the model's worker thread, through the dynamic batcher. A request whose client hangs up is dropped
from the queue. Every failure is answered with an OpenAI-style error body
`{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import time
import uuid
from typing import Any, Sequence

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool

from .. import __version__
from ..errors import SalmonnError
from ..prompting import PromptTurn
from .batcher import Batcher, Job, QueueFull, ShuttingDown
from .demo import demo_router
from .engine import ASR_INSTRUCTION, ContextExceeded, Engine
from .schemas import APIError, bad, parse_chat, parse_transcription
from .streaming import TokenStream, log, sse, whole_choices
from .transport import (BodyLimit, ClientGone, answer_or_gone, authorize, install_error_handlers, read_form,
                        read_json)

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
    drain_timeout: float = 10.0  # s a shutdown waits for running requests (queued ones are refused at once)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 2 ** 20)


@dataclasses.dataclass
class Work:
    rows: list  # (16 kHz waveform, full prompt)
    overrides: dict
    lora_scale: float
    streamer: Any = None


def run_jobs(engine: Engine, jobs: list[Job]) -> list:
    """One generate() call for a batch of jobs (same settings): each job gets its own rows' answers."""
    work: list[Work] = [job.payload for job in jobs]
    rows = [row for w in work for row in w.rows]
    answers = engine.run(rows, work[0].overrides, work[0].lora_scale, streamer=work[0].streamer)
    out, start = [], 0
    for w in work:
        out.append(answers[start:start + len(w.rows)])
        start += len(w.rows)
    return out


def create_app(engine: Engine, settings: ServeSettings | None = None) -> FastAPI:
    settings = settings or ServeSettings()
    batcher = Batcher(lambda jobs: run_jobs(engine, jobs), settings.max_batch_size, settings.max_wait_ms,
                      settings.max_queue)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        batcher.stop()

    app = FastAPI(title="SALMONN", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.engine, app.state.batcher, app.state.settings = engine, batcher, settings
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, drain_seconds=settings.request_timeout)
    install_error_handlers(app)
    api = Api(engine, batcher, settings)
    app.get("/health")(api.health)
    app.get("/v1/models")(api.models)
    app.get("/v1/models/{name}")(api.model)
    app.post("/v1/chat/completions")(api.chat_completions)
    app.post("/v1/audio/transcriptions")(api.transcriptions)
    app.include_router(demo_router(engine, settings))
    return app


class Api:
    """The /v1 routes and /health."""

    def __init__(self, engine: Engine, batcher: Batcher, settings: ServeSettings):
        self.engine, self.batcher, self.settings = engine, batcher, settings
        self.uploading = 0  # admitted requests whose body is still arriving: they count against max_queue

    # ------------------------------------------------------------------ routes
    async def health(self):
        b = self.batcher
        return {"status": "ok", "model": self.engine.name, "queued": b.queued, "uploading": self.uploading,
                "busy": b.busy, "stats": dict(b.stats)}

    async def models(self, request: Request):
        authorize(request, self.settings.api_key)
        return {"object": "list", "data": [_model_card(self.engine.name)]}

    async def model(self, name: str, request: Request):
        authorize(request, self.settings.api_key)
        if name != self.engine.name:
            raise APIError(404, f"model '{name}' does not exist; this server serves '{self.engine.name}'", "model",
                           "model_not_found")
        return _model_card(self.engine.name)

    async def chat_completions(self, request: Request):
        deadline = self.admit(request)
        s = self.settings
        body = await self.upload(read_json, request, deadline)
        req = await run_in_threadpool(parse_chat, body, s.max_tokens_limit, s.max_n)
        wav = await self.decode_audio(req.audio, req.audio_param)
        overrides = req.decoding.overrides(self.engine.defaults, s.max_tokens_limit)
        prompt, prompt_tokens = await self.prompt_for(req.turns, wav, overrides)
        lora = self.engine.default_lora_scale if req.decoding.lora_scale is None else req.decoding.lora_scale
        meta = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
                "model": self.engine.name, "system_fingerprint": FINGERPRINT}
        n, sampling = req.decoding.n, overrides.get("do_sample", self.engine.defaults.do_sample)
        if req.stream and n == 1 and overrides.get("num_beams", self.engine.defaults.num_beams) == 1:
            stream = TokenStream(self.engine.model.tokenizer, overrides.get("stop", self.engine.defaults.stop) or [])
            job = self.job_for([(wav, prompt)], overrides, lora, stream)
            return await self.stream(request, job, stream, meta, prompt_tokens, req.include_usage, deadline)
        rows = n if sampling else 1  # deterministic decoding gives n identical answers
        answers = await self.wait(self.job_for([(wav, prompt)] * rows, overrides, lora), request, deadline)
        answers = answers if sampling else answers * n
        choices = [self.engine.finish(a, overrides) for a in answers]
        usage = _usage(prompt_tokens, sum(len(a.token_ids) for a in answers))
        if req.stream:
            return sse(whole_choices(meta, choices, usage if req.include_usage else None))
        return {**meta, "choices": [{"index": i, "message": {"role": "assistant", "content": text, "refusal": None},
                                     "logprobs": None, "finish_reason": reason}
                                    for i, (text, reason) in enumerate(choices)], "usage": usage}

    async def transcriptions(self, request: Request):
        deadline = self.admit(request)
        form = await self.upload(read_form, request, deadline)
        try:
            upload, response_format, decoding = parse_transcription(form, self.settings.max_tokens_limit)
            data = await upload.read()
        finally:
            await form.close()
        wav = await self.decode_audio(data, "file")
        overrides = self.engine.transcription_decoding(decoding.overrides(self.engine.defaults,
                                                                          self.settings.max_tokens_limit))
        prompt, prompt_tokens = await self.prompt_for([PromptTurn(ASR_INSTRUCTION, clips=1)], wav, overrides)
        job = self.job_for([(wav, prompt)], overrides, self.engine.default_lora_scale)
        answer = (await self.wait(job, request, deadline))[0]
        text, _ = self.engine.finish(answer, overrides)
        if response_format == "text":
            return PlainTextResponse(text)
        n = len(answer.token_ids)
        return {"text": text, "usage": {"type": "tokens", "input_tokens": prompt_tokens, "output_tokens": n,
                                        "total_tokens": prompt_tokens + n}}

    # ------------------------------------------------------------------ request side
    def admit(self, request: Request) -> float:
        """The request's deadline, once its key is checked and the queue has room (before its body is read)."""
        deadline = time.monotonic() + self.settings.request_timeout
        authorize(request, self.settings.api_key)
        b = self.batcher
        if not b.accepting or b.queued + self.uploading >= b.max_queue:
            b.stats["rejected"] += 1
            raise self.busy(ShuttingDown("the server is shutting down") if b.draining else
                            QueueFull(f"{b.queued} requests are waiting and {self.uploading} uploading "
                                      f"(max_queue={b.max_queue})"))
        return deadline

    async def upload(self, read, request: Request, deadline: float):
        """read(request, max bytes, seconds left): the body, counted against max_queue while it arrives and due
        by the request's deadline; a client that hangs up meanwhile is logged in one line and counted as dropped."""
        self.uploading += 1
        try:
            return await read(request, self.settings.max_body_bytes, max(0.0, deadline - time.monotonic()))
        except ClientGone as err:
            self.batcher.stats["dropped"] += 1
            log.warning("%s %s: %s; dropped", request.method, request.url.path, err)
            raise
        finally:
            self.uploading -= 1

    async def decode_audio(self, data: bytes, param: str) -> np.ndarray:
        try:
            return await run_in_threadpool(self.engine.load_audio, data, param)
        except SalmonnError as err:
            raise bad(str(err), param, "invalid_audio") from None

    async def prompt_for(self, turns: Sequence[PromptTurn], wav: np.ndarray, overrides: dict) -> tuple[str, int]:
        """(templated prompt, its tokens): 400 when it and max_tokens do not fit in the LLM's context."""
        max_new = overrides["max_new_tokens"]
        try:
            prompt = self.engine.build_prompt(turns)
            return prompt, await run_in_threadpool(self.engine.prompt_tokens, prompt, wav, max_new)
        except ContextExceeded as err:
            raise bad(str(err), "messages", "context_length_exceeded") from None
        except SalmonnError as err:
            raise bad(str(err), "messages", "invalid_prompt") from None

    def job_for(self, rows: list, overrides: dict, lora: float, stream: TokenStream | None = None) -> Job:
        """A job for the batcher; a streamed one runs alone."""
        key: tuple = (_freeze(overrides), lora)
        if "seed" in overrides:  # a seeded request runs on its own, so that its seed alone fixes its answer
            key += (uuid.uuid4().hex,)
        return Job(key=key, payload=Work(rows, overrides, lora, stream), rows=len(rows), alone=stream is not None,
                   on_start=stream.started if stream is not None else None)

    # ------------------------------------------------------------------ waiting for the worker
    def submit(self, job: Job) -> concurrent.futures.Future:
        try:
            return self.batcher.submit(job)
        except (QueueFull, ShuttingDown) as err:
            raise self.busy(err) from None

    async def wait(self, job: Job, request: Request, deadline: float) -> list:
        future = asyncio.wrap_future(self.submit(job))
        try:
            return await answer_or_gone(future, request, max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            self.batcher.cancel(job)
            raise self.timed_out() from None
        except (ClientGone, asyncio.CancelledError):
            self.batcher.cancel(job)
            raise
        except Exception as err:  # noqa: BLE001 - raised by the worker
            raise self.worker_error(err) from None

    async def stream(self, request: Request, job: Job, stream: TokenStream, meta: dict, prompt_tokens: int,
                     include_usage: bool, deadline: float):
        """Token by token: errors before the first token are plain HTTP errors, later ones error events."""
        overrides = job.payload.overrides
        self.submit(job).add_done_callback(stream.finished)
        try:
            kind, value = await answer_or_gone(stream.next(), request, max(0.0, deadline - time.monotonic()))
        except (asyncio.TimeoutError, ClientGone, asyncio.CancelledError) as err:
            stream.cancelled.set()
            self.batcher.cancel(job)
            raise self.timed_out() if isinstance(err, asyncio.TimeoutError) else err
        if kind == "done":
            raise self.worker_error(value.exception() or RuntimeError("cancelled"))

        def conclude(future: concurrent.futures.Future) -> tuple[str, str, dict]:
            if future.cancelled() or future.exception() is not None:
                raise self.worker_error(future.exception() or RuntimeError("cancelled"))
            answer = future.result()[0]
            text, reason = self.engine.finish(answer, overrides)
            return text, reason, _usage(prompt_tokens, len(answer.token_ids))

        return sse(stream.events(meta, include_usage, deadline, conclude, self.timed_out,
                                 lambda: self.batcher.cancel(job)))

    # ------------------------------------------------------------------ errors
    def busy(self, err: Exception) -> APIError:
        return APIError(503, f"the server is busy ({err}); retry later", None, "server_busy",
                        headers={"Retry-After": str(self.batcher.retry_after())})

    def timed_out(self) -> APIError:
        return APIError(504, f"the request did not finish within {self.settings.request_timeout:g} s", None,
                        "timeout")

    def worker_error(self, err: BaseException) -> APIError:
        if isinstance(err, APIError):
            return err
        if isinstance(err, ShuttingDown):
            return self.busy(err)
        if isinstance(err, SalmonnError):
            return bad(str(err), None, "invalid_request")
        log.error("generation failed: %s: %s", type(err).__name__, err)
        return APIError(500, f"generation failed ({type(err).__name__}: {err})", None, "internal_error")


def _freeze(overrides: dict) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in overrides.items()))


def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _model_card(name: str) -> dict:
    return {"id": name, "object": "model", "created": 0, "owned_by": "salmonn"}
