"""What ``salmonn eval`` answers: a manifest's records of one task, each with its instruction and audio.

The instruction is ``--prompt``, else the task's entry in a test prompt file (the reference's
``prompts/test_prompt.json`` loads unchanged), else the built-in table ``salmonn.prompting.DEFAULT_TEST_PROMPTS``;
``{}`` takes the record's ``Q``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from salmonn.errors import ConfigError, PromptError, SalmonnError
from salmonn.frames import SAMPLE_RATE
from salmonn.manifest import iter_records
from salmonn.prompting import DEFAULT_TEST_PROMPTS

SILENCE_SAMPLES = 1600  # 0.1 s at 16 kHz between a record's clip and its `expand_wav` clips (reference)

# Our task name -> the reference test_prompt.json key, so that file loads unchanged as model.test_prompt_path.
REFERENCE_PROMPT_KEYS = {"translation_ed": "translation_en2de", "translation_ej": "translation_en2ja",
                         "keyword_extraction": "keywords", "sqqa": "speech_query", "story": "audio_story_telling"}
AUDIO_PREFIX = re.compile(r"^\s*<Speech><SpeechHere></Speech>\s*")


# ------------------------------------------------------------------ instructions


def load_test_prompts(path: str | Path) -> dict[str, str]:
    """Task -> bare instruction from a JSON file (the reference's test_prompt.json loads as is).

    Values may be a string or a list (its first entry is used); a leading '<Speech><SpeechHere></Speech>' is
    removed because the model adds it.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: cannot read the test prompt file ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object task -> instruction")
    out = {}
    for task, value in data.items():
        if isinstance(value, list):
            value = value[0] if value else ""
        if not isinstance(value, str):
            raise ConfigError(f"{path}: the prompt of task {task!r} must be a string or a list of strings")
        out[task] = AUDIO_PREFIX.sub("", value)
    return out


def instruction_for(task: str, prompt: str | None = None, prompt_file: str | Path | None = None) -> str:
    """The instruction template of ``task``: --prompt, else the test prompt file, else the built-in table."""
    if prompt:
        return prompt
    if prompt_file:
        table = load_test_prompts(prompt_file)
        for key in (task, REFERENCE_PROMPT_KEYS.get(task)):
            if key and key in table:
                return table[key]
    if task in DEFAULT_TEST_PROMPTS:
        return DEFAULT_TEST_PROMPTS[task]
    raise PromptError(f"no test prompt for task {task!r}: pass --prompt TEXT or a test_prompt_path JSON")


def fill_prompt(template: str, record: dict, where: str) -> str:
    """Replace '{}' in the template with the record's question Q (every occurrence)."""
    if "{}" not in template:
        return template
    question = record.get("Q", record.get("question"))
    if not isinstance(question, str) or not question.strip():
        raise PromptError(f"{where}: the prompt {template!r} needs the record's question, but it has no 'Q' (a "
                          "question spoken in the audio needs an instruction without '{}': pass --prompt TEXT or a "
                          "test_prompt_path JSON, e.g. SALMONN-mini's test_prompts.json)")
    return template.replace("{}", question.strip())


# ------------------------------------------------------------------ records


@dataclass
class Item:
    """One sample to answer: manifest position, record, the audio input and the filled-in instruction."""

    index: int
    record: dict
    prompt: str

    @property
    def audio(self) -> str:
        return self.record["path"]

    @property
    def reference(self):
        return self.record.get("text")


def select_records(manifest: str | Path, task: str) -> list[tuple[int, dict]]:
    """(manifest position, record) of the records for ``task``: records naming another task are skipped."""
    picked, others = [], set()
    for position, (number, record) in enumerate(iter_records(manifest)):
        if "path" not in record:
            raise SalmonnError(f"{manifest}:{number}: record has no 'path' (or 'audio')")
        if record.get("task", task) != task:
            others.add(str(record["task"]))
            continue
        picked.append((position, record))
    if not picked:
        found = f" (it has tasks: {', '.join(sorted(others))})" if others else ""
        raise SalmonnError(f"{manifest}: no records for task {task!r}{found}")
    return picked


def plan_items(manifest: str | Path, task: str, template: str) -> dict[int, Item]:
    """Manifest position -> Item for every record of the task; checks references and prompts up front."""
    from salmonn.evaluation.metrics import NEEDS_REFERENCES

    items: dict[int, Item] = {}
    for position, record in select_records(manifest, task):
        where = f"{manifest}: record #{position + 1}"
        if task in NEEDS_REFERENCES and record.get("text") is None:
            raise SalmonnError(f"{where} has no reference 'text' (task {task!r} needs one)")
        items[position] = Item(position, record, fill_prompt(template, record, where))
    return items


def audio_input(record: dict, channel: str = "first", resample: bool = True):
    """The record's audio for model.generate: its path, or with ``expand_wav`` the clips joined by 0.1 s silence."""
    if not record.get("expand_wav"):
        return record["path"]
    import numpy as np

    from salmonn.audio import load_audio

    parts = [load_audio(record["path"], channel=channel, resample=resample)]
    for extra in record["expand_wav"]:
        parts += [np.zeros(SILENCE_SAMPLES, dtype=np.float32), load_audio(extra, channel=channel, resample=resample)]
    return np.concatenate(parts), SAMPLE_RATE
