"""Spoken factual QA (issue 15): does the answer from audio equal the LLM's own answer to the typed question?

A *spoken question* is a record whose question is said in the audio: it has a ``question`` (else a ``transcript``)
and no text question ``Q`` in the prompt. Its *known answer* is ``following.qa_reference`` (``reference``, or a
synthetic QA record's short ``text``).

Per spoken question with a known answer, the evaluated model's backbone LLM answers the typed question as text: no
audio, LoRA off (scale 0), greedy, the tokenizer's chat template where it has one (as ``salmonn.data.spoken_qa``
made the corpus's targets), else the config's ``prompt_template``. These answers are cached beside the eval
outputs (``text_answers.jsonl``), so a rerun or another LoRA scaling does not generate them again.

Metrics (fractions 0-1; counts in the run's ``details["spoken_qa"]``):

- ``same_answer_rate``: over the *kept* questions, those whose text answer contains the known answer
  (``following.contains_answer``: its normalised words, in order and contiguous), the share whose answer from
  audio also contains the known answer and is no near-echo of the question. A copy or a garbled copy of the
  question, a trained task's label ("male") or a wrong answer is never the same answer.
- ``echo_rate``: over all spoken questions, the share of answers from audio that are a near-echo of the question
  (``following.is_near_echo``: starts with it, or WER <= 0.5 against it).

Issue 15's targets: same answer in >= 60 %, echo rate <= 5 % (``TARGETS``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from salmonn.data.spoken_qa import BATCH_SIZE, MAX_NEW_TOKENS, clean_answer, typed_question
from salmonn.data import following
from salmonn.jsonl import append_jsonl, read_jsonl

if TYPE_CHECKING:
    from salmonn.model import SALMONN

CACHE_NAME = "text_answers.jsonl"
TASKS = ("QA", "sqqa")  # tasks whose records may be spoken questions
# metric -> (comparison, value, where the target comes from)
TARGETS: dict[str, tuple[str, float, str]] = {"same_answer_rate": (">=", 0.60, "issue 15"),
                                               "echo_rate": ("<=", 0.05, "issue 15")}


def spoken_question(sample: Mapping[str, Any]) -> str | None:
    """What is asked in the audio: ``question`` (else ``transcript``) when the prompt has no text question ``Q``."""
    q = sample.get("Q")
    if isinstance(q, str) and q.strip():
        return None
    for field in ("question", "transcript"):
        text = sample.get(field)
        if isinstance(text, str) and text.strip():
            return text.strip()
    return None


def known_answer(sample: Mapping[str, Any]) -> str | None:
    """The known answer of a spoken question (``following.qa_reference``), or None."""
    return following.qa_reference(sample)


def needs_text_answer(samples: Sequence[Mapping[str, Any]]) -> list[str]:
    """The spoken questions (with a known answer) whose typed version the LLM must answer, once each, in order."""
    return list(dict.fromkeys(q for s in samples if (q := spoken_question(s)) and known_answer(s)))


def target_met(metric: str, value: float) -> bool | None:
    """Whether ``value`` meets the metric's issue-15 target (None: the metric has none)."""
    if metric not in TARGETS:
        return None
    op, bound, _ = TARGETS[metric]
    return value >= bound if op == ">=" else value <= bound


def target_text(metric: str) -> str:
    """'>= 0.60 (issue 15)' or ''."""
    if metric not in TARGETS:
        return ""
    op, bound, where = TARGETS[metric]
    return f"{op} {bound:.2f} ({where})"


# ------------------------------------------------------------------ scoring


def score(answers: Sequence[str], samples: Sequence[Mapping[str, Any]],
          text_answers: Mapping[str, str] | None) -> dict[str, Any]:
    """Same-answer and echo rates of the answers from audio (see the module docstring for the rules).

    ``text_answers``: typed question -> the LLM's text answer (None: not available, same_answer_rate is not
    computed). Returns {"metrics", "not_computed", "per_sample", "details"}; samples that are not spoken
    questions get an empty per-sample entry; no spoken question at all gives no metric.
    """
    per: list[dict[str, Any]] = []
    questions = kept = same = echoes = with_answer = 0
    for answer, sample in zip(answers, samples, strict=True):
        question = spoken_question(sample)
        if question is None:
            per.append({})
            continue
        answer = answer or ""
        questions += 1
        echo = following.is_near_echo(answer, question)
        echoes += echo
        row: dict[str, Any] = {"echo": echo}
        reference = known_answer(sample)
        if reference is not None:
            with_answer += 1
            if text_answers is not None and question in text_answers:
                text = text_answers[question]
                text_ok = following.contains_answer(text, reference)
                row |= {"text_answer": text, "text_correct": text_ok}
                if text_ok:
                    kept += 1
                    row["same"] = same_answer(answer, question, reference)
                    same += row["same"]
        per.append(row)
    if not questions:
        return {"metrics": {}, "not_computed": {}, "per_sample": per, "details": {}}
    metrics: dict[str, float] = {}
    not_computed = {}
    if not with_answer:
        not_computed["same_answer_rate"] = "not computed: no spoken question has a known answer"
    elif text_answers is None:
        not_computed["same_answer_rate"] = ("not computed: the model has no text LLM to answer the typed "
                                            "questions (salmonn eval asks the evaluated model's backbone)")
    elif not kept:
        not_computed["same_answer_rate"] = (f"not computed: the LLM answers none of the {with_answer} typed "
                                            "questions correctly as text")
    else:
        metrics["same_answer_rate"] = same / kept
    metrics["echo_rate"] = echoes / questions
    details = {"questions": questions, "with_known_answer": with_answer, "kept": kept, "same": same,
               "echoes": echoes}
    return {"metrics": metrics, "not_computed": not_computed, "per_sample": per, "details": {"spoken_qa": details}}


def same_answer(answer: str, question: str, reference: str) -> bool:
    """The answer from audio gives the known answer (contains it) and is no near-echo of the question."""
    return following.contains_answer(answer, reference) and not following.is_near_echo(answer, question)


# ------------------------------------------------------------------ the LLM's text answers


class BackboneAnswerer:
    """The evaluated model's own LLM answering typed questions: no audio, LoRA off, greedy.

    ``key`` fingerprints what decides the text answers (LLM files, prompt form, length); the cache holds answers
    per key. Call it with a list of questions; it returns one cleaned answer (``spoken_qa.clean_answer``) each.
    """

    def __init__(self, model: "SALMONN", max_new_tokens: int = MAX_NEW_TOKENS, batch_size: int = BATCH_SIZE):
        self.model, self.max_new_tokens, self.batch_size = model, max_new_tokens, batch_size
        tokenizer = model.tokenizer
        self.chat = bool(getattr(tokenizer, "chat_template", None))
        m = model.config.model
        identity = {"llm": m.llama_path, "form": "chat" if self.chat else m.prompt_template,
                    "max_new_tokens": max_new_tokens, "greedy": True}
        self.key = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]

    def prompt_ids(self, question: str) -> list[int]:
        """Token ids of the typed question's prompt (chat template, else BOS + the config's template)."""
        tokenizer = self.model.tokenizer
        if self.chat:
            text = tokenizer.apply_chat_template([{"role": "user", "content": typed_question(question)}],
                                                 tokenize=False, add_generation_prompt=True)
            return tokenizer(text, add_special_tokens=False).input_ids
        text = self.model.config.model.prompt_template.format(typed_question(question))
        bos = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]  # as prompting.prompt_pieces
        return [*bos, *tokenizer(text, add_special_tokens=False).input_ids]

    def __call__(self, questions: Sequence[str]) -> list[str]:
        import torch

        model, tokenizer = self.model, self.model.tokenizer
        llm = model.causal_lm
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        scale = getattr(model, "lora_scale", 1.0)
        answers: list[str] = []
        try:
            if model.config.model.lora:
                model.set_lora_scale(0.0)  # the backbone as it was before training
            for start in range(0, len(questions), self.batch_size):
                rows = [self.prompt_ids(q) for q in questions[start:start + self.batch_size]]
                width = max(len(r) for r in rows)
                ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=model.device)
                mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=model.device)
                with torch.inference_mode():
                    out = llm.generate(input_ids=ids, attention_mask=mask, max_new_tokens=self.max_new_tokens,
                                       do_sample=False, num_beams=1, pad_token_id=pad)
                answers += [clean_answer(tokenizer.decode(row, skip_special_tokens=True)) for row in out[:, width:]]
        finally:
            if model.config.model.lora:
                model.set_lora_scale(scale)
        return answers


def backbone_answerer(model: "SALMONN") -> BackboneAnswerer | None:
    """The model's text answerer, or None for a model without a text LLM (test stand-ins)."""
    if not all(hasattr(model, a) for a in ("tokenizer", "causal_lm", "config")):
        return None
    return BackboneAnswerer(model)


Answerer = Callable[[Sequence[str]], list[str]]


def text_answers(answerer: Answerer, questions: Sequence[str], cache: str | Path) -> dict[str, str]:
    """question -> the answerer's text answer, from ``cache`` (JSONL of {"llm", "question", "answer"}) where it
    holds one of this answerer's ``key``; the missing ones are generated in one call and appended."""
    cache, key = Path(cache), getattr(answerer, "key", "")
    found = {r["question"]: r["answer"] for r in read_jsonl(cache) if r.get("llm") == key}  # a cut line: asked again
    todo = [q for q in dict.fromkeys(questions) if q not in found]
    if todo:
        answers = answerer(todo)
        if len(answers) != len(todo):
            raise ValueError(f"the text answerer gave {len(answers)} answers for {len(todo)} questions")
        append_jsonl(cache, [{"llm": key, "question": q, "answer": a} for q, a in zip(todo, answers)])
        found.update(zip(todo, answers))
    return {q: found[q] for q in questions}
