"""The model card's training table from a run's logs: per stage, steps, wall time and the first/last losses.

    .venv/bin/python scripts/mini/run_summary.py runs/mini-v6 [--out scripts/mini/results/train_v6.json]

Reads each runs/<run>/stage*/metrics.jsonl (`salmonn train`'s log: train and valid records); train losses are
means over the first and last 50 steps (single steps are noisy at batch 8). A stage resumed with `--resume` logs the
steps after its last checkpoint twice (the later record counts) and its minutes leave out the stops between runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from salmonn.jsonl import read_jsonl

WINDOW = 50  # steps averaged at each end of a stage
STOPPED_S = 600  # a gap this long between two logged steps is a stop (a resumed stage), not training time


def training_minutes(train: list[dict]) -> float:
    """Wall time between logged steps, leaving out stops: a resumed stage counts only while it ran."""
    times = [r["time"] for r in train]  # in step order: a resumed step keeps its later record
    return round(sum(b - a for a, b in zip(times, times[1:]) if b - a < STOPPED_S) / 60, 1)


def stage_summary(path: Path) -> dict:
    records = read_jsonl(path, strict=True)
    train = list({r["step"]: r for r in records if r["type"] == "train"}.values())  # resumed steps: the later one
    train.sort(key=lambda r: r["step"])
    valid = [r for r in records if r["type"] == "valid"]

    def mean(rows: list[dict], key: str) -> float | None:
        values = [r[key] for r in rows if key in r]
        return round(sum(values) / len(values), 4) if values else None

    return {"steps": train[-1]["step"], "minutes": training_minutes(train),
            "train_loss_first": mean(train[:WINDOW], "loss"), "train_loss_last": mean(train[-WINDOW:], "loss"),
            "ctc_loss_first": mean(train[:WINDOW], "ctc_loss"), "ctc_loss_last": mean(train[-WINDOW:], "ctc_loss"),
            "gender_acc_first": mean(train[:WINDOW], "gender_acc"), "gender_acc_last": mean(train[-WINDOW:], "gender_acc"),
            "valid": [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items() if k != "type"}
                      for r in (valid[:1] + valid[-1:] if len(valid) > 1 else valid)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a folder of stage runs (runs/mini-v2c)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    summary = {p.parent.name: stage_summary(p) for p in sorted(args.run.glob("stage*/metrics.jsonl"))}
    text = json.dumps({"run": str(args.run), "stages": summary}, indent=1) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
