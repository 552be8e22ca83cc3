"""Manifests: the reference annotation JSON (`{"annotation": [...]}`) and JSONL with the same fields.

Each record is a dict with at least `path` (or `audio`); training records also carry `text` and `task`, and
optionally `Q` (the question a prompt's `{}` takes) and `expand_wav` (clips appended after 0.1 s of silence).
Relative audio paths resolve against the manifest's folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from .errors import SalmonnError
from .jsonl import numbered_rows


class ManifestError(SalmonnError):
    """A manifest that cannot be read or whose records are malformed."""


def _resolve(record: dict, base: Path) -> dict:
    record = dict(record)
    if "audio" in record and "path" not in record:
        record["path"] = record["audio"]
    if "path" not in record:
        return record
    path = Path(str(record["path"])).expanduser()
    record["path"] = str(path if path.is_absolute() else base / path)
    if record.get("expand_wav"):
        record["expand_wav"] = [str(p if Path(p).is_absolute() else base / p) for p in record["expand_wav"]]
    return record


def iter_records(path: str | Path, bad_lines: dict[int, str] | None = None) -> Iterator[tuple[int, dict]]:
    """(line or index number starting at 1, record) for every record; JSON annotation files or JSONL.

    bad_lines: where a JSONL line that is not a JSON object is recorded (number -> one-line error) instead of
    raising ManifestError, so that the other lines can still be used."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    base = path.parent
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("{") and path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ManifestError(f"{path}: not valid JSON ({err})") from None
        records = data.get("annotation") if isinstance(data, dict) else None
        if not isinstance(records, list):
            raise ManifestError(f"{path}: expected {{\"annotation\": [...]}} (the reference layout)")
        for i, record in enumerate(records, 1):
            if not isinstance(record, dict):
                raise ManifestError(f"{path}: annotation #{i} is not an object")
            yield i, _resolve(record, base)
        return
    for number, record in numbered_rows(path, text):
        if isinstance(record, str):
            if bad_lines is None:
                raise ManifestError(record)
            bad_lines[number] = record
            continue
        yield number, _resolve(record, base)


def read_manifest(path: str | Path) -> list[dict]:
    """All records of a manifest, paths resolved."""
    return [record for _, record in iter_records(path)]


def write_annotation(path: str | Path, records: list[dict]) -> None:
    """Write records in the reference annotation layout (`{"annotation": [...]}`), as the corpora store them."""
    Path(path).write_text(json.dumps({"annotation": records}, indent=1) + "\n")
