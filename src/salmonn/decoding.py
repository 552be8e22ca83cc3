"""Decoding policy: options and presets, the one generate step (our greedy loop, CTC rescoring or HF generate on
assembled pieces) and a token streamer. How the LLM computes each step fast is chosen once when the model is built
(salmonn.llm_runtime); ids become answers in salmonn.answers.

The CLI, chat sessions, the server and evaluation all decode through `generate_answers`.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import sys
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from . import greedy
from .answers import Answer, clean_answer, cut_at_stop, hf_generate_kwargs, sequence_scores
from .config import GenerateConfig
from .errors import ConfigError
from .llm_runtime import compiled_decoding
from .prompting import Piece, assemble
from .rescoring import rescored_answers

if TYPE_CHECKING:
    from .model import SALMONN

__all__ = ["Answer", "PRESETS", "TokenStreamer", "check_streamable", "clean_answer", "cut_at_stop", "decoding_config",
           "generate_answers", "hf_generate_kwargs"]


# Named decoding settings (`--preset NAME`, generate(preset=NAME)). Explicit options override a preset; a preset
# overrides the config's `generate:` section.
PRESETS: dict[str, dict] = {
    # the reference implementation's decode defaults
    "reference": dict(num_beams=4, max_new_tokens=200, min_length=1, top_p=0.9, temperature=1.0,
                      repetition_penalty=1.0, no_repeat_ngram_size=0, length_penalty=1.0, do_sample=False),
    # fastest; needed for --stream
    "greedy": dict(num_beams=1, do_sample=False),
    # nucleus sampling (give a seed to make it repeatable)
    "sample": dict(num_beams=1, do_sample=True, top_p=0.9, temperature=1.0),
    # transcription by a connector trained to spell (SALMONN-mini): greedy's answer or the CTC best path, rescored with
    # the weights chosen on held-out clips (salmonn.rescoring; scripts/mini/results/ctc_rescore_greedy.json)
    "transcribe": dict(num_beams=1, do_sample=False, ctc_weight=0.4, ctc_length_bonus=2.0),
}

_FIELDS = [f.name for f in dataclasses.fields(GenerateConfig)]
MAX_STOP_STRINGS = 4  # OpenAI's limit
MAX_STOP_CHARS = 256  # each stop string is looked for in the decoded tail of every row at every step
BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")  # sentencepiece's byte-fallback pieces


def decoding_config(base: GenerateConfig, preset: str | None = None, **options) -> GenerateConfig:
    """`base` (the config's generate section) <- preset <- options that are not None."""
    values: dict = {}
    if preset:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        values.update(PRESETS[preset])
    for key, value in options.items():
        if key not in _FIELDS:
            close = difflib.get_close_matches(key, _FIELDS, n=1)
            raise ConfigError(f"unknown decoding option {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        if value is not None:
            values[key] = value
    gen = dataclasses.replace(base, **values)
    if isinstance(gen.stop, str):
        gen = dataclasses.replace(gen, stop=[gen.stop])
    _validate(gen)
    return gen


def _validate(gen: GenerateConfig) -> None:
    problems = []
    if gen.num_beams < 1:
        problems.append(f"num_beams must be >= 1, got {gen.num_beams}")
    if gen.max_new_tokens < 1:
        problems.append(f"max_new_tokens must be >= 1, got {gen.max_new_tokens}")
    if gen.min_new_tokens < 0 or gen.min_new_tokens > gen.max_new_tokens:
        problems.append(f"min_new_tokens must be between 0 and max_new_tokens ({gen.max_new_tokens}), "
                        f"got {gen.min_new_tokens}")
    if gen.do_sample and gen.temperature <= 0:
        problems.append(f"temperature must be > 0 when sampling, got {gen.temperature}")
    if not 0 < gen.top_p <= 1:
        problems.append(f"top_p must be in (0, 1], got {gen.top_p}")
    if gen.top_k < 0:
        problems.append(f"top_k must be >= 0 (0 = off), got {gen.top_k}")
    if gen.repetition_penalty <= 0:
        problems.append(f"repetition_penalty must be > 0 (1 = off), got {gen.repetition_penalty}")
    if gen.no_repeat_ngram_size < 0:
        problems.append(f"no_repeat_ngram_size must be >= 0 (0 = off), got {gen.no_repeat_ngram_size}")
    if any(not s for s in gen.stop):
        problems.append("stop strings must not be empty")
    if len(gen.stop) > MAX_STOP_STRINGS:
        problems.append(f"at most {MAX_STOP_STRINGS} stop strings, got {len(gen.stop)}")
    if any(len(s) > MAX_STOP_CHARS for s in gen.stop):
        problems.append(f"a stop string may be at most {MAX_STOP_CHARS} characters, got "
                        f"{max(len(s) for s in gen.stop)}")
    if not 0 <= gen.ctc_weight <= 1:
        problems.append(f"ctc_weight must be in [0, 1] (0 = off), got {gen.ctc_weight}")
    if gen.ctc_weight > 0 and gen.do_sample:
        problems.append("ctc_weight rescores beam search's answers: set do_sample=false")
    if problems:
        raise ConfigError("decoding: " + "; ".join(problems))


def check_streamable(gen: GenerateConfig, rows: int = 1) -> None:
    """Streaming shows one answer's tokens as they are chosen: one clip and num_beams 1."""
    if gen.num_beams > 1:
        raise ConfigError(f"streaming shows tokens as they are chosen, which beam search (num_beams="
                          f"{gen.num_beams}) cannot do: use num_beams=1 (--num-beams 1 or --preset greedy)")
    if rows != 1:
        raise ConfigError(f"streaming shows one answer at a time: pass a single clip (got {rows})")
    if gen.ctc_weight > 0:
        raise ConfigError("streaming shows tokens as they are chosen, which CTC rescoring (choosing among whole "
                          "answers) cannot do: use ctc_weight=0")


class TokenStreamer:
    """Streams a single answer's text as tokens are generated (the `streamer=` of SALMONN.generate).

    Calls `write(piece)` with new text; the pieces concatenate to exactly `Answer.text`. Text is written once it
    is settled: decoded without special tokens, leading whitespace dropped, and held back until more text follows
    are trailing whitespace, a run of byte-fallback pieces (sentencepiece decodes the run as a unit: one invalid
    byte turns all of it into U+FFFD), an incomplete UTF-8 character (byte-level BPE), and a tail that may be the
    start of a stop string; nothing is written from a stop string on. Default `write` prints to stdout; end() then
    writes a newline.
    """

    def __init__(self, tokenizer, write: Callable[[str], None] | None = None, stop: Sequence[str] = (),
                 newline: bool = True):
        self.tokenizer = tokenizer
        self.stop = list(stop)
        self.newline = newline and write is None
        self._write = write or self._print
        self.ids: list[int] = []
        self.printed = ""
        self.stopped = False
        self._prompt_seen = False
        self._byte_piece: dict[int, bool] = {}

    @staticmethod
    def _print(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    def put(self, value) -> None:
        if value.dim() > 1 and value.shape[0] > 1:
            raise ConfigError("streaming shows one answer at a time: pass a single clip")
        if not self._prompt_seen:  # generate() first hands over the prompt ids (empty with inputs_embeds)
            self._prompt_seen = True
            return
        self.ids.extend(int(i) for i in value.reshape(-1).tolist())
        self._emit(final=False)

    def end(self) -> None:
        self._emit(final=True)
        if self.newline:
            self._write("\n")

    def _emit(self, final: bool) -> None:
        if self.stopped:
            return
        eos = self.tokenizer.eos_token_id
        ids = self.ids[: self.ids.index(eos)] if eos in self.ids else self.ids
        if not final:
            ids = ids[: self._settled(ids)]
        text, found = cut_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True).lstrip(), self.stop)
        self.stopped = found
        if not (final or found):
            text = text.rstrip("\ufffd")  # an incomplete UTF-8 character: its next byte may complete it
            text = text[: len(text) - self._stop_prefix(text)]
        text = text.rstrip()
        if text.startswith(self.printed) and len(text) > len(self.printed):
            self._write(text[len(self.printed):])
            self.printed = text

    def _settled(self, ids: list[int]) -> int:
        """How many of `ids` have text that later tokens cannot change: all but a trailing run of byte tokens."""
        n = len(ids)
        while n and self._is_byte_piece(ids[n - 1]):
            n -= 1
        return n

    def _is_byte_piece(self, token: int) -> bool:
        if token not in self._byte_piece:
            piece = self.tokenizer.convert_ids_to_tokens(token) or ""
            self._byte_piece[token] = BYTE_PIECE.fullmatch(piece) is not None
        return self._byte_piece[token]

    def _stop_prefix(self, text: str) -> int:
        """Length of the longest tail of `text` that a stop string starts with (it may be completed next)."""
        return max((k for s in self.stop for k in range(min(len(s) - 1, len(text)), 0, -1) if text.endswith(s[:k])),
                   default=0)


# ---------------------------------------------------------------------------------------------------- generation
@torch.no_grad()
def generate_answers(model: "SALMONN", rows: list[list[Piece]], gen: GenerateConfig, streamer=None,
                     return_scores: bool = False) -> list[Answer]:
    """The one generate step: per-sample LLM input pieces -> one answer each (left-padded batch, so every row
    gets its single-row answer). `streamer`: anything with put(ids)/end(), one row, num_beams 1. Plain greedy
    decoding goes through salmonn.greedy's own loop with model.greedy_loop, CTC rescoring (ctc_weight > 0) through
    salmonn.rescoring, the rest through HF generate()."""
    if streamer is not None:
        check_streamable(gen, len(rows))
    if gen.ctc_weight > 0:
        return rescored_answers(model, rows, gen)
    embeds, mask, _, _ = assemble(rows, side="left", reference_batching=model.config.model.reference_batching)
    m = model.config.model
    if m.greedy_loop and greedy.handles(gen, return_scores):
        ids = greedy.greedy_decode(model.causal_lm, embeds, mask, gen, model.tokenizer.eos_token_id,
                                   model.tokenizer.pad_token_id, compile=m.compile, streamer=streamer)
        return [clean_answer(seq.tolist(), model.tokenizer, gen.stop) for seq in ids]
    kwargs = hf_generate_kwargs(gen, model.tokenizer)
    if m.compile:
        kwargs.update(compiled_decoding(embeds.shape[1] + gen.max_new_tokens))
    if return_scores:
        kwargs.update(output_scores=True, return_dict_in_generate=True)
    device = model.device
    seeded = gen.do_sample and gen.seed is not None
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else [], enabled=seeded):
        if seeded:
            torch.manual_seed(gen.seed)
        out = model.llama_model.generate(inputs_embeds=embeds, attention_mask=mask, streamer=streamer, **kwargs)
    sequences = out.sequences if return_scores else out
    eos = model.tokenizer.eos_token_id
    scores = sequence_scores(out, gen, eos) if return_scores else [None] * len(sequences)
    return [clean_answer(seq.tolist(), model.tokenizer, gen.stop, score) for seq, score in zip(sequences, scores)]
