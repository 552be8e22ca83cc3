"""SALMONN-mini served two ways on one machine, back to back (issue 30): `salmonn serve` (this package's engine)
and `salmonn serve --engine vllm` (vLLM's OpenAI server on the exported model), at 1, 8 and 32 concurrent clients.

    .venv/bin/python benchmarks/vllm_serve.py [--levels 1,8,32] [--requests 1:6,8:32,32:64]
        [--engines salmonn:8,salmonn:32,vllm] [--wait-load 1.5] [--out benchmarks/vllm_serve]

Each engine is started in turn on a free 127.0.0.1 port (ours from .venv, vLLM from .venv-vllm), warmed up with
one request and then one round each of 8 and 32 concurrent requests (unmeasured: our compiled step compiles once per
padded batch size), measured at each level (bounded by --level-seconds), and stopped before the next one starts.
The requests are the bundled clips (examples/audio/*.flac) x the 8 instructions of the mini's test_prompts.json
(32 distinct questions, sent in the same order to every engine) through the real `openai` client: greedy
(temperature 0), max_tokens 64, the model's own decoding defaults otherwise (mini's n-gram ban: vLLM applies the
export's through its logits processor). Every answer is forced to 64 tokens, as in the issue's offline comparison
(mini's natural answers are ~6 tokens, so prefill would be nearly all the work): vLLM requests send min_tokens 64,
our server starts with generate.min_new_tokens=64 (its requests take no min_tokens); --natural drops both. The
report counts the questions both engines answered with the same text.

Clients are closed loops: each sends its next request when its answer is in. vLLM's requests stream (time to first
token is the first content chunk); ours stream at 1 client and are whole answers at 8 and 32, because `salmonn
serve` runs a streamed request alone (no batching): there the time to first token is the answer's latency.
Memory: the resident set of the server process and all its children (summed RSS, and PSS, which counts a page
shared by several of them once), sampled every 0.2 s; the peak of each level. Per level: answers/s and generated
tokens/s over the level's wall time (first request sent to last answer in), median and p90 time to first token,
median latency, and where the time went: our server's batches (its /health counters: generate() calls, rows,
busy seconds), vLLM's own per-request prefill / decode / queue seconds (its /metrics).

--profile-rows 8,32 then times, in this process, `salmonn infer`'s batched path on the same 32 questions (eager
step, as `salmonn infer` runs): audio encoders, the prompt's forward and each decoding step, at each batch size
(why our batching gains little from 8 to 32 rows). Waits up to --wait-seconds for a 1-minute load average below
--wait-load first, and stores the load before and after either way. Writes OUT.json, OUT.md and OUT.png.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "audio"
CLIPS = ("speech_female.flac", "speech_male.flac", "dog.flac", "cello.flac")
PROMPTS = json.loads((ROOT / "src" / "salmonn" / "assets" / "mini" / "test_prompts.json").read_text())
WEIGHTS = ROOT / "src" / "salmonn" / "assets" / "mini" / "trainable.safetensors"
VENV_OURS, VENV_VLLM = ROOT / ".venv", ROOT / ".venv-vllm"
MAX_TOKENS = 64
START_SECONDS = 600  # an engine that is not answering after this is a failed run (vLLM compiles for minutes)
REQUEST_SECONDS = 600  # one request's client timeout
SAMPLE_SECONDS = 0.2
LEVEL_SECONDS = 180.0  # a level's clients send no new request after this (--level-seconds)
FORCED = True  # every answer is MAX_TOKENS long (--natural: answers end where the model ends them)
DTYPE = ""  # --dtype: both engines in this dtype ("" = the config's, float32)


def questions() -> list[tuple[str, str]]:
    """(clip, instruction key): every clip x every instruction, interleaved so that consecutive requests differ."""
    return [(clip, task) for task in PROMPTS for clip in CLIPS]


# ---------------------------------------------------------------------------------------------- the machine
def machine() -> dict:
    cpu = re.search(r"Model name:\s+(.*)", subprocess.run(["lscpu"], capture_output=True, text=True).stdout)
    return {"cpu": cpu.group(1).strip() if cpu else "unknown CPU", "cores": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2 ** 30, 1)}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def wait_for_quiet(threshold: float, seconds: float) -> dict:
    """Poll the 1-minute load average until it is below `threshold` or `seconds` have passed."""
    start, seen = time.monotonic(), load()
    while seen[0] >= threshold and time.monotonic() - start < seconds:
        time.sleep(15)
        seen = load()
    return {"threshold": threshold, "waited_s": round(time.monotonic() - start), "load": seen,
            "quiet": seen[0] < threshold}


def vllm_version() -> str:
    done = subprocess.run([str(VENV_VLLM / "bin" / "python"), "-c", "import vllm; print(vllm.__version__)"],
                          capture_output=True, text=True, timeout=120)
    return done.stdout.strip().splitlines()[-1] if done.returncode == 0 and done.stdout.strip() else "not installed"


# ---------------------------------------------------------------------------------------------- memory
class MemorySampler(threading.Thread):
    """Summed RSS and PSS (MiB) of a process and all its children, every SAMPLE_SECONDS; `peak()` since `reset()`."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.stop_event = pid, threading.Event()
        self.lock = threading.Lock()
        self.now = {"rss_mib": 0.0, "pss_mib": 0.0, "processes": 0}
        self._peak = dict(self.now)

    def sample(self) -> dict:
        try:
            root = psutil.Process(self.pid)
            procs = [root] + root.children(recursive=True)
        except psutil.Error:
            return dict(self.now)
        rss = pss = 0.0
        for proc in procs:
            try:
                rss += proc.memory_info().rss
                rollup = Path(f"/proc/{proc.pid}/smaps_rollup").read_text()
                pss += int(re.search(r"^Pss:\s+(\d+) kB", rollup, re.M).group(1)) * 1024
            except (psutil.Error, OSError, AttributeError):
                continue
        return {"rss_mib": round(rss / 2 ** 20), "pss_mib": round(pss / 2 ** 20), "processes": len(procs)}

    def run(self) -> None:
        while not self.stop_event.wait(SAMPLE_SECONDS):
            now = self.sample()
            with self.lock:
                self.now = now
                self._peak = {k: max(self._peak[k], now[k]) for k in now}

    def reset(self) -> None:
        with self.lock:
            self._peak = dict(self.now)

    def peak(self) -> dict:
        with self.lock:
            return dict(self._peak)


# ---------------------------------------------------------------------------------------------- servers
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EngineFailed(Exception):
    """An engine that did not start: recorded in the output, and the next engine runs."""


class Server:
    """One engine as a subprocess in its own session (stopped by its process group id)."""

    def __init__(self, spec: str, log_dir: Path):
        self.spec = spec
        self.kind, _, batch = spec.partition(":")
        self.port = free_port()
        common = ["serve", "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        if self.kind == "salmonn":
            self.flags = common + ["--max-batch-size", batch or "8"] + ([f"generate.min_new_tokens={MAX_TOKENS}"]
                                                                        if FORCED else [])
            self.command = [str(VENV_OURS / "bin" / "salmonn"), *self.flags]
        elif self.kind == "vllm":
            self.flags = common + ["--engine", "vllm"] + (["--eager-step"] if batch == "eager" else [])
            self.command = [str(VENV_VLLM / "bin" / "salmonn"), *self.flags]
        else:
            sys.exit(f"unknown engine {spec!r}: salmonn:N or vllm[:eager]")
        if DTYPE:  # both engines (vLLM's --dtype comes from this override); overrides go last
            self.flags.append(f"model.dtype={DTYPE}")
            self.command.append(f"model.dtype={DTYPE}")
        self.log = log_dir / f"vllm_serve.{spec.replace(':', '_')}.log"
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> float:
        """Start and wait until /v1/models answers; seconds it took."""
        import urllib.request
        start = time.monotonic()
        with open(self.log, "w") as out:
            self.process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                            start_new_session=True)
        while time.monotonic() - start < START_SECONDS:
            if self.process.poll() is not None:
                raise EngineFailed(f"exited ({self.process.returncode}) before answering; its log's end:\n"
                                   + self.log.read_text()[-3000:])
            try:
                with urllib.request.urlopen(self.base_url + "/v1/models", timeout=5) as reply:
                    if reply.status == 200:
                        return time.monotonic() - start
            except OSError:
                pass
            time.sleep(1)
        self.stop()
        raise EngineFailed(f"did not answer within {START_SECONDS} s; its log's end:\n" + self.log.read_text()[-3000:])

    def get(self, path: str) -> str:
        import urllib.request
        with urllib.request.urlopen(self.base_url + path, timeout=30) as reply:
            return reply.read().decode()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # the session we started: vLLM's engine core and workers
        except ProcessLookupError:
            pass
        self.process.wait(30)


def counters(server: Server) -> dict:
    """Our server's batch counters (/health), or vLLM's per-request time sums (/metrics)."""
    if server.kind == "salmonn":
        stats = json.loads(server.get("/health")).get("stats", {})
        return {k: stats.get(k, 0) for k in ("requests", "batches", "rows", "busy_seconds")}
    text, found = server.get("/metrics"), {}
    for name in ("request_prefill_time_seconds", "request_decode_time_seconds", "request_queue_time_seconds",
                 "request_inference_time_seconds", "prompt_tokens_total", "generation_tokens_total",
                 "num_preemptions_total"):
        values = re.findall(rf"^vllm:{name}(?:_sum)?(?:{{[^}}]*}})? ([0-9.eE+-]+)$", text, re.M)
        found[name] = sum(float(v) for v in values)
    return found


def difference(after: dict, before: dict) -> dict:
    return {k: round(after[k] - before.get(k, 0), 3) for k in after}


# ---------------------------------------------------------------------------------------------- clients
def message(clip: str, task: str) -> list[dict]:
    data = base64.b64encode((EXAMPLES / clip).read_bytes()).decode()
    return [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": data, "format": "flac"}},
                                         {"type": "text", "text": PROMPTS[task]}]}]


def ask(client, model: str, question: tuple[str, str], stream: bool, extra: dict) -> dict:
    """One request: {'ok', 'ttft_s', 'latency_s', 'tokens', 'text'} (ttft = latency for a whole answer)."""
    start = time.monotonic()
    try:
        if stream:
            first, pieces, tokens = None, [], None
            for chunk in client.chat.completions.create(model=model, messages=message(*question), temperature=0,
                                                        max_tokens=MAX_TOKENS, stream=True, extra_body=extra,
                                                        stream_options={"include_usage": True}):
                if chunk.usage is not None:
                    tokens = chunk.usage.completion_tokens
                for choice in chunk.choices:
                    if choice.delta.content:
                        first = first if first is not None else time.monotonic()
                        pieces.append(choice.delta.content)
            end = time.monotonic()
            text = "".join(pieces)
            first = first if first is not None else end
        else:
            reply = client.chat.completions.create(model=model, messages=message(*question), temperature=0,
                                                   max_tokens=MAX_TOKENS, extra_body=extra)
            end = first = time.monotonic()
            text, tokens = reply.choices[0].message.content or "", reply.usage.completion_tokens
        return {"ok": True, "ttft_s": first - start, "latency_s": end - start, "tokens": tokens or 0,
                "text": text, "start": start, "end": end}
    except Exception as err:  # noqa: BLE001 - a failed request is counted, not fatal
        return {"ok": False, "error": f"{type(err).__name__}: {err}"[:300], "start": start, "end": time.monotonic(),
                "tokens": 0}


def run_level(server: Server, clients: int, requests: int, stream: bool) -> list[dict]:
    """`clients` closed-loop clients answer `requests` questions between them (question i: questions()[i % 32])."""
    import openai
    asked = questions()
    order = [(i, asked[i % len(asked)]) for i in range(requests)]
    lock, results = threading.Lock(), [None] * requests
    deadline = time.monotonic() + LEVEL_SECONDS  # no new request after this (the ones in flight finish)
    extra = {"min_tokens": MAX_TOKENS} if FORCED and server.kind == "vllm" else None  # ours: the server's default

    def client_loop(_: int) -> None:
        client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0,
                               timeout=REQUEST_SECONDS)
        while time.monotonic() < deadline:
            with lock:
                if not order:
                    return
                index, question = order.pop(0)
            results[index] = {"question": list(question), **ask(client, "salmonn", question, stream, extra)}

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client_loop, range(clients)))
    return [r for r in results if r is not None]


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def summarise(records: list[dict]) -> dict:
    ok = [r for r in records if r["ok"]]
    wall = max(r["end"] for r in records) - min(r["start"] for r in records) if records else 0.0
    tokens = sum(r["tokens"] for r in ok)
    ttft, latency = [r["ttft_s"] for r in ok], [r["latency_s"] for r in ok]
    return {"requests": len(records), "answered": len(ok), "failed": len(records) - len(ok),
            "errors": sorted({r["error"] for r in records if not r["ok"]})[:3], "wall_s": round(wall, 2),
            "answers_per_s": round(len(ok) / wall, 3) if wall else None,
            "tokens_per_s": round(tokens / wall, 2) if wall else None, "tokens": tokens,
            "mean_tokens": round(tokens / len(ok), 1) if ok else None,
            "ttft_median_s": round(statistics.median(ttft), 3) if ttft else None,
            "ttft_p90_s": round(quantile(ttft, 0.9), 3) if ttft else None,
            "latency_median_s": round(statistics.median(latency), 3) if latency else None}


def bench_engine(spec: str, levels: list[int], requests: dict[int, int], log_dir: Path) -> dict:
    """Start the engine `spec` (salmonn:N, vllm, vllm:eager; @C+C... measures only those levels), warm it up,
    measure each level, stop it."""
    spec, _, only = spec.partition("@")
    levels = [int(c) for c in only.split("+")] if only else levels
    server = Server(spec, log_dir)
    print(f"[{spec}] starting: {' '.join(server.command)}", file=sys.stderr, flush=True)
    result = {"engine": spec, "command": " ".join(["salmonn", *server.flags]), "load_before": load()}
    try:
        result["start_s"] = round(server.start(), 1)
        sampler = MemorySampler(server.process.pid)
        sampler.start()
        time.sleep(1)
        result["memory_idle"] = sampler.sample()
        warm = time.monotonic()
        # our compiled step compiles once per padded batch size: a round of 1, 8 and 32 concurrent requests (the
        # sizes seen in trials; a batch of 9-24 rows, rare here, would compile during a level)
        for clients in (1, *[c for c in (8, 32) if c <= max(levels)]):
            run_level(server, clients, clients, stream=server.kind == "vllm" or clients == 1)
        result["warmup_s"] = round(time.monotonic() - warm, 1)
        result["levels"], texts = [], {}
        for clients in levels:
            stream = server.kind == "vllm" or clients == 1
            sampler.reset()
            before = counters(server)
            records = run_level(server, clients, requests[clients], stream)
            level = {"clients": clients, "streamed": stream, **summarise(records), "memory_peak": sampler.peak(),
                     "counters": difference(counters(server), before)}
            result["levels"].append(level)
            for r in records:
                if r["ok"]:
                    texts[" | ".join(r["question"])] = r["text"]
            print(f"[{spec}] {clients} clients: {json.dumps({k: v for k, v in level.items() if k != 'errors'})}",
                  file=sys.stderr, flush=True)
        result["texts"] = texts
        result["memory_peak_all"] = sampler.peak()
        sampler.stop_event.set()
    except EngineFailed as err:
        result["error"] = str(err)
        print(f"[{spec}] failed: {err}", file=sys.stderr, flush=True)
    finally:
        server.stop()
        result["load_after"] = load()
    return result


# ---------------------------------------------------------------------------------------------- our batched path
def profile_batches(rows_list: list[int], threads: int | None) -> dict:
    """`salmonn infer`'s batched path (eager step) on the 32 questions, `rows` at a time: the seconds of the audio
    encoders, of the prompt's forward and of the decoding steps, and the prompt's padding."""
    import dataclasses

    import torch

    from salmonn import greedy, load_model
    from salmonn.inference import prepare
    from salmonn.prompting import assemble
    if threads:
        torch.set_num_threads(threads)
    model = load_model(None, ["model.compile=false"])
    gen = dataclasses.replace(model.config.generate, max_new_tokens=MAX_TOKENS,
                              min_new_tokens=MAX_TOKENS if FORCED else 0)
    llm = model.causal_lm
    calls: list[float] = []
    plain = type(llm).__call__

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        out = plain(self, *args, **kwargs)
        calls.append(time.perf_counter() - start)
        return out

    asked = questions()
    model.generate([str(EXAMPLES / CLIPS[0])], PROMPTS["asr"], max_new_tokens=4)  # lazy initialisation
    out = {"threads": torch.get_num_threads(), "torch": torch.__version__, "by_rows": [], "load_before": load(),
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    type(llm).__call__ = timed
    try:
        for rows in rows_list:
            totals = {"encode_s": 0.0, "prompt_s": 0.0, "steps_s": 0.0, "steps": 0, "prompt_tokens": 0,
                      "prompt_slots": 0, "decode_rows": 0, "generated_tokens": 0}
            started = time.perf_counter()
            for first in range(0, len(asked), rows):
                chunk = asked[first:first + rows]
                start = time.perf_counter()
                pieces = prepare(model, [str(EXAMPLES / c) for c, _ in chunk], [PROMPTS[t] for _, t in chunk], gen)
                totals["encode_s"] += time.perf_counter() - start
                embeds, mask, _, _ = assemble(pieces, side="left")
                calls.clear()
                ids = greedy.greedy_decode(llm, embeds, mask, gen, model.tokenizer.eos_token_id,
                                           model.tokenizer.pad_token_id)
                totals["prompt_s"] += calls[0]
                totals["steps_s"] += sum(calls[1:])
                totals["steps"] += len(calls) - 1
                totals["decode_rows"] += len(chunk) * (len(calls) - 1)
                totals["prompt_tokens"] += int(mask.sum())
                totals["prompt_slots"] += mask.numel()
                totals["generated_tokens"] += sum(len([i for i in row if i != model.tokenizer.pad_token_id])
                                                  for row in ids.tolist())
            total = time.perf_counter() - started
            out["by_rows"].append({"rows": rows, "total_s": round(total, 2),
                                   **{k: round(v, 2) if isinstance(v, float) else v for k, v in totals.items()},
                                   "step_ms": round(1000 * totals["steps_s"] / max(1, totals["steps"]), 1),
                                   "answers_per_s": round(len(asked) / total, 3)})
            print(f"[profile] {out['by_rows'][-1]}", file=sys.stderr, flush=True)
    finally:
        type(llm).__call__ = plain
    out["load_after"] = load()
    return out


# ---------------------------------------------------------------------------------------------- report
def fmt(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def write_report(out: Path, result: dict) -> None:
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    engines = result["engines"]
    m = result["machine"]
    lines = [f"# SALMONN-mini: `salmonn serve` vs `salmonn serve --engine vllm` ({result['date']})", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, CPU only. Load average (1/5/15 min) "
             f"before {result['load_before']}, after {result['load_after']}"
             f" (waited {result['quiet_wait']['waited_s']} s for < {result['quiet_wait']['threshold']}: "
             f"{'reached' if result['quiet_wait']['quiet'] else 'not reached'}). Weights sha256 "
             f"`{result['weights_sha256'][:16]}…`; vLLM {result['vllm_version']}; torch {result['torch']}; "
             f"{result.get('dtype', 'float32')} on both engines.", "",
             f"Requests: the 4 bundled clips x the 8 instructions of test_prompts.json (32 questions, the same order "
             f"for every engine), greedy, max_tokens {MAX_TOKENS}, "
             + (f"every answer forced to {MAX_TOKENS} tokens (vLLM: min_tokens; ours: generate.min_new_tokens)"
                if result.get("forced_length") else "natural answer lengths")
             + f" (same texts on all engines: {result['same_texts']}). Closed-loop clients; requests per level: "
             f"{result['requests']}. "
             "TTFT: first streamed content; ours at 8 and 32 clients is the whole answer's latency (`salmonn serve` "
             "runs a streamed request alone, so a batching load sends whole answers). Memory: summed RSS (PSS) "
             "of the server and its children, peak of the level.", "",
             "| engine | clients | answers/s | tokens/s | mean tokens | TTFT median s | TTFT p90 s | latency median s "
             "| peak RSS MiB (PSS) | failed |", "|---|---|---|---|---|---|---|---|---|---|"]
    for e in engines:
        for lv in e.get("levels", []):
            lines.append(f"| {e['engine']} | {lv['clients']} | {fmt(lv['answers_per_s'], 3)} | "
                         f"{fmt(lv['tokens_per_s'], 1)} | {lv['mean_tokens']} | {fmt(lv['ttft_median_s'])} | "
                         f"{fmt(lv['ttft_p90_s'])} | {fmt(lv['latency_median_s'])} | "
                         f"{lv['memory_peak']['rss_mib']} ({lv['memory_peak']['pss_mib']}) | {lv['failed']} |")
    lines += ["", "Server commands (each started when the one before had stopped; `salmonn serve` compiles its "
              "decoding step by default, vLLM compiles its model unless --eager-step):", ""]
    lines += [f"- `{e['engine']}`: `{e['command']}`: " + (
              f"**did not start**: {e['error'].splitlines()[0]}" if "error" in e else
              f"ready in {e.get('start_s')} s, warm-up {e.get('warmup_s')} s, idle memory "
              f"{e.get('memory_idle', {}).get('rss_mib')} MiB RSS") + f"; load {e['load_before']} -> {e['load_after']}"
              for e in engines]
    lines += ["", "## Ratio at 32 clients", ""]
    for line in result["ratios"]:
        lines.append(f"- {line}")
    lines += ["", "## Where the time goes", "", "Each engine's own accounting at each level (ours: generate() "
              "calls and their rows from /health; vLLM: summed per-request seconds from /metrics, which overlap "
              "because requests share iterations):", ""]
    for e in engines:
        for lv in e.get("levels", []):
            c = lv["counters"]
            if e["engine"].startswith("salmonn"):
                batches = c.get("batches") or 0
                lines.append(f"- {e['engine']}, {lv['clients']} clients: {batches:g} batches, "
                             f"{(c.get('rows', 0) / batches) if batches else 0:.1f} rows each, "
                             f"{(c.get('busy_seconds', 0) / batches) if batches else 0:.2f} s each; busy "
                             f"{c.get('busy_seconds', 0):.1f} of {lv['wall_s']} s")
            else:
                lines.append(f"- {e['engine']}, {lv['clients']} clients: per request prefill "
                             f"{c.get('request_prefill_time_seconds', 0) / max(1, lv['answered']):.2f} s, decode "
                             f"{c.get('request_decode_time_seconds', 0) / max(1, lv['answered']):.2f} s, queue "
                             f"{c.get('request_queue_time_seconds', 0) / max(1, lv['answered']):.2f} s; "
                             f"{c.get('prompt_tokens_total', 0):.0f} prompt and "
                             f"{c.get('generation_tokens_total', 0):.0f} generated tokens")
    profile = result.get("profile")
    if profile:
        lines += ["", f"Our batched path in one process (`salmonn infer`'s: eager step, {profile['threads']} torch "
                  f"threads; {profile.get('date')}, load {profile.get('load_before')} -> {profile.get('load_after')}), "
                  f"the 32 questions, {MAX_TOKENS} tokens each:", "",
                  "| rows per batch | total s | answers/s | encoders s | prompt forward s | prompt slots used | "
                  "decode steps s | steps | ms per step | generated tokens |", "|" + "---|" * 10]
        for b in profile["by_rows"]:
            lines.append(f"| {b['rows']} | {b['total_s']} | {b['answers_per_s']} | {b['encode_s']} | {b['prompt_s']} | "
                         f"{b['prompt_tokens']} of {b['prompt_slots']} | {b['steps_s']} | {b['steps']} | "
                         f"{b['step_ms']} | {b['generated_tokens']} |")
    lines += ["", "## Notes", "", *result.get("notes", [])]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def plot(out: Path, result: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for e in result["engines"]:
        levels = e.get("levels", [])
        x = [lv["clients"] for lv in levels]
        axes[0].plot(x, [lv["answers_per_s"] for lv in levels], "o-", label=e["engine"])
        axes[1].plot(x, [lv["ttft_median_s"] for lv in levels], "o-", label=e["engine"])
        axes[2].plot(x, [lv["memory_peak"]["rss_mib"] for lv in levels], "o-", label=e["engine"])
    for ax, title in zip(axes, ("answers/s", "median time to first token (s)", "peak RSS (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"SALMONN-mini on {result['machine']['cpu']} ({result['date']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=90)


def ratios(engines: list[dict]) -> list[str]:
    def at(spec: str, clients: int) -> dict | None:
        for e in engines:
            if e["engine"] == spec:
                return next((lv for lv in e.get("levels", []) if lv["clients"] == clients), None)
        return None
    lines = []
    vllm = next((e["engine"] for e in engines if e["engine"].startswith("vllm")), None)
    for e in engines:
        if vllm and e["engine"].startswith("salmonn"):
            theirs, ours = at(vllm, 32), at(e["engine"], 32)
            if theirs and ours and ours["answers_per_s"]:
                ratio = theirs["answers_per_s"] / ours["answers_per_s"]
                lines.append(f"{vllm} / {e['engine']}: {ratio:.2f}x the answers/s "
                             f"({theirs['answers_per_s']} / {ours['answers_per_s']}); target >= 3x: "
                             f"{'met' if ratio >= 3 else 'missed'}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--requests", default="1:6,8:32,32:64", help="requests per level, CLIENTS:N,...")
    parser.add_argument("--engines", default="salmonn:8,salmonn:32,vllm",
                        help="salmonn:MAX_BATCH_SIZE or vllm (vllm:eager adds --eager-step), in the order they run; "
                        "ENGINE@8+32 measures only those levels")
    parser.add_argument("--profile-rows", default="8,32", help="our batched path's batch sizes ('' skips it)")
    parser.add_argument("--dtype", default="", help="both engines in this dtype (bfloat16: native on AMX/AVX512-BF16)")
    parser.add_argument("--profile-threads", type=int, default=0, help="torch threads there (0: torch's default)")
    parser.add_argument("--profile-from", help="take the profile from this earlier output's JSON instead")
    parser.add_argument("--wait-load", type=float, default=1.5)
    parser.add_argument("--wait-seconds", type=float, default=600)
    parser.add_argument("--level-seconds", type=float, default=180.0, help="a level sends no new request "
                        "after this many seconds (answers/s counts what was answered)")
    parser.add_argument("--natural", action="store_true", help="answers of their natural length (default: forced "
                        f"to {MAX_TOKENS} tokens: min_tokens on vLLM, generate.min_new_tokens on ours)")
    parser.add_argument("--note", action="append", default=[], help="a line for the report's notes (repeatable)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "vllm_serve"))
    args = parser.parse_args()
    global FORCED, LEVEL_SECONDS, DTYPE
    FORCED, LEVEL_SECONDS, DTYPE = not args.natural, args.level_seconds, args.dtype
    out = Path(args.out)
    levels = [int(x) for x in args.levels.split(",")]
    requests = {int(k): int(v) for k, v in (p.split(":") for p in args.requests.split(","))}
    only = [int(c) for e in args.engines.split(",") if "@" in e for c in e.split("@")[1].split("+")]
    requests = {c: requests.get(c, 2 * c) for c in {*levels, *only}}
    import torch
    result = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": machine(), "weights_sha256": hashlib.sha256(WEIGHTS.read_bytes()).hexdigest(),
              "vllm_version": vllm_version(), "torch": torch.__version__, "levels": levels,
              "requests": requests, "max_tokens": MAX_TOKENS, "forced_length": FORCED, "level_seconds": LEVEL_SECONDS,
              "dtype": DTYPE or "float32"}
    result["quiet_wait"] = wait_for_quiet(args.wait_load, args.wait_seconds)
    result["load_before"] = load()
    log_dir = Path(os.environ.get("TMPDIR", "/tmp"))
    result["engines"] = [bench_engine(spec, levels, requests, log_dir) for spec in args.engines.split(",") if spec]
    texts = [e.get("texts", {}) for e in result["engines"]]
    shared = set.intersection(*(set(t) for t in texts)) if texts else set()
    same = sum(all(t[q] == texts[0][q] for t in texts) for q in shared)
    result["same_texts"] = f"{same} of {len(shared)} questions"
    result["ratios"] = ratios(result["engines"])
    if args.profile_from:
        result["profile"] = json.loads(Path(args.profile_from).read_text())["profile"]
    elif args.profile_rows:
        result["profile"] = profile_batches([int(x) for x in args.profile_rows.split(",")], args.profile_threads)
    result["load_after"] = load()
    result["notes"] = args.note
    write_report(out, result)
    plot(out, result)
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
