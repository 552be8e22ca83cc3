"""SALMONN-mini, the default model: real pretrained backbones + the shipped trained weights, on bundled clips.

The clips are held-out test items of `salmonn data synth` (unseen sentences and voices; the model never trained on
them), chosen before the model was trained: the first two clips of the test split for speech.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from salmonn.defaults import MINI_DIR, default_config_path

from .conftest import AUDIO as SHARED_AUDIO

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "audio"
CLIPS = json.loads((EXAMPLES / "clips.json").read_text())
SOUND_PROMPT = "What sound event is this? Answer with its name."
ASR_PROMPT = "Recognize the speech and give me the transcription."
SPEECH = ("speech_female.flac", "speech_male.flac")
MOUNTAIN = "what is the highest mountain in the world"  # ../shared/audio/mountain.wav, a real recording
# WER (%) the shipped weights score on each bundled speech clip (scripts/mini/card_numbers.py, stored in
# scripts/mini/results/card_numbers.json): female 90.0, male 46.2. Each bound must be stricter than what the best
# short answer that ignores the audio scores (test_each_bound_is_stricter_than_every_constant_answer): the female
# clip's 90 % is what the answer "a" scores, so its bound sits below that and the shipped weights fail it.
WER_BOUND = {"speech_female.flac": 85.0, "speech_male.flac": 51.5, "mountain.wav": 20.0}
SWAP_GAP = 30.0  # WER points an answer must lose when scored against the other clip's transcript
FIXED_SENTENCE = "the little boat drifted slowly toward the quiet harbor before dawn"
SHORT_ANSWERS = ("", "a", "the", "and", "yes", FIXED_SENTENCE)  # answers that ignore the audio
FEMALE_FAILS = pytest.mark.xfail(strict=True, reason=(
    "the shipped mini barely transcribes the female clip (WER 90 %: 'anstis wishion is atelectron meal', as bad as "
    "the answer 'a'), so it fails the clip's bound and scores only 10 points worse against the male clip's "
    "transcript (issues 15, 33); strict: fails once it does"))
SWAP_CHECKED = [pytest.param("speech_female.flac", marks=FEMALE_FAILS), "speech_male.flac"]


def _wer(hypothesis: str, reference: str) -> float:
    from salmonn.evaluation.metrics import english_words, error_rate
    return error_rate([hypothesis], [reference], english_words())[0]


@pytest.fixture(scope="module")
def mini():
    from salmonn import load_model
    return load_model(default_config_path())


def test_default_config_is_packaged_mini():
    assert default_config_path() == MINI_DIR / "config.yaml"
    assert (MINI_DIR / "trainable.safetensors").stat().st_size < 8_000_000  # trainable tensors only, fp16


def test_mini_names_the_sound_and_the_instrument(mini):
    dog, cello = mini.generate([str(EXAMPLES / "dog.flac"), str(EXAMPLES / "cello.flac")],
                               [SOUND_PROMPT, "Which instrument is playing?"])
    assert dog.text == CLIPS["dog.flac"]["sound_event"], dog.text
    assert cello.text == CLIPS["cello.flac"]["instrument"], cello.text


@pytest.fixture(scope="module")
def speech_answers(mini) -> dict[str, str]:
    answers = mini.generate([str(EXAMPLES / name) for name in SPEECH], ASR_PROMPT)
    return {name: a.text for name, a in zip(SPEECH, answers)}


def reference_of(name: str) -> str:
    return MOUNTAIN if name == "mountain.wav" else CLIPS[name]["asr"]


@pytest.fixture(scope="module")
def constant_answers(mini) -> tuple[str, ...]:
    """Answers that ignore the audio: short ones, the most common word of the bounded clips' transcripts, the trained
    no-speech answer and what the model itself answers for 3 s of silence."""
    from collections import Counter

    from salmonn.data.jobs import NO_SPEECH_TEXT
    from salmonn.evaluation.metrics import english_words
    words = Counter(w for name in WER_BOUND for w in english_words()(reference_of(name)))
    (silence,) = mini.generate([(np.zeros(3 * 16000, np.float32), 16000)], ASR_PROMPT)
    return (*SHORT_ANSWERS, words.most_common(1)[0][0], NO_SPEECH_TEXT, silence.text)


@pytest.mark.parametrize("name", WER_BOUND)
def test_each_bound_is_stricter_than_every_constant_answer(name, constant_answers):
    """A bound that an answer ignoring the audio meets checks nothing (issue 33: the female clip's old bound, 95 %,
    passed the answer "a" at 90 %)."""
    best = min(_wer(answer, reference_of(name)) for answer in constant_answers)
    assert WER_BOUND[name] < best, (name, WER_BOUND[name], best)


def test_a_bound_a_constant_meets_is_caught():
    """The female clip's old bound (95 %) fails the check above without the model's help."""
    assert min(_wer(answer, reference_of("speech_female.flac")) for answer in SHORT_ANSWERS) <= 95.0


BOUNDED_SPEECH = [pytest.param("speech_female.flac", marks=FEMALE_FAILS), "speech_male.flac"]


@pytest.mark.parametrize("name", BOUNDED_SPEECH)
def test_each_speech_clip_stays_within_its_bound(name, speech_answers):
    wer = _wer(speech_answers[name], CLIPS[name]["asr"])
    assert wer <= WER_BOUND[name], (name, wer, speech_answers[name])


@pytest.mark.parametrize("name", BOUNDED_SPEECH)
def test_ctc_rescoring_transcribes_each_clip_within_its_bound(mini, name):
    """The card's CTC rescoring (scripts/mini/results/ctc_rescore.json) on the shipped weights' spelling query: the
    clip within the bound greedy answers are held to (mini-v9 reads 15.4 % / 90 % here, greedy 46.2 % / 90 %)."""
    (answer,) = mini.generate([str(EXAMPLES / name)], ASR_PROMPT, num_beams=4, ctc_weight=0.4, ctc_length_bonus=2.0)
    assert _wer(answer.text, CLIPS[name]["asr"]) <= WER_BOUND[name], (name, answer.text)


@pytest.mark.parametrize("name", BOUNDED_SPEECH)
def test_transcribe_preset_transcribes_each_clip_within_its_bound(mini, name):
    """`--preset transcribe` (greedy's answer or the CTC best path, rescored: ctc_rescore_greedy.json) holds each
    clip to the bound greedy answers are held to."""
    (answer,) = mini.generate([str(EXAMPLES / name)], ASR_PROMPT, preset="transcribe")
    assert _wer(answer.text, CLIPS[name]["asr"]) <= WER_BOUND[name], (name, answer.text)


@pytest.mark.parametrize("name", SWAP_CHECKED)
def test_answers_score_clearly_worse_against_the_other_clip(name, speech_answers):
    """With the transcripts swapped the answer must lose SWAP_GAP points: it transcribes this clip, not any clip."""
    other = SPEECH[1 - SPEECH.index(name)]
    own, swapped = (_wer(speech_answers[name], CLIPS[n]["asr"]) for n in (name, other))
    assert swapped >= own + SWAP_GAP, (name, own, swapped, speech_answers[name])


def test_mini_listens_rather_than_guessing(mini):
    """The same question about two different clips gets different answers (a model that ignores the audio answers
    from the question alone, the same for both)."""
    dog, cello = mini.generate([str(EXAMPLES / "dog.flac"), str(EXAMPLES / "cello.flac")], SOUND_PROMPT)
    assert "dog" in dog.text and "dog" not in cello.text, (dog.text, cello.text)


def test_cli_answers_without_config():
    """The README's main command: `salmonn infer` without --config runs mini on a bundled clip."""
    salmonn = Path(sys.executable).with_name("salmonn")
    out = subprocess.run([str(salmonn), "infer", "--audio", str(EXAMPLES / "dog.flac"), "--prompt", SOUND_PROMPT],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "dog barking" in out.stdout, out.stdout


def test_audio_without_speech_is_named_as_such(mini):
    """Asked for a transcript of a dog or a cello, mini says there is no speech (v1 made one up); a speech clip
    still gets a transcript, so the answer depends on the audio."""
    from salmonn.data.jobs import NO_SPEECH_TEXT
    dog, cello, male = mini.generate([str(EXAMPLES / n) for n in ("dog.flac", "cello.flac", "speech_male.flac")],
                                     ASR_PROMPT)
    assert dog.text == cello.text == NO_SPEECH_TEXT, (dog.text, cello.text)
    assert NO_SPEECH_TEXT not in male.text, male.text


@pytest.fixture(scope="module")
def mountain_answers(mini) -> tuple[str, str]:
    clip = str(SHARED_AUDIO / "mountain.wav")
    answer, transcript = (mini.generate([clip], p)[0].text for p in ("Please answer the question in the audio.",
                                                                     ASR_PROMPT))
    return answer, transcript


def test_spoken_question_is_heard_not_repeated(mountain_answers):
    """The issue-15 example: a real recording asking 'what is the highest mountain in the world' got the question
    back from v1. The shipped mini hears the question (its transcript) and does not answer with it."""
    answer, transcript = mountain_answers
    assert _wer(transcript, MOUNTAIN) <= WER_BOUND["mountain.wav"], transcript
    assert _wer(answer, transcript) > 50.0, (answer, transcript)  # not a near-echo of the question


def test_spoken_question_is_answered(mountain_answers):
    """mini-v5 and v6 answer it ("... Mount Everest ..."); v4 did not (held-out spoken factual QA stays below the
    target: 14 / 100 same answers for v6, issue 15)."""
    answer, _ = mountain_answers
    assert "everest" in answer.lower(), answer
