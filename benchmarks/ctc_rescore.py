"""What CTC rescoring (generate.ctc_weight, salmonn.rescoring) costs SALMONN-mini in speed: transcribing the two
bundled speech clips one at a time, greedy (the shipped config) against greedy rescored (`--preset transcribe`),
4-beam search and 4-beam search rescored, interleaved call by call in one process (whole answers, so the variants
may answer with different lengths).

    .venv/bin/python benchmarks/ctc_rescore.py [--reps 5]

Writes ctc_rescore.md / .json next to this file.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLIPS = [str(ROOT / "examples" / "audio" / name) for name in ("speech_male.flac", "speech_female.flac")]
PROMPT = "Recognize the speech and give me the transcription."
VARIANTS = {  # name -> decoding options (the rescoring weights of scripts/mini/results/ctc_rescore.json)
    "greedy (shipped config, baseline)": dict(num_beams=1),
    "greedy + CTC rescoring (--preset transcribe)": dict(preset="transcribe"),
    "4-beam search": dict(num_beams=4),
    "4-beam search + CTC rescoring": dict(num_beams=4, ctc_weight=0.4, ctc_length_bonus=2.0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    import torch

    from salmonn import load_model
    from salmonn.hardware import machine_line
    from salmonn.inference import generate
    torch.set_num_threads(2)
    model = load_model(None, ["model.device=cpu"]).eval()
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    answers: dict[str, list[str]] = {}
    for rep in range(args.reps + 1):  # the first round warms up: not timed
        for name, options in VARIANTS.items():
            start = time.perf_counter()
            answers[name] = [generate(model, [clip], PROMPT, **options)[0].text for clip in CLIPS]
            if rep:
                times[name].append((time.perf_counter() - start) / len(CLIPS))
    base = statistics.median(times[next(iter(VARIANTS))])
    rows = {name: {"median_s_per_clip": statistics.median(t), "over_greedy": statistics.median(t) / base,
                   "answers": answers[name]} for name, t in times.items()}
    info = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine_line(), "reps": args.reps}
    from report import mini_weights_sha256
    info["weights_sha256"] = mini_weights_sha256()  # the weights measured, stored beside the numbers
    from report import write_stored_report
    table = [[name, f"{r['median_s_per_clip']:.3f}", f"{r['over_greedy']:.2f}", " / ".join(r["answers"])]
             for name, r in rows.items()]
    print(write_stored_report(
        Path(__file__).with_suffix(""), f"SALMONN-mini transcription with CTC rescoring: speed ({info['date']})",
        f"Machine: {info['machine']}. SALMONN-mini fp32 (LoRA merged), 2 threads, the bundled speech clips (3.7 s and "
        f"3.1 s) one at a time, whole answers, medians of {args.reps} rounds, interleaved "
        "(`benchmarks/ctc_rescore.py`).",
        ["decoding", "s per clip", "x greedy", "answers (male / female)"], table, {"info": info, "rows": rows}))


if __name__ == "__main__":
    main()
