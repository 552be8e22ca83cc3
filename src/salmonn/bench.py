"""`salmonn bench`: time one answer end to end, stage by stage, as the reference's timing does.

What is timed is the public path, `model.generate(clips, prompt, num_beams=1, min_new_tokens=N,
max_new_tokens=N)` (audio decoding, features, both encoders, the Q-Former connector, the prompt, exactly N
greedy tokens), never model loading. Stages are read off forward hooks on the modules the path runs, so the
numbers describe that path and no re-implementation of it:

    features  audio decoding + Whisper log-mel, and BEATs' Kaldi fbank
    whisper   the Whisper encoder (conv front end to final layer norm)
    beats     BEATs patch embedding + transformer
    qformer   layer norms, windows, Q-Former, projection into the LLM
    prefill   prompt embedding + the LLM's first forward (first token)
    decode    the remaining N - 1 tokens (ms/token = decode / (N - 1))

Beside the stages: time to first token (start of the call to the end of prefill), process CPU seconds (on a
shared machine, CPU time over wall time shows how much of the machine the call got) and peak memory during the
call (resident set sampled every 2 ms, or the CUDA allocator's peak).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable

from .errors import SalmonnError
from .hardware import physical_cores

if TYPE_CHECKING:
    from .model import SALMONN

STAGES = ("features", "whisper", "beats", "qformer", "prefill", "decode")


def resident_bytes() -> int:
    """This process's resident set size (Linux /proc; 0 where unknown)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class PeakMemory:
    """Peak memory while the block runs: resident set sampled every `interval` s by a thread (CPU), or the CUDA
    allocator's peak. `peak_mb` is the absolute peak, `growth_mb` the peak over the memory held at the start."""

    def __init__(self, device=None, interval: float = 0.002):
        self.cuda = device is not None and getattr(device, "type", "") == "cuda"
        self.interval = interval
        self.peak_mb = self.growth_mb = 0.0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, resident_bytes())

    def __enter__(self) -> "PeakMemory":
        import torch
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated()
        else:
            self._start = self._peak = resident_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        import torch
        if self.cuda:
            self._peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, resident_bytes())
        self.peak_mb, self.growth_mb = self._peak / 2**20, (self._peak - self._start) / 2**20


class StageClock:
    """Attributes wall time to stages at events fired by forward hooks (time since the previous event goes to
    the stage that just ended). `now` is the clock read (tests pass a virtual one)."""

    def __init__(self, model: "SALMONN", now: Callable[[], float] = time.perf_counter):
        self.model, self.now = model, now
        self.handles: list = []
        self.times: dict[str, float] = {}
        self.last = 0.0
        self.llm_calls = 0

    def mark(self, stage: str) -> None:
        now = self.now()
        self.times[stage] = self.times.get(stage, 0.0) + now - self.last
        self.last = now

    def _hook(self, stage: str):
        import torch
        # opaque to torch.compile (model.compile): run eagerly between graphs, never traced or guarded on
        return torch.compiler.disable(lambda *args: self.mark(stage))

    def _llm_post(self, *args) -> None:
        self.llm_calls += 1
        self.mark("prefill" if self.llm_calls == 1 else "decode")
        if self.llm_calls == 1:
            self.first_token_s = self.last - self.started

    def __enter__(self) -> "StageClock":
        import torch
        m = self.model
        whisper = m.speech_encoder
        self.handles += [whisper.conv1.register_forward_pre_hook(self._hook("features")),
                         whisper.layer_norm.register_forward_hook(self._hook("whisper")),
                         m.speech_llama_proj.register_forward_hook(self._hook("qformer")),
                         m.causal_lm.register_forward_hook(torch.compiler.disable(self._llm_post))]
        if m.beats is not None:
            self.handles += [m.beats.patch_embedding.register_forward_pre_hook(self._hook("features")),
                             m.beats.encoder.register_forward_hook(self._hook("beats"))]
        return self

    def start(self) -> None:
        self.times, self.llm_calls, self.first_token_s = {s: 0.0 for s in STAGES}, 0, 0.0
        self.last = self.started = self.now()

    def stop(self) -> dict[str, float]:
        self.mark("decode")
        return dict(self.times)

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def run_bench(model: "SALMONN", audio: list, prompt: str, new_tokens: int = 32, reps: int = 3, batch: int = 1,
              warmup: int = 1, now: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Time `reps` answers (after `warmup` untimed ones) of `batch` clips (the given clips, cycled) and return
    {"median_s", "runs", "stages" (medians), "ms_per_token", "clips_per_s", "first_token_s", "cpu_s",
    "peak_mb", "peak_growth_mb", "token_ids"}."""
    import torch
    if new_tokens < 2:
        raise SalmonnError("--new-tokens must be at least 2 (one prefill token and one decoded token)")
    clips = [audio[i % len(audio)] for i in range(batch)]
    options = dict(num_beams=1, do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens, stop=[])
    runs, ids = [], None
    with StageClock(model, now) as clock, torch.inference_mode():
        for rep in range(warmup + reps):
            with PeakMemory(model.device) as memory:
                clock.start()
                cpu, start = time.process_time(), time.perf_counter()
                answers = model.generate(clips, prompt, **options)
                total, cpu = time.perf_counter() - start, time.process_time() - cpu
                stages = clock.stop()
            if clock.llm_calls != new_tokens:
                raise SalmonnError(f"the LLM ran {clock.llm_calls} forwards for {new_tokens} new tokens")
            if rep >= warmup:
                runs.append({"total_s": total, **{k + "_s": v for k, v in stages.items()}, "first_token_s":
                             clock.first_token_s, "cpu_s": cpu, "peak_mb": memory.peak_mb,
                             "peak_growth_mb": memory.growth_mb})
            ids = [a.token_ids for a in answers]
    return summarize(runs, batch, new_tokens) | {"token_ids": ids}


def summarize(runs: list[dict], batch: int, new_tokens: int) -> dict[str, Any]:
    """Medians over timed runs (peak memory: the largest)."""
    median = statistics.median(r["total_s"] for r in runs)
    stages = {s: statistics.median(r[s + "_s"] for r in runs) for s in STAGES}
    return {"median_s": median, "stages": stages, "runs": runs, "batch": batch, "new_tokens": new_tokens,
            "ms_per_token": 1000 * stages["decode"] / (new_tokens - 1), "clips_per_s": batch / median,
            "first_token_s": statistics.median(r["first_token_s"] for r in runs),
            "cpu_s": statistics.median(r["cpu_s"] for r in runs), "peak_mb": max(r["peak_mb"] for r in runs),
            "peak_growth_mb": max(r["peak_growth_mb"] for r in runs)}


def describe(result: dict) -> str:
    s = result["stages"]
    parts = "  ".join(f"{k} {v:.3f}" for k, v in s.items())
    return (f"{result['batch']} clip(s), {result['new_tokens']} tokens: median {result['median_s']:.3f} s "
            f"({result['clips_per_s']:.2f} clips/s; {result['ms_per_token']:.1f} ms/token; first token "
            f"{result['first_token_s']:.3f} s; CPU {result['cpu_s']:.2f} s; peak memory {result['peak_mb']:.0f} MiB, "
            f"+{result['peak_growth_mb']:.0f} MiB during the call)\n  stages (s): {parts}")


@contextmanager
def torch_threads(threads: int | None):
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(threads or physical_cores())
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
