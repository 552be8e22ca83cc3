"""The Asterisk real-speech test set: manifest built from the Debian packages, transcripts as said, tones skipped.

Needs the Debian packages asterisk-core-sounds-en-wav and asterisk-core-sounds-en (scripts/setup.sh --test installs
them); without them the tests fail with the apt-get line to run.
"""

from __future__ import annotations

import json

import pytest
import soundfile as sf

from salmonn.data import asterisk as A
from salmonn.errors import SalmonnError

# core-sounds-en.txt of asterisk-core-sounds-en 1.6.1 lists 569 entries: 26 tones/silence, 1 without a recording
EXPECTED_CLIPS = 542


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> tuple[list[dict], dict]:
    out = tmp_path_factory.mktemp("asterisk") / "asterisk.json"
    try:
        summary = A.write_asterisk_manifest(out)
    except SalmonnError as e:
        pytest.fail(f"asterisk test set missing (CI must install it): {e}")
    return json.loads(out.read_text())["annotation"], summary


def test_manifest_counts_and_fields(manifest):
    records, summary = manifest
    assert len(records) == summary["clips"] == EXPECTED_CLIPS
    assert summary["skipped_not_speech"] == 26 and summary["skipped_no_wav"] == 1
    assert 23 < summary["minutes"] < 26  # one female speaker, 8 kHz prompts
    assert all(r["task"] == "asr" and r["text"] and r["id"].startswith("asterisk/") for r in records)
    assert len({r["path"] for r in records}) == len(records)


def test_transcripts_are_what_is_said(manifest):
    by_id = {r["id"]: r["text"] for r in manifest[0]}
    assert by_id["asterisk/hello-world"] == "Hello world."
    assert by_id["asterisk/digits/5"] == "five"
    assert "asterisk/beep" not in by_id and "asterisk/silence/1" not in by_id  # tones and silence skipped
    assert not any(c in text for text in by_id.values() for c in "[]()*#")  # keypad symbols read as words
    assert by_id["asterisk/dictate/enter_filename"] == ("Enter a numeric dictation filename followed by pound or "
                                                         "just pound to exit")  # "... by # or just # to exit"


def test_recordings_are_real_8k_speech(manifest):
    records = manifest[0]
    for record in records[:: len(records) // 10]:
        info = sf.info(record["path"])
        assert info.samplerate == 8000 and info.channels == 1
        assert abs(info.duration - record["seconds"]) < 1e-3 and info.duration > 0.2
        assert A.is_asterisk_audio(record["path"])


def test_eval_reads_the_manifest(manifest, tmp_path):
    from salmonn.evaluation.run import select_records
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"annotation": manifest[0]}))
    picked = select_records(path, "asr")
    assert len(picked) == EXPECTED_CLIPS and picked[0][1]["text"]


def test_parsing_and_bad_input(tmp_path):
    table = tmp_path / "core-sounds-en.txt"
    table.write_text("; comment\n\nhello: Hello there.\nbeep: [a tone]\nquiet: (3 seconds of silence)\nempty:\n")
    assert A.read_transcripts(table) == {"hello": "Hello there.", "beep": "[a tone]",
                                         "quiet": "(3 seconds of silence)"}
    sounds = tmp_path / "en"
    sounds.mkdir()
    sf.write(sounds / "hello.wav", [0.1, -0.1] * 4000, 8000)
    sf.write(sounds / "beep.wav", [0.1, -0.1] * 4000, 8000)
    records, skipped = A.asterisk_records(sounds, table)
    assert [r["text"] for r in records] == ["Hello there."] and skipped == {"not_speech": 2, "no_wav": 0}
    assert not A.is_asterisk_audio(sounds / "hello.wav")
    with pytest.raises(SalmonnError, match="apt-get install asterisk-core-sounds-en-wav"):
        A.asterisk_records(tmp_path / "missing", table)
    (tmp_path / "bad.txt").write_text("not a transcript file\n")
    with pytest.raises(SalmonnError, match="bad.txt: no 'name: transcript' lines"):
        A.read_transcripts(tmp_path / "bad.txt")
    with pytest.raises(SalmonnError, match="ending in .json"):
        A.write_asterisk_manifest(tmp_path / "out.jsonl", sounds, table)
