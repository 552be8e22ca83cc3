"""Stop strings are bounded and cost nothing after their request (issue 17.1): one 40,000-character stop string
took a minute and 11 GB, because transformers' StopStringCriteria builds per-vocabulary tables that grow with the
strings' lengths and keeps them in a process-wide cache."""

from __future__ import annotations

import pytest
from transformers.generation import stopping_criteria

from salmonn import load_model
from salmonn.config import GenerateConfig
from salmonn.decoding import MAX_STOP_CHARS, MAX_STOP_STRINGS, decoding_config
from salmonn.errors import ConfigError

from ..conftest import AUDIO, FIXTURE


def test_stop_strings_are_bounded_for_every_caller():
    assert MAX_STOP_STRINGS == 4  # OpenAI's limit
    with pytest.raises(ConfigError, match="at most 4 stop strings"):
        decoding_config(GenerateConfig(), stop=list("abcde"))
    with pytest.raises(ConfigError, match=f"at most {MAX_STOP_CHARS} characters"):
        decoding_config(GenerateConfig(), stop=["a" * 40_000])
    assert decoding_config(GenerateConfig(), stop=["a" * MAX_STOP_CHARS] * 4).stop == ["a" * MAX_STOP_CHARS] * 4


def test_stop_strings_leave_no_tables_behind():
    model = load_model(FIXTURE / "config.yaml")
    clip = str(AUDIO / "mountain.wav")
    stopping_criteria.STOP_STRING_EMBEDDING_CACHE.clear()
    full = model.generate([clip], "What is said?", num_beams=1, max_new_tokens=12)[0]
    stop = full.text[4:7]
    [cut] = model.generate([clip], "What is said?", num_beams=1, max_new_tokens=12,
                           stop=[stop, "a" * MAX_STOP_CHARS])
    assert cut.text == full.text[: full.text.find(stop)].rstrip()
    assert len(cut.token_ids) < len(full.token_ids)  # generation stopped at the stop string
    assert not stopping_criteria.STOP_STRING_EMBEDDING_CACHE  # nothing kept for later requests
