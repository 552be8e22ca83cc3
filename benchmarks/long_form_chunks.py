"""Long-form speed of SALMONN-mini by chunking mode, in one process: fixed 30 s segments against pause-aligned
chunks of at most 8 s (the default since issue 15: 71.2 % vs 93.4 % WER on the Asterisk prompts,
scripts/mini/results/history/long_form_v1.json) on the same espeak-ng speech as benchmarks/mini.py.

    .venv/bin/python benchmarks/long_form_chunks.py [--minutes 5] [--threads 2] [--out benchmarks/long_form_chunks.md]
        [--variants batch16,compile,bf16]

--variants adds rows of the default mode (pause <= 8 s) with other settings, in the same process: batchN (N pieces
per generate call instead of 8), compile (model.compile: merged LoRA + greedy loop + compiled step), bf16
(model.dtype=bfloat16: changes answers; only worth it on CPUs with native bf16), combinable with '+'
(bf16+compile+batch16).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from salmonn.hardware import machine_line

import mini  # benchmarks/mini.py: the speech file and the CPU description

MODES = (("fixed", 30.0), ("pause", 8.0), ("pause", 15.0))


DEFAULT_MODE = ("pause", 8.0)


def run(model, path: Path, chunks: str, seconds: float, batch_size: int = 8, variant: str = "defaults") -> dict:
    row = mini.long_form_run(model, path, batch_size=batch_size, chunks=chunks, max_seconds=seconds)
    return {"chunks": chunks, "max_seconds": seconds, "variant": variant, "batch_size": batch_size,
            "pieces": row["pieces"], "tokens": row["tokens"], "seconds": round(row["seconds"], 2),
            "cpu_s": round(row["cpu_s"], 2), "x_real_time": round(row["x_real_time"], 2), "audio_s": row["audio_s"],
            "first_segment_s": round(row["first_segment_s"], 2), "text_head": row["text_head"][:120]}


def variant_run(name: str, path: Path, overrides: list[str]) -> dict:
    """The default mode with one --variants entry's settings (a fresh model; the compiling call is not timed)."""
    from salmonn import load_model
    parts = name.split("+")
    batch = next((int(p[5:]) for p in parts if p.startswith("batch")), 8)
    extra = [f"model.dtype={'bfloat16' if 'bf16' in parts else 'float32'}"]
    if "compile" in parts:
        extra.append("model.compile=true")
    unknown = [p for p in parts if p not in ("bf16", "compile") and not p.startswith("batch")]
    if unknown:
        raise SystemExit(f"--variants: unknown part(s) {unknown}; use batchN, compile, bf16 joined by '+'")
    model = load_model(None, overrides + extra)
    if "compile" in parts:
        run(model, mini.speech_audio(1), *DEFAULT_MODE, batch_size=batch)  # compiles for this batch size
    return run(model, path, *DEFAULT_MODE, batch_size=batch, variant=name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("long_form_chunks.md"))
    parser.add_argument("--variants", default="", help="comma-separated: batchN, compile, bf16 or '+' joins")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from salmonn import load_model
    overrides = ["model.device=cpu", "model.max_audio_seconds=7200"]
    model = load_model(None, overrides)  # the defaults
    path = mini.speech_audio(args.minutes)
    load = os.getloadavg()
    rows = [run(model, path, chunks, seconds) for chunks, seconds in MODES]
    del model
    rows += [variant_run(name, path, overrides) for name in args.variants.split(",") if name]
    from report import mini_weights_sha256
    for r in rows:  # the weights measured, stored beside the numbers
        r["weights_sha256"] = mini_weights_sha256()
    base = rows[0]["seconds"]
    lines = ["# Long form by chunking mode (benchmarks/long_form_chunks.py)", "",
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {machine_line()}, "
             f"Python {platform.python_version()}, {args.threads} threads, load at start {[round(x, 2) for x in load]}, "
             f"SALMONN-mini defaults (fp32, 8 pieces per generate call) unless the variant says otherwise, "
             f"{args.minutes:g} min of espeak-ng speech.", "",
             "| mode | variant | pieces | tokens | s | CPU s | x real time | first piece s | time vs fixed 30 s |",
             "| --- " * 9 + "|"]
    for r in rows:
        lines.append(f"| {r['chunks']} <= {r['max_seconds']:g} s | {r['variant']} | {r['pieces']} | {r['tokens']} | "
                     f"{r['seconds']} | {r['cpu_s']} | {r['x_real_time']} | {r['first_segment_s']} | "
                     f"{r['seconds'] / base:.2f}x |")
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
