"""Corpora derived from another's train and dev splits (phone copies, joined transcripts): shared chores."""

from __future__ import annotations

import json
from pathlib import Path

from salmonn.errors import SalmonnError

SPLITS = ("train", "dev")  # test splits are never derived: they stay as the source holds them


def derived_splits(splits: str, verb: str) -> list[str]:
    """The names in --splits (comma-separated), refusing none and any test split."""
    names = [s for s in splits.split(",") if s]
    if not names or "test" in names:
        raise SalmonnError(f"--splits {splits!r}: give train and/or dev; test splits are never {verb}")
    return names


def finish_derived(src: Path, out: Path, summary: dict) -> None:
    """Copy the source's prompts.json (the instruction variants the records' tasks take) and write summary.json."""
    if (src / "prompts.json").is_file():
        (out / "prompts.json").write_text((src / "prompts.json").read_text())
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
