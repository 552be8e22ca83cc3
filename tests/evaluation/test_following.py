"""Following-rule, diversity and repeat-rate tests on positive and negative examples."""

from __future__ import annotations

import pytest

from salmonn.evaluation import FOLLOWING_RULES, compute_metrics, distinct_n, following_rate, repeat_rate
from salmonn.data import following as F  # the rules
from salmonn.evaluation import following as E  # the rates
from salmonn.evaluation import metrics as M

QUESTION = {"transcript": "What is the capital of France?"}
STORY = ("The rain began to fall softly on the old tin roof. Inside, a little dog curled up by the fire "
         "and listened to the drops. Far away, thunder rolled over the hills, and the dog dreamed of "
         "sunny meadows where it could run all day.")


def test_refusal_and_empty():
    assert F.is_refusal("I'm sorry, but I cannot answer that.")
    assert F.is_refusal("As an AI, I do not have ears.")
    assert not F.is_refusal("The capital of France is Paris.")
    assert F.is_empty("  ...  ") and F.is_empty("") and not F.is_empty("ok")


@pytest.mark.parametrize("answer, follows", [
    ("The capital of France is Paris.", True),       # 4 edits / 6 words vs question -> not an echo
    ("Paris.", True),
    ("what is the capital of france", False),        # transcript of the question
    ("What is the capital of France? Paris.", False),  # starts with the question
    ("what is the capitol of france", False),        # 1/6 = 0.17 < 0.3
    ("", False),
    ("I'm sorry, I cannot answer.", False),
])
def test_spoken_qa_rule(answer: str, follows: bool):
    assert FOLLOWING_RULES["sqqa"](answer, QUESTION) is follows
    assert FOLLOWING_RULES["QA"](answer, {"Q": QUESTION["transcript"]}) is follows


OPPOSITE = {"question": "what is the opposite of hard", "Q": "", "text": "soft", "task": "QA"}  # a sqa_test record
SUM = {"question": "what is two plus eight", "reference": "ten", "text": "Two plus eight is ten."}  # neural QA
OPEN = {"question": "what is a bicycle used for", "text": "A bicycle is used for riding from place to place."}


@pytest.mark.parametrize("answer, sample, follows", [
    ("soft", OPPOSITE, True),
    ("The opposite of hard is soft.", OPPOSITE, True),
    ("what is the object of the hand", OPPOSITE, False),   # the audit's garbled copy: WER 0.5, scored as following before
    ("what is the opposite of soft", OPPOSITE, False),     # contains the answer, but is a near-echo
    ("hard", OPPOSITE, False),                             # wrong answer
    ("male", OPPOSITE, False),                             # a trained task's label (True before)
    ("dog barking", OPPOSITE, False),
    ("It is 10.", SUM, True),                              # numbers normalised: "ten" == "10"
    ("two plus eight is eleven", SUM, False),
    ("You use it for riding to work.", OPEN, True),          # no reference: anything that answers
    ("A piano.", OPEN, False),                             # label with an article
    ("female", OPEN, False),
    ("what is the bicycle used for", OPEN, False),         # near-echo without a reference
    ("what is a bicycle", OPEN, False),                    # WER 0.33 of the question
])
def test_spoken_qa_is_scored_against_references_and_rejects_labels_and_near_echoes(answer, sample, follows):
    assert F.follows_spoken_qa(answer, sample) is follows


def test_labels_come_from_the_trained_tasks():
    assert F.is_label("Dog barking.") and F.is_label("a violin") and F.is_label("Female")
    assert not F.is_label("a dog is barking in the yard") and not F.is_label("paris")


def test_story_rule():
    rule = FOLLOWING_RULES["audio_story_telling"]
    assert len(STORY.split()) >= 30 and rule(STORY, {"caption": "Rain falls on a roof while a dog sleeps."})
    assert not rule("Rain falls on a roof while a dog sleeps.", {})            # caption-like, too short
    assert not rule(" ".join(["rain falls, a dog sleeps"] * 8), {})          # 40 words but one sentence
    assert not rule(STORY, {"caption": STORY})                                # echo of the caption


@pytest.mark.parametrize("task, answer, sample, follows", [
    ("translation_ec", "今天天气很好。", {}, True),
    ("translation_ec", "The weather is nice today.", {}, False),
    ("translation_ej", "今日は良い天気です。", {}, True),
    ("translation_ej", "今天天气很好", {}, False),                    # Han only, no kana: Chinese
    ("translation_ed", "Das Wetter ist heute schön.", {"transcript": "The weather is nice today."}, True),
    ("translation_ed", "The weather is nice today.", {"transcript": "the weather is nice today"}, False),
    ("translation_ed", "It is a nice day with the sun.", {}, False),  # English function words win
    ("translation_ed", "天气很好", {}, False),                          # not Latin script
])
def test_translation_script_rules(task: str, answer: str, sample: dict, follows: bool):
    assert FOLLOWING_RULES[task](answer, sample) is follows


def test_keyword_and_slot_rules():
    sample = {"transcript": "In this paper we study speech recognition with large language models and "
                            "show that adapters improve accuracy on noisy data sets"}
    assert FOLLOWING_RULES["keyword_extraction"]("speech recognition, language models, adapters", sample)
    assert not FOLLOWING_RULES["keyword_extraction"](sample["transcript"], sample)
    assert not FOLLOWING_RULES["keyword_extraction"](" ".join(["word"] * 15), sample)  # > half of 24 words
    slot = {"transcript": "wake me up at seven tomorrow"}
    assert FOLLOWING_RULES["slot_filling"]("time: seven; date: tomorrow", slot)
    assert not FOLLOWING_RULES["slot_filling"]("Wake me up at seven tomorrow.", slot)


def test_rules_have_docstrings_and_cover_registry_tasks():
    assert all(rule.__doc__ and rule.__doc__.strip() for rule in FOLLOWING_RULES.values())
    used = {t for t, scorers in M.TASK_METRICS.items() if M._following_scorer in scorers}
    assert used <= set(FOLLOWING_RULES)


def test_following_rate():
    answers = ["Paris.", "what is the capital of france", "", "It is Paris, of course."]
    assert following_rate("sqqa", answers, [QUESTION] * 4) == 0.5
    with pytest.raises(KeyError):
        following_rate("asr", answers)


def test_distinct_n_hand_case():
    texts = ["a b a b", "A, b c."]
    # bigrams: (a b) (b a) (a b) | (a b) (b c) -> 3 unique of 5 -> 60 %
    assert distinct_n(texts, 2) == pytest.approx(60.0)
    # unigrams: a b a b a b c -> 3 unique of 7
    assert distinct_n(texts, 1) == pytest.approx(300 / 7)
    assert distinct_n(["", "one"], 2) == 0.0


def test_loops_and_repeat_rate():
    assert E.has_loop("the dog the dog the dog the dog")       # "the dog the dog" at 0, 2, 4
    assert not E.has_loop("the dog the dog the dog")           # only twice
    assert E.has_loop("no no no no no no") and not E.has_loop("no no no no no")
    texts = ["A cat.", "a cat", "a dog barks", "x y z w x y z w x y z w", ""]
    # flags: duplicate, duplicate, -, loop ("x y z w" 3 times), empty (not a duplicate) -> 3/5
    assert E.repeat_flags(texts) == [True, True, False, True, False]
    assert repeat_rate(texts) == pytest.approx(0.6)


def test_story_task_through_compute_metrics():
    answers = [STORY, "A dog sleeps.", STORY]
    out = compute_metrics("audio_story_telling", answers, None, [{}, {}, {}])
    m = out["metrics"]
    assert m["following_rate"] == pytest.approx(2 / 3)
    assert m["repeat_rate"] == pytest.approx(2 / 3)  # the two identical stories
    assert m["diversity"] == pytest.approx(distinct_n(answers, 2)) and m["distinct_2"] == m["diversity"]
    assert [p["follows"] for p in out["per_sample"]] == [True, False, True]


def test_qa_reports_accuracy_not_computed():
    out = compute_metrics("sqqa", ["Paris."], ["Paris"], [QUESTION])
    assert out["metrics"] == {"following_rate": 1.0, "echo_rate": 0.0}  # spoken question: echo rate (spoken_facts)
    assert out["not_computed"]["accuracy"].startswith("not computed:")
