"""CTC rescoring (`generate.ctc_weight`): a connector trained to spell helps choose the transcript.

SALMONN-mini's query 0 of every window is trained by CTC to point at the LLM embeddings of the transcript's
tokens (train/ctc.py). Its best path and the LLM's answer err differently (the path drops and splits words, the LLM
invents fluent ones), so beam search's answers and the best path are each scored twice, by the LLM (log-probability
of the answer and the end symbol) and by CTC (log-likelihood of the answer's ids given the spelling query), and the
highest (1 - w) LLM + w CTC + bonus x tokens wins: n-best rescoring as in hybrid CTC/attention speech recognition.
Only for transcription (other answers have no CTC reading); not in the reference (its connector has no CTC head), so
off unless ctc_weight > 0. The weights mini uses come from `scripts/mini/ctc_rescore.py` (held-out clips).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from . import greedy
from .answers import Answer, clean_answer, hf_generate_kwargs
from .config import GenerateConfig
from .ctc import best_path, blank_id, ctc_logits, query_tokens
from .errors import ConfigError
from .prompting import Piece, assemble, piece

if TYPE_CHECKING:
    from .model import SALMONN


@dataclass
class Candidate:
    """One answer a row could give, with both of its scores."""

    token_ids: list[int]  # the answer's ids (no end symbol)
    source: str  # who proposed it, "+"-joined: "beam<k>" (beam search's k-th answer), "ctc" (the connector's best path)
    llm: float  # sum of log-probabilities of the ids and the end symbol after the prompt
    ctc: float  # CTC log-likelihood of the ids given the spelling query's tokens

    def total(self, gen: GenerateConfig) -> float:
        return combined_score(self.llm, self.ctc, len(self.token_ids), gen.ctc_weight, gen.ctc_length_bonus)


def combined_score(llm: float, ctc: float, tokens: int, weight: float, bonus: float) -> float:
    """What rescoring maximises: (1 - weight) LLM + weight CTC log-likelihood + bonus per answer token."""
    return (1 - weight) * llm + weight * ctc + bonus * tokens


def check_rescorable(model: "SALMONN") -> None:
    """ConfigError unless the model has a CTC-trained query to rescore with."""
    m = model.config.model
    if m.ctc_query is None:
        raise ConfigError("generate.ctc_weight needs a connector trained to spell: set model.ctc_query (the run's "
                          "run.ctc_query) or ctc_weight=0")
    if not 0 <= m.ctc_query < m.num_speech_query_token:
        raise ConfigError(f"model.ctc_query {m.ctc_query} is not one of the {m.num_speech_query_token} queries per "
                          "window")


def spelling_log_probs(model: "SALMONN", row: list[Piece]) -> torch.Tensor:
    """CTC log-probabilities [L, V] of a row's audio tokens (every clip in it, in order), spelling query only."""
    m = model.config.model
    tokens = torch.cat([p.embeds for p in row if p.audio])  # [L * Q, d]
    spelling = query_tokens(tokens, m.num_speech_query_token, m.ctc_query)  # [L, d]
    table = model.llama_model.get_input_embeddings().weight.detach()
    return ctc_logits(spelling, table, m.ctc_scale).log_softmax(-1)


def ctc_log_likelihood(log_probs: torch.Tensor, ids: list[int], blank: int) -> float:
    """log P(ids | audio) under CTC; -inf where the ids cannot fit the tokens."""
    if not ids:
        return float(log_probs[:, blank].sum())
    loss = F.ctc_loss(log_probs[:, None], torch.tensor([ids]), torch.tensor([log_probs.shape[0]]),
                      torch.tensor([len(ids)]), blank=blank, reduction="sum")  # log_probs: [L, 1, V]
    return -float(loss)


def llm_log_probs(model: "SALMONN", row: list[Piece], answers: list[list[int]]) -> list[float]:
    """Sum of log-probabilities of each answer's ids + the end symbol after the row's prompt (one batch; the LM head
    runs on the answer positions only, as in training: a long clip's full logits would take gigabytes)."""
    end = model.token_ids(model.config.model.end_sym)
    rows = [row + [piece(model.embed(ids + end), torch.tensor(ids + end, device=model.device))] for ids in answers]
    logits, targets, counts = model.target_logits(*assemble(rows, "right"))
    chosen = logits.float().log_softmax(-1).gather(-1, targets[:, None])[:, 0]  # [n_targets], row after row
    return [float(part.sum()) for part in chosen.split(counts.tolist())]


def first_pass(model: "SALMONN", rows: list[list[Piece]], gen: GenerateConfig) -> torch.Tensor:
    """Beam search's num_beams answers per row, row after row [B * num_beams, T]; with one beam greedy's answer,
    through our own greedy loop where the config has it (as plain greedy decoding answers, at its speed)."""
    m = model.config.model
    embeds, mask, _, _ = assemble(rows, side="left", reference_batching=m.reference_batching)
    if m.greedy_loop and greedy.handles(gen, return_scores=False):
        return greedy.greedy_decode(model.causal_lm, embeds, mask, gen, model.tokenizer.eos_token_id,
                                    model.tokenizer.pad_token_id, compile=m.compile)
    return model.llama_model.generate(inputs_embeds=embeds, attention_mask=mask, num_return_sequences=gen.num_beams,
                                      **hf_generate_kwargs(gen, model.tokenizer))


@torch.no_grad()
def candidates(model: "SALMONN", rows: list[list[Piece]], gen: GenerateConfig) -> list[list[Candidate]]:
    """Per row: beam search's num_beams answers (greedy's one with one beam) and the CTC best path (duplicates
    once), each with both scores."""
    check_rescorable(model)
    out = first_pass(model, rows, gen)  # [B * num_beams, T]
    blank = blank_id(model.tokenizer, model.config.model.ctc_blank)
    result = []
    for r, row in enumerate(rows):
        found: dict[tuple[int, ...], list[str]] = {}
        for k, seq in enumerate(out[r * gen.num_beams:(r + 1) * gen.num_beams]):
            ids = tuple(clean_answer(seq.tolist(), model.tokenizer, gen.stop).token_ids)
            found.setdefault(ids, []).append(f"beam{k}")
        log_probs = spelling_log_probs(model, row)
        found.setdefault(tuple(best_path(log_probs, blank)), []).append("ctc")
        answers = [list(ids) for ids in found]
        llm = llm_log_probs(model, row, answers)
        result.append([Candidate(ids, "+".join(sources), lp, ctc_log_likelihood(log_probs, ids, blank))
                       for ids, sources, lp in zip(answers, found.values(), llm)])
    return result


def rescored_answers(model: "SALMONN", rows: list[list[Piece]], gen: GenerateConfig) -> list[Answer]:
    """The rows' answers chosen by CTC rescoring; each Answer's score is its combined score."""
    answers = []
    for row_candidates in candidates(model, rows, gen):
        best = max(row_candidates, key=lambda c: c.total(gen))
        answers.append(clean_answer(best.token_ids, model.tokenizer, gen.stop, best.total(gen)))
    return answers
