"""End to end: `salmonn eval` on the reference-tiny fixture and real clips, three tasks, a 2-value LoRA sweep."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from salmonn.evaluation import compute_metrics, following_rate
from salmonn.evaluation import run as R
from salmonn.jsonl import read_jsonl, write_jsonl

from ..conftest import AUDIO, FIXTURE

DECODING = {"num_beams": 1, "max_new_tokens": 6}
RECORDS = [
    {"path": str(AUDIO / "excitement.wav"), "task": "asr", "text": "What an exciting day!"},
    {"path": str(AUDIO / "mountain.wav"), "task": "asr", "text": "How high is the mountain?"},
    {"path": str(AUDIO / "duck.wav"), "task": "audiocaption", "text": ["A duck quacks.", "Ducks quack by the water."]},
    {"path": str(AUDIO / "gunshots.wav"), "task": "audiocaption", "text": "Several gunshots are fired."},
    {"path": str(AUDIO / "mountain.wav"), "task": "sqqa", "transcript": "How high is the mountain?"},
    {"path": str(AUDIO / "excitement.wav"), "task": "sqqa", "transcript": "What an exciting day!"},
]


def rows(path: Path) -> list[dict]:
    return read_jsonl(path, strict=True)


@pytest.fixture(scope="module")
def suite(tmp_path_factory, tiny_model):
    """asr through the installed command (LoRA 4 and 2); audiocaption and sqqa in-process, same output folder."""
    base = tmp_path_factory.mktemp("eval")
    manifest = base / "test.jsonl"
    write_jsonl(manifest, RECORDS)
    out = base / "out"
    cli = subprocess.run([str(Path(sys.executable).parent / "salmonn"), "eval", "--config", str(FIXTURE / "config.yaml"),
                          "--manifest", str(manifest), "--task", "asr", "--output", str(out), "--lora-scale", "4,2",
                          "--batch-size", "2", *(f"{k}={v}" for k, v in DECODING.items())],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert cli.returncode == 0, cli.stderr[-3000:]
    R.evaluate(tiny_model, manifest, "audiocaption", out, batch_size=2, lora_scales="1x,0.5x", use_java=False,
               decoding=DECODING, progress=False)
    R.evaluate(tiny_model, manifest, "sqqa", out, batch_size=2, lora_scales="4,2", decoding=DECODING, progress=False)
    return {"out": out, "manifest": manifest, "stdout": cli.stdout, "stderr": cli.stderr,
            "summary": json.loads((out / "summary.json").read_text())}


def test_per_sample_files_hold_the_models_answers_at_each_scale(suite, tiny_model):
    out = suite["out"]
    assert sorted(p.name for p in out.glob("*.jsonl")) == [
        f"{t}.scaling-{s}.jsonl" for t in ("asr", "audiocaption", "sqqa") for s in ("2", "4")]
    clips = [RECORDS[0]["path"], RECORDS[1]["path"]]
    prompt = "Recognize the speech and give me the transcription."
    answers = {}
    try:
        for scaling, scale in ((4, 1.0), (2, 0.5)):
            tiny_model.set_lora_scale(scale)
            answers[scaling] = [a.text for a in tiny_model.generate(clips, prompt, **DECODING)]
    finally:
        tiny_model.set_lora_scale(1.0)
    assert answers[4] != answers[2]  # the sweep really changes the model's answers
    for scaling in (4, 2):
        got = rows(out / f"asr.scaling-{scaling}.jsonl")
        assert [r["index"] for r in got] == [0, 1]
        assert [r["audio"] for r in got] == clips and {r["prompt"] for r in got} == {prompt}
        assert [r["reference"] for r in got] == [RECORDS[0]["text"], RECORDS[1]["text"]]
        assert [r["hypothesis"] for r in got] == answers[scaling]
        assert {r["lora_scaling"] for r in got} == {float(scaling)}
        lib = compute_metrics("asr", answers[scaling], [RECORDS[0]["text"], RECORDS[1]["text"]])
        assert [r["score"] for r in got] == lib["per_sample"]
        run = next(r for r in suite["summary"]["asr"]["runs"] if r["lora_scaling"] == scaling)
        assert run["metrics"] == lib["metrics"] and run["lora_scale"] == scaling / 4
    caption = rows(out / "audiocaption.scaling-4.jsonl")
    assert caption[0]["reference"] == RECORDS[2]["text"] and caption[0]["prompt"] == "Please describe the audio."
    assert [r["index"] for r in caption] == [2, 3]


def test_summary_lists_metrics_and_what_was_not_computed(suite):
    summary = suite["summary"]
    assert set(summary) == {"asr", "audiocaption", "sqqa"}
    for task, s in summary.items():
        assert [r["lora_scaling"] for r in s["runs"]] == [4.0, 2.0], task
        assert s["n_samples"] == 2 and s["lora"]["trained_scaling"] == 4.0
        assert s["decoding"]["num_beams"] == 1 and s["decoding"]["max_new_tokens"] == 6
    caption = summary["audiocaption"]["runs"][0]
    assert set(caption["metrics"]) == {"cider_d"}
    assert set(caption["not_computed"]) == {"meteor", "spice", "spider"}
    assert "use_java=False" in caption["not_computed"]["meteor"]
    hyps = [r["hypothesis"] for r in rows(suite["out"] / "audiocaption.scaling-4.jsonl")]
    assert caption["metrics"]["cider_d"] == pytest.approx(
        compute_metrics("audiocaption", hyps, [RECORDS[2]["text"], RECORDS[3]["text"]], use_java=False)
        ["metrics"]["cider_d"])
    for run in summary["sqqa"]["runs"]:
        got = rows(suite["out"] / run["samples_file"])
        expected = following_rate("sqqa", [r["hypothesis"] for r in got], RECORDS[4:])
        assert run["metrics"]["following_rate"] == pytest.approx(expected)
        assert run["not_computed"]["accuracy"].startswith("not computed: judging free-form answers")
    assert {"metric": "wer", "value": 2.1, "data": "LibriSpeech test-clean"} in summary["asr"]["published"]


def test_markdown_report(suite):
    md = (suite["out"] / "report.md").read_text()
    lines = md.splitlines()
    assert "| task | metric | unit | n | LoRA 4 | LoRA 2 | SALMONN-13B (paper) |" in lines
    wer = {r["lora_scaling"]: r["metrics"]["wer"] for r in suite["summary"]["asr"]["runs"]}
    assert (f"| asr | wer | % | 2 | {wer[4.0]:.2f} | {wer[2.0]:.2f} | 2.1 (LibriSpeech test-clean); "
            "4.9 (LibriSpeech test-other); 10 (GigaSpeech) |") in lines
    assert "| audiocaption | spider | x100 | 2 | not computed | not computed | 40.3 (AudioCaps) |" in lines
    assert any(line.startswith("| sqqa | following_rate | fraction | 2 |") and line.endswith("| 0.98 (SQQA) |")
               for line in lines)
    not_computed = md.split("## Not computed")[1]
    for item in ("**audiocaption** `meteor` (LoRA 4, 2): not computed: Java metrics switched off",
                 "**audiocaption** `spice` (LoRA 4, 2): not computed:",
                 "**audiocaption** `spider` (LoRA 4, 2): not computed: SPIDEr = mean(CIDEr-D, SPICE)",
                 "**sqqa** `accuracy` (LoRA 4, 2): not computed:"):
        assert item in not_computed
    # the command prints its task's table and the files it wrote; the progress bar goes to stderr
    assert f"| asr | wer | % | 2 | {wer[4.0]:.2f} |" in suite["stdout"] and "lora_sweep.png" in suite["stdout"]
    assert "asr LoRA 2" in suite["stderr"]


def test_sweep_figure(suite):
    from matplotlib.image import imread

    height, width = imread(suite["out"] / "lora_sweep.png").shape[:2]
    assert (width, height) == (3 * 460, 360)  # one panel per task


def test_rerun_resumes_without_generating(suite, tiny_model, monkeypatch):
    before = {p.name: p.read_text() for p in suite["out"].glob("sqqa.*.jsonl")}
    calls = []
    monkeypatch.setattr(tiny_model, "generate", lambda *a, **k: calls.append(a) or [])
    summary = R.evaluate(tiny_model, suite["manifest"], "sqqa", suite["out"], lora_scales="4,2", decoding=DECODING,
                         progress=False)
    assert calls == []
    assert summary["runs"] == suite["summary"]["sqqa"]["runs"]
    assert {p.name: p.read_text() for p in suite["out"].glob("sqqa.*.jsonl")} == before
