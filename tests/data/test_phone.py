"""Phone copies of a corpus: 8 kHz band limit and mu-law, speech clips only, the source's records, the errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from salmonn.data import phone as P
from salmonn.data.commands import COMMANDS
from salmonn.errors import SalmonnError
from salmonn.frames import SAMPLE_RATE
from salmonn.manifest import read_manifest


def band_energy(x: np.ndarray, lo: float, hi: float) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    return float(spectrum[(freqs >= lo) & (freqs < hi)].sum())


def test_telephone_removes_the_band_above_4_khz_and_keeps_the_low_band():
    x = 0.1 * np.random.default_rng(0).standard_normal(SAMPLE_RATE)
    for seed in range(4):  # with and without mu-law
        y, info = P.telephone(x, np.random.default_rng(seed))
        assert len(y) == len(x) and info["phone_rate"] == 8000
        assert band_energy(y, 4200, 8000) < 1e-3 * band_energy(x, 4200, 8000)
        assert band_energy(y, 100, 3500) > 0.8 * band_energy(x, 100, 3500)


def test_mulaw_is_8_bit_and_close_at_speech_levels():
    x = np.linspace(-1, 1, 10001)
    y = P.mulaw(x)
    assert len(np.unique(np.round(y, 9))) <= 255
    mid = np.abs(x) > 0.01
    assert np.max(np.abs(y[mid] - x[mid]) / np.abs(x[mid])) < 0.04  # companding: relative error, not absolute
    assert not np.allclose(y, x, atol=1e-4)


def write_corpus(root, split: str = "train") -> None:
    """Two speech clips (asr + gender, a spoken question) and one sound-event clip."""
    records = []
    for i, recs in enumerate(([("asr", "hello there"), ("gender_recognition", "female")], [("QA", "yes")],
                              [("sound_event", "dog")])):
        rel = f"{split}/k/clip_{i}.wav"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / rel, 0.1 * np.random.default_rng(i).standard_normal(SAMPLE_RATE), SAMPLE_RATE)
        records += [{"path": rel, "task": t, "text": text, "aug": {"speed": 1.1}} for t, text in recs]
    (root / f"{split}.json").write_text(json.dumps({"annotation": records}))


def test_phone_copies_speech_clips_with_their_records(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    write_corpus(src)
    COMMANDS["phone"](str(src), str(out), splits="train")
    records = read_manifest(out / "train.json")
    assert sorted(r["task"] for r in records) == ["QA", "asr", "gender_recognition"]
    for r in records:
        assert r["path"].startswith(str(out)) and r["copy_of"].startswith(str(src))
        assert r["aug"]["speed"] == 1.1 and r["aug"]["phone_rate"] == 8000
        y, sr = sf.read(r["path"])
        assert sr == SAMPLE_RATE and len(y) == SAMPLE_RATE
    first = {r["path"]: sf.read(r["path"])[0] for r in records}
    COMMANDS["phone"](str(src), str(out), splits="train")  # seeded by path: the same files again
    assert all(np.array_equal(sf.read(p)[0], x) for p, x in first.items())


def test_phone_refuses_test_splits_itself_and_bad_annotations(tmp_path):
    src = tmp_path / "src"
    write_corpus(src)
    with pytest.raises(SalmonnError, match="test splits are never copied"):
        P.phone(str(src), str(tmp_path / "out"), splits="train,test")
    with pytest.raises(SalmonnError, match="the output folder is the source"):
        P.phone(str(src), str(src), splits="train")
    (src / "dev.json").write_text("{not json")
    with pytest.raises(SalmonnError, match=r"dev\.json: not a corpus annotation"):
        P.phone(str(src), str(tmp_path / "out"), splits="dev")
    write_corpus(src, "dev")
    sf.write(src / "dev/k/clip_0.wav", np.zeros((100, 2)), 8000)
    with pytest.raises(SalmonnError, match="8000 Hz"):
        P.phone(str(src), str(tmp_path / "out"), splits="dev")
