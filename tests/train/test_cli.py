"""`salmonn train` as a user runs it: bad data fails before the model loads, with the offending lines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .conftest import CONFIGS, tiny, write_jsonl

SALMONN = str(Path(sys.executable).parent / "salmonn")


def test_bad_manifest_fails_fast_listing_the_lines(corpus, tmp_path):
    manifest = write_jsonl(tmp_path / "bad.jsonl", [
        {"path": str(corpus / "tone.wav"), "text": "ok", "task": "audiocaption"},
        {"path": str(tmp_path / "gone.wav"), "text": "x", "task": "audiocaption"},
        {"path": str(corpus / "tone.wav"), "text": "", "task": "audiocaption"},
        {"path": str(corpus / "tone.wav"), "text": "x", "task": "singing"}])
    args = tiny(corpus, tmp_path / "out", f"datasets.train_ann_path={manifest}")
    result = subprocess.run([SALMONN, "train", str(CONFIGS / "stage1_pretrain.yaml"), *args], capture_output=True,
                            text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 1
    err = result.stderr
    assert "salmonn train: error: 3 problem(s) in the training data" in err
    assert f"{manifest}:2: {tmp_path / 'gone.wav'}: audio file not found" in err
    assert f"{manifest}:3: empty 'text'" in err and f"{manifest}:4: task 'singing' is not in the prompt file" in err
    assert "Traceback" not in err and "Loading weights" not in err  # failed before the model was loaded
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_a_reused_output_folder_is_refused_before_the_model_loads(corpus, tmp_path):
    out = tmp_path / "out"
    (out / "checkpoints" / "step_00000003").mkdir(parents=True)
    (out / "checkpoints" / "step_00000003" / "state.json").write_text("{}")
    command = [SALMONN, "train", str(CONFIGS / "stage1_pretrain.yaml"), *tiny(corpus, out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 1 and "Loading weights" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"salmonn train: error: {out}: holds an earlier run (checkpoints up to step 3); continue it with --resume, "
        "start over with --restart (deletes checkpoints, final, metrics.jsonl, samples.jsonl, curves.png), or set "
        "another run.output_dir"]
    both = subprocess.run([*command, "--resume", "--restart"], capture_output=True, text=True, timeout=300)
    assert both.returncode == 1 and "--restart deletes the run that --resume would continue" in both.stderr
