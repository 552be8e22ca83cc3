"""What SALMONN-mini's n-gram ban (generate.no_repeat_ngram_size: 3, its shipped config) costs in speed: a 10 s clip
(gunshots.wav) + exactly 32 greedy tokens through the greedy loop, eager and with the compiled step, ban off and on,
interleaved call by call in one process.

    .venv/bin/python benchmarks/ngram_ban.py [--reps 5]

Writes ngram_ban.md / .json next to this file.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLIP = [str(ROOT.parent / "shared" / "audio" / "gunshots.wav")]
PROMPT = "Please describe the audio."
SIZES = (0, 3)  # no_repeat_ngram_size: off, the shipped setting
VARIANTS = {"greedy loop": False, "greedy loop + compiled step": True}  # name -> model.compile


def measure(compile_step: bool, reps: int) -> dict:
    import torch

    from salmonn import load_model
    from salmonn.bench import run_bench
    torch.set_num_threads(2)
    model = load_model(None, ["model.device=cpu", f"model.compile={str(compile_step).lower()}"])
    times: dict[int, list[float]] = {n: [] for n in SIZES}
    ids = {}
    for rep in range(reps + 1):  # the first round compiles (and warms up): not timed
        for n in SIZES:
            model.config.generate.no_repeat_ngram_size = n
            result = run_bench(model, CLIP, PROMPT, new_tokens=32, reps=1, warmup=0)
            if rep:
                times[n].append(result["median_s"])
            ids[n] = result["token_ids"][0]
    row = {f"median_s_ngram{n}": statistics.median(t) for n, t in times.items()}
    row["on_over_off"] = row["median_s_ngram3"] / row["median_s_ngram0"]
    row["same_ids"] = ids[0] == ids[3]
    row["distinct_ids"] = len(set(ids[0]))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    from salmonn.hardware import machine_line
    rows = {name: measure(compile_step, args.reps) for name, compile_step in VARIANTS.items()}
    info = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine_line(), "reps": args.reps}
    from report import mini_weights_sha256
    info["weights_sha256"] = mini_weights_sha256()  # the weights measured, stored beside the numbers
    from report import write_stored_report
    table = [[name, f"{r['median_s_ngram0']:.3f}", f"{r['median_s_ngram3']:.3f}", f"{r['on_over_off']:.3f}",
              f"{'yes' if r['same_ids'] else 'no'} ({r['distinct_ids']})"] for name, r in rows.items()]
    print(write_stored_report(
        Path(__file__).with_suffix(""), f"SALMONN-mini's n-gram ban: speed ({info['date']})",
        f"Machine: {info['machine']}. SALMONN-mini fp32 (LoRA merged), 10 s clip + 32 tokens, medians of {args.reps} "
        "calls per setting, interleaved (`benchmarks/ngram_ban.py`).",
        ["decoding", "ban off s", "ban on (3) s", "on / off", "same ids (distinct)"], table,
        {"info": info, "rows": rows}))


if __name__ == "__main__":
    main()
