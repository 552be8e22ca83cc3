"""`salmonn eval` machinery with a stand-in model: prompts, LoRA scales, files, resume, reports, torchrun sharding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from salmonn.errors import AudioError, ConfigError, PromptError, SalmonnError
from salmonn.evaluation import compute_metrics
from salmonn.evaluation import run as R
from salmonn.evaluation.report import PUBLISHED, markdown_report, plot_lora_sweep
from salmonn.jsonl import read_jsonl, write_jsonl

from ..conftest import AUDIO, ROOT
from .fakes import FakeModel

PNG = b"\x89PNG\r\n\x1a\n"


def write_manifest(path: Path, records: list[dict]) -> Path:
    write_jsonl(path, records)
    return path


def written(path: Path) -> list[dict]:
    """The rows a run wrote (every line whole)."""
    return read_jsonl(path, strict=True)


QA_RECORDS = [{"path": f"/clips/q{i}.wav", "task": "QA", "Q": f"question {i}?", "text": f"answer {i}"}
              for i in range(5)]


# ------------------------------------------------------------------ LoRA scales, prompts, records


def test_lora_scales_absolute_and_relative():
    scales = R.parse_lora_scales("4,3,2,1", trained_scaling=4.0)
    assert [s.scaling for s in scales] == [4.0, 3.0, 2.0, 1.0]
    assert [s.scale for s in scales] == [1.0, 0.75, 0.5, 0.25]
    mixed = R.parse_lora_scales("1x, 0.5X, 2.0", trained_scaling=4.0)  # 2.0 absolute == 0.5x: kept once
    assert [(s.scale, s.scaling) for s in mixed] == [(1.0, 4.0), (0.5, 2.0)]
    assert [s.label for s in R.parse_lora_scales("1.5,0x", 4.0)] == ["1.5", "0"]
    default = R.parse_lora_scales(None, trained_scaling=2.0, current_scale=0.5)
    assert [(s.scale, s.scaling) for s in default] == [(0.5, 1.0)]
    for bad in ("four", "-1", "1y"):
        with pytest.raises(ConfigError, match="--lora-scale"):
            R.parse_lora_scales(bad, 4.0)


def test_default_prompts_and_overrides(tmp_path: Path):
    assert R.instruction_for("asr") == "Recognize the speech and give me the transcription."
    assert R.instruction_for("audiocaption") == "Please describe the audio."
    assert R.instruction_for("story").startswith("Based on the audio, write a story in detail.")
    assert R.instruction_for("QA") == "{}"
    assert R.instruction_for("asr", prompt="Transcribe.") == "Transcribe."
    from salmonn.evaluation.metrics import TASK_METRICS
    assert set(TASK_METRICS) <= set(R.DEFAULT_TEST_PROMPTS)  # every scorable task has a prompt
    # the reference's test_prompt.json layout: full prompts with the audio prefix, its own task names
    ref = tmp_path / "test_prompt.json"
    ref.write_text(json.dumps({"asr": "<Speech><SpeechHere></Speech> Write down the speech.",
                               "speech_query": "<Speech><SpeechHere></Speech> Answer the question.",
                               "audiocaption": ["Describe it.", "unused"]}))
    assert R.instruction_for("asr", prompt_file=ref) == "Write down the speech."
    assert R.instruction_for("sqqa", prompt_file=ref) == "Answer the question."
    assert R.instruction_for("audiocaption", prompt_file=ref) == "Describe it."
    assert R.instruction_for("phone_recognition", prompt_file=ref) == R.DEFAULT_TEST_PROMPTS["phone_recognition"]
    assert R.instruction_for("asr", prompt="Mine.", prompt_file=ref) == "Mine."
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(ConfigError, match="bad.json"):
        R.instruction_for("asr", prompt_file=tmp_path / "bad.json")
    with pytest.raises(PromptError, match="no test prompt"):
        R.instruction_for("unknown_task")


def test_fill_prompt_takes_q():
    assert R.fill_prompt("According to the speech, what is the {}?", {"Q": " time "}, "m:1") == \
        "According to the speech, what is the time?"
    assert R.fill_prompt("Describe.", {}, "m:1") == "Describe."
    with pytest.raises(PromptError, match="m.jsonl: record #3"):
        R.fill_prompt("{}", {"text": "x"}, "m.jsonl: record #3")


def test_select_records_filters_by_task(tmp_path: Path):
    manifest = write_manifest(tmp_path / "m.jsonl", [
        {"path": "a.wav", "task": "asr", "text": "a"}, {"path": "b.wav", "task": "audiocaption", "text": "b"},
        {"audio": "c.wav", "text": "c"}])
    picked = R.select_records(manifest, "asr")
    assert [(i, Path(r["path"]).name) for i, r in picked] == [(0, "a.wav"), (2, "c.wav")]  # no task = any task
    assert picked[0][1]["path"] == str(tmp_path / "a.wav")
    with pytest.raises(SalmonnError, match=r"no records for task 'QA' \(it has tasks: asr, audiocaption\)"):
        R.select_records(write_manifest(tmp_path / "n.jsonl", [{"path": "a.wav", "task": "asr"},
                                                                {"path": "b.wav", "task": "audiocaption"}]), "QA")


def test_expand_wav_joins_clips_with_silence():
    from salmonn.audio import load_audio

    a, b = AUDIO / "excitement.wav", AUDIO / "mountain.wav"
    assert R.audio_input({"path": str(a)}) == str(a)
    wav, rate = R.audio_input({"path": str(a), "expand_wav": [str(b)]})
    first, second = load_audio(a), load_audio(b)
    assert rate == 16000 and len(wav) == len(first) + 1600 + len(second)
    assert np.array_equal(wav[len(first):len(first) + 1600], np.zeros(1600, dtype=np.float32))
    assert np.array_equal(wav[-len(second):], second)


# ------------------------------------------------------------------ evaluate() with a stand-in model


def test_evaluate_files_and_lora_sweep(tmp_path: Path):
    manifest = write_manifest(tmp_path / "m.jsonl", QA_RECORDS + [{"path": "/clips/x.wav", "task": "asr"}])
    model, out = FakeModel(), tmp_path / "out"
    summary = R.evaluate(model, manifest, "QA", out, batch_size=2, lora_scales="4,0.5x", progress=False)
    assert model.lora_scale == 1.0  # restored after the sweep
    rows4, rows2 = written(out / "QA.scaling-4.jsonl"), written(out / "QA.scaling-2.jsonl")
    assert [r["index"] for r in rows4] == [0, 1, 2, 3, 4]
    assert rows4[1]["prompt"] == "question 1?" and rows4[1]["audio"] == "/clips/q1.wav"
    assert rows4[1]["hypothesis"] == "q1 heard: question 1? at 1" and rows2[1]["hypothesis"].endswith("at 0.5")
    assert rows4[1]["reference"] == "answer 1" and rows4[1]["lora_scaling"] == 4.0
    assert rows4[1]["score"] == {"follows": True}
    assert set(rows4[0]) == {"index", "task", "audio", "prompt", "hypothesis", "reference", "score",
                             "lora_scaling", "run_key"}
    assert [r["lora_scaling"] for r in summary["runs"]] == [4.0, 2.0]
    assert [r["lora_scale"] for r in summary["runs"]] == [1.0, 0.5]
    assert summary["n_samples"] == 5 and summary["prompt"] == "{}"
    assert summary["runs"][0]["metrics"] == {"following_rate": 1.0}
    assert summary["runs"][0]["not_computed"]["accuracy"].startswith("not computed:")
    assert summary["lora"] == {"alpha": 32, "rank": 8, "trained_scaling": 4.0}
    assert json.loads((out / "QA.summary.json").read_text()) == summary
    assert set(json.loads((out / "summary.json").read_text())) == {"QA"}
    report = (out / "report.md").read_text()
    assert "| QA | following_rate | fraction | 5 | 1.000 | 1.000 |  |" in report
    assert "- **QA** `accuracy` (LoRA 4, 2): not computed: judging free-form answers" in report
    assert (out / "lora_sweep.png").read_bytes()[:8] == PNG
    assert not list(out.glob("*.part-*"))  # parts are merged away


def test_following_rate_reads_sample_fields(tmp_path: Path):
    manifest = write_manifest(tmp_path / "m.jsonl", [
        {"path": "/c/a.wav", "transcript": "where is the station"},
        {"path": "/c/b.wav", "transcript": "what time is it"}])
    answers = {"a": "Where is the station?", "b": "It is noon."}  # the first only transcribes the question
    summary = R.evaluate(FakeModel(answer=lambda name, prompt: answers[name]), manifest, "sqqa",
                         tmp_path / "out", lora_scales="4", progress=False)
    assert summary["prompt"] == "Please answer the question in detail."
    assert summary["runs"][0]["metrics"]["following_rate"] == 0.5
    rows = written(tmp_path / "out" / "sqqa.scaling-4.jsonl")
    assert [r["score"]["follows"] for r in rows] == [False, True]


def test_scores_equal_compute_metrics_and_classification_png(tmp_path: Path):
    records = [{"path": f"/c/{n}.wav", "text": t} for n, t in [("male", "male"), ("female", "male"), ("man", "female")]]
    manifest = write_manifest(tmp_path / "m.jsonl", records)
    model = FakeModel(answer=lambda name, prompt: f"The speaker is a {name}.")
    summary = R.evaluate(model, manifest, "gender_recognition", tmp_path / "out", progress=False)
    lib = compute_metrics("gender_recognition", [f"The speaker is a {n}." for n in ("male", "female", "man")],
                          ["male", "male", "female"])
    run = summary["runs"][0]
    assert run["metrics"] == lib["metrics"] == {"accuracy": pytest.approx(1 / 3)}
    assert [r["score"] for r in written(tmp_path / "out" / run["samples_file"])] == lib["per_sample"]
    assert (tmp_path / "out" / run["confusion_png"]).read_bytes()[:8] == PNG
    assert summary["published"] == []


def test_resume_skips_answered_samples(tmp_path: Path):
    manifest = write_manifest(tmp_path / "m.jsonl", QA_RECORDS)
    out = tmp_path / "out"
    first = R.evaluate(FakeModel(), manifest, "QA", out, lora_scales="4", progress=False)
    path = out / "QA.scaling-4.jsonl"
    full = path.read_text()
    again = FakeModel()
    assert R.evaluate(again, manifest, "QA", out, lora_scales="4", progress=False)["runs"] == first["runs"]
    assert again.generated == [] and path.read_text() == full
    # an interrupted run: two answered rows in the merged file, one in a part file, a half-written line
    lines = full.splitlines(keepends=True)
    path.write_text(lines[0] + lines[3])
    (out / "QA.scaling-4.jsonl.part-1").write_text(lines[2] + lines[4][:30])
    resumed = FakeModel()
    R.evaluate(resumed, manifest, "QA", out, lora_scales="4", progress=False)
    assert resumed.generated == ["q1", "q4"] and path.read_text() == full
    # another scale is another file; a changed prompt or decoding option is a different run
    other = FakeModel()
    R.evaluate(other, manifest, "QA", out, lora_scales="2", progress=False)
    assert len(other.generated) == 5
    summary = json.loads((out / "QA.summary.json").read_text())
    assert [r["lora_scaling"] for r in summary["runs"]] == [4.0, 2.0]  # earlier scaling kept in the summary
    changed = FakeModel()
    R.evaluate(changed, manifest, "QA", out, lora_scales="4", prompt="Answer: {}", progress=False)
    assert len(changed.generated) == 5
    assert written(path)[0]["prompt"] == "Answer: question 0?"
    decoding = FakeModel()
    R.evaluate(decoding, manifest, "QA", out, lora_scales="4", prompt="Answer: {}", decoding={"num_beams": 2},
               progress=False)
    assert len(decoding.generated) == 5
    restarted = FakeModel()
    R.evaluate(restarted, manifest, "QA", out, lora_scales="4", prompt="Answer: {}", decoding={"num_beams": 2},
               restart=True, progress=False)
    assert len(restarted.generated) == 5


def test_run_key_depends_on_effective_decoding_and_files():
    a, b = FakeModel(), FakeModel()
    b.config.generate.num_beams = 1
    assert R.run_key(a, {"num_beams": 1}) == R.run_key(b, {})  # config value or call argument: same run
    assert R.run_key(a, {}) != R.run_key(b, {})
    b.config.model.ckpt = "/other/salmonn.pth"
    assert R.run_key(a, {"num_beams": 1}) != R.run_key(b, {})


def test_new_weights_written_over_old_ones_are_a_new_run(tmp_path: Path):
    model = FakeModel()
    model.config.model.ckpt = str(tmp_path / "trainable.safetensors")
    Path(model.config.model.ckpt).write_bytes(b"old weights")
    before = R.run_key(model, {})
    assert R.run_key(model, {}) == before  # unchanged files: the same run, answers resume
    Path(model.config.model.ckpt).write_bytes(b"new weights, longer")
    assert R.run_key(model, {}) != before


def test_missing_reference_fails_before_generating(tmp_path: Path):
    manifest = write_manifest(tmp_path / "m.jsonl", [{"path": "/c/a.wav", "text": "a"}, {"path": "/c/b.wav"}])
    model = FakeModel()
    with pytest.raises(SalmonnError, match="record #2 has no reference 'text'"):
        R.evaluate(model, manifest, "asr", tmp_path / "out", progress=False)
    with pytest.raises(PromptError, match="record #1"):
        R.evaluate(model, manifest, "QA", tmp_path / "out", progress=False)
    assert model.generated == []


def test_test_prompt_path_from_config(tmp_path: Path):
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"asr": "<Speech><SpeechHere></Speech> Transcribe exactly."}))
    model = FakeModel()
    model.config.model.test_prompt_path = str(prompts)
    manifest = write_manifest(tmp_path / "m.jsonl", [{"path": "/c/a.wav", "text": "a"}])
    summary = R.evaluate(model, manifest, "asr", tmp_path / "out", progress=False)
    assert summary["prompt"] == "Transcribe exactly."
    assert written(tmp_path / "out" / "asr.scaling-4.jsonl")[0]["prompt"] == "Transcribe exactly."


# ------------------------------------------------------------------ reports


def _summary(task: str, runs: list[tuple[float, dict, dict]], n: int = 3) -> dict:
    return {"task": task, "n_samples": n, "lora": {"alpha": 32, "rank": 8, "trained_scaling": 4.0},
            "runs": [{"lora_scaling": s, "lora_scale": s / 4, "metrics": m, "not_computed": nc} for s, m, nc in runs]}


def test_markdown_report_table_published_numbers_and_not_computed():
    summaries = {
        "audiocaption": _summary("audiocaption", [(4.0, {"cider_d": 41.234, "meteor": 20.5},
                                                   {"spice": "not computed: no CoreNLP", "spider": "SPICE missing"})]),
        "asr": _summary("asr", [(4.0, {"wer": 3.14159}, {}), (2.0, {"wer": 7.5}, {})], n=10),
    }
    md = markdown_report(summaries)
    lines = md.splitlines()
    assert "| task | metric | unit | n | LoRA 4 | LoRA 2 | SALMONN-13B (paper) |" in lines
    # tasks in registry order (asr first); the asr row has both scalings and all three published numbers
    rows = [line for line in lines if line.startswith("| asr") or line.startswith("| audiocaption")]
    assert rows[0] == ("| asr | wer | % | 10 | 3.14 | 7.50 | 2.1 (LibriSpeech test-clean); "
                       "4.9 (LibriSpeech test-other); 10 (GigaSpeech) |")
    assert "| audiocaption | meteor | x100 | 3 | 20.50 |  | 24 (AudioCaps) |" in lines
    assert "| audiocaption | spider | x100 | 3 | not computed |  | 40.3 (AudioCaps) |" in lines
    assert "- **audiocaption** `spice` (LoRA 4): not computed: no CoreNLP" in lines
    assert "- **audiocaption** `spider` (LoRA 4): not computed: SPICE missing" in lines
    assert markdown_report({"asr": summaries["asr"]}).count("(every metric was computed)") == 1
    assert {m for m, _, _ in PUBLISHED["sqqa"]} == {"accuracy", "following_rate"}


def test_sweep_figure_one_panel_per_swept_task(tmp_path: Path):
    from matplotlib.image import imread

    one = {"asr": _summary("asr", [(4.0, {"wer": 3.0}, {})])}
    assert plot_lora_sweep(one, tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
    two = {"asr": _summary("asr", [(4.0, {"wer": 3.0}, {}), (2.0, {"wer": 9.0}, {})]),
           "sqqa": _summary("sqqa", [(4.0, {"following_rate": 0.1}, {}), (2.0, {"following_rate": 0.9}, {})]),
           "emotion_recognition": _summary("emotion_recognition", [(4.0, {"accuracy": 0.5}, {})])}
    png = plot_lora_sweep(two, tmp_path / "sweep.png")
    height, width = imread(png).shape[:2]
    assert (width, height) == (2 * 460, 360)  # two panels (the single-scale task is left out), 100 dpi


# ------------------------------------------------------------------ torchrun sharding


SHARD_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from tests.evaluation.fakes import FakeModel
from salmonn.evaluation.run import Distributed, evaluate
with Distributed.from_env() as dist:
    evaluate(FakeModel(log={log!r}), {manifest!r}, "QA", {out!r}, batch_size=2, lora_scales="4,2", dist=dist,
             progress=False)
"""


def test_torchrun_shards_resumes_and_merges_like_one_process(tmp_path: Path):
    manifest = write_manifest(tmp_path / "m.jsonl", QA_RECORDS)
    single = tmp_path / "single"
    R.evaluate(FakeModel(), manifest, "QA", single, batch_size=2, lora_scales="4,2", progress=False)
    dist = tmp_path / "dist"
    dist.mkdir()
    # an earlier, interrupted 2-process run left answers for records 0 and 3 at scaling 4 in a part file
    lines = (single / "QA.scaling-4.jsonl").read_text().splitlines(keepends=True)
    (dist / "QA.scaling-4.jsonl.part-1").write_text(lines[0] + lines[3])
    log = tmp_path / "ranks.log"
    script = tmp_path / "shard.py"
    script.write_text(SHARD_SCRIPT.format(root=str(ROOT), log=str(log), manifest=str(manifest), out=str(dist)))
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(script)], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr[-3000:]
    answered = sorted(line.split() for line in log.read_text().splitlines())
    # scaling 4: pending 1, 2, 4 -> rank 0 takes 1 and 4, rank 1 takes 2; scaling 2: every 2nd of 0..4
    assert [a for a in answered if a[2] == "1"] == [["0", "q1", "1"], ["0", "q4", "1"], ["1", "q2", "1"]]
    assert [a for a in answered if a[2] == "0.5"] == [["0", "q0", "0.5"], ["0", "q2", "0.5"], ["0", "q4", "0.5"],
                                                      ["1", "q1", "0.5"], ["1", "q3", "0.5"]]
    for name in ("QA.scaling-4.jsonl", "QA.scaling-2.jsonl"):
        assert (dist / name).read_text() == (single / name).read_text()
    merged, alone = (json.loads((d / "QA.summary.json").read_text()) for d in (dist, single))
    assert merged["world_size"] == 2 and alone["world_size"] == 1
    assert merged["runs"] == alone["runs"]
    assert not list(dist.glob("*.part-*"))


def test_cli_rejects_bad_task_and_scale_before_loading(tmp_path: Path):
    manifest = write_manifest(tmp_path / "m.jsonl", [{"path": "/c/a.wav", "text": "a"}])
    salmonn = str(Path(sys.executable).parent / "salmonn")
    config = str(ROOT.parent / "shared" / "fixtures" / "reference-tiny" / "config.yaml")
    for args, message in ((["--task", "nonsense"], "task 'nonsense' has no metric"),
                          (["--task", "asr", "--lora-scale", "4,abc"], "'abc' is not a number"),
                          (["--task", "QA"], "has no 'Q' (a question spoken in the audio needs an instruction")):
        result = subprocess.run([salmonn, "eval", "--config", config, "--manifest", str(manifest),
                                 "--output", str(tmp_path / "out"), *args], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 1, result.stderr
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


class _FailsOnBadClips(FakeModel):
    """Refuses any clip whose name starts with 'bad', as SALMONN refuses an unreadable file."""

    def generate(self, audio, prompts, **decoding):
        for clip in audio:
            if Path(clip).stem.startswith("bad"):
                raise AudioError(f"{clip}: not an audio file; check the path")
        return super().generate(audio, prompts, **decoding)


def test_a_bad_clip_fails_alone_and_scores_as_wrong(tmp_path: Path):
    records = [{"path": f"/clips/{name}.wav", "task": "asr", "text": "hello"} for name in ("a", "bad1", "b")]
    manifest = write_manifest(tmp_path / "m.jsonl", records)
    model = _FailsOnBadClips(answer=lambda name, prompt: "hello")
    summary = R.evaluate(model, manifest, "asr", tmp_path / "out", batch_size=3, progress=False)
    rows = written(tmp_path / "out" / f"asr.scaling-{summary['runs'][0]['lora_scaling']:g}.jsonl")
    assert [r["hypothesis"] for r in rows] == ["hello", "", "hello"]
    assert "error" not in rows[0] and rows[1]["error"] == "/clips/bad1.wav: not an audio file; check the path"
    assert summary["runs"][0]["metrics"]["wer"] == pytest.approx(100 / 3)
    assert summary["runs"][0]["failed"] == {"count": 1, "first": "/clips/bad1.wav: not an audio file; check the path"}
    assert "1 of 3 clips failed" in (tmp_path / "out" / "report.md").read_text()


def test_rerun_after_the_references_changed_writes_the_new_references(tmp_path: Path):
    records = [{"path": f"/clips/{name}.wav", "task": "asr", "text": "hello there"} for name in ("a", "b")]
    manifest = write_manifest(tmp_path / "m.jsonl", records)
    model = FakeModel(answer=lambda name, prompt: "hello there")
    R.evaluate(model, manifest, "asr", tmp_path / "out", progress=False)
    records[1]["text"] = "goodbye"
    write_manifest(manifest, records)
    summary = R.evaluate(model, manifest, "asr", tmp_path / "out", progress=False)
    rows = written(tmp_path / "out" / summary["runs"][0]["samples_file"])
    assert [r["reference"] for r in rows] == ["hello there", "goodbye"]
    lib = compute_metrics("asr", [r["hypothesis"] for r in rows], [r["reference"] for r in rows])
    assert summary["runs"][0]["metrics"] == lib["metrics"] and [r["score"] for r in rows] == lib["per_sample"]


def test_scalings_scored_against_old_references_leave_the_summary(tmp_path: Path):
    records = [{"path": f"/clips/{name}.wav", "task": "asr", "text": "hello"} for name in ("a", "b")]
    manifest = write_manifest(tmp_path / "m.jsonl", records)
    model = FakeModel(answer=lambda name, prompt: "hello")
    R.evaluate(model, manifest, "asr", tmp_path / "out", lora_scales="4,2", progress=False)
    assert R.evaluate(model, manifest, "asr", tmp_path / "out", lora_scales="4", progress=False)["runs"][1][
        "lora_scaling"] == 2.0  # same references: the earlier scaling is kept
    records[1]["text"] = "goodbye"
    write_manifest(manifest, records)
    summary = R.evaluate(model, manifest, "asr", tmp_path / "out", lora_scales="4", progress=False)
    assert [r["lora_scaling"] for r in summary["runs"]] == [4.0]


FIXTURE_CONFIG = ROOT.parent / "shared" / "fixtures" / "reference-tiny" / "config.yaml"


def run_eval_cli(manifest: Path, out: Path, *args: str, python: list[str] | None = None):
    command = python or [str(Path(sys.executable).parent / "salmonn")]
    return subprocess.run([*command, "eval", "--config", str(FIXTURE_CONFIG), "--manifest", str(manifest),
                           "--output", str(out), *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_cli_without_the_eval_extra_says_what_to_install(tmp_path: Path):
    manifest = write_manifest(tmp_path / "m.jsonl", [{"path": "/c/a.wav", "text": "a"}])
    no_jiwer = ["-c", "import sys; sys.modules['jiwer'] = None; from salmonn.cli import main; sys.exit(main())"]
    result = run_eval_cli(manifest, tmp_path / "out", "--task", "asr", python=[sys.executable, *no_jiwer])
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [
        "salmonn eval: error: salmonn eval needs the [eval] extra (jiwer is not installed): "
        "pip install 'salmonn[eval]' (in a checkout: pip install -e '.[eval]')"]


def test_cli_counts_failed_clips_and_exits_1(tmp_path: Path):
    manifest = write_manifest(tmp_path / "m.jsonl", [{"path": str(AUDIO / "excitement.wav"), "text": "a"},
                                                      {"path": str(tmp_path / "typo.wav"), "text": "b"}])
    result = run_eval_cli(manifest, tmp_path / "out", "--task", "asr", "num_beams=1", "max_new_tokens=2")
    assert result.returncode == 1, result.stderr
    assert "| asr | wer | % | 2 |" in result.stdout  # the report is still written and printed
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("salmonn eval: error: 1 of 2 clips failed")
    assert "typo.wav" in last and "asr.scaling-4.jsonl" in last
    summary = json.loads((tmp_path / "out" / "asr.summary.json").read_text())
    assert summary["runs"][0]["failed"]["count"] == 1


def test_rerun_tries_failed_clips_again(tmp_path: Path):
    records = [{"path": f"/clips/{name}.wav", "task": "asr", "text": "hello"} for name in ("a", "bad1")]
    manifest = write_manifest(tmp_path / "m.jsonl", records)
    first = R.evaluate(_FailsOnBadClips(answer=lambda name, prompt: "hello"), manifest, "asr", tmp_path / "out",
                       progress=False)
    assert first["runs"][0]["failed"]["count"] == 1
    fixed = FakeModel(answer=lambda name, prompt: "hello")  # e.g. the missing file was copied in
    again = R.evaluate(fixed, manifest, "asr", tmp_path / "out", progress=False)
    assert fixed.generated == ["bad1"] and again["runs"][0]["failed"] == {"count": 0}
    assert again["runs"][0]["metrics"]["wer"] == 0.0
    assert "## Failed clips" not in (tmp_path / "out" / "report.md").read_text()
