"""HTTP plumbing under the routes: the body-size limit, OpenAI-style error responses, the API key, reading JSON
and multipart bodies, and waiting for an answer while watching for a client that hung up."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
from typing import Any, Awaitable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from .schemas import APIError, bad

log = logging.getLogger("salmonn.serve")
CLIENT_CLOSED = 499  # nginx's "client closed request": logged, never seen by the client


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


class BodyLimit:
    """ASGI middleware: 413 for a body over `max_bytes` (declared by Content-Length, or counted while read)."""

    DRAIN_LIMIT = 256 * 2 ** 20  # read (and drop) up to this much of a refused body so the client sees the 413

    def __init__(self, app, max_bytes: int, drain_seconds: float = 300.0):
        self.app, self.max_bytes, self.drain_seconds = app, max_bytes, drain_seconds  # a stalled body: no longer

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or {}).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            if int(declared) <= self.DRAIN_LIMIT:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(_discard_body(receive), self.drain_seconds)
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


async def _discard_body(receive) -> None:
    while (await receive()).get("more_body"):
        pass


def too_large(max_bytes: int) -> APIError:
    return APIError(413, f"request body is larger than this server's limit of {max_bytes / 2 ** 20:g} MB",
                    None, "request_too_large")


def error_response(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Every failure is answered as {"error": {...}}; a client that left gets nothing."""

    @app.exception_handler(APIError)
    async def _api_error(request, err: APIError):
        return error_response(err)

    @app.exception_handler(ClientGone)
    async def _client_gone(request, err: ClientGone):
        return Response(status_code=CLIENT_CLOSED)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, err: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code)
        return error_response(APIError(err.status_code, str(err.detail), None, code))

    @app.exception_handler(Exception)
    async def _unexpected(request, err: Exception):
        log.exception("unexpected error")
        return error_response(APIError(500, f"internal error ({type(err).__name__})", None, "internal_error"))


def authorize(request: Request, api_key: str | None) -> None:
    if not api_key:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise APIError(401, "missing or wrong API key: send 'Authorization: Bearer KEY'", None, "invalid_api_key")


async def read_body(request: Request, max_bytes: int, timeout: float) -> bytes:
    """The whole body: 413 over `max_bytes`, 408 when it has not arrived within `timeout` s (a stalled upload must
    not hold its connection), ClientGone when the client hangs up during the upload."""
    try:
        return await asyncio.wait_for(request.body(), timeout)
    except BodyTooLarge:
        raise too_large(max_bytes) from None
    except asyncio.TimeoutError:
        raise APIError(408, f"the request body did not arrive within {timeout:.3g} s (the server's request "
                       "timeout): send it whole", None, "timeout") from None
    except ClientDisconnect:
        raise ClientGone("the client hung up during its upload") from None


async def read_json(request: Request, max_bytes: int, timeout: float) -> Any:
    """The body parsed as JSON (in a worker thread: a large body must not stall the event loop)."""
    raw = await read_body(request, max_bytes, timeout)
    if not raw.strip():
        raise bad("the request body is empty: send a JSON object", None, "invalid_json")
    return await run_in_threadpool(parse_json, raw)


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise bad(f"the request body is not valid JSON ({err})", None, "invalid_json") from None
    except RecursionError:
        raise bad("the request body is nested too deeply to be a chat request", None, "invalid_json") from None


async def read_form(request: Request, max_bytes: int, timeout: float):
    """The multipart/form-data body, refused when it is cut off (no closing boundary): a truncated upload would
    otherwise parse as a form that silently lacks its last fields."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise bad("send multipart/form-data with a 'file' field holding the audio", "file", "invalid_type")
    boundary = re.search(r'boundary="?([^";]+)"?', content_type)
    if boundary is None:
        raise bad("the multipart Content-Type has no boundary", None, "invalid_multipart")
    raw = await read_body(request, max_bytes, timeout)
    if b"--" + boundary.group(1).encode("latin-1") + b"--" not in raw:
        raise bad("the multipart body is cut off (it has no closing boundary): send the whole body", None,
                  "invalid_multipart")
    try:
        return await request.form(max_files=1, max_fields=32)  # parses the body read above
    except Exception as err:  # noqa: BLE001 - starlette's MultiPartException and friends
        raise bad(f"could not parse the multipart body ({err})", None, "invalid_multipart") from None


async def answer_or_gone(answer: Awaitable, request: Request, timeout: float) -> Any:
    """Await `answer` unless the client disconnects first (ClientGone) or `timeout` seconds pass
    (asyncio.TimeoutError); `answer` is cancelled in both cases."""
    task, gone = asyncio.ensure_future(answer), asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, gone}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
    if task in done:
        return task.result()
    if gone in done:
        raise ClientGone()
    raise asyncio.TimeoutError()


async def _disconnected(request: Request) -> None:
    """Returns when the client hangs up (the body has been read: the next ASGI message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.05)
