"""Scores over many answers (paper §4 "task over-fitting"): the following rate, story diversity (distinct-n) and
the repeat rate. Whether one answer follows its instruction is decided by the rules in ``salmonn.data.following``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

# The rules, re-exported: data.synth and scripts/mini import contains_answer, is_echo, ... from here.
from salmonn.data.following import (FOLLOWING_RULES, Sample, contains_answer, following_flags,  # noqa: F401
                                    is_echo, is_empty, is_label, is_near_echo, is_refusal, qa_reference)
from salmonn.data.normalize import simple_words

LOOP_N = 4
LOOP_TIMES = 3


def following_rate(task: str, answers: Sequence[str], samples: Sequence[Sample] | None = None) -> float:
    """Share (0-1) of answers that follow the instruction of ``task``."""
    flags = following_flags(task, answers, samples)
    return sum(flags) / len(flags) if flags else 0.0


def _ngrams(words: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """All contiguous word n-grams of one text."""
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Corpus distinct-n in %: unique n-grams / all n-grams, pooled over texts (0 if none)."""
    grams = [g for t in texts for g in _ngrams(simple_words(t), n)]
    return 100.0 * len(set(grams)) / len(grams) if grams else 0.0


def has_loop(text: str, n: int = LOOP_N, times: int = LOOP_TIMES) -> bool:
    """True when some word n-gram (default 4) occurs at least ``times`` (3) times, overlaps counted."""
    counts = Counter(_ngrams(simple_words(text), n))
    return bool(counts) and max(counts.values()) >= times


def repeat_flags(texts: Sequence[str]) -> list[bool]:
    """Per text: has a loop, or its normalised words equal another non-empty text's."""
    keys = [" ".join(simple_words(t)) for t in texts]
    seen = Counter(k for k in keys if k)
    return [has_loop(t) or (bool(k) and seen[k] > 1) for t, k in zip(texts, keys)]


def repeat_rate(texts: Sequence[str]) -> float:
    """Share (0-1) of texts flagged by ``repeat_flags``."""
    flags = repeat_flags(texts)
    return sum(flags) / len(flags) if flags else 0.0
