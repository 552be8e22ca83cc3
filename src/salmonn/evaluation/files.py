"""The files ``salmonn eval`` writes: per-sample JSONL (appended as answers come, merged from the ranks' parts),
task summaries, and JSON written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from salmonn.evaluation.items import Item
from salmonn.jsonl import read_jsonl


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def dumps(obj: Any, **kw) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str, **kw)


def samples_path(output: Path, task: str, label: str) -> Path:
    """The per-sample file of a task at one LoRA scaling (label: its short text, e.g. '4')."""
    return output / f"{task}.scaling-{label}.jsonl"


def part_files(path: Path) -> list[Path]:
    """The ranks' unmerged answers for a per-sample file (``<file>.part-<rank>``)."""
    return sorted(path.parent.glob(path.name + ".part-*"))


def done_rows(path: Path, items: dict[int, Item], run_key: str, with_errors: bool = True) -> dict[int, dict]:
    """Rows already answered for the planned items: same index, audio, prompt and run key. A clip's answer wins
    over its failure; with_errors=False leaves failed clips out (they are tried again)."""
    done: dict[int, dict] = {}
    for file in [path, *part_files(path)]:
        for row in read_jsonl(file):
            if not answers_item(row, items, run_key) or ("error" in row and not with_errors):
                continue
            earlier = done.get(row["index"])
            if earlier is None or ("error" in earlier and "error" not in row):
                done[row["index"]] = row
    return done


def answers_item(row: dict, items: dict[int, Item], run_key: str) -> bool:
    """True when the row is an answer (or failure) for one of the items under this run key."""
    item = items.get(row.get("index")) if isinstance(row.get("index"), int) else None
    return (item is not None and row.get("run_key") == run_key and row.get("audio") == item.audio
            and row.get("prompt") == item.prompt and isinstance(row.get("hypothesis"), str))


def read_summary(path: Path) -> dict | None:
    """A task summary file, or None if it is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "task" in data and isinstance(data.get("runs"), list) else None
