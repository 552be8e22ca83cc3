"""Spoken factual QA (issue 15): same answer as the LLM's text answer, echo rate, the cached text answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from salmonn.evaluation import compute_metrics
from salmonn.evaluation import run as R
from salmonn.evaluation import spoken_facts as S
from salmonn.jsonl import read_jsonl, write_jsonl

from ..conftest import AUDIO
from .fakes import FakeModel

# sqa_test records as the corpus writes them: espeak (text = the known answer) and neural (reference = the known
# answer, text = SmolLM2's answer)
HARD = {"path": "/clips/hard.wav", "task": "QA", "Q": "", "question": "what is the opposite of hard", "text": "soft"}
UP = {"path": "/clips/up.wav", "task": "QA", "Q": "", "question": "tell me the opposite of up", "reference": "down",
      "text": "The opposite of up is down.", "llm_correct": True}
PROMPT = "Answer the question in the audio."  # SALMONN-mini's QA test prompt (the question is in the audio)
WIN = {"path": "/clips/win.wav", "task": "QA", "Q": "", "question": "tell me the opposite of win", "text": "lose"}
TEXT_ANSWERS = {HARD["question"]: "The opposite of hard is soft.", UP["question"]: "The opposite of up is down.",
                WIN["question"]: "The opposite of win is victory."}  # the LLM gets `win` wrong as text


class CountingAnswerer:
    """A text LLM stand-in that records every call."""

    key = "counting-llm"

    def __init__(self, answers=TEXT_ANSWERS):
        self.answers, self.calls = answers, []

    def __call__(self, questions):
        self.calls.append(list(questions))
        return [self.answers.get(q, "I do not know.") for q in questions]


def scored(answer: str, record: dict = HARD, text_answers=TEXT_ANSWERS) -> dict:
    return S.score([answer], [record], text_answers)


# ------------------------------------------------------------------ the rules


@pytest.mark.parametrize("answer", ["soft", "The opposite of hard is soft.", "it is soft"])
def test_a_correct_answer_is_the_same_answer(answer):
    out = scored(answer)
    assert out["per_sample"] == [{"echo": False, "text_answer": TEXT_ANSWERS[HARD["question"]],
                                  "text_correct": True, "same": True}]
    assert out["metrics"] == {"echo_rate": 0.0, "same_answer_rate": 1.0}


@pytest.mark.parametrize("answer, echo", [
    ("what is the opposite of hard", True),           # the question itself
    ("What is the opposite of hard? Soft.", True),    # starts with the question, even with the answer after it
    ("what is the object of the hand", True),         # a garbled copy (the audit's example)
    ("male", False), ("dog barking", False),          # trained-task labels
    ("hard", False), ("The opposite of hard is cold.", False), ("", False)])  # wrong or no answer
def test_echoes_labels_and_wrong_answers_are_not_the_same_answer(answer, echo):
    out = scored(answer)
    assert out["per_sample"][0]["same"] is False and out["per_sample"][0]["echo"] is echo
    assert out["metrics"] == {"echo_rate": float(echo), "same_answer_rate": 0.0}


def test_rates_counts_and_which_questions_are_kept():
    records = [HARD, UP, WIN, HARD, {"path": "/clips/t.wav", "task": "QA", "Q": "what is this?", "text": "a dog"},
               {"path": "/clips/s.wav", "task": "sqqa", "transcript": "How high is the mountain?"}]
    answers = ["soft", "what is the opposite of up", "lose", "male", "a dog", "how high is the mountain"]
    out = compute_metrics("QA", answers, [r.get("text") for r in records], records, text_answers=TEXT_ANSWERS)
    # kept: HARD twice and UP (the LLM answers WIN wrongly as text, so WIN is not scored though its audio answer
    # is right); same: the first HARD only. Spoken questions: all but the text question (Q), 5; echoes: 2.
    assert out["details"]["spoken_qa"] == {"questions": 5, "with_known_answer": 4, "kept": 3, "same": 1,
                                           "echoes": 2}
    assert out["metrics"]["same_answer_rate"] == pytest.approx(1 / 3)
    assert out["metrics"]["echo_rate"] == pytest.approx(2 / 5)
    assert out["per_sample"][2]["text_correct"] is False and "same" not in out["per_sample"][2]
    assert "echo" not in out["per_sample"][4]  # a typed question (Q) is no spoken question
    assert out["per_sample"][5] == {"follows": False, "echo": True}  # no known answer: echo only


def test_without_text_answers_only_the_echo_rate_is_computed():
    out = compute_metrics("QA", ["soft", "what is the opposite of up"], None, [HARD, UP])
    assert out["metrics"]["echo_rate"] == 0.5 and "same_answer_rate" not in out["metrics"]
    assert out["not_computed"]["same_answer_rate"].startswith("not computed: the model has no text LLM")
    wrong = compute_metrics("QA", ["lose"], None, [WIN], text_answers=TEXT_ANSWERS)
    assert "answers none of the 1 typed questions correctly" in wrong["not_computed"]["same_answer_rate"]
    typed_only = compute_metrics("QA", ["x"], None, [{"path": "a.wav", "Q": "q?", "text": "a"}], text_answers={})
    assert "echo_rate" not in typed_only["metrics"] and "same_answer_rate" not in typed_only["not_computed"]


def test_targets():
    assert S.target_met("same_answer_rate", 0.6) and not S.target_met("same_answer_rate", 0.59)
    assert S.target_met("echo_rate", 0.05) and not S.target_met("echo_rate", 0.06)
    assert S.target_text("same_answer_rate") == ">= 0.60 (issue 15)" and S.target_met("wer", 1.0) is None


# ------------------------------------------------------------------ the text answers and their cache


def test_text_answers_are_cached_and_not_asked_again(tmp_path: Path):
    cache, llm = tmp_path / "text_answers.jsonl", CountingAnswerer()
    questions = [HARD["question"], UP["question"], HARD["question"]]
    first = S.text_answers(llm, questions, cache)
    assert first == {q: TEXT_ANSWERS[q] for q in questions}
    assert llm.calls == [[HARD["question"], UP["question"]]]  # once per question
    assert S.text_answers(llm, questions, cache) == first and len(llm.calls) == 1  # reused, not regenerated
    S.text_answers(llm, [UP["question"], WIN["question"]], cache)
    assert llm.calls[1:] == [[WIN["question"]]]  # only the new question
    other = CountingAnswerer({q: "no idea" for q in TEXT_ANSWERS})
    other.key = "another-llm"
    assert S.text_answers(other, [HARD["question"]], cache) == {HARD["question"]: "no idea"}  # per LLM
    with cache.open("a") as f:
        f.write('{"llm": "counting-llm", "question": "cut off by a ki')  # a kill mid-line
    fresh = CountingAnswerer()
    assert S.text_answers(fresh, [HARD["question"], "what is the opposite of wet"], cache)[HARD["question"]] \
        == TEXT_ANSWERS[HARD["question"]]
    assert fresh.calls == [["what is the opposite of wet"]]
    lines = [json.loads(line) for line in cache.read_text().splitlines()[-1:]]  # the cut line stays, ended
    assert lines == [{"llm": "counting-llm", "question": "what is the opposite of wet", "answer": "I do not know."}]


def test_salmonn_eval_scores_spoken_qa_beside_its_targets_and_reuses_text_answers(tmp_path: Path):
    records = [HARD, UP, WIN, dict(HARD, path="/clips/hard2.wav")]
    manifest = tmp_path / "sqa_test.jsonl"
    write_jsonl(manifest, records)
    replies = {"hard": "The opposite of hard is soft.", "up": "tell me the opposite of up", "win": "lose",
               "hard2": "male"}
    llm, out = CountingAnswerer(), tmp_path / "out"
    summary = R.evaluate(FakeModel(answer=lambda name, prompt: replies[name]), manifest, "QA", out,
                         lora_scales="4,2", prompt=PROMPT, progress=False, text_answerer=llm)
    assert llm.calls == [[HARD["question"], UP["question"], WIN["question"]]]  # one call for both scalings
    run = summary["runs"][0]
    assert run["metrics"]["same_answer_rate"] == pytest.approx(1 / 3)  # kept: hard, up, hard2; same: hard
    assert run["metrics"]["echo_rate"] == 0.25
    assert run["details"]["spoken_qa"] == {"questions": 4, "with_known_answer": 4, "kept": 3, "same": 1,
                                           "echoes": 1}
    rows = read_jsonl(out / "QA.scaling-4.jsonl", strict=True)
    assert [r["score"].get("same") for r in rows] == [True, False, None, False]
    report = (out / "report.md").read_text()
    assert "## Spoken factual QA" in report
    assert ("| QA | 4 | 4 | 4 | 3 | 0.333 | 1 / 3 | >= 0.60 (issue 15) | not met | 0.250 | 1 / 4 | "
            "<= 0.05 (issue 15) | not met |") in report
    assert "| QA | same_answer_rate | fraction | 4 | 0.333 | 0.333 |" in report
    assert len((out / S.CACHE_NAME).read_text().splitlines()) == 3
    again = CountingAnswerer()
    R.evaluate(FakeModel(answer=lambda name, prompt: replies[name]), manifest, "QA", out, lora_scales="1",
               prompt=PROMPT, progress=False, text_answerer=again)
    assert again.calls == []  # a rerun (another scaling) takes the text answers from the cache


# ------------------------------------------------------------------ the backbone answerer on the fixture model


def test_backbone_answerer_is_the_llm_alone_greedy_and_cached(tiny_model, tmp_path: Path, monkeypatch):
    answerer = S.backbone_answerer(tiny_model)
    assert S.backbone_answerer(FakeModel()) is None
    questions = [HARD["question"], "tell me the opposite of up"]
    try:
        tiny_model.set_lora_scale(0.5)
        at_half = answerer(questions)
        assert tiny_model.lora_scale == 0.5  # restored
        tiny_model.set_lora_scale(1.0)
        at_one = answerer(questions)
    finally:
        tiny_model.set_lora_scale(1.0)
    assert at_half == at_one and all(isinstance(a, str) and a for a in at_one)  # LoRA off: same text answers
    assert answerer(questions[:1]) == at_one[:1]  # batching (left padding) does not change an answer
    calls = []
    generate = type(tiny_model.causal_lm).generate
    monkeypatch.setattr(type(tiny_model.causal_lm), "generate",
                        lambda self, *a, **k: calls.append(k["input_ids"].shape[0]) or generate(self, *a, **k))
    cache = tmp_path / S.CACHE_NAME
    assert S.text_answers(answerer, questions, cache) == dict(zip(questions, at_one))
    assert calls == [2]
    assert S.text_answers(S.backbone_answerer(tiny_model), questions, cache) == dict(zip(questions, at_one))
    assert calls == [2]  # the LLM is not called again


def test_salmonn_eval_asks_the_models_own_llm(tiny_model, tmp_path: Path):
    clip = str(AUDIO / "mountain.wav")
    manifest = tmp_path / "m.jsonl"
    write_jsonl(manifest, [dict(HARD, path=clip)])
    summary = R.evaluate(tiny_model, manifest, "QA", tmp_path / "out", lora_scales="4", prompt=PROMPT,
                         decoding={"num_beams": 1, "max_new_tokens": 4}, progress=False)
    cached = read_jsonl(tmp_path / "out" / S.CACHE_NAME, strict=True)
    assert [c["question"] for c in cached] == [HARD["question"]]
    assert cached[0]["llm"] == S.BackboneAnswerer(tiny_model).key
    assert summary["runs"][0]["details"]["spoken_qa"]["questions"] == 1
    assert "echo_rate" in summary["runs"][0]["metrics"]
