"""Server-sent events in OpenAI's chat.completion.chunk form: answers decoded whole (beam search, n > 1) and one
answer streamed token by token from the model's worker thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import threading
import time
from typing import Any, AsyncIterator, Callable

from fastapi.responses import StreamingResponse

from ..decoding import TokenStreamer
from .schemas import APIError

log = logging.getLogger("salmonn.serve")
DONE = "data: [DONE]\n\n"


def sse(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def sse_data(obj: dict) -> str:
    return "data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n\n"


def chunk(meta: dict, delta: dict, finish_reason: str | None, include_usage: bool, index: int = 0) -> str:
    obj = {**meta, "object": "chat.completion.chunk",
           "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
    if include_usage:
        obj["usage"] = None
    return sse_data(obj)


def usage_chunk(meta: dict, usage: dict) -> str:
    return sse_data({**meta, "object": "chat.completion.chunk", "choices": [], "usage": usage})


async def whole_choices(meta: dict, choices: list[tuple[str, str]], usage: dict | None) -> AsyncIterator[str]:
    """A stream of answers that were decoded all at once (beam search, n > 1): one content chunk per choice."""
    for i, (text, reason) in enumerate(choices):
        yield chunk(meta, {"role": "assistant", "content": ""}, None, usage is not None, i)
        if text:
            yield chunk(meta, {"content": text}, None, usage is not None, i)
        yield chunk(meta, {}, reason, usage is not None, i)
    if usage is not None:
        yield usage_chunk(meta, usage)
    yield DONE


class StreamCancelled(Exception):
    """Raised inside generate() by the streamer when the client has gone away."""


class TokenStream:
    """One answer streamed as it is generated. On the worker thread it is generate()'s streamer: a TokenStreamer
    turns the ids into text fragments that concatenate to exactly the answer's text; the fragments, the job's start and
    its end reach the event loop through a queue."""

    def __init__(self, tokenizer, stop: list[str]):
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()
        self.text = TokenStreamer(tokenizer, write=lambda piece: self._post("text", piece), stop=stop)

    # ------------------------------------------------------------------ worker thread
    def put(self, value) -> None:
        if self.cancelled.is_set():
            raise StreamCancelled()
        self.text.put(value)

    def end(self) -> None:
        self.text.end()

    def started(self) -> None:
        self._post("start", None)

    def finished(self, future: concurrent.futures.Future) -> None:
        self._post("done", future)

    def _post(self, kind: str, value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop may be closed at shutdown
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, value))

    # ------------------------------------------------------------------ event loop
    async def next(self) -> tuple[str, Any]:
        return await self.queue.get()

    async def events(self, meta: dict, include_usage: bool, deadline: float,
                     conclude: Callable[[concurrent.futures.Future], tuple[str, str, dict]],
                     timed_out: Callable[[], APIError], abandon: Callable[[], None]) -> AsyncIterator[str]:
        """The SSE chunks: role, text fragments, then (from `conclude(future)`: final text, finish reason, usage) any
        text not streamed yet, the finish reason, usage and [DONE]. An error after the first chunk is sent as an
        error event, then [DONE]. `abandon` stops the job when the stream ends early (the client left, the deadline
        passed); a generation that outlives its stream (a drain answered it) is stopped at its next token."""
        sent, finished = "", False
        try:
            yield chunk(meta, {"role": "assistant", "content": ""}, None, include_usage)
            while True:
                try:
                    kind, value = await asyncio.wait_for(self.next(), max(0.0, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    yield sse_data(timed_out().body())
                    yield DONE
                    return
                if kind == "text":
                    sent += value
                    yield chunk(meta, {"content": value}, None, include_usage)
                elif kind == "done":
                    finished = True
                    async for event in self._last_events(meta, include_usage, sent, conclude, value):
                        yield event
                    return
        finally:
            self.cancelled.set()
            if not finished:
                abandon()

    @staticmethod
    async def _last_events(meta: dict, include_usage: bool, sent: str, conclude, future) -> AsyncIterator[str]:
        try:
            text, reason, usage = conclude(future)
        except APIError as err:
            yield sse_data(err.body())
            yield DONE
            return
        if not text.startswith(sent):  # the streamer guarantees it; a broken guarantee must show in the log
            log.error("streamed text %r is not a prefix of the answer %r", sent, text)
        elif len(text) > len(sent):
            yield chunk(meta, {"content": text[len(sent):]}, None, include_usage)
        yield chunk(meta, {}, reason, include_usage)
        if include_usage:
            yield usage_chunk(meta, usage)
        yield DONE
