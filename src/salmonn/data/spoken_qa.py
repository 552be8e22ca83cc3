"""SmolLM2's own text answers to the corpus's spoken questions (the targets of ``voice_qa`` clips).

Trained on these, a model learns that audio tokens mean to the LLM what the words mean: the answer to
a spoken question is the answer the LLM gives to the same question typed. Each question is answered
once, greedily, from the text alone, and cached in ``answers.jsonl`` (one line per question; a rerun
answers only the missing ones). Echoes of the question, refusals and empty answers are dropped.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from salmonn.errors import SalmonnError
from salmonn.jsonl import jsonl_line, read_jsonl

MAX_NEW_TOKENS = 48
MAX_ANSWER_WORDS = 40
BATCH_SIZE = 16


def typed_question(question: str) -> str:
    """The question as a user types it to the LLM: first letter upper case, ending in '?'."""
    q = question.strip()
    return q[0].upper() + q[1:] + ("" if q.endswith("?") else "?")


def clean_answer(answer: str) -> str:
    """The answer on one line, cut after the last full sentence that fits in 40 words."""
    text = " ".join(answer.split())
    sentences = re.findall(r"[^.!?]+[.!?]+", text) or [text]
    kept = ""
    for sentence in sentences:
        if kept and len((kept + sentence).split()) > MAX_ANSWER_WORDS:
            break
        kept += sentence
    return " ".join(kept.split()[:MAX_ANSWER_WORDS]).strip()


def drop_reason(question: str, answer: str) -> str | None:
    """Why an answer cannot be a training target ('empty', 'refusal', 'echo'), or None if it can."""
    from salmonn.data.following import is_echo, is_empty, is_refusal

    if is_empty(answer):
        return "empty"
    if is_refusal(answer):
        return "refusal"
    if is_echo(answer, question):
        return "echo"
    return None


def _read_cache(path: Path) -> dict[str, dict]:
    """question -> cached record; a line cut off by a kill is ignored (answered again)."""
    return {record["question"]: record for record in read_jsonl(path)}


def llm_answers(questions: Sequence[str], cache: str | Path, *, progress: bool = True) -> dict[str, dict]:
    """question -> {"question", "answer", "drop"} for every question, generating the missing ones."""
    cache = Path(cache)
    done = _read_cache(cache)
    todo = sorted({q for q in questions if q not in done})
    if todo:
        done |= _generate(todo, cache, progress)
    return {q: done[q] for q in questions}


def _generate(questions: list[str], cache: Path, progress: bool) -> dict[str, dict]:
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from salmonn.backbones import default_cache_dir, prepare_smollm2

    try:
        llm_dir = prepare_smollm2(default_cache_dir() / "smollm2-135m-instruct")
    except SalmonnError as e:
        raise SalmonnError(f"spoken-QA answers need SmolLM2: {e}") from e
    tokenizer = AutoTokenizer.from_pretrained(llm_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(llm_dir, dtype=torch.float32).eval()
    out: dict[str, dict] = {}
    with open(cache, "a") as f, tqdm(total=len(questions), desc="SmolLM2 answers", unit="q",
                                     disable=not progress) as bar:
        for start in range(0, len(questions), BATCH_SIZE):
            batch = questions[start:start + BATCH_SIZE]
            chats = [tokenizer.apply_chat_template([{"role": "user", "content": typed_question(q)}],
                                                   tokenize=False, add_generation_prompt=True) for q in batch]
            enc = tokenizer(chats, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.inference_mode():
                ids = model.generate(**enc, max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
            for q, row in zip(batch, ids[:, enc["input_ids"].shape[1]:]):
                answer = clean_answer(tokenizer.decode(row, skip_special_tokens=True))
                record = {"question": q, "answer": answer, "drop": drop_reason(q, answer)}
                f.write(jsonl_line(record))
                out[q] = record
            f.flush()
            bar.update(len(batch))
    return out
