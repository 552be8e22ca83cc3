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
