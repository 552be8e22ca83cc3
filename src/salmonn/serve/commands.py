"""`salmonn serve` and `salmonn demo` (heavy imports stay inside the functions: `salmonn --help` stays fast)."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import sys
import threading

from ..errors import ConfigError, SalmonnError

SHUTDOWN_GRACE = 2.0  # s after --drain-timeout for the drained requests' answers to go out


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise SalmonnError(f"cannot listen on {host}:{port}: {err.strerror or err}; pick another --port") from None
    sock.set_inheritable(True)
    return sock


def run_server(config: str | None, overrides: list[str], *, host: str, port: int, model_name: str,
               max_audio_seconds: float, log_level: str, open_browser: bool = False, **limits) -> None:
    """Load the model and serve it; `limits` are ServeSettings fields (max_queue, request_timeout, ...)."""
    from .app import ServeSettings, create_app
    from .engine import Engine

    _check_limits(dict(limits, max_audio_seconds=max_audio_seconds))
    if limits.get("examples_dir") is not None and not os.path.isdir(limits["examples_dir"]):
        raise ConfigError(f"--examples {limits['examples_dir']}: not a directory")
    limits["api_key"] = limits.get("api_key") or os.environ.get("SALMONN_API_KEY") or None
    sock = _listen(host, port)  # fail fast, before the model loads, when the port is taken
    port = sock.getsockname()[1]
    if not _is_loopback(host) and not limits["api_key"]:
        print(f"warning: listening on {host} without --api-key: anyone who can reach this port can use the model",
              file=sys.stderr)
    print(f"loading the model ({config or 'default'}) ...", file=sys.stderr, flush=True)
    from ..builder import load_model
    engine = Engine(load_model(config, overrides), name=model_name, max_audio_seconds=max_audio_seconds)
    settings = ServeSettings(**limits)
    server = make_server(create_app(engine, settings), log_level, settings.drain_timeout)
    shown = "localhost" if host in ("127.0.0.1", "::1", "localhost") else host
    url = f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}"

    def announce():
        while not server.started and not server.should_exit:
            threading.Event().wait(0.05)
        if server.started:
            print(f"SALMONN ({model_name}) at {url}  (OpenAI base_url {url}/v1, web demo {url}/)", file=sys.stderr,
                  flush=True)
            if open_browser:
                import webbrowser
                webbrowser.open(url + "/")
    threading.Thread(target=announce, daemon=True).start()
    server.run(sockets=[sock])


def _check_limits(limits: dict) -> None:
    for name in ("max_batch_size", "max_queue", "max_tokens_limit"):
        if name in limits and limits[name] < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {limits[name]}")
    for name in ("max_wait_ms", "drain_timeout", "request_timeout", "max_body_mb", "max_audio_seconds"):
        value = limits.get(name, 1)
        if not value >= 0 or (name not in ("max_wait_ms", "drain_timeout") and value == 0):
            raise ConfigError(f"--{name.replace('_', '-')} must be > 0, got {value}")


def make_server(app, log_level: str, drain_timeout: float):
    """uvicorn for `app`. On SIGTERM / Ctrl-C the queued requests are refused at once (503) and the running ones
    get `drain_timeout` seconds, then they are answered 503 too (a stream: an error event and [DONE]) and the
    process exits without waiting for their generation: a shutdown never waits for the whole queue."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            # a signal handler must not take the batcher's lock (the interrupted code may hold it): drain elsewhere
            threading.Thread(target=app.state.batcher.drain, args=(drain_timeout,), daemon=True).start()
            super().handle_exit(sig, frame)

    # uvicorn cancels what is still running only after the drain has answered it (a cancelled request is a
    # plain-text 500 and a traceback)
    return DrainingServer(uvicorn.Config(app, log_level=log_level, timeout_keep_alive=30,
                                         timeout_graceful_shutdown=drain_timeout + SHUTDOWN_GRACE))


@dataclasses.dataclass
class ServerFlags:
    """Server: the model, where it listens, how it batches (shared by serve and demo).

    Options:
      config: the model's config file (default: the bundled SALMONN-mini)
      host: address to listen on (loopback unless you mean to expose the model)
      port: port to listen on (0: any free port)
      api_key: the key /v1/* requests must send as 'Authorization: Bearer KEY' (default: $SALMONN_API_KEY)
      model_name: the model id the API reports and echoes
      max_batch_size: rows in one generate() call
      max_wait_ms: how long the oldest request waits for others with the same settings to batch with
      max_audio_seconds: longer audio is refused with 400 (decoding stops at the limit)
      examples: folder of clips the web demo offers
    """
    config: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    model_name: str = "salmonn"
    max_batch_size: int = 8
    max_wait_ms: float = 10.0
    max_audio_seconds: float = 300.0
    examples: str | None = None

    def run(self, overrides: list[str], log_level: str, open_browser: bool = False, **limits) -> None:
        """run_server with these flags; `limits`: the other ServeSettings fields."""
        run_server(self.config, list(overrides), host=self.host, port=self.port, model_name=self.model_name,
                   max_audio_seconds=self.max_audio_seconds, log_level=log_level, open_browser=open_browser,
                   api_key=self.api_key, max_batch_size=self.max_batch_size, max_wait_ms=self.max_wait_ms,
                   examples_dir=self.examples, **limits)


def serve(server: ServerFlags = ServerFlags(), max_queue: int = 128, request_timeout: float = 300.0,
          drain_timeout: float = 10.0, max_body_mb: float = 25.0, max_tokens_limit: int = 1024,
          log_level: str = "info", eager_step: bool = False, engine: str = "salmonn", lora_scale: float = 1.0,
          vllm_arg: list[str] | None = None, overrides: list[str] = ()) -> None:
    """Serve the model over an OpenAI-compatible HTTP API (+ the web demo at /).

    Endpoints: POST /v1/chat/completions (messages with text and input_audio parts, stream, n, stop, seed,
    lora_scale), POST /v1/audio/transcriptions, GET /v1/models, GET /health. Concurrent requests with the same
    decoding settings are answered in batches of up to --max-batch-size, gathered for at most --max-wait-ms.
    Binds to 127.0.0.1 by default; --api-key (or $SALMONN_API_KEY) makes /v1/* require 'Bearer KEY'.

    Options:
      max_queue: waiting requests beyond this are refused with 503 and Retry-After
      request_timeout: seconds from arrival to answer (504 after)
      drain_timeout: on SIGTERM, seconds the running requests get (waiting ones are refused at once)
      max_body_mb: request bodies over this are refused with 413
      max_tokens_limit: the largest max_tokens a request may ask for
      log_level: uvicorn's log level
      eager_step: run the LLM's per-token step eagerly; by default a server compiles it (model.compile=true, as
        `salmonn infer` does not: each batch size's first request compiles it once, for minutes on a CPU, and a
        long-running process then decodes faster); a model.compile=... override wins over both
      engine: salmonn (this package's server) or vllm (vLLM's OpenAI server on an export of the model, made once
        into ~/.cache/salmonn/vllm; needs `scripts/setup.sh --vllm`); vLLM has its own limits and batching:
        the queue, timeout, body and batch options above apply to the salmonn engine only
      lora_scale: with --engine vllm, LoRA's scale merged into the exported weights
      vllm_arg: with --engine vllm, an argument passed to vLLM's server as it is (repeat it), e.g.
        --vllm-arg=--pipeline-parallel-size=2
    """
    if engine not in ("salmonn", "vllm"):
        raise ConfigError(f"--engine must be salmonn or vllm, got {engine!r}")
    if engine == "vllm":
        from ..vllm.serving import serve_vllm
        serve_vllm(server.config, list(overrides), host=server.host, port=server.port, model_name=server.model_name,
                   api_key=server.api_key or os.environ.get("SALMONN_API_KEY"), log_level=log_level,
                   eager=eager_step, lora_scale=lora_scale, extra=vllm_arg or [])
        return
    overrides = ([] if eager_step else ["model.compile=true"]) + list(overrides)  # the serve-specific default
    server.run(overrides, log_level, max_queue=max_queue, request_timeout=request_timeout,
               drain_timeout=drain_timeout, max_body_mb=max_body_mb, max_tokens_limit=max_tokens_limit)


def demo(server: ServerFlags = ServerFlags(), no_browser: bool = False, log_level: str = "warning",
         overrides: list[str] = ()) -> None:
    """Start the server and open the web demo in a browser.

    Upload or record a clip (or pick an example), type an instruction, set beams / temperature / max tokens and
    the LoRA scale, and watch the answer stream in. Same server as `salmonn serve` (its options); --no-browser
    only prints the address.

    Options:
      no_browser: print the address instead of opening a browser
      log_level: uvicorn's log level
    """
    server.run(overrides, log_level, open_browser=not no_browser)
