"""scripts/mini/make_manifests.py: the stage manifests SALMONN-mini trains on, from its corpora (no audio read)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "mini" / "make_manifests.py"


def corpus(root: Path, name: str, splits: dict[str, list[tuple[str, str, str]]]) -> Path:
    """A corpus folder with one annotation file per split: (path, task, text) records."""
    folder = root / name
    folder.mkdir()
    for split, records in splits.items():
        annotation = [{"path": path, "task": task, "text": text} for path, task, text in records]
        (folder / f"{split}.json").write_text(json.dumps({"annotation": annotation}))
    return folder


def run(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_added_corpora_join_every_stage_repeated_and_validation_comes_from_dev(tmp_path):
    main = corpus(tmp_path, "main", {
        "train": [(f"train/voice/voice_{i:05d}.wav", "asr", f"words {i}") for i in range(4)]
                 + [("train/events/events_00000.wav", "sound_event", "siren")],
        "test": [("test/voice/voice_00000.wav", "asr", "held out"),
                 ("test/events/events_00000.wav", "sound_event", "bell")]})
    real = corpus(tmp_path, "real", {"train": [("train/real/real_00000.wav", "sound_event", "cow")],
                                      "test": [("test/real/real_00001.wav", "sound_event", "kettle")]})
    dev = corpus(tmp_path, "dev", {"dev": [("dev/voice/voice_00000.wav", "asr", "dev words"),
                                          ("dev/events/events_00000.wav", "sound_event", "dog barking")]})
    done = run(main, "--add", f"{real}:3", "--dev", dev / "dev.json")
    assert done.returncode == 0, done.stderr
    stage2 = rows(main / "stage2_train.jsonl")
    assert sum(r["text"] == "cow" for r in stage2) == 3  # the added corpus, three times over
    assert not any(r["text"] == "cow" for r in rows(main / "stage0_train.jsonl"))  # stage 0 is ASR only
    assert {r["text"] for r in rows(main / "stage2_valid.jsonl")} == {"dev words", "dog barking"}
    assert {r["text"] for r in rows(main / "test_sound_event.jsonl")} == {"bell"}  # test: the first corpus's


def test_without_dev_validation_is_the_test_split_as_before(tmp_path):
    main = corpus(tmp_path, "main", {"train": [("train/voice/voice_00000.wav", "asr", "a b")],
                                      "test": [("test/voice/voice_00000.wav", "asr", "c d")]})
    assert run(main).returncode == 0
    assert [r["text"] for r in rows(main / "stage0_valid.jsonl")] == ["c d"]


def test_a_test_clip_in_an_added_train_split_is_refused(tmp_path):
    main = corpus(tmp_path, "main", {"train": [("train/voice/voice_00000.wav", "asr", "a b")],
                                      "test": [("test/voice/voice_00000.wav", "asr", "c d")]})
    leak = corpus(tmp_path, "leak", {"train": [("test/real/real_00000.wav", "sound_event", "cow")],
                                      "test": [("test/real/real_00000.wav", "sound_event", "cow")]})
    done = run(main, "--add", leak)
    assert done.returncode != 0
    assert "real_00000.wav: a held-out clip" in done.stderr
    assert not (main / "stage0_train.jsonl").exists()


def test_a_dev_clip_joined_into_a_training_transcript_is_refused(tmp_path):
    main = corpus(tmp_path, "main", {"train": [("train/voice/voice_00000.wav", "asr", "a b")],
                                      "test": [("test/voice/voice_00000.wav", "asr", "c d")]})
    dev = corpus(tmp_path, "dev", {"dev": [("dev/voice/voice_00003.wav", "asr", "e f")]})
    joined = tmp_path / "joined"
    joined.mkdir()
    record = {"path": str(main / "train/voice/voice_00000.wav"), "expand_wav": [str(dev / "dev/voice/voice_00003.wav")],
              "task": "asr", "text": "a b e f"}
    (joined / "train.json").write_text(json.dumps({"annotation": [record]}))
    done = run(main, "--add", joined, "--dev", dev / "dev.json")
    assert done.returncode != 0 and "voice_00003.wav: a held-out clip" in done.stderr


def test_balance_splits_a_tasks_stage2_cap_evenly_over_its_answers(tmp_path):
    genders = ["male"] * 6 + ["female"] * 2
    main = corpus(tmp_path, "main", {
        "train": [(f"train/voice/voice_{i:05d}.wav", "gender_recognition", g) for i, g in enumerate(genders)]
                 + [(f"train/events/events_{i:05d}.wav", "sound_event", "siren") for i in range(6)],
        "test": [("test/voice/voice_00000.wav", "asr", "held out")]})
    assert run(main, "--stage2-per-task", 4, "--balance", "gender_recognition").returncode == 0
    stage2 = rows(main / "stage2_train.jsonl")
    assert sorted(r["text"] for r in stage2 if r["task"] == "gender_recognition") == ["female"] * 2 + ["male"] * 2
    assert sum(r["task"] == "sound_event" for r in stage2) == 4  # an unbalanced task keeps the whole cap
    assert run(main, "--stage2-per-task", 4).returncode == 0
    assert sum(r["text"] == "male" for r in rows(main / "stage2_train.jsonl")) > 2  # without it, the pool's skew
    assert run(main, "--balance", "gender_recognition").returncode != 0  # nothing to split
