"""`salmonn bench`: times one generate call stage by stage (tiny fixture, a few tokens); a known delay put into
one stage must show up in that stage and nowhere else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from salmonn.bench import STAGES, PeakMemory, run_bench

from .conftest import AUDIO, FIXTURE

SALMONN = str(Path(sys.executable).parent / "salmonn")
DELAY_S = 1.0  # seconds of a virtual clock that only the injected delays advance: attribution is exact


def test_bench_json_reports_median_stages_first_token_and_memory():
    result = subprocess.run([SALMONN, "bench", "--config", str(FIXTURE / "config.yaml"), "--audio",
                             str(AUDIO / "gunshots.wav"), "--prompt", "Please describe the audio.", "--new-tokens", "4",
                             "--reps", "2", "--warmup", "0", "--json"],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["median_s"] > 0 and set(out["stages"]) == set(STAGES)
    assert all(v >= 0 for v in out["stages"].values()) and all(out["stages"][s] > 0 for s in ("whisper", "decode"))
    assert len(out["runs"]) == 2 and out["batch"] == 1 and len(out["token_ids"][0]) == 4
    assert 0 < out["first_token_s"] < out["median_s"] and out["peak_mb"] > 0 and out["cpu_s"] > 0


class VirtualClock:
    """A clock that only the injected delays advance, so a stage's time is exactly the delays put into it."""

    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, *_args) -> None:
        self.t += DELAY_S


def _delay(model, stage: str, sleep):
    """Put DELAY_S into one stage through a hook on a module only that stage runs; returns the hook handles."""
    if stage == "features":
        clip_segments = model.clip_segments  # audio decoding
        model.clip_segments = lambda *a, **k: (sleep(), clip_segments(*a, **k))[1]
        return [type("Undo", (), {"remove": lambda self: delattr(model, "clip_segments")})()]
    if stage in ("prefill", "decode"):
        def on_llm_call(_module, _args, kwargs) -> None:
            embeds = kwargs.get("inputs_embeds")
            prompt = embeds is not None and embeds.shape[1] > 1  # decoding steps feed one token
            if prompt == (stage == "prefill"):
                sleep()
        return [model.causal_lm.register_forward_pre_hook(on_llm_call, with_kwargs=True)]
    target = {"whisper": model.speech_encoder.layers[0], "beats": model.beats.encoder.layers[0],
              "qformer": model.speech_Qformer}[stage]
    return [target.register_forward_pre_hook(sleep)]


@pytest.mark.parametrize("stage", STAGES)
def test_a_delay_put_into_one_stage_shows_up_in_that_stage(tiny_model, stage):
    clock = VirtualClock()
    handles = _delay(tiny_model, stage, clock.sleep)
    try:
        result = run_bench(tiny_model, [str(AUDIO / "gunshots.wav")], "Please describe the audio.", new_tokens=3,
                           reps=1, warmup=0, now=clock)
    finally:
        for handle in handles:
            handle.remove()
    expected = {s: 0.0 for s in STAGES}
    expected[stage] = DELAY_S * (2 if stage == "decode" else 1)  # 3 tokens: prefill + 2 decoding steps
    assert result["stages"] == expected
    first_token = sum(DELAY_S for s in ("features", "whisper", "beats", "qformer", "prefill") if s == stage)
    assert result["first_token_s"] == first_token


def test_peak_memory_sees_a_temporary_allocation():
    import mmap
    with PeakMemory(interval=0.001) as memory:
        # 64 MiB of fresh anonymous pages, touched (a malloc'd array may reuse pages the heap already holds)
        block = mmap.mmap(-1, 64 * 2**20)
        block.write(b"\1" * len(block))
        time.sleep(0.05)
        block.close()
    assert memory.growth_mb >= 50
