"""JSON Lines, the one way the package reads and writes them: one JSON object per line, UTF-8, non-ASCII kept.

Reading forgives what an interrupted writer leaves (a missing file, a cut last line) unless strict=True;
`numbered_rows` gives each line's number and, for a line that is not a JSON object, a one-line error naming the file
and line (salmonn.manifest lets such a line fail alone). Writing a whole file is atomic (a kill leaves the old file
or the new one); appending first ends a line that a kill cut off, and each call's rows are on disk when it returns.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator


def numbered_rows(path: str | Path, text: str | None = None) -> Iterator[tuple[int, dict | str]]:
    """(line number from 1, object) for every non-blank line of a JSONL file (or of `text`, its content read
    already); a line that is not a JSON object gives (number, "<path>:<number>: what is wrong") instead."""
    if text is None:
        text = Path(path).read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            yield number, f"{path}:{number}: not valid JSON ({err.msg})"
            continue
        yield number, row if isinstance(row, dict) else f"{path}:{number}: expected a JSON object"


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
    for _, row in numbered_rows(path):
        if isinstance(row, dict):
            rows.append(row)
        elif strict:
            raise ValueError(row)
    return rows


def jsonl_line(row: Any) -> str:
    """One object as a JSONL line (newline included); values JSON has no type for (a Path) are written as text."""
    return json.dumps(row, ensure_ascii=False, default=str) + "\n"


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> None:
    """Write `rows` as the whole file, atomically (through `<name>.tmp` beside it); folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(jsonl_line(row) for row in rows), encoding="utf-8")
    os.replace(tmp, path)


def append_jsonl(path: str | Path, rows: Iterable[Any]) -> None:
    """Append `rows` to the file (created, with its folders, if missing), first ending a line that a kill cut off;
    the file is closed, so flushed, before this returns."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(jsonl_line(row) for row in rows)
    with path.open("a+b") as f:
        if f.seek(0, os.SEEK_END):
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                text = "\n" + text
        f.write(text.encode("utf-8"))
