"""`salmonn bench`: times one generate call stage by stage (tiny fixture, a few tokens)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from salmonn.bench import STAGES, run_bench

from .conftest import AUDIO, FIXTURE

SALMONN = str(Path(sys.executable).parent / "salmonn")


def test_bench_json_reports_median_and_stages():
    result = subprocess.run([SALMONN, "bench", "--config", str(FIXTURE / "config.yaml"), "--audio",
                             str(AUDIO / "gunshots.wav"), "--prompt", "Please describe the audio.", "--new-tokens", "4",
                             "--reps", "2", "--warmup", "0", "--json"],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["median_s"] > 0 and set(out["stages"]) == set(STAGES)
    assert all(v >= 0 for v in out["stages"].values()) and all(out["stages"][s] > 0 for s in ("whisper", "decode"))
    assert len(out["runs"]) == 2 and out["batch"] == 1 and len(out["token_ids"][0]) == 4
    assert sum(out["stages"].values()) <= out["median_s"] * 1.5
    assert out["ms_per_token"] > 0 and out["threads"] >= 1


def test_bench_batches_fast_mode_and_counts_every_token(tiny_model, monkeypatch):
    monkeypatch.setattr(tiny_model.config.model, "whisper_full_window", False)
    clips = [str(AUDIO / "excitement.wav"), str(AUDIO / "music.wav"), str(AUDIO / "mountain.wav")]
    result = run_bench(tiny_model, clips, "Describe.", new_tokens=5, reps=1, batch=4, warmup=0)
    assert result["batch"] == 4 and [len(ids) for ids in result["token_ids"]] == [5] * 4
    assert result["token_ids"][0] == result["token_ids"][3]  # the clips are cycled
    run = result["runs"][0]
    assert abs(sum(run[s + "_s"] for s in STAGES) - run["total_s"]) < 0.05 * run["total_s"] + 0.01
