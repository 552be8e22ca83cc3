"""scripts/mini/dev_score.py: which records each task is scored on and how a summary becomes the dev numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.scripts import load_script

MINI_SCRIPTS = Path(__file__).resolve().parents[1] / "scripts" / "mini"


@pytest.fixture(scope="module")
def dev_score():
    return load_script(MINI_SCRIPTS / "dev_score.py", "dev_score")


def test_a_task_is_scored_on_its_first_records_of_the_chosen_split(dev_score, tmp_path):
    records = [{"path": f"dev/speech/s{i}.wav", "task": "asr", "text": f"t{i}"} for i in range(5)]
    records += [{"path": "dev/speech/s0.wav", "task": "gender_recognition", "text": "male"}]
    (tmp_path / "dev.json").write_text(json.dumps({"annotation": records}))
    (tmp_path / "test.json").write_text(json.dumps({"annotation": records[:1]}))
    path = dev_score.task_manifest(tmp_path, "dev", "asr", 3, tmp_path / "work")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["text"] for r in rows] == ["t0", "t1", "t2"]
    assert rows[0]["path"] == str((tmp_path / "dev/speech/s0.wav").resolve())
    test_path = dev_score.task_manifest(tmp_path, "test", "asr", 3, tmp_path / "work")
    assert test_path != path and len(test_path.read_text().splitlines()) == 1
    assert dev_score.task_manifest(tmp_path, "dev", "QA", 3, tmp_path / "work") is None
    voices = [{"path": f"dev/{kind}/{kind}_{i}.wav", "task": "asr", "text": f"{kind}{i}"}
              for i in range(3) for kind in ("speech", "voice")]
    (tmp_path / "dev.json").write_text(json.dumps({"annotation": voices}))
    one_kind = dev_score.task_manifest(tmp_path, "dev", "asr@voice", 2, tmp_path / "work")
    assert [json.loads(line)["text"] for line in one_kind.read_text().splitlines()] == ["voice0", "voice1"]


def test_the_headline_of_each_task(dev_score):
    def summary(metrics, n, details=None):
        return {"n_samples": n, "runs": [{"metrics": metrics, "failed": {"count": 0},
                                          "details": details or {}}]}

    asr = dev_score.headline("asr@voice", summary({"wer": 41.5}, 96))
    assert asr == {"wer": 41.5, "clips": 96, "failed": 0}
    events = dev_score.headline("sound_event", summary({"accuracy": 0.5}, 32))
    assert events["accuracy"] == 0.5 and events["wilson95"][0] < 0.5 < events["wilson95"][1]
    music = dev_score.headline("music_description", summary({"cider_d": 250.0}, 30))
    assert music == {"cider_d": 250.0, "clips": 30, "failed": 0}
    qa = dev_score.headline("QA@voice_qa", summary({"same_answer_rate": 0.25, "echo_rate": 0.0}, 96,
                                          {"spoken_qa": {"questions": 96, "kept": 40, "same": 10}}))
    assert qa["same_answer_rate"] == 0.25 and qa["kept"] == 40 and qa["same"] == 10


def test_weights_are_a_folder_or_a_file(dev_score, tmp_path):
    assert dev_score.weights_file(tmp_path) == tmp_path / "trainable.safetensors"
    assert dev_score.weights_file(tmp_path / "w.safetensors") == tmp_path / "w.safetensors"
    assert dev_score.weights_file(None).name == "trainable.safetensors"


def test_an_answer_budget_of_its_own_is_answered_apart(dev_score):
    assert dev_score.answer_budget(None) == ([], "")
    assert dev_score.answer_budget(160) == (["generate.max_new_tokens=160"], "-tok160")


def test_real_recorded_speech_is_scored_as_its_own_kind(dev_score, tmp_path):
    records = [{"path": "dev/real/speech_00000.wav", "task": "asr", "text": "enemy base detected"},
               {"path": "dev/real/real_00000.wav", "task": "sound_event", "text": "dog barking"},
               {"path": "dev/voice/voice_00000.wav", "task": "asr", "text": "a synthetic voice"}]
    (tmp_path / "dev.json").write_text(json.dumps({"annotation": records}))
    assert "asr@real" in dev_score.TASKS
    path = dev_score.task_manifest(tmp_path, "dev", "asr@real", 10, tmp_path / "work")
    assert [json.loads(line)["text"] for line in path.read_text().splitlines()] == ["enemy base detected"]
