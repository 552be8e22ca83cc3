"""Inductor options for SALMONN-mini's compiled decoding step (issue 16: decode is 2.5x its read-bandwidth floor on
2 cores, partly the per-kernel cost of inductor's Python wrapper around ~500 small kernels per token).

    .venv/bin/python benchmarks/inductor_options.py [--reps 5] [--rounds 3] [--dtype float32]

Each option set runs in its own process (inductor's config is read at compile time), rounds interleaved
A B A B ...: SALMONN-mini with LoRA merged + greedy loop + compiled step, a 10 s clip (gunshots.wav) + exactly 32
greedy tokens, `reps` timed calls after the compiling one. Writes inductor_options.md / .json next to this file
(float32; another dtype: inductor_options_<dtype>.md / .json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = {  # name -> torch._inductor.config overrides
    "inductor defaults (shipped)": {},
    "cpp_wrapper": {"cpp_wrapper": True},
    "freezing (weights folded, prepacked for oneDNN)": {"freezing": True},
    "freezing + cpp_wrapper": {"freezing": True, "cpp_wrapper": True},
}


def child(options: dict, dtype: str, reps: int) -> dict:
    import torch
    import torch._inductor.config as inductor

    from salmonn import load_model
    from salmonn.bench import run_bench
    torch.set_num_threads(2)
    for key, value in options.items():
        setattr(inductor, key, value)
    model = load_model(None, ["model.device=cpu", f"model.dtype={dtype}", "model.merge_lora=true",
                                       "model.greedy_loop=true", "model.compile=true"])
    clip = [str(ROOT.parent / "shared" / "audio" / "gunshots.wav")]
    start = time.perf_counter()
    first = run_bench(model, clip, "Please describe the audio.", new_tokens=32, reps=1, warmup=0)
    compile_s = time.perf_counter() - start
    timed = run_bench(model, clip, "Please describe the audio.", new_tokens=32, reps=reps, warmup=0)
    return {"median_s": timed["median_s"], "ms_per_token": timed["ms_per_token"], "compile_call_s": compile_s,
            "token_ids": timed["token_ids"][0], "same_ids_as_first_call": timed["token_ids"] == first["token_ids"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(OPTIONS[args.child], args.dtype, args.reps)))
        return
    from salmonn.hardware import machine_line
    rounds: dict[str, list] = {name: [] for name in OPTIONS}
    for r in range(args.rounds):
        for name in OPTIONS:
            print(f"[{time.strftime('%H:%M:%S')}] round {r + 1}/{args.rounds}: {name}", file=sys.stderr, flush=True)
            out = subprocess.run([sys.executable, __file__, "--child", name, "--reps", str(args.reps),
                                  "--dtype", args.dtype], capture_output=True, text=True, check=True)
            rounds[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = next(iter(OPTIONS))
    rows = {}
    for name, runs in rounds.items():
        rows[name] = {"median_s": statistics.median(r["median_s"] for r in runs),
                      "ms_per_token": statistics.median(r["ms_per_token"] for r in runs),
                      "compile_call_s": statistics.median(r["compile_call_s"] for r in runs),
                      "same_ids_as_defaults": all(r["token_ids"] == rounds[base][0]["token_ids"] for r in runs),
                      "options": OPTIONS[name], "rounds": runs}
    info = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine_line(),
            "dtype": args.dtype, "reps": args.reps, "rounds": args.rounds}
    from report import mini_weights_sha256
    info["weights_sha256"] = mini_weights_sha256()  # the weights measured, stored beside the numbers
    here = Path(__file__).with_suffix("")
    if args.dtype != "float32":
        here = here.with_name(f"{here.name}_{args.dtype}")
    from report import write_stored_report
    table = [[name, f"{row['median_s']:.3f}", f"{row['ms_per_token']:.1f}",
              f"{rows[base]['median_s'] / row['median_s']:.2f}", f"{row['compile_call_s']:.0f}",
              "yes" if row["same_ids_as_defaults"] else "no"] for name, row in rows.items()]
    print(write_stored_report(
        here, f"Inductor options for the compiled decoding step ({info['date']})",
        f"Machine: {info['machine']}. SALMONN-mini {args.dtype}, LoRA merged + greedy loop + compiled step, 10 s clip "
        f"+ 32 tokens; medians over {args.rounds} processes x {args.reps} calls, processes interleaved "
        "(`benchmarks/inductor_options.py`).",
        ["options", "median s", "decode ms/token", "x defaults", "compiling call s", "same ids"], table,
        {"info": info, "rows": rows}))


if __name__ == "__main__":
    main()
