"""Long-form speed of SALMONN-mini by chunking mode, in one process: fixed 30 s segments against pause-aligned
chunks of at most 8 s (the default since issue 15: 71.2 % vs 93.4 % WER on the Asterisk prompts,
scripts/mini/results/long_form_v1.json) on the same espeak-ng speech as benchmarks/mini.py.

    .venv/bin/python benchmarks/long_form_chunks.py [--minutes 5] [--threads 2] [--out benchmarks/long_form_chunks.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from salmonn.bench import machine_line

import mini  # benchmarks/mini.py: the speech file and the CPU description

MODES = (("fixed", 30.0), ("pause", 8.0), ("pause", 15.0))


def run(model, path: Path, chunks: str, seconds: float) -> dict:
    row = mini.long_form_run(model, path, chunks=chunks, max_seconds=seconds)
    return {"chunks": chunks, "max_seconds": seconds, "pieces": row["pieces"], "tokens": row["tokens"],
            "seconds": round(row["seconds"], 2), "cpu_s": round(row["cpu_s"], 2),
            "x_real_time": round(row["x_real_time"], 2), "audio_s": row["audio_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("long_form_chunks.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from salmonn import SALMONN
    model = SALMONN.from_config(None, ["model.device=cpu", "model.max_audio_seconds=7200"])  # the defaults
    path = mini.speech_audio(args.minutes)
    load = os.getloadavg()
    rows = [run(model, path, chunks, seconds) for chunks, seconds in MODES]
    base = rows[0]["seconds"]
    lines = ["# Long form by chunking mode (benchmarks/long_form_chunks.py)", "",
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {machine_line()}, "
             f"Python {platform.python_version()}, {args.threads} threads, load at start {[round(x, 2) for x in load]}, "
             f"SALMONN-mini defaults (fp32), {args.minutes:g} min of espeak-ng speech, 8 pieces per generate call.", "",
             "| mode | pieces | tokens | s | CPU s | x real time | time vs fixed 30 s |", "| --- " * 7 + "|"]
    for r in rows:
        lines.append(f"| {r['chunks']} <= {r['max_seconds']:g} s | {r['pieces']} | {r['tokens']} | {r['seconds']} | "
                     f"{r['cpu_s']} | {r['x_real_time']} | {r['seconds'] / base:.2f}x |")
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
