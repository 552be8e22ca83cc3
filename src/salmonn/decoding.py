"""Decoding options: named presets, stop strings and a token streamer for SALMONN.generate.

Kept free of the model so that the CLI, the chat session and the server can share it.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
from typing import Callable, Sequence

from .config import GenerateConfig
from .errors import ConfigError

# Named decoding settings (`--preset NAME`, generate(preset=NAME)). Explicit options override a preset; a preset
# overrides the config's `generate:` section.
PRESETS: dict[str, dict] = {
    # the reference implementation's decode defaults (SPEC section 3)
    "reference": dict(num_beams=4, max_new_tokens=200, min_length=1, top_p=0.9, temperature=1.0,
                      repetition_penalty=1.0, length_penalty=1.0, do_sample=False),
    # fastest; needed for --stream
    "greedy": dict(num_beams=1, do_sample=False),
    # nucleus sampling (give a seed to make it repeatable)
    "sample": dict(num_beams=1, do_sample=True, top_p=0.9, temperature=1.0),
}

_FIELDS = [f.name for f in dataclasses.fields(GenerateConfig)]


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
    g = dataclasses.replace(base, **values)
    if isinstance(g.stop, str):
        g = dataclasses.replace(g, stop=[g.stop])
    _validate(g)
    return g


def _validate(g: GenerateConfig) -> None:
    problems = []
    if g.num_beams < 1:
        problems.append(f"num_beams must be >= 1, got {g.num_beams}")
    if g.max_new_tokens < 1:
        problems.append(f"max_new_tokens must be >= 1, got {g.max_new_tokens}")
    if g.min_new_tokens < 0 or g.min_new_tokens > g.max_new_tokens:
        problems.append(f"min_new_tokens must be between 0 and max_new_tokens ({g.max_new_tokens}), "
                        f"got {g.min_new_tokens}")
    if g.do_sample and g.temperature <= 0:
        problems.append(f"temperature must be > 0 when sampling, got {g.temperature}")
    if not 0 < g.top_p <= 1:
        problems.append(f"top_p must be in (0, 1], got {g.top_p}")
    if g.top_k < 0:
        problems.append(f"top_k must be >= 0 (0 = off), got {g.top_k}")
    if g.repetition_penalty <= 0:
        problems.append(f"repetition_penalty must be > 0 (1 = off), got {g.repetition_penalty}")
    if any(not s for s in g.stop):
        problems.append("stop strings must not be empty")
    if problems:
        raise ConfigError("decoding: " + "; ".join(problems))


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Text before the earliest stop string (and whether one was found)."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class TokenStreamer:
    """Streams a single answer's text as tokens are generated (the `streamer=` of SALMONN.generate).

    Calls `write(piece)` with new text: decoded incrementally, without special tokens, with leading whitespace
    dropped, trailing whitespace and incomplete multi-byte characters held back until more text follows, and
    nothing from a stop string on. The pieces concatenate to exactly `Answer.text`. Default `write` prints to
    stdout; end() then writes a newline.
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
        text = self.tokenizer.decode(ids, skip_special_tokens=True).lstrip()
        text, found = cut_at_stop(text, self.stop)
        if found:
            self.stopped, final = True, True
        elif not final:
            hold = max((len(s) for s in self.stop), default=1) - 1  # a stop string may be starting
            text = text[: len(text) - hold] if hold else text
            if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence from byte-fallback tokens
                text = text.rstrip("\ufffd")
        text = text.rstrip()
        if text.startswith(self.printed) and len(text) > len(self.printed):
            self._write(text[len(self.printed):])
            self.printed = text
