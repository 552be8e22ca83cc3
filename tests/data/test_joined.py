"""Joined corpora: one speaker's clips packed into 8-25 s expand_wav transcripts, each clip once; the errors."""

from __future__ import annotations

import json
import random

import pytest

from salmonn.data import joined as J
from salmonn.data.commands import COMMANDS
from salmonn.errors import SalmonnError
from salmonn.manifest import read_manifest


def write_meta(root, split: str = "train", speakers: int = 3, clips: int = 20) -> None:
    rows = []
    for s in range(speakers):
        for i in range(clips):
            rows.append({"kind": "voice", "speaker": f"spk{s}", "gender": "male", "path": f"{split}/voice/v{s}_{i}.wav",
                         "text": f"words of speaker {s} clip {i}", "seconds": 2.0 + (i % 5)})
    rows.append({"kind": "voice_mix", "speaker": "spk0", "gender": "male", "path": f"{split}/voice_mix/m.wav",
                 "text": "over a dog", "seconds": 3.0})
    (root / "meta").mkdir(parents=True, exist_ok=True)
    (root / "meta" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_joined_records_are_one_speaker_8_to_25_s_each_clip_once(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    write_meta(src)
    COMMANDS["joined"](str(src), str(out), splits="train")
    records = read_manifest(out / "train.json")
    assert len(records) >= 6
    used = []
    for r in records:
        clips = [r["path"], *r["expand_wav"]]
        used += clips
        assert r["task"] == "asr" and len(clips) >= 2
        assert J.MIN_SECONDS <= r["seconds"] <= J.MAX_SECONDS
        assert len({c.split("/")[-1].split("_")[0] for c in clips}) == 1  # one speaker
        names = [c.rsplit("/", 1)[1][1:-4].split("_") for c in clips]  # .../v<speaker>_<clip>.wav
        assert r["text"] == " ".join(f"words of speaker {s} clip {i}" for s, i in names)
        assert all(c.startswith(str(src)) for c in clips)
    assert len(used) == len(set(used)) and not any("voice_mix" in c for c in used)


def test_join_respects_the_word_cap():
    clips = [{"path": f"c{i}", "text": " ".join(["word"] * 25), "seconds": 3.0} for i in range(12)]
    groups = J.join_speaker(clips, random.Random(0))
    assert groups and all(sum(len(c["text"].split()) for c in g) <= J.MAX_WORDS for g in groups)


def test_joined_refuses_test_splits_and_missing_metadata(tmp_path):
    with pytest.raises(SalmonnError, match="test splits are never joined"):
        J.joined(str(tmp_path), str(tmp_path / "out"), splits="test")
    with pytest.raises(SalmonnError, match=r"meta/dev\.jsonl: cannot read"):
        J.joined(str(tmp_path), str(tmp_path / "out"), splits="dev")


def test_joined_copies_lengths_and_copied_audio(tmp_path):
    src, copy, out = tmp_path / "src", tmp_path / "phone", tmp_path / "out"
    write_meta(src)
    for s in range(3):
        for i in range(0, 20, 2):  # the copy holds every other clip
            (copy / "train" / "voice").mkdir(parents=True, exist_ok=True)
            (copy / "train" / "voice" / f"v{s}_{i}.wav").write_bytes(b"")
    COMMANDS["joined"](str(src), str(out), splits="train", seconds="10,29", copies=2, audio=str(copy))
    records = read_manifest(out / "train.json")
    clips = [c for r in records for c in [r["path"], *r["expand_wav"]]]
    assert records and all(10 <= r["seconds"] <= 29 for r in records)
    assert all(c.startswith(str(copy)) and int(c[:-4].split("_")[-1]) % 2 == 0 for c in clips)
    assert max(clips.count(c) for c in clips) == 2  # each clip once per copy, in a new order each time
    first = [r["text"] for r in J.joined_split(src, "train", 0)]
    COMMANDS["joined"](str(src), str(out), splits="train")  # the defaults join as before the options came
    assert [r["text"] for r in read_manifest(out / "train.json")] == first


@pytest.mark.parametrize("options, error", [({"seconds": "8"}, "give LOW,HIGH"), ({"seconds": "8,31"}, "<= 30"),
                                            ({"copies": 0}, "give 1 or more"), ({"audio": "/no/such"}, "no such folder")])
def test_joined_refuses_bad_options(tmp_path, options, error):
    write_meta(tmp_path)
    with pytest.raises(SalmonnError, match=error):
        J.joined(str(tmp_path), str(tmp_path / "out"), splits="train", **options)
