"""salmonn.jsonl: the one JSONL reader and writer (what an interrupted writer leaves, atomic rewrites, line errors)."""

from __future__ import annotations

from pathlib import Path

import pytest

from salmonn.jsonl import append_jsonl, numbered_rows, read_jsonl, write_jsonl


def test_write_then_read_keeps_text_and_order(tmp_path):
    path = tmp_path / "sub" / "rows.jsonl"
    rows = [{"text": "naïve café", "n": 1}, {"path": Path("/a/b.wav")}]
    write_jsonl(path, rows)
    assert "naïve café" in path.read_text(encoding="utf-8")  # non-ASCII kept, not escaped
    assert read_jsonl(path) == [{"text": "naïve café", "n": 1}, {"path": "/a/b.wav"}]
    assert not list(tmp_path.glob("sub/*.tmp"))  # the atomic write leaves no temporary file
    write_jsonl(path, rows[:1])  # a rewrite replaces the whole file
    assert read_jsonl(path) == rows[:1]


def test_append_ends_a_cut_line_first(tmp_path):
    path = tmp_path / "log.jsonl"
    append_jsonl(path, [{"step": 1}])
    with path.open("a", encoding="utf-8") as f:
        f.write('{"step": 2, "loss"')  # a kill in the middle of a line
    append_jsonl(path, [{"step": 3}, {"step": 4}])
    assert path.read_text(encoding="utf-8").splitlines()[-2:] == ['{"step": 3}', '{"step": 4}']
    assert [r["step"] for r in read_jsonl(path)] == [1, 3, 4]  # the cut line is skipped
    with pytest.raises(ValueError, match=r"log.jsonl:2: not valid JSON"):
        read_jsonl(path, strict=True)


def test_numbered_rows_name_each_bad_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"a": 1}\n\n[1, 2]\nnot json\n', encoding="utf-8")
    rows = list(numbered_rows(path))
    assert rows[0] == (1, {"a": 1})
    assert rows[1] == (3, f"{path}:3: expected a JSON object")
    assert rows[2][0] == 4 and rows[2][1].startswith(f"{path}:4: not valid JSON")


def test_missing_file(tmp_path):
    assert read_jsonl(tmp_path / "none.jsonl") == []
    with pytest.raises(FileNotFoundError, match="none.jsonl: no such file"):
        read_jsonl(tmp_path / "none.jsonl", strict=True)
