"""Load and abuse a real `salmonn serve` (issues 17 and 32): concurrent well-behaved clients while a hostile set
runs against the same server, more bursts of the same load, then a shutdown under load.

    .venv/bin/python benchmarks/serve_load.py [--config ../shared/fixtures/reference-tiny/config.yaml]
        [--clients 32] [--requests 4] [--bursts 5] [--max-queue 16] [--out benchmarks/serve_load]

Starts the server itself on a free loopback port. Normal clients ask greedy questions about the shared clips
(every fourth one streamed, every fifth a transcription); they and the hostile clients honour 503 + Retry-After
by retrying. The first burst runs with the hostile set, the others are the normal load alone: memory that keeps
growing burst after burst is a leak, memory that is flat after the first is the allocator's high-water mark.
Reports the server's RSS before, after each burst and at its peak (VmHWM), latency p50/p95 of the normal
requests of each burst, their 2xx/4xx/5xx counts and 503 retries, each hostile case's status, time and whether it
was the expected answer, and how long a SIGTERM with a full queue takes to stop the server. Writes OUT.json and
OUT.md ("normal" and "rss" are the first burst's, "bursts" has every burst).
"""

from __future__ import annotations

import argparse
import base64
import datetime
import http.client
import io
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
AUDIO = ROOT.parent / "shared" / "audio"
FIXTURE = ROOT.parent / "shared" / "fixtures" / "reference-tiny"
CLIPS = ["excitement.wav", "mountain.wav", "duck.wav", "gunshots.wav"]


class Client:
    def __init__(self, port: int, retry_busy: bool = False):
        self.port, self.retry_busy, self.retries = port, retry_busy, 0  # retry_busy: retry 503s after Retry-After

    def call(self, method: str, path: str, body: bytes | str | dict | None = None, headers: dict | None = None,
             timeout: float = 600) -> tuple[int, str, dict]:
        """(status, body text, headers); status 0 when the client gave up (timeout) or the connection failed."""
        body = json.dumps(body) if isinstance(body, dict) else body
        body = body.encode() if isinstance(body, str) else body
        self.retries = 0
        for _ in range(60 if self.retry_busy else 0):
            status, text, answer_headers = self._call(method, path, body, headers, timeout)
            if status != 503:
                return status, text, answer_headers
            self.retries += 1
            time.sleep(float(answer_headers.get("retry-after", 1)))
        return self._call(method, path, body, headers, timeout)

    def _call(self, method: str, path: str, body: bytes | None, headers: dict | None,
              timeout: float) -> tuple[int, str, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
            response = conn.getresponse()
            return response.status, response.read().decode(errors="replace"), dict(response.getheaders())
        except (OSError, http.client.HTTPException):
            return 0, "", {}
        finally:
            conn.close()

    def chat(self, body: dict, timeout: float = 600) -> tuple[int, str, dict]:
        return self.call("POST", "/v1/chat/completions", body, timeout=timeout)


def chat_body(clip_b64: str, text: str, **extra) -> dict:
    return {"model": "salmonn", "temperature": 0, "max_tokens": 8, **extra,
            "messages": [{"role": "user", "content": [
                {"type": "input_audio", "input_audio": {"data": clip_b64, "format": "wav"}},
                {"type": "text", "text": text}]}]}


def multipart(data: bytes) -> tuple[bytes, str]:
    boundary = "salmonn-load-boundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nsalmonn\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            f'Content-Type: audio/wav\r\n\r\n').encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def silent_matroska_without_duration(seconds: int) -> bytes:
    """FLAC silence in Matroska with the Duration element blanked (issue 17.2's file)."""
    buffer, rate = io.BytesIO(), 16000
    with av.open(buffer, "w", format="matroska") as container:
        stream = container.add_stream("flac", rate=rate)
        stream.layout = "mono"
        for start in range(0, seconds * rate, rate * 10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, rate * 10), np.int16), format="s16", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    data = buffer.getvalue()
    at = data.index(b"\x44\x89\x88")
    return data[:at] + b"\xec\x89" + bytes(9) + data[at + 11:]


def sse_text(raw: str) -> str:
    pieces = []
    for line in raw.split("\n"):
        if line.startswith("data: {"):
            for choice in json.loads(line[6:]).get("choices", []):
                pieces.append(choice["delta"].get("content") or "")
    return "".join(pieces)


# ---------------------------------------------------------------------------------------------- hostile set
def hostile_cases(client: Client, clips: dict[str, str]) -> list[tuple[str, int, callable]]:
    """(name, expected status, call() -> (status, note))."""
    clip = clips["excitement.wav"]
    music = base64.b64encode((AUDIO / "music.wav").read_bytes()).decode()
    hour = base64.b64encode(silent_matroska_without_duration(3600)).decode()
    cut_body, cut_type = multipart((AUDIO / "duck.wav").read_bytes())

    def status_of(body, **kwargs):
        return lambda: (client.chat(body, **kwargs)[0], "")

    def stream_equals_whole():
        body = {**chat_body(music, "Describe the audio."), "max_tokens": 360, "num_beams": 1}
        status, whole, _ = client.chat(body)
        streamed_status, raw, _ = client.chat({**body, "stream": True})
        text = json.loads(whole)["choices"][0]["message"]["content"] if status == 200 else ""
        same = sse_text(raw) == text
        return (status if same else 500), f"{len(text)} characters, streamed {'equal' if same else 'DIFFERENT'}"

    def abandoned_clients():
        with ThreadPoolExecutor(8) as pool:
            gave_up = list(pool.map(lambda _: client.chat(chat_body(clip, "Describe.", max_tokens=64),
                                                          timeout=0.3)[0], range(8)))
        return (200 if all(s == 0 for s in gave_up) else 500), "8 clients gave up after 0.3 s"

    return [
        ("stop: one 40,000-character string", 400, status_of(chat_body(clip, "Hi", stop=["a" * 40_000]))),
        ("stop: 5 strings", 400, status_of(chat_body(clip, "Hi", stop=list("abcde")))),
        ("stop: [] (no stop strings)", 200, status_of(chat_body(clip, "Hi", stop=[]))),
        ("1 h of FLAC in Matroska, no duration (0.4 MB)", 400, status_of(chat_body(hour, "Describe."))),
        ("1 MB prompt", 400, status_of(chat_body(clip, "word " * 200_000))),
        ("lone surrogate in the message", 400, status_of(chat_body(clip, "Hi \ud800"))),
        ("lone surrogate in stop", 400, status_of(chat_body(clip, "Hi", stop=["\udfff"]))),
        ("100,000-deep nested JSON", 400, lambda: (client.call("POST", "/v1/chat/completions",
                                                               "[" * 100_000 + "]" * 100_000)[0], "")),
        ("malformed JSON", 400, lambda: (client.call("POST", "/v1/chat/completions", '{"messages": [')[0], "")),
        ("bad base64", 400, status_of(chat_body("not base64!!", "Hi"))),
        ("26 MB body", 413, lambda: (client.call("POST", "/v1/chat/completions", b"x" * (26 * 2 ** 20))[0], "")),
        ("cut-off multipart upload", 400, lambda: (client.call("POST", "/v1/audio/transcriptions",
                                                               cut_body[: len(cut_body) // 2],
                                                               {"Content-Type": cut_type})[0], "")),
        ("8 clients that hang up while queued", 200, abandoned_clients),
        ("music.wav 360 tokens: stream == whole", 200, stream_equals_whole),
    ]


def run_hostile(client: Client, clips: dict[str, str]) -> list[dict]:
    results = []
    for name, expected, call in hostile_cases(client, clips):
        start = time.monotonic()
        status, note = call()
        note = "; ".join(n for n in (note, f"{client.retries} x 503 first" if client.retries else "") if n)
        results.append({"case": name, "expected": expected, "status": status, "ok": status == expected,
                        "seconds": round(time.monotonic() - start, 2), "note": note})
        print(f"  {name}: {status} ({results[-1]['seconds']} s) {note}", file=sys.stderr, flush=True)
    return results


# ---------------------------------------------------------------------------------------------- normal load
def normal_client(client: Client, clips: dict[str, str], index: int, requests: int) -> list[dict]:
    records = []
    for k in range(requests):
        name = CLIPS[(index + k) % len(CLIPS)]
        kind = "transcription" if (index + k) % 5 == 4 else "stream" if (index + k) % 4 == 3 else "chat"
        start, retries = time.monotonic(), 0
        while True:
            if kind == "transcription":
                body, content_type = multipart(base64.b64decode(clips[name]))
                status, _, headers = client.call("POST", "/v1/audio/transcriptions", body,
                                                 {"Content-Type": content_type})
            else:
                status, _, headers = client.chat(chat_body(clips[name], "Describe the audio.",
                                                           stream=kind == "stream"))
            if status != 503 or retries >= 20:
                break
            retries += 1
            time.sleep(float(headers.get("retry-after", 1)))
        records.append({"kind": kind, "status": status, "seconds": time.monotonic() - start, "retries": retries})
    return records


def summarise(records: list[dict]) -> dict:
    times = sorted(r["seconds"] for r in records if r["status"] == 200)
    count = lambda low, high: sum(low <= r["status"] < high for r in records)  # noqa: E731
    return {"requests": len(records), "2xx": count(200, 300), "4xx": count(400, 500), "5xx": count(500, 600),
            "no answer": count(0, 1), "503 retries": sum(r["retries"] for r in records),
            "p50_s": round(statistics.median(times), 2) if times else None,
            "p95_s": round(times[min(len(times) - 1, int(0.95 * len(times)))], 2) if times else None}


# ---------------------------------------------------------------------------------------------- the server
def rss_mib(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    value = lambda key: int(re.search(rf"{key}:\s+(\d+) kB", status).group(1)) / 1024  # noqa: E731
    return {"rss_mib": round(value("VmRSS")), "peak_rss_mib": round(value("VmHWM"))}


def start_server(config: str, max_queue: int, log: Path, extra: list[str] = ()) -> tuple[subprocess.Popen, int]:
    command = [sys.executable, "-c", "import sys; from salmonn.cli import main; sys.exit(main())", "serve",
               "--config", config, "--port", "0", "--max-queue", str(max_queue), "--max-audio-seconds", "60",
               "--max-tokens-limit", "512", "--drain-timeout", "5", "--log-level", "warning", *extra]
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        found = re.search(r"at http://localhost:(\d+)", log.read_text())
        if found:
            return process, int(found.group(1))
        time.sleep(0.2)
    process.kill()
    sys.exit(f"the server did not start:\n{log.read_text()}")


def shutdown_under_load(process: subprocess.Popen, client: Client, clips: dict[str, str]) -> dict:
    """SIGTERM while 24 requests are in flight: how long until the process exits, and what the clients got."""
    with ThreadPoolExecutor(24) as pool:
        futures = [pool.submit(client.chat, chat_body(clips[CLIPS[i % 4]], "Describe the audio.", max_tokens=64))
                   for i in range(24)]
        time.sleep(2)
        start = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(120)
        exit_seconds = time.monotonic() - start
        statuses = [f.result()[0] for f in futures]
    return {"exit_seconds": round(exit_seconds, 1), "statuses": {str(s): statuses.count(s) for s in set(statuses)}}


def machine() -> str:
    cpu = re.search(r"Model name:\s+(.*)", subprocess.run(["lscpu"], capture_output=True, text=True).stdout)
    return f"{cpu.group(1).strip() if cpu else 'unknown CPU'}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"


def run_burst(port: int, clips: dict[str, str], clients: int, requests: int, hostile: bool) -> tuple[dict, list]:
    """One burst of `clients` x `requests` normal requests (with the hostile set alongside when `hostile`):
    (summary of the normal requests, hostile results)."""
    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(normal_client, Client(port), clips, i, requests) for i in range(clients)]
        found = run_hostile(Client(port, retry_busy=True), clips) if hostile else []
        return summarise([r for f in futures for r in f.result()]), found


def write_report(out: Path, result: dict) -> None:
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    normal, rss = result["normal"], result["rss"]
    lines = [f"# salmonn serve under load and abuse ({result['date']})", "",
             f"Machine: {result['machine']}. Model: `{result['config']}` (weights sha256 "
             f"{result.get('weights_sha256', 'not recorded')[:12]}). {result['clients']} clients x "
             f"{result['requests_per_client']} requests, --max-queue {result['max_queue']}, while the hostile set "
             "runs.", "",
             f"- normal requests: {normal['requests']}: {normal['2xx']} 2xx, {normal['4xx']} 4xx, {normal['5xx']} 5xx, "
             f"{normal['no answer']} unanswered; {normal['503 retries']} 503 retries (Retry-After honoured); "
             f"latency p50 {normal['p50_s']} s, p95 {normal['p95_s']} s",
             f"- server RSS: {rss['before']['rss_mib']} MiB before, {rss['after']['rss_mib']} MiB after, "
             f"peak {rss['after']['peak_rss_mib']} MiB",
             "- bursts (the first with the hostile set): " + "; ".join(
                 f"{b['burst']}: {b['normal']['2xx']}/{b['normal']['requests']} 2xx, {b['normal']['5xx']} 5xx, "
                 f"p95 {b['normal']['p95_s']} s, RSS after {b['rss']['rss_mib']} MiB (peak {b['rss']['peak_rss_mib']})"
                 for b in result["bursts"]),
             f"- the server's counters: {result['health']['stats']['requests']} requests, "
             f"{result['health']['stats']['batches']} generate() calls, {result['health']['stats']['rejected']} "
             f"refused as busy (503), {result['health']['stats']['dropped']} dropped unstarted (client gone)",
             f"- SIGTERM with 24 requests in flight: exit in {result['shutdown']['exit_seconds']} s "
             f"(statuses {result['shutdown']['statuses']})", "",
             "Hostile cases, one after another during the load (s: until the answer, 503 retries included):", "",
             "| hostile case | expected | got | s | note |", "|---|---|---|---|---|"]
    lines += [f"| {h['case']} | {h['expected']} | {h['status']}{'' if h['ok'] else ' **!**'} | {h['seconds']} | "
              f"{h['note']} |" for h in result["hostile"]]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(FIXTURE / "config.yaml"))
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--bursts", type=int, default=5, help="bursts of the normal load (the first with the "
                        "hostile set); RSS is read after each")
    parser.add_argument("--max-queue", type=int, default=16)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "serve_load"))
    parser.add_argument("--serve-arg", action="append", default=[], help="one more `salmonn serve` argument "
                        "(repeatable), e.g. --serve-arg=--eager-step")
    args = parser.parse_args()
    out = Path(args.out)
    process, port = start_server(args.config, args.max_queue, Path(tempfile.gettempdir()) / "serve_load.log",
                                 args.serve_arg)
    client = Client(port)
    clips = {name: base64.b64encode((AUDIO / name).read_bytes()).decode() for name in CLIPS}
    client.chat(chat_body(clips["duck.wav"], "Describe the audio."))  # warm-up
    before = rss_mib(process.pid)
    bursts, hostile = [], []
    for burst in range(1, args.bursts + 1):
        normal, found = run_burst(port, clips, args.clients, args.requests, hostile=burst == 1)
        hostile += found
        bursts.append({"burst": burst, "normal": normal, "rss": rss_mib(process.pid)})
        print(f"burst {burst}: {normal}, RSS {bursts[-1]['rss']}", file=sys.stderr, flush=True)
    health = json.loads(client.call("GET", "/health")[1])
    from report import config_weights
    result = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": machine(), "config": os.path.relpath(args.config, ROOT), **config_weights(args.config),
              "serve_args": args.serve_arg,
              "clients": args.clients,
              "requests_per_client": args.requests, "max_queue": args.max_queue, "normal": bursts[0]["normal"],
              "rss": {"before": before, "after": bursts[0]["rss"]}, "bursts": bursts, "hostile": hostile,
              "health": health,
              "shutdown": shutdown_under_load(process, client, clips)}
    write_report(out, result)
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
