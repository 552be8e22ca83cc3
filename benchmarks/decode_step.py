"""One-token decode steps of SALMONN-mini with and without this round's decode-step switches (issue 16), in one
process, bf16 weights + merged LoRA + greedy loop + compiled step, every variant interleaved rep by rep:

    .venv/bin/python benchmarks/decode_step.py [--reps 5] [--threads 1] [--only clip,batch8,long] [--minutes 5]

- clip: a 10 s clip (gunshots.wav) + exactly 32 greedy tokens, one clip (target <= 1 s).
- batch8: 8 clips (gunshots.wav and duck.wav, cycled) + 32 tokens in one call; clips/s against the same variant's
  one-clip clips/s (target: batch 8 >= 6x the clips/s of one at a time).
- long: `long_form` (`salmonn infer --long-form`) on --minutes of mini.py's espeak-ng speech, 8 segments per
  call (the 512-slot static cache of the last profile), target >= 20x real time.
Variants: model.packed_gqa off (transformers' sdpa: repeat_kv copies the cache inside the compiled step) and on,
then with model.contiguous_head (the prompt's last hidden states made contiguous before lm_head), then with filled
prompt keys (the prompt attends to its own slots of the static cache, not all of them; always on in the package, a
keyword of llm_runtime._packed_gqa_attention that only this benchmark turns off). The stored output also has a
"fused projections" variant (q/k/v and gate/up as one product each): it measured slower for one clip (1.13x against
1.18x), and its code was removed from the package (issue 31).
The first call of each variant and shape (compilation) is not timed; the greedy loop without torch.compile runs once
for its ids. Writes decode_step.md / .json (RESULTS.md quotes them: `.venv/bin/python benchmarks/report.py`);
`--report` writes the .md again from the stored .json without measuring.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
AUDIO = ROOT.parent / "shared" / "audio"
PROMPT = "Please describe the audio."
VARIANTS = {  # name -> (model.packed_gqa, model.contiguous_head, filled prompt keys)
    "sdpa + repeat_kv, strided head input (before)": (False, False, False),
    "packed GQA steps": (True, False, False),
    "packed GQA steps + contiguous head input": (True, True, False),
    "packed GQA steps + contiguous head input + filled prompt keys (defaults)": (True, True, True),
}
DEFAULTS = "packed GQA steps + contiguous head input + filled prompt keys (defaults)"  # the eager ids' settings


def switch(model, settings: tuple) -> None:
    """The model's fast paths as the config fields say (llm_runtime.apply_fast_paths, as load_model does), and the
    packed attention with or without filled prompt keys."""
    import functools

    from transformers import AttentionInterface

    from salmonn import llm_runtime
    m = model.config.model
    m.packed_gqa, m.contiguous_head, filled = settings
    llm_runtime.apply_fast_paths(model.llama_model, m)
    AttentionInterface.register(llm_runtime.PACKED_GQA, functools.partial(llm_runtime._packed_gqa_attention,
                                                                          filled_prompt_keys=filled))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def timed_clips(model, batch: int, reps: int) -> dict:
    from salmonn.bench import run_bench
    clips = [str(AUDIO / "gunshots.wav")] if batch == 1 else [str(AUDIO / "gunshots.wav"), str(AUDIO / "duck.wav")]
    runs: dict[str, list] = {n: [] for n in VARIANTS}
    ids = {}
    for rep in range(reps + 1):
        for name, settings in VARIANTS.items():
            switch(model, settings)
            log(f"batch {batch} rep {rep}/{reps}: {name}")
            result = run_bench(model, clips, PROMPT, new_tokens=32, reps=1, batch=batch, warmup=0)
            if rep:
                runs[name] += result["runs"]
            ids[name] = result["token_ids"]
    switch(model, VARIANTS[DEFAULTS])
    model.config.model.compile = False  # the eager greedy loop (transformers packs GQA itself there): ids only
    ids["eager"] = run_bench(model, clips, PROMPT, new_tokens=32, reps=1, batch=batch, warmup=0)["token_ids"]
    model.config.model.compile = True
    out = {"eager ids": ids["eager"]}
    for name in VARIANTS:
        total = statistics.median(r["total_s"] for r in runs[name])
        decode = statistics.median(r["decode_s"] for r in runs[name])
        cpu = statistics.median(r["cpu_s"] for r in runs[name])
        out[name] = {"median_s": total, "decode_s": decode, "cpu_s": cpu, "clips_per_s": batch / total,
                     "runs": [r["total_s"] for r in runs[name]], "token_ids": ids[name],
                     "same_ids_as_eager": ids[name] == ids["eager"]}
    return out


def long_run(model, path: Path) -> dict:
    """mini.long_form_run's figures, plus the whole answer's ids and text (to compare variants)."""
    import soundfile as sf
    from salmonn.decoding import decoding_config
    from salmonn.inference import long_form
    gen = decoding_config(model.config.generate, "greedy")
    start, cpu = time.perf_counter(), time.process_time()
    answer = long_form(model, str(path), "Recognize the speech and give me the transcription.", gen, batch_size=8)
    seconds = time.perf_counter() - start
    audio_s = sf.info(str(path)).duration
    return {"audio_s": audio_s, "seconds": seconds, "cpu_s": time.process_time() - cpu,
            "x_real_time": audio_s / seconds, "tokens": len(answer.token_ids), "token_ids": answer.token_ids,
            "text": answer.text}


def long_runs(model, minutes: float) -> dict:
    import mini
    path = mini.speech_audio(minutes)
    out = {}
    for name, settings in VARIANTS.items():
        switch(model, settings)
        log(f"long form {minutes:g} min: {name} (warm-up on the first batch)")
        long_run(model, mini.speech_audio(4))  # compiles this variant's 8-row, 512-slot step
        log(f"long form {minutes:g} min: {name}")
        out[name] = long_run(model, path)
    switch(model, VARIANTS[DEFAULTS])
    model.config.model.compile = False
    log(f"long form {minutes:g} min: eager greedy loop (ids only)")
    eager = long_run(model, path)
    model.config.model.compile = True
    for entry in out.values():
        entry["same_ids_as_eager"] = entry["token_ids"] == eager["token_ids"]
    out["eager ids"] = eager["token_ids"]
    return out


def measured(part: dict) -> dict:
    """The timed variants of one part (not its "eager ids"), as stored."""
    return {n: e for n, e in part.items() if isinstance(e, dict)}


def report(info: dict, parts: dict) -> str:
    lines = ["# SALMONN-mini one-token decode steps (benchmarks/decode_step.py)", "",
             f"Generated on {info['date']}: {info['machine']}; torch threads {info['threads']}; load average at "
             f"start {info['load_start']}, at end {info['load_end']} (2 cores shared with a nice-19 job).", "",
             "bf16 weights, merged LoRA, greedy loop, compiled step; the variants differ only in "
             "`model.packed_gqa`, `model.contiguous_head` and filled prompt keys. Medians of "
             "interleaved runs, compilation apart. `ids = eager step`: the same ids as the greedy loop without "
             "torch.compile (DynamicCache; transformers' sdpa packs a one-token step's GQA itself there), run once.",
             ""]
    gone = [n for n in measured(next(iter(parts.values()))) if n not in VARIANTS]
    if gone:
        lines += ["Measured then, no longer in this script (the package dropped their code): "
                  + "; ".join(f"`{n}`" for n in gone) + ".", ""]
    before = next(iter(VARIANTS))
    for key, title in (("clip", "10 s clip + 32 tokens, one clip (target <= 1 s)"),
                       ("batch8", "8 clips + 32 tokens in one call")):
        if key not in parts:
            continue
        lines += [f"## {title}", "", "| variant | median s | decode s | CPU s | clips/s | x before | CPU x before | "
                  "ids = before | ids = eager step |", "| --- " * 9 + "|"]
        part = measured(parts[key])
        for name, e in part.items():
            lines.append(f"| {name} | {e['median_s']:.3f} | {e['decode_s']:.3f} | {e['cpu_s']:.2f} | "
                         f"{e['clips_per_s']:.2f} | {part[before]['median_s'] / e['median_s']:.2f} | "
                         f"{part[before]['cpu_s'] / e['cpu_s']:.2f} | "
                         f"{'yes' if e['token_ids'] == part[before]['token_ids'] else 'no'} | "
                         f"{'yes' if e['same_ids_as_eager'] else 'no'} |")
        lines.append("")
    if "clip" in parts and "batch8" in parts:
        lines += ["## Batch 8 against one clip at a time (target >= 6x the clips/s)", "",
                  "| variant | one clip clips/s | batch 8 clips/s | ratio |", "| --- " * 4 + "|"]
        for name in measured(parts["clip"]):
            one, eight = parts["clip"][name]["clips_per_s"], parts["batch8"][name]["clips_per_s"]
            lines.append(f"| {name} | {one:.2f} | {eight:.2f} | {eight / one:.2f}x |")
        lines.append("")
    if "long" in parts:
        long = measured(parts["long"])
        lines += ["## Long form, 8 segments per call (target >= 20x real time)", "",
                  "| variant | audio min | wall s | x real time | x before | CPU s | CPU x before | tokens | "
                  "ids = before | ids = eager step |", "| --- " * 10 + "|"]
        for name, e in long.items():
            lines.append(f"| {name} | {e['audio_s'] / 60:.1f} | {e['seconds']:.1f} | {e['x_real_time']:.1f} | "
                         f"{long[before]['seconds'] / e['seconds']:.2f} | {e['cpu_s']:.1f} | "
                         f"{long[before]['cpu_s'] / e['cpu_s']:.2f} | {e['tokens']} | "
                         f"{'yes' if e['token_ids'] == long[before]['token_ids'] else 'no'} | "
                         f"{'yes' if e['same_ids_as_eager'] else 'no'} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", default="clip,batch8,long")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "decode_step.md")
    parser.add_argument("--report", action="store_true", help="write the .md again from the stored .json only")
    args = parser.parse_args()
    if args.report:
        stored = json.loads(args.out.with_suffix(".json").read_text())
        args.out.write_text(report(stored.pop("info"), stored))
        return
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    from salmonn import load_model
    from salmonn.hardware import machine_line
    torch.set_num_threads(args.threads)
    torch._dynamo.config.recompile_limit = 64  # every variant x shape keeps its compiled step (limit 8: eager after)
    info = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine_line(),
            "threads": torch.get_num_threads(), "load_start": [round(x, 2) for x in os.getloadavg()]}
    from report import mini_weights_sha256
    info["weights_sha256"] = mini_weights_sha256()  # the weights measured, stored beside the numbers
    model = load_model(None, ["model.device=cpu", "model.dtype=bfloat16", "model.max_audio_seconds=7200",
                                       "model.merge_lora=true", "model.greedy_loop=true", "model.compile=true"])
    model.eval()
    wanted, parts = args.only.split(","), {}
    if "clip" in wanted:
        parts["clip"] = timed_clips(model, 1, args.reps)
    if "batch8" in wanted:
        parts["batch8"] = timed_clips(model, 8, max(2, args.reps // 2))
    if "long" in wanted:
        parts["long"] = long_runs(model, args.minutes)
    info["load_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.with_suffix(".json").write_text(json.dumps({"info": info, **parts}, indent=1))
    args.out.write_text(report(info, parts))
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
