"""Synthetic SALMONN-mini corpus: schema, audio, determinism, held-out splits, labels.

Needs the Debian packages espeak-ng, fluidsynth, fluid-soundfont-gm, fortunes, fortunes-min:
without them every corpus test fails (it does not skip) with the apt-get line to run.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

try:
    import salmonn  # noqa: F401
except ImportError:  # not installed in the venv: run from the checkout's src/
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from salmonn.data import jobs as J, music as Mu, sounds as So, texts as T  # noqa: E402
from salmonn.data import synth as S  # noqa: E402
from salmonn.errors import SalmonnError  # noqa: E402

TINY = dict(n_speech=3, n_qa=3, n_events=4, n_music=2, n_mix=2, n_sqa=2, test_fraction=0.5)


@pytest.fixture(scope="module")
def tools() -> None:
    try:
        S.check_tools()
    except SalmonnError as e:
        pytest.fail(f"corpus tools missing (the test needs them, CI must install them): {e}")


@pytest.fixture(scope="module")
def corpus(tools, tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    out = tmp_path_factory.mktemp("corpus_a")
    return out, S.synth_corpus(out, seed=0, workers=1, progress=False, **TINY)


@pytest.fixture(scope="module")
def corpus_again(tools, tmp_path_factory) -> Path:
    """Same seed, different number of workers."""
    out = tmp_path_factory.mktemp("corpus_b")
    S.synth_corpus(out, seed=0, workers=2, progress=False, **TINY)
    return out


def _load(path: Path) -> list[dict]:
    data = json.loads(path.read_text())
    assert set(data) == {"annotation"}
    return data["annotation"]


def _meta(root: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (root / "meta" / f"{split}.jsonl").read_text().splitlines()]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- tools


def test_missing_tools_fail_with_apt_hint(tmp_path):
    with pytest.raises(SalmonnError, match=r"fluid-soundfont-gm.*apt-get install espeak-ng fluidsynth"):
        S.check_tools(soundfont=tmp_path / "none.sf2")
    with pytest.raises(SalmonnError, match="fortunes"):
        S.check_tools(fortunes_dir=tmp_path)
    with pytest.raises(SalmonnError, match="apt-get install"):
        S.synth_corpus(tmp_path / "c", n_speech=0, n_qa=0, n_events=0, n_music=1, n_mix=0, n_sqa=0,
                       soundfont=tmp_path / "none.sf2", progress=False)


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(SalmonnError, match="n_speech"):
        S.synth_corpus(tmp_path, n_speech=-1, progress=False)
    with pytest.raises(SalmonnError, match="split name"):
        S.synth_corpus(tmp_path, splits=("train", "../x"), progress=False)
    with pytest.raises(SalmonnError, match="size"):
        S.synth(str(tmp_path), size="huge")


# ----------------------------------------------------------------------------- schema and audio


def test_annotation_schema_and_prompts(corpus):
    root, paths = corpus
    assert set(paths) == {"train", "test", "sqa_test"}
    prompts = json.loads((root / "prompts.json").read_text())
    assert prompts == T.mini_prompts()
    for task, variants in prompts.items():
        assert variants, task
        for v in variants:
            assert "<SpeechHere>" not in v and "<Speech>" not in v and v.count("{}") <= 1
    expected_tasks = {"asr", "gender_recognition", "QA", "audiocaption", "sound_event",
                      "music_description", "instrument"}
    seen = set()
    for split, path in paths.items():
        assert path == root / f"{split}.json" and path.is_file()
        for e in _load(path):
            assert set(e) <= {"path", "text", "task", "Q", "question"}
            assert isinstance(e["path"], str) and not Path(e["path"]).is_absolute()
            assert isinstance(e["text"], str) and e["text"].strip() == e["text"] and e["text"]
            assert re.fullmatch(r"[a-z' -]+", e["text"]), e["text"]  # lower case, no punctuation
            assert e["task"] in prompts
            if e["task"] == "QA":
                assert e["Q"] == "" and e["question"] and e["text"] not in ("", e["question"])
            else:
                assert "Q" not in e and "question" not in e
            seen.add(e["task"])
    assert seen == expected_tasks
    assert {e["task"] for e in _load(paths["sqa_test"])} == {"QA"}


def test_audio_files_are_16k_mono_nonsilent(corpus):
    root, paths = corpus
    n = 0
    for path in paths.values():
        for rel in {e["path"] for e in _load(path)}:
            wav = path.parent / rel
            info = sf.info(wav)
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16"), rel
            assert J.MIN_SECONDS <= info.duration <= J.MAX_SECONDS, (rel, info.duration)
            x, _ = sf.read(wav)
            rms = float(np.sqrt(np.mean(x ** 2)))
            assert 10 ** (-40 / 20) < rms < 0.5, (rel, rms)
            assert np.max(np.abs(x)) <= 0.951
            n += 1
    assert n == 14 + 8 + 2  # train (3+3+4+2+2) + test (2+2+2+1+1) + sqa_test


def test_summary_matches_annotations(corpus):
    root, paths = corpus
    summary = json.loads((root / "summary.json").read_text())
    total = 0.0
    for split, path in paths.items():
        ann = _load(path)
        s = summary["splits"][split]
        tasks: dict[str, int] = {}
        for e in ann:
            tasks[e["task"]] = tasks.get(e["task"], 0) + 1
        assert s["tasks"] == tasks and s["entries"] == len(ann)
        seconds = sum(sf.info(path.parent / p).duration for p in {e["path"] for e in ann})
        assert s["clips"] == len({e["path"] for e in ann})
        assert abs(s["hours"] * 3600 - seconds) < 1.0
        total += seconds
    assert abs(summary["total_hours"] * 3600 - total) < 1.0
    assert summary["seed"] == 0 and summary["sqa_family"] == T.SQA_FAMILY


# ----------------------------------------------------------------------------- reproducibility


def test_same_seed_is_byte_identical_for_any_worker_count(corpus, corpus_again):
    a, b = _files(corpus[0]), _files(corpus_again)
    assert a.keys() == b.keys()
    assert sum(k.endswith(".wav") for k in a) == 24
    different = [k for k in a if a[k] != b[k]]
    assert different == []


def test_other_seed_gives_other_corpus(corpus, tmp_path):
    S.synth_corpus(tmp_path, seed=1, workers=1, progress=False, splits=("train",),
                   n_speech=2, n_qa=0, n_events=2, n_music=1, n_mix=0, n_sqa=0)
    a = _files(corpus[0])
    b = _files(tmp_path)
    assert (tmp_path / "train.json").read_text() != (corpus[0] / "train.json").read_text()
    for rel in ("train/speech/speech_00000.wav", "train/events/events_00000.wav",
                "train/music/music_00000.wav"):
        assert a[rel] != b[rel], rel


# ----------------------------------------------------------------------------- held-out splits


def test_test_split_is_disjoint_from_train(corpus):
    root, _ = corpus
    train, test, sqa = _meta(root, "train"), _meta(root, "test"), _meta(root, "sqa_test")
    sentences = lambda m: {c["text"] for c in m if c["kind"] in ("speech", "mix")}  # noqa: E731
    variants = lambda m: {c["variant"] for c in m if "variant" in c}  # noqa: E731
    assert sentences(train) and sentences(test) and not sentences(train) & sentences(test)
    assert variants(train) and variants(test) and not variants(train) & variants(test)
    assert not variants(train) & variants(sqa)
    assert {c["family"] for c in sqa} == {T.SQA_FAMILY}
    assert T.SQA_FAMILY not in {c["family"] for c in train + test if c["kind"] == "qa"}


def test_held_out_pools_at_scale():
    """Plans only (no audio): 400 clips per split keep sentences, voices and QA items apart."""
    sentences = T.load_sentences()
    counts = dict(speech=400, qa=400, mix=100)
    train = J.plan_split("train", counts, 0, sentences, "/nonexistent", "x.sf2")
    test = J.plan_split("test", counts, 3, sentences, "/nonexistent", "x.sf2")
    for key in ("text", "variant", "question"):
        a = {j[key] for j in train if key in j}
        b = {j[key] for j in test if key in j}
        assert a and b and not a & b, key
    assert {j["family"] for j in train if j["kind"] == "qa"} == set(T.TRAINED_QA_FAMILIES)
    # train sentences are not reused while the pool lasts
    texts = [j["text"] for j in train if j["kind"] in ("speech", "mix")]
    assert len(set(texts)) == len(texts)


def test_qa_answers_are_correct():
    words = {T.number_words(i): i for i in range(101)}
    for forms, answer in T.QA_FAMILIES["arithmetic"]:
        m = re.fullmatch(r"what is (.+) (plus|minus|times) (.+)", forms[0])
        a, op, b = words[m.group(1)], m.group(2), words[m.group(3)]
        assert words[answer] == {"plus": a + b, "minus": a - b, "times": a * b}[op]
    assert T.number_words(42) == "forty two" and T.number_words(100) == "one hundred"
    assert dict((f[0], a) for f, a in T.QA_FAMILIES["capitals"])["what is the capital of france"] == "paris"


# ----------------------------------------------------------------------------- labels


def _f0(x: np.ndarray, sr: int = 16000) -> float:
    """Median autocorrelation pitch of the loud frames."""
    fr = int(0.04 * sr)
    out = []
    for i in range(0, len(x) - fr, fr):
        s = x[i:i + fr]
        if np.sqrt(np.mean(s ** 2)) < 0.1 * np.max(np.abs(x)):
            continue
        ac = np.correlate(s, s, "full")[fr - 1:]
        lo, hi = sr // 400, sr // 60
        k = lo + int(np.argmax(ac[lo:hi]))
        if ac[k] > 0.4 * ac[0]:
            out.append(sr / k)
    return float(np.median(out))


def test_gender_labels_match_voice_variants(tools, corpus):
    # 1) every variant's own espeak-ng voice file declares the gender we label it with
    data_dir = re.search(r"Data at:\s*(\S+)", subprocess.run(
        ["espeak-ng", "--version"], capture_output=True, text=True).stdout).group(1)
    for table in (J.TRAIN_VARIANTS, J.TEST_VARIANTS):
        for gender, names in table.items():
            for v in names:
                text = (Path(data_dir) / "voices" / "!v" / v).read_text(errors="replace")
                assert re.search(rf"^gender\s+{gender}\b", text, re.M), (v, gender)
    # 2) acoustically: the highest male voice is lower than the lowest female voice
    f0 = {}
    for gender, pitch in (("male", J.PITCH["male"][1]), ("female", J.PITCH["female"][0])):
        for v in J.TRAIN_VARIANTS[gender] + J.TEST_VARIANTS[gender]:
            f0[(gender, v)] = _f0(J.espeak("what is the capital of france", f"en-us+{v}", 160, pitch))
    male = max(f for (g, _), f in f0.items() if g == "male")
    female = min(f for (g, _), f in f0.items() if g == "female")
    assert male * 1.1 < female * 0.9, (male, female)  # holds through +-10 % speed perturbation
    # 3) corpus labels follow the variant
    root, paths = corpus
    for split in ("train", "test"):
        gender_of = {m["path"]: m["gender"] for m in _meta(root, split) if "gender" in m}
        ann = _load(paths[split])
        checked = 0
        for e in ann:
            if e["task"] == "gender_recognition":
                assert e["text"] == gender_of[e["path"]]
                checked += 1
            if e["task"] == "audiocaption" and e["path"] in gender_of:  # speech over events
                who = "a man" if gender_of[e["path"]] == "male" else "a woman"
                assert who in e["text"], e["text"]
        assert checked > 0


def _event_features(x: np.ndarray) -> np.ndarray:
    sr, fr = 16000, 320
    frames = x[: len(x) // fr * fr].reshape(-1, fr)
    db = 20 * np.log10(np.sqrt(np.mean(frames ** 2, 1)) + 1e-9)
    db -= db.max()
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / sr)
    edges = np.geomspace(40, 8000, 13)
    bands = np.array([spec[(f >= a) & (f < b)].sum() for a, b in zip(edges[:-1], edges[1:])])
    mag = np.abs(np.fft.rfft(frames * np.hanning(fr), axis=1)) + 1e-9
    flatness = np.exp(np.log(mag).mean(1)) / mag.mean(1)
    loud = db > -20
    return np.concatenate([np.log10(bands / bands.sum() + 1e-9),
                           [np.log10((spec * f).sum() / spec.sum()), loud.mean(),
                            5 * np.median(flatness[loud]), np.abs(np.diff(db)).mean() / 10]])


def test_sound_event_classes_are_distinguishable():
    """Leave-one-out nearest-centroid on simple spectral/envelope features separates the classes."""
    assert len(So.EVENT_NAMES) >= 8
    feats, labels = [], []
    for ci, name in enumerate(So.EVENT_NAMES):
        for k in range(5):
            x = So.render_event(name, np.random.default_rng([k, ci]), 2.5 + 0.5 * k)
            assert np.isfinite(x).all() and abs(np.sqrt(np.mean(x ** 2)) - 1) < 1e-6
            feats.append(_event_features(x))
            labels.append(ci)
    z = np.array(feats)
    z = (z - z.mean(0)) / (z.std(0) + 1e-9)
    y = np.array(labels)
    right = 0
    for i in range(len(z)):
        keep = np.arange(len(z)) != i
        cents = np.array([z[keep & (y == c)].mean(0) for c in range(len(So.EVENT_NAMES))])
        right += int(np.argmin(((cents - z[i]) ** 2).sum(1)) == y[i])
    assert right / len(z) >= 0.85, right / len(z)
    # and the same seed gives the same clip, another seed another clip
    a = So.render_event("siren", np.random.default_rng(5), 2.0)
    assert np.array_equal(a, So.render_event("siren", np.random.default_rng(5), 2.0))
    assert not np.array_equal(a, So.render_event("siren", np.random.default_rng(6), 2.0))


def test_music_labels_and_midi(corpus, tmp_path):
    assert len({p for p, *_ in Mu.INSTRUMENTS.values()}) == len(Mu.INSTRUMENTS) >= 8
    root, paths = corpus
    meta = {m["path"]: m for m in _meta(root, "train") + _meta(root, "test") if m["kind"] == "music"}
    assert meta
    for m in meta.values():  # a real piece, not a lone note
        assert m["n_notes"] >= 3 and m["bars"] >= 2 and m["seconds"] >= 2.0, m
    for split in ("train", "test"):
        for e in _load(paths[split]):
            if e["path"] not in meta:
                continue
            m = meta[e["path"]]
            if e["task"] == "instrument":
                assert e["text"] == m["instrument"]
            elif e["task"] == "music_description":
                assert m["instrument"] in e["text"] and f"{m['mode']} key" in e["text"]
                assert m["tempo"] in e["text"]
                lo, hi = Mu.TEMPI[m["tempo"]]
                assert lo <= m["bpm"] <= hi
    # the MIDI writer: a valid format-0 file that fluidsynth renders to the notes' length
    notes = Mu.compose(np.random.default_rng(0), instrument="flute", mode="minor", texture="melody",
                      root=2, bars=2)
    assert notes and all(60 <= p <= 96 for _, _, p, _ in notes)
    mid = tmp_path / "x.mid"
    Mu.write_midi(mid, notes, tempo_bpm=120, program=73)
    raw = mid.read_bytes()
    assert raw[:4] == b"MThd" and raw[14:18] == b"MTrk" and raw.endswith(b"\xff\x2f\x00")
    x = Mu.render_midi(mid)
    assert max(start + length for start, length, _, _ in notes) <= 6.0  # 2 bars = 4 + 2 beats
    assert notes[-1][:2] == (4.0, 2.0)  # ends on a held tonic
    loud = np.nonzero(np.abs(x) > 10 ** (-30 / 20) * np.abs(x).max())[0]
    assert 2.9 <= loud[-1] / 16000 <= 4.0  # 2 bars = 6 beats at 120 bpm = 3 s, plus the release
    assert loud[0] / 16000 < 0.1  # the first note starts at once
    assert np.sqrt(np.mean(x ** 2)) > 1e-3
