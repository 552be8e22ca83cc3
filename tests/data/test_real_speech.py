"""salmonn data real-speech: which transcripts are trusted, splits by voice, records and room copies."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from salmonn.data.real_speech import (
    DEV_VOICES,
    PACKAGES,
    accept_given,
    accept_reading,
    build_real_speech,
    corpus_text,
    real_speech,
)
from salmonn.errors import SalmonnError
from salmonn.frames import SAMPLE_RATE


@pytest.mark.parametrize("given, reading, kept", [
    ("The letter b.", "B.", "b"),  # Tux Paint's caption words may go unsaid before the letter
    ("A frog.", "Frog!", "frog"),
    ("car", "Car.", "car"),
    ("The letter d.", "T", None),  # Whisper heard another letter: the clip is dropped, not relabelled
    ("A nandou.", "Men do.", None),
    ("dog", "", None),
])
def test_given_words_are_kept_only_when_whisper_hears_them(given, reading, kept):
    assert accept_given(given, reading) == kept


@pytest.mark.parametrize("reading, logprob, seconds, kept", [
    ("Enemy base detected.", -0.2, 1.3, "enemy base detected"),
    ("Enemy base detected.", -0.6, 1.3, None),  # the decoder is unsure
    ("Nooooooooooo!", -0.1, 1.0, None),  # a drawn-out cry, not a word
    ("Are you kidding me, I said it twice over and again", -0.1, 0.8, None),  # too many words for 0.8 s
    ("", -0.1, 1.0, None),
])
def test_whisper_readings_are_kept_only_when_sure_and_plausible(reading, logprob, seconds, kept):
    assert accept_reading(reading, logprob, seconds) == kept


@pytest.mark.parametrize("reading, text", [
    ("Group 7", "group seven"), ("10 minutes remaining.", "ten minutes remaining"), ("Uh-oh!", "uh oh"),
    ("I'll get you, 'mate'.", "i'll get you mate"), ("42", "forty two"), ("250 units", None), ("...", None),
])
def test_transcripts_are_written_as_the_corpus_writes_them(reading, text):
    assert corpus_text(reading) == text


def _tone(seconds: float, freq: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _package(cache: Path, name: str, files: dict[str, np.ndarray]) -> None:
    root = cache / name
    for rel, wav in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / rel, wav, SAMPLE_RATE, format="OGG", subtype="VORBIS")
    (root / ".version").write_text("1.0-test\n")


def test_corpus_splits_by_voice_and_keeps_trusted_clips(tmp_path):
    voices = "usr/share/games/hedgewars/Data/Sounds/voices"
    hedgewars = {f"{voices}/British/Hello.ogg": _tone(1.0, 200), f"{voices}/British/Boring.ogg": _tone(1.2, 220),
                 f"{voices}/Surfer/Hello.ogg": _tone(0.9, 240), f"{voices}/Default_es/Hola.ogg": _tone(1.0, 260),
                 f"{voices}/British/Long.ogg": _tone(9.0, 280)}
    klettres = {"usr/share/klettres/en/alpha/A.ogg": _tone(1.0, 300), "usr/share/klettres/en/syllab/th.ogg":
                _tone(1.0, 320), "usr/share/klettres/en_GB/syllab/dog.ogg": _tone(1.0, 340)}
    _package(tmp_path, "hedgewars-data", hedgewars)
    _package(tmp_path, "klettres-data", klettres)
    by_name = {}
    for rel in [*hedgewars, *klettres]:
        package = "hedgewars-data" if "hedgewars" in rel else "klettres-data"
        by_name[Path(rel).stem] = by_name.get(Path(rel).stem, []) + [(tmp_path / package / rel).read_bytes()]
    readings = {"Hello": ("Hello there!", -0.1), "Boring": ("So boring.", -0.9), "Long": ("Long.", -0.1),
                "A": ("A.", -0.5), "dog": ("Dog.", -0.4), "Hola": ("Hola.", -0.1)}
    table = {hashlib.sha256(data).hexdigest(): readings[name] for name, blobs in by_name.items()
             for data in blobs if name in readings}
    packages = {name: PACKAGES[name] for name in ("hedgewars-data", "klettres-data")}
    out = tmp_path / "corpus"
    summary = build_real_speech(out, tmp_path, copies=2, packages=packages, read=lambda key, wav: table[key])

    train = json.loads((out / "train.json").read_text())["annotation"]
    dev = json.loads((out / "dev.json").read_text())["annotation"]
    assert not (out / "test.json").exists()
    originals = [r for r in train if "copy_of" not in r]
    assert sorted((r["voice"], r["text"]) for r in originals) == [("hedgewars/British", "hello there"),
                                                                  ("klettres/en", "a")]
    assert [(r["voice"], r["text"]) for r in dev] == [("hedgewars/Surfer", "hello there"), ("klettres/en_GB", "dog")]
    assert {r["voice"] for r in dev} <= set(DEV_VOICES)
    assert len(train) == 3 * len(originals) and all(r["task"] == "asr" for r in train + dev)
    assert {r["words"] for r in originals} == {"whisper", "package"}
    assert all(r["license"] and r["version"] == "1.0-test" and r["source"] for r in train + dev)
    for r in train + dev:
        wav, sr = sf.read(out / r["path"])
        assert sr == SAMPLE_RATE and 0.3 <= len(wav) / sr <= 8.0
    # Boring is unsure, Long too long, th not a word, Default_es not an English pack
    assert summary["dropped"] == {"length": 1, "unsure": 1, "not the given words": 0, "not audio": 0}
    assert summary["recordings"] == 6


def test_a_package_without_the_expected_voice_lines_is_a_clear_error(tmp_path):
    _package(tmp_path, "klettres-data", {"usr/share/klettres/fr/alpha/A.ogg": _tone(1.0, 300)})
    packages = {"klettres-data": PACKAGES["klettres-data"]}
    with pytest.raises(SalmonnError, match="klettres-data 1.0-test holds no English voice lines"):
        build_real_speech(tmp_path / "out", tmp_path, packages=packages, read=lambda key, wav: ("", 0.0))
    assert not (tmp_path / "out").exists()


def test_negative_copies_are_refused(tmp_path):
    with pytest.raises(SalmonnError, match="--copies -1"):
        real_speech(str(tmp_path / "out"), copies=-1)
