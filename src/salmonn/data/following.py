"""Instruction-following rules (paper §4 "task over-fitting"): which answers follow their instruction.

An over-fitted model answers an untrained instruction as if it were a trained one: it transcribes
the spoken question instead of answering it, writes a one-line caption instead of a story, or
copies the English instead of translating. Each rule below decides, for one answer, whether it
followed the instruction. The same rules judge the corpus's LLM answers (data.spoken_qa), the stories stage 3
keeps (train.activation) and `salmonn eval`'s following rate (evaluation.following).

Sample fields the rules read (all optional; a missing field disables the check that needs it):
``transcript`` (what is said in the audio, e.g. the spoken question), ``Q`` or ``question``
(the text question of the prompt), ``caption`` (a caption of the audio), ``reference`` (the known
answer of a spoken question; the synthetic corpus's QA records with a ``question`` and a short ``text``
carry it as ``text``).

Spoken QA is scored strictly (an outside audit found that a garbled copy of the question and a trained
task's label passed as "following"): with a known answer the answer must contain it; without one it
must not be a near-echo (WER <= 0.5 against the question) nor a trained task's label ("male", "dog
barking", "piano"...).

Shared definitions:
- *empty*: no word characters after stripping.
- *refusal*: the first 12 words contain "sorry", "i cannot", "i can't", "i can not",
  "i am/i'm unable", "i am/i'm not able", "unable to", "as an ai" or "as a language model".
- *echo* of a source text: after Whisper English normalisation, the answer starts with the
  whole source text, or WER(reference=source, hypothesis=answer) < 0.3.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jiwer

from salmonn.data.normalize import normalize_english, simple_words

Sample = Mapping[str, Any]
Rule = Callable[[str, Sample], bool]

ECHO_WER = 0.3
NEAR_ECHO_WER = 0.5  # spoken QA: "what is the object of the hand" for "what is the opposite of hard" is 0.5
REFERENCE_MAX_WORDS = 4  # a synthetic QA record's ``text`` this short is its known answer
STORY_MIN_WORDS = 30
STORY_MIN_SENTENCES = 2
KEYWORD_MAX_WORDS = 40
SCRIPT_SHARE = 0.5

_REFUSAL = re.compile(
    r"\b(sorry|i cannot|i can't|i can not|i am unable|i'm unable|i am not able|i'm not able|"
    r"unable to|as an ai|as a language model)\b")
_SENTENCE_END = re.compile(r"[.!?。！？]+")
_EN_FUNCTION = frozenset("the is are and of to it this that with for you on what have be".split())
_DE_FUNCTION = frozenset("der die das und ist ich nicht zu den mit es ein eine sie wir sind von auf "
                         "für dem im auch wie".split())
SOURCE_FIELDS = ("transcript", "Q", "question", "caption")


def is_empty(answer: str | None) -> bool:
    """True when the answer has no word characters."""
    return not answer or not re.search(r"\w", answer)


def is_refusal(answer: str) -> bool:
    """True when one of the refusal phrases appears in the first 12 words."""
    head = " ".join(answer.lower().replace("’", "'").split()[:12])
    return bool(_REFUSAL.search(head))


def is_echo(answer: str, source: str) -> bool:
    """True when the answer starts with, or is within WER 0.3 of, the source text."""
    src, ans = normalize_english(source), normalize_english(answer)
    if not src:
        return False
    if ans == src or ans.startswith(src + " "):
        return True
    return bool(ans) and jiwer.process_words(src, ans).wer < ECHO_WER


def _sources(sample: Sample, fields: Sequence[str] = SOURCE_FIELDS) -> list[str]:
    """Non-empty string values of ``fields`` in the sample."""
    return [v for f in fields if isinstance(v := sample.get(f), str) and v.strip()]


def _answers_something(answer: str, sample: Sample, fields: Sequence[str] = SOURCE_FIELDS) -> bool:
    """Not empty, not a refusal and not an echo of any source text."""
    if is_empty(answer) or is_refusal(answer):
        return False
    return not any(is_echo(answer, s) for s in _sources(sample, fields))


def count_sentences(text: str) -> int:
    """Number of sentences (split on . ! ? and CJK stops) with at least 3 words."""
    return sum(len(simple_words(p)) >= 3 for p in _SENTENCE_END.split(text))


def script_share(text: str, script: str) -> float:
    """Share of letters that belong to ``script`` ('han', 'kana', 'latin')."""
    letters = [c for c in text if unicodedata.category(c).startswith("L")]
    if not letters:
        return 0.0
    return sum(_script_of(c) == script for c in letters) / len(letters)


def _script_of(char: str) -> str:
    """Coarse script of one letter: 'han', 'kana', 'hangul', 'latin' or 'other'."""
    name = unicodedata.name(char, "")
    for key, script in (("CJK", "han"), ("HIRAGANA", "kana"), ("KATAKANA", "kana"),
                        ("HANGUL", "hangul"), ("LATIN", "latin")):
        if name.startswith(key):
            return script
    return "other"


@functools.cache
def trained_labels() -> frozenset[str]:
    """Answers of SALMONN-mini's closed-set tasks (genders, sound events, instruments), normalised."""
    from salmonn.data.music import INSTRUMENT_NAMES
    from salmonn.data.sounds import EVENT_NAMES

    return frozenset(normalize_english(x) for x in ("male", "female", "man", "woman", *EVENT_NAMES, *INSTRUMENT_NAMES))


def is_label(answer: str) -> bool:
    """True when the answer is just a trained task's label ("male", "dog barking", "a piano.")."""
    words = [w for w in normalize_english(answer).split() if w not in ("a", "an", "the")]
    return bool(words) and " ".join(words) in trained_labels()


def is_near_echo(answer: str, source: str) -> bool:
    """An echo, or a garbled copy of the source (WER <= 0.5 against it)."""
    if is_echo(answer, source):
        return True
    src, ans = normalize_english(source), normalize_english(answer)
    return bool(src and ans) and jiwer.process_words(src, ans).wer <= NEAR_ECHO_WER


def qa_reference(sample: Sample) -> str | None:
    """The known answer of a spoken question: ``reference``, or a synthetic QA record's short ``text``."""
    ref = sample.get("reference")
    if isinstance(ref, str) and ref.strip():
        return ref
    text = sample.get("text")
    if "question" in sample and isinstance(text, str) and 0 < len(simple_words(text)) <= REFERENCE_MAX_WORDS:
        return text
    return None


def contains_answer(answer: str, reference: str) -> bool:
    """True when the reference's normalised words occur, in order and contiguous, in the answer's."""
    ref, ans = normalize_english(reference).split(), normalize_english(answer).split()
    return bool(ref) and any(ans[i:i + len(ref)] == ref for i in range(len(ans) - len(ref) + 1))


def follows_spoken_qa(answer: str, sample: Sample) -> bool:
    """Spoken/text QA: contains the known answer (if any); never empty, a refusal, a near-echo of the
    transcript/question/Q (WER <= 0.5) or a trained task's label."""
    if is_empty(answer) or is_refusal(answer) or is_label(answer):
        return False
    if any(is_near_echo(answer, s) for s in _sources(sample)):
        return False
    reference = qa_reference(sample)
    return reference is None or contains_answer(answer, reference)


def follows_story(answer: str, sample: Sample) -> bool:
    """Story: >= 30 words, >= 2 sentences of >= 3 words, not a refusal, not an echo of caption/transcript."""
    if len(simple_words(answer)) < STORY_MIN_WORDS or count_sentences(answer) < STORY_MIN_SENTENCES:
        return False
    return _answers_something(answer, sample, ("caption", "transcript"))


def follows_keywords(answer: str, sample: Sample) -> bool:
    """Keywords: answers something and is at most half the transcript's words (40 words if unknown)."""
    if not _answers_something(answer, sample):
        return False
    transcript = _sources(sample, ("transcript",))
    limit = len(simple_words(transcript[0])) / 2 if transcript else KEYWORD_MAX_WORDS
    return len(simple_words(answer)) <= limit


def follows_slot_filling(answer: str, sample: Sample) -> bool:
    """Slot filling: follows unless empty, a refusal, or an echo of the transcript/Q."""
    return _answers_something(answer, sample)


def follows_coreasoning(answer: str, sample: Sample) -> bool:
    """Speech-audio co-reasoning: not empty/refusal, not an echo of the transcript, Q or caption."""
    return _answers_something(answer, sample)


def translation_rule(lang: str) -> Rule:
    """Build the target-script rule for translation into ``lang`` ('zh', 'ja', 'de', ...)."""

    def rule(answer: str, sample: Sample) -> bool:
        if not _answers_something(answer, sample, ("transcript",)):
            return False
        if lang == "zh":
            return script_share(answer, "han") >= SCRIPT_SHARE
        if lang == "ja":
            jp = script_share(answer, "han") + script_share(answer, "kana")
            return jp >= SCRIPT_SHARE and script_share(answer, "kana") > 0
        if script_share(answer, "latin") < 0.9:
            return False
        words = simple_words(answer)
        return lang != "de" or sum(w in _DE_FUNCTION for w in words) >= sum(w in _EN_FUNCTION for w in words)

    rule.__doc__ = (f"Translation to {lang}: answers something, is no echo of the transcript, and "
                    + {"zh": ">= 50% of letters are Han.",
                       "ja": ">= 50% of letters are Han or kana, with at least one kana.",
                       "de": ">= 90% Latin letters and no more English than German function words."}
                    .get(lang, ">= 90% Latin letters."))
    return rule


FOLLOWING_RULES: dict[str, Rule] = {
    "QA": follows_spoken_qa,
    "sqqa": follows_spoken_qa,
    "inference_QA": follows_spoken_qa,
    "audio_story_telling": follows_story,
    "story": follows_story,
    "keyword_extraction": follows_keywords,
    "slot_filling": follows_slot_filling,
    "speech_audio_coreasoning": follows_coreasoning,
    "translation_ec": translation_rule("zh"),
    "translation_ej": translation_rule("ja"),
    "translation_ed": translation_rule("de"),
}


def following_flags(task: str, answers: Sequence[str], samples: Sequence[Sample] | None = None) -> list[bool]:
    """Apply the task's rule to every answer (samples give the fields the rule reads)."""
    if task not in FOLLOWING_RULES:
        raise KeyError(f"no following rule for task {task!r}; known: {sorted(FOLLOWING_RULES)}")
    rule = FOLLOWING_RULES[task]
    samples = samples if samples is not None else [{}] * len(answers)
    return [rule(a or "", s or {}) for a, s in zip(answers, samples, strict=True)]
