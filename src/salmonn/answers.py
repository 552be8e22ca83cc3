"""Answers from the LLM's generated ids: transformers' generate() arguments for a GenerateConfig (stop strings
included), ids -> `Answer` (cut at EOS and before a stop string), and the scores of returned sequences. Below
salmonn.decoding (the generate step) and salmonn.rescoring, which both read answers this way."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from .config import GenerateConfig

UTF8_MAX_BYTES = 4  # so at most 4 byte-fallback tokens per character


@dataclasses.dataclass
class Answer:
    text: str  # the answer, stripped, cut before any stop string
    token_ids: list[int]  # generated ids (no prompt, no echoed BOS, stopped before EOS; incl. a stop string's)
    score: float | None = None  # with return_scores=True: sum of the chosen tokens' log-probabilities (incl. EOS)
    #                             under the processed distribution; beam search: the beam's length-normalised score;
    #                             CTC rescoring (ctc_weight > 0): the combined score it chose by (salmonn.rescoring)


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Text before the earliest stop string (and whether one was found)."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def hf_generate_kwargs(gen: GenerateConfig, tokenizer) -> dict:
    """transformers' generate() arguments for these decoding options."""
    kwargs = dict(max_new_tokens=gen.max_new_tokens, num_beams=gen.num_beams, do_sample=gen.do_sample,
                  repetition_penalty=gen.repetition_penalty, length_penalty=gen.length_penalty,
                  no_repeat_ngram_size=gen.no_repeat_ngram_size or None,
                  min_new_tokens=gen.min_new_tokens or None, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id)
    if gen.do_sample:
        kwargs.update(temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k or None)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if gen.stop:
        kwargs.update(stopping_criteria=StoppingCriteriaList([StopStrings(tokenizer, gen.stop)]))
    return {k: v for k, v in kwargs.items() if v is not None or k in ("temperature", "top_p", "top_k")}


class StopStrings(StoppingCriteria):
    """Ends a row once its generated text contains a stop string. Decodes only the tail of tokens that can hold
    the longest one, and keeps nothing between requests (transformers' StopStringCriteria caches per-vocabulary
    tables that grow with the strings' lengths: gigabytes for one long string)."""

    def __init__(self, tokenizer, stop: Sequence[str]):
        self.tokenizer, self.stop = tokenizer, list(stop)
        self.window = UTF8_MAX_BYTES * max(len(s) for s in self.stop) + 2  # + tokens a match may start in

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        tails = input_ids[:, -self.window:].tolist()
        found = [any(s in self.tokenizer.decode(tail, skip_special_tokens=True) for s in self.stop) for tail in tails]
        return torch.tensor(found, dtype=torch.bool, device=input_ids.device)


def clean_answer(ids: list[int], tokenizer, stop: Sequence[str] = (), score: float | None = None) -> Answer:
    """Generated ids -> Answer: cut at EOS, trailing pads dropped, text stripped and cut before a stop string
    (the ids then end with the token that completed it)."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    if eos in ids:
        ids = ids[: ids.index(eos)]
    while ids and ids[-1] == pad and pad != eos:
        ids = ids[:-1]
    text = tokenizer.decode(ids, skip_special_tokens=True).strip()
    if stop:
        text, found = cut_at_stop(text, stop)
        text = text.rstrip()
        if found:
            ids = ids[:next((n for n in range(1, len(ids) + 1)
                             if cut_at_stop(tokenizer.decode(ids[:n], skip_special_tokens=True), stop)[1]), len(ids))]
    return Answer(text=text, token_ids=ids, score=score)


def sequence_scores(out, gen: GenerateConfig, eos_token_id: int) -> list[float]:
    """Per returned sequence: beam search's own score, else the sum of log-probabilities of the chosen tokens
    (processed scores: after temperature / top-p / penalties) up to and including EOS."""
    if gen.num_beams > 1:
        return [float(x) for x in out.sequences_scores]
    steps = torch.stack(out.scores, dim=1).float().log_softmax(-1)  # [B, T, V]
    new = out.sequences[:, -steps.shape[1]:]  # [B, T] the generated ids
    chosen = steps.gather(-1, new[..., None])[..., 0]  # [B, T]
    results = []
    for row, ids in zip(chosen, new.tolist()):
        n = ids.index(eos_token_id) + 1 if eos_token_id in ids else len(ids)  # finished rows continue with pads
        results.append(float(row[:n].sum()))
    return results
