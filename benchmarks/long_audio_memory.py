"""Peak memory growth while encoding long audio: the README's long-audio numbers.

    .venv/bin/python benchmarks/long_audio_memory.py [--minutes 1 10 30] [--batch 2 8] [--output FILE]

For each length, one fresh process loads the reference-tiny fixture model (model.encode_batch_size=B,
model.max_audio_seconds=1800), encodes a 1 s clip to warm up, resets the kernel's peak-RSS counter, then encodes
a generated WAV of that length with `model.encode_audio` (30 s segments, decoded block by block, B segments
through the encoders at a time). Growth = peak RSS during that call minus RSS before it. Linux only (reads
/proc/self/status). The output is a Markdown table; benchmarks/long_audio_memory.md is its stored copy.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from salmonn.frames import SAMPLE_RATE

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT.parent / "shared" / "fixtures" / "reference-tiny"


def status_mib(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure(path: str, batch: int) -> dict:
    """In this (fresh) process: RSS growth while encoding `path`."""
    from salmonn import load_model

    model = load_model(FIXTURE / "config.yaml", ["device=cpu", f"model.encode_batch_size={batch}",
                                                          "model.max_audio_seconds=1800"])
    model.encode_audio([(np.zeros(SAMPLE_RATE, dtype=np.float32), SAMPLE_RATE)])  # warm-up: lazy allocations, threads
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (peak RSS) to the current RSS
    before = status_mib("VmRSS")
    start = time.perf_counter()
    tokens = model.encode_audio([path])[0]
    seconds = time.perf_counter() - start
    return {"tokens": int(tokens.shape[0]), "rss_before_mib": before, "growth_mib": status_mib("VmHWM") - before,
            "encode_s": seconds}


def write_clip(path: Path, minutes: float) -> None:
    """A tone with noise, written in 1-minute blocks (the parent's memory does not matter, but stays small)."""
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", SAMPLE_RATE, 1, subtype="PCM_16") as f:
        for _ in range(int(minutes)):
            t = np.arange(60 * SAMPLE_RATE) / SAMPLE_RATE
            f.write((0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=int, nargs="+", default=[1, 10, 30])
    parser.add_argument("--batch", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--output", type=Path)
    parser.add_argument("--child", nargs=2, metavar=("PATH", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]))))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in args.minutes:
            clip = Path(tmp) / f"{minutes}min.wav"
            write_clip(clip, minutes)
            for batch in args.batch:
                out = subprocess.run([sys.executable, __file__, "--child", str(clip), str(batch)], check=True,
                                     capture_output=True, text=True).stdout
                rows.append({"minutes": minutes, "batch": batch, **json.loads(out.strip().splitlines()[-1])})
                print(rows[-1], file=sys.stderr)
    from report import config_weights
    weights = config_weights(FIXTURE / "config.yaml")["weights_sha256"]
    lines = ["# Peak RSS growth while encoding long audio (`benchmarks/long_audio_memory.py`)", "",
             f"reference-tiny fixture model (weights sha256 {weights[:12]}), float32, CPU; "
             f"{platform.processor() or platform.machine()}, "
             f"{time.strftime('%Y-%m-%d')}", "",
             "| audio | encode_batch_size | audio tokens | peak RSS growth | RSS before | encode time |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['minutes']} min | {r['batch']} | {r['tokens']} | {r['growth_mib']:.0f} MiB | "
              f"{r['rss_before_mib']:.0f} MiB | {r['encode_s']:.1f} s |" for r in rows]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
