"""JSON Lines, the one way the package reads and writes them: one JSON object per line, UTF-8, non-ASCII kept.

Reading forgives what an interrupted writer leaves (a missing file, a cut last line); manifests that a person
wrote are read by salmonn.data.manifest instead, which names the line of each mistake.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable


def read_jsonl(path: str | Path, strict: bool = False) -> list[dict]:
    """The objects of a JSONL file; blank lines are skipped. By default a missing file is empty and a line that is
    not a whole JSON object (one cut off by a kill) is skipped; strict=True (a file that must be whole: a
    manifest, a training log) raises FileNotFoundError for a missing file and ValueError naming a bad line."""
    path = Path(path)
    if not path.is_file():
        if strict:
            raise FileNotFoundError(f"{path}: no such file")
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict):
            rows.append(row)
        elif strict:
            raise ValueError(f"{path}:{number}: not a JSON object")
    return rows


def jsonl_line(row: Any) -> str:
    """One object as a JSONL line (newline included)."""
    return json.dumps(row, ensure_ascii=False) + "\n"


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> None:
    """Write `rows` as the whole file."""
    Path(path).write_text("".join(jsonl_line(row) for row in rows), encoding="utf-8")


def append_jsonl(path: str | Path, rows: Iterable[Any]) -> None:
    """Append `rows` to the file (created if missing), first ending a line that a kill cut off."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cut = path.is_file() and path.stat().st_size and not path.read_bytes().endswith(b"\n")
    with path.open("a", encoding="utf-8") as f:
        if cut:
            f.write("\n")
        for row in rows:
            f.write(jsonl_line(row))
