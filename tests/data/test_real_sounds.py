"""The real-sounds set: the reviewed table, reading packages (files, Qt resources, zips), clips of 1-8 s, the split
by source file and series, the manifests, and the errors; on tiny fake packages written here (no network)."""

from __future__ import annotations

import json
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from salmonn.data import real_sounds as R
from salmonn.data.commands import COMMANDS
from salmonn.manifest import read_manifest
from salmonn.data.sounds import EVENT_NAMES
from salmonn.errors import SalmonnError
from salmonn.frames import SAMPLE_RATE

FAKE = {"fake-deb": R.Package("fake-deb", "debian"), "fake-wheel": R.Package("fake-wheel", "pypi", "1.0")}


def noise_bursts(seconds: float, seed: int) -> np.ndarray:
    """A recording-like signal: decaying noise bursts, different for every seed."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 22050)
    x = rng.normal(0, 0.05, n)
    for start in rng.integers(0, max(1, n - 2000), size=max(1, int(seconds * 3))):
        m = min(2000, n - start)
        x[start:start + m] += rng.normal(0, 0.5, m) * np.exp(-np.arange(m) / 400)
    return np.clip(x, -1, 1).astype(np.float32)


def wav_bytes(x: np.ndarray, rate: int = 22050) -> bytes:
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"salmonn-test-{os.getpid()}.wav"
    sf.write(path, x, rate)
    data = path.read_bytes()
    path.unlink()
    return data


def rcc_blob(files: dict[str, bytes], compress: set[str] = frozenset()) -> bytes:
    """A Qt resource file (format 1) holding files under one folder 'res' (the layout GCompris ships)."""
    names, data, nodes = b"", b"", []

    def name(text: str) -> int:
        nonlocal names
        at = len(names)
        names += struct.pack(">HI", len(text), 0) + text.encode("utf-16-be")
        return at

    nodes.append(struct.pack(">IHII", 0, 2, 1, 1))  # root: one child, node 1
    nodes.append(struct.pack(">IHII", name("res"), 2, len(files), 2))
    for file, content in files.items():
        flags = 1 if file in compress else 0
        body = struct.pack(">I", len(content)) + zlib.compress(content) if flags else content
        nodes.append(struct.pack(">IHHHI", name(file), flags, 0, 0, len(data)))
        data += struct.pack(">I", len(body)) + body
    tree = b"".join(nodes)
    tree_at = 20
    data_at = tree_at + len(tree)
    names_at = data_at + len(data)
    return b"qres" + struct.pack(">IIII", 1, tree_at, data_at, names_at) + tree + data + names


@pytest.fixture()
def fake(tmp_path) -> tuple[Path, tuple[R.Source, ...]]:
    """A cache with two unpacked packages (a Debian one with a Qt resource and a zip, a wheel) and their table."""
    deb, wheel = tmp_path / "cache" / "fake-deb", tmp_path / "cache" / "fake-wheel"
    (deb / "sounds").mkdir(parents=True)
    (wheel / "animals").mkdir(parents=True)
    (deb / ".version").write_text("2.0-1\n")
    (wheel / ".version").write_text("1.0\n")
    sf.write(deb / "sounds" / "cow_01.wav", noise_bursts(2.0, 1), 22050)
    sf.write(deb / "sounds" / "cow_02.wav", noise_bursts(3.0, 2), 22050)  # same series as cow_01
    sf.write(deb / "sounds" / "rain.wav", noise_bursts(20.0, 3), 22050)  # long: cut into pieces
    sf.write(wheel / "animals" / "cow.ogg", noise_bursts(0.4, 4), 22050)  # short: padded to 1 s
    sf.write(wheel / "animals" / "dog.wav", noise_bursts(2.5, 5), 44100)
    sf.write(wheel / "animals" / "hound.wav", 0.5 * noise_bursts(2.5, 5), 44100)  # the same recording as dog.wav
    (deb / "game.rcc").write_bytes(rcc_blob({"dog.wav": wav_bytes(noise_bursts(1.5, 6)),
                                             "bell.wav": wav_bytes(noise_bursts(2.0, 7))}, compress={"bell.wav"}))
    with zipfile.ZipFile(deb / "public.zip", "w") as z:
        z.writestr("audio/cow_calf.wav", wav_bytes(noise_bursts(1.2, 8)))
    table = (R.Source("fake-deb", "sounds/cow_01.wav", "cow", "GPL-2+"),
             R.Source("fake-deb", "sounds/cow_02.wav", "cow", "GPL-2+"),
             R.Source("fake-deb", "sounds/rain.wav", "rain", "GPL-2+"),
             R.Source("fake-deb", "game.rcc:/res/dog.wav", "dog barking", "GPL-3+"),
             R.Source("fake-deb", "game.rcc:/res/bell.wav", "bell", "GPL-3+"),
             R.Source("fake-deb", "public.zip:audio/cow_calf.wav", "cow", "CC-BY-SA-3.0"),
             R.Source("fake-wheel", "animals/cow.ogg", "cow", "CC0-1.0"),
             R.Source("fake-wheel", "animals/dog.wav", "dog barking", "CC0-1.0"),
             R.Source("fake-wheel", "animals/hound.wav", "dog barking", "CC0-1.0"))
    return tmp_path / "cache", table


@pytest.fixture()
def built(fake, tmp_path) -> tuple[Path, dict, list[dict]]:
    cache, table = fake
    out = tmp_path / "set"
    summary = R.build_real_sounds(out, cache, sources=table, packages=FAKE)
    return out, summary, json.loads((out / "sources.json").read_text())


def test_manifests_carry_label_and_provenance(built):
    out, summary, sources = built
    records = read_manifest(out / "train.json") + read_manifest(out / "test.json")
    events = [r for r in records if r["task"] == "sound_event"]
    captions = {r["path"]: r["text"] for r in records if r["task"] == "audiocaption"}
    assert set(captions) == {r["path"] for r in events}  # every clip: one label and one caption
    by_source = {s["path"]: s for s in sources}
    for r in events:
        s = by_source[r["source"]]
        assert r["text"] == r["label"] == s["label"] and r["license"] == s["license"]
        assert r["version"] == {"fake-deb": "2.0-1", "fake-wheel": "1.0"}[r["package"]]
        assert R.LABELS[r["label"]] in captions[r["path"]]
        wav, rate = sf.read(r["path"])
        assert rate == SAMPLE_RATE and wav.ndim == 1 and 1.0 <= len(wav) / rate <= 8.0
        assert np.abs(wav).max() == pytest.approx(R.PEAK, abs=1e-3)
    assert summary["packages"] == {"fake-deb": "2.0-1", "fake-wheel": "1.0"}
    assert sum(s["clips"] for s in summary["splits"].values()) == len(events)


def test_long_files_are_cut_and_short_ones_padded(built):
    out, _, _ = built
    events = [r for s in ("train", "test") for r in read_manifest(out / f"{s}.json") if r["task"] == "sound_event"]
    rain = [r for r in events if r["source"] == "sounds/rain.wav"]
    assert len(rain) == 3 and [r["start"] for r in rain] == sorted(r["start"] for r in rain)
    assert all(r["seconds"] == pytest.approx(20 / 3, abs=0.01) for r in rain)
    short = [r for r in events if r["source"] == "animals/cow.ogg"]
    assert len(short) == 1 and short[0]["seconds"] == 1.0


def test_split_goes_by_source_series_and_recording(built):
    out, _, sources = built
    split_of = {}
    for split in ("train", "test"):
        for r in read_manifest(out / f"{split}.json"):
            assert split_of.setdefault(r["source"], split) == split  # a source file's clips stay in one split
    by = {s["path"]: s for s in sources}
    assert all(by[path]["split"] == split for path, split in split_of.items())
    assert by["sounds/cow_01.wav"]["group"] == by["sounds/cow_02.wav"]["group"]  # one series
    assert by["animals/dog.wav"]["group"] == by["animals/hound.wav"]["group"]  # one recording, two names
    for group in {s["group"] for s in sources}:
        assert len({s["split"] for s in sources if s["group"] == group}) == 1
    for label in {s["label"] for s in sources}:  # every label is tested; one with a single series only tested
        splits = [s["split"] for s in sources if s["label"] == label]
        assert "test" in splits
        if len({s["group"] for s in sources if s["label"] == label}) == 1:
            assert set(splits) == {"test"}


def test_split_is_deterministic(fake, built, tmp_path):
    cache, table = fake
    out, _, sources = built
    R.build_real_sounds(tmp_path / "again", cache, sources=table, packages=FAKE)
    assert json.loads((tmp_path / "again" / "sources.json").read_text()) == sources
    assert (tmp_path / "again" / "test.json").read_text() == (out / "test.json").read_text()


def test_split_rule_keeps_a_test_group_per_label():
    keys = {f"p/{name}.wav": "cow" for name in ("a", "b", "c")}
    group = {k: k for k in keys}
    split = R.split_sources(keys, group)
    assert "test" in split.values()
    forced = {k: "x" for k in keys}  # one group: a single draw for all, and the label must be tested
    assert set(R.split_sources(keys, forced).values()) == {"test"}


def test_series_and_same_recording():
    assert R.series("pkg/audio/cattle_03.ogg") == R.series("pkg/audio/cattle_07.ogg") == "pkg/audio/cattle"
    assert R.series("pkg/a/cow.ogg") != R.series("pkg/b/cow.ogg")
    x = noise_bursts(2.0, 11)
    assert R.same_recording(x, np.concatenate([np.zeros(500, np.float32), 0.3 * x]))
    assert not R.same_recording(x, noise_bursts(2.0, 12))


def test_rcc_reader_reads_plain_and_compressed_entries():
    blob = rcc_blob({"a.txt": b"hello", "b.bin": b"\x00" * 100}, compress={"b.bin"})
    assert R.rcc_files(blob, "x.rcc") == {"/res/a.txt": b"hello", "/res/b.bin": b"\x00" * 100}
    with pytest.raises(SalmonnError, match="x.rcc: not a Qt resource"):
        R.rcc_files(b"PK\x03\x04" + b"\x00" * 30, "x.rcc")


def test_missing_file_names_package_and_table(fake, tmp_path):
    cache, table = fake
    for source in (R.Source("fake-deb", "sounds/gone.wav", "cow", "GPL-2+"),
                   R.Source("fake-deb", "game.rcc:/res/gone.wav", "cow", "GPL-2+"),
                   R.Source("fake-deb", "public.zip:audio/gone.wav", "cow", "GPL-2+")):
        with pytest.raises(SalmonnError, match=r"gone\.wav.*review salmonn.data.real_sounds.SOURCES"):
            R.build_real_sounds(tmp_path / "out", cache, sources=table + (source,), packages=FAKE)


def test_bad_table_rows_are_refused(fake, tmp_path):
    cache, table = fake
    with pytest.raises(SalmonnError, match="lists a file twice"):
        R.build_real_sounds(tmp_path / "out", cache, sources=table + table[:1], packages=FAKE)
    odd = R.Source("fake-deb", "sounds/rain.wav", "weird noise", "GPL-2+")
    with pytest.raises(SalmonnError, match=r"\['weird noise'\] have no caption phrase"):
        R.build_real_sounds(tmp_path / "out", cache, sources=table[:2] + (odd,), packages=FAKE)


def test_fetch_failure_is_one_line_naming_the_package(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    apt = bin_dir / "apt-get"  # stands in for apt-get without a network: fails as apt-get does
    apt.write_text("#!/bin/sh\necho 'E: Unable to locate package no-such-sounds' >&2\nexit 100\n")
    apt.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(SalmonnError, match="no-such-sounds: cannot fetch it from debian "
                                           r"\(E: Unable to locate package no-such-sounds\)"):
        R.fetch(R.Package("no-such-sounds", "debian"), tmp_path / "cache")
    assert not (tmp_path / "cache" / "no-such-sounds").exists()


def test_the_reviewed_table():
    keys = [R.source_key(s) for s in R.SOURCES]
    assert len(keys) == len(set(keys))
    assert {s.package for s in R.SOURCES} == set(R.PACKAGES)
    assert all(s.label in R.LABELS and s.license for s in R.SOURCES)
    assert not [k for k in keys if "_desc" in k]  # Tux Paint's spoken descriptions are speech, not the sound
    covered = {s.label for s in R.SOURCES} & set(EVENT_NAMES)
    assert covered >= {"dog barking", "bird chirping", "rain", "engine", "clapping"}
    assert len(R.SOURCES) >= 150 and len({s.label for s in R.SOURCES}) >= 60


def test_the_command_is_registered():
    assert COMMANDS["real-sounds"] is R.real_sounds
    assert "OUT_DIR/train.json and test.json" in R.real_sounds.__doc__


def test_augmented_copies_are_train_only_seeded_and_labelled(fake, built, tmp_path):
    cache, table = fake
    out, _, _ = built
    R.build_real_sounds(tmp_path / "aug", cache, sources=table, packages=FAKE, copies=2)
    aug = tmp_path / "aug"
    assert (aug / "test.json").read_text() == (out / "test.json").read_text()  # test is never augmented
    train = [r for r in read_manifest(aug / "train.json") if r["task"] == "sound_event"]
    originals = [r for r in train if "copy_of" not in r]
    copies = [r for r in train if "copy_of" in r]
    assert len(copies) == 2 * len(originals) > 0
    for r in copies:
        source = aug / r["copy_of"]
        assert r["text"] == r["label"] == next(o["label"] for o in originals if o["path"] == str(source))
        x, rate = sf.read(r["path"])
        y, _ = sf.read(source)
        assert rate == SAMPLE_RATE and len(x) <= R.MAX_SECONDS * SAMPLE_RATE and "speed" in r["aug"]
        assert len(x) != len(y) or not np.allclose(x, y, atol=1e-3)  # the chain changed the audio
    R.build_real_sounds(tmp_path / "again", cache, sources=table, packages=FAKE, copies=2)
    first = sorted(p.name for p in (aug / "train" / "real_aug").iterdir())
    assert first == sorted(p.name for p in (tmp_path / "again" / "train" / "real_aug").iterdir())
    assert all((aug / "train" / "real_aug" / n).read_bytes() ==
               (tmp_path / "again" / "train" / "real_aug" / n).read_bytes() for n in first)  # seeded
