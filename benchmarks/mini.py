"""SALMONN-mini (the default model) against its two speed targets, on this machine, in one process:

    .venv/bin/python benchmarks/mini.py [--reps 5] [--only clip,long] [--minutes 60] [--out benchmarks/mini.md]

1. clip: a 10 s clip (gunshots.wav) + exactly 32 greedy tokens, `salmonn bench` style (stage hooks, load
   excluded), every variant interleaved rep by rep; target <= 1 s. Ids are compared with the old defaults'.
2. long: `--minutes` (default 60) of espeak-ng speech (fortune sentences read by several voices, ~6 unique
   minutes tiled) transcribed with `salmonn.inference.long_form` (what `salmonn infer --long-form` runs), 8
   segments per generate call; target >= 20x real time. The old defaults run on the first 5 minutes for the ratio.
Writes mini.md and mini.json next to this file (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
AUDIO = ROOT.parent / "shared" / "audio"
CACHE = ROOT / "cache" / "mini_bench"
PROMPT = "Please describe the audio."
ASR_PROMPT = "Recognize the speech and give me the transcription."
OLD_DEFAULTS = dict(merge_lora=False, greedy_loop=False, compile=False)  # this round's baseline
CLIP_VARIANTS = {  # name -> model.* settings (on the float32 model unless the name says bf16)
    "old defaults: HF generate, LoRA apart (baseline)": OLD_DEFAULTS,
    "LoRA merged": dict(OLD_DEFAULTS, merge_lora=True),
    "defaults: LoRA merged + greedy loop": dict(OLD_DEFAULTS, merge_lora=True, greedy_loop=True),
    "LoRA merged + compiled step (HF generate)": dict(OLD_DEFAULTS, merge_lora=True, compile=True),
    "LoRA merged + greedy loop + compiled step": dict(OLD_DEFAULTS, merge_lora=True, greedy_loop=True, compile=True),
    "bf16 weights + greedy loop + compiled step": dict(OLD_DEFAULTS, merge_lora=True, greedy_loop=True, compile=True),
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def configure(model, settings: dict):
    for key, value in settings.items():
        setattr(model.config.model, key, value)
    return model.eval()  # merges or unmerges LoRA as merge_lora now says


def clip_benchmark(reps: int, with_bf16: bool) -> dict:
    """Every variant interleaved rep by rep; the first call of each (compilation) is reported apart."""
    from salmonn import load_model
    from salmonn.bench import run_bench, summarize
    models = {"float32": load_model(None, ["model.device=cpu"])}
    if with_bf16:
        models["bfloat16"] = load_model(None, ["model.device=cpu", "model.dtype=bfloat16"])
    variants = {n: s for n, s in CLIP_VARIANTS.items() if with_bf16 or "bf16" not in n}
    runs: dict[str, list] = {n: [] for n in variants}
    first_call, ids = {}, {}
    for rep in range(reps + 1):
        for name, settings in variants.items():
            model = configure(models["bfloat16" if "bf16" in name else "float32"], settings)
            log(f"clip rep {rep}/{reps}: {name}")
            start = time.perf_counter()
            result = run_bench(model, [str(AUDIO / "gunshots.wav")], PROMPT, new_tokens=32, reps=1, warmup=0)
            if rep == 0:
                first_call[name] = time.perf_counter() - start
            else:
                runs[name] += result["runs"]
            ids[name] = result["token_ids"][0]
    base = next(iter(variants))
    out = {}
    for name in variants:
        entry = summarize(runs[name], 1, 32)
        entry.update(first_call_s=first_call[name], same_ids_as_baseline=ids[name] == ids[base],
                     token_ids=ids[name], settings=variants[name])
        out[name] = entry
    for entry in out.values():
        entry["speedup"] = out[base]["median_s"] / entry["median_s"]
    return out


# ------------------------------------------------------------------------------------------------ an hour of speech
def speech_audio(minutes: float) -> Path:
    """`minutes` of espeak-ng speech at 16 kHz (cached): ~6 unique minutes of fortune sentences, tiled."""
    import soundfile as sf
    from salmonn.audio import load_audio
    path = CACHE / f"speech_{minutes:g}min.flac"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    text = Path("/usr/share/games/fortunes/computers").read_text(errors="ignore").replace("%", " ")
    words = " ".join(text.split()).split(" ")
    pieces = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, voice in enumerate(("en-us", "en", "en-us+f3", "en+m3", "en-us+f2", "en+m7")):
            wav = Path(tmp) / f"{k}.wav"
            chunk = " ".join(words[k * 160:(k + 1) * 160])  # ~1 minute of speech each
            subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(wav), chunk], check=True)
            pieces.append(load_audio(wav))  # espeak-ng writes 22.05 kHz: resampled to 16 kHz
    unique = np.concatenate(pieces)
    total = int(minutes * 60 * 16000)
    sf.write(path, np.tile(unique, total // len(unique) + 1)[:total], 16000)
    log(f"wrote {path}: {minutes:g} min ({len(unique) / 16000 / 60:.1f} unique)")
    return path


def long_form_run(model, path: Path, batch_size: int = 8, **options) -> dict:
    """`long_form` on the file (batch_size pieces per call; options: chunks, max_seconds), timed, with its peak
    memory."""
    from salmonn.bench import PeakMemory
    from salmonn.decoding import decoding_config
    from salmonn.inference import long_form
    gen = decoding_config(model.config.generate, "greedy")
    pieces: list[float] = []  # when each piece's answer came
    start = time.perf_counter()
    cpu = time.process_time()
    with PeakMemory(model.device) as memory:
        answer = long_form(model, str(path), ASR_PROMPT, gen, batch_size=batch_size,
                           on_segment=lambda a: pieces.append(time.perf_counter() - start), **options)
    seconds = time.perf_counter() - start
    import soundfile as sf
    audio_s = sf.info(str(path)).duration
    return {"audio_s": audio_s, "seconds": seconds, "cpu_s": time.process_time() - cpu, "x_real_time":
            audio_s / seconds, "first_segment_s": pieces[0] if pieces else None, "pieces": len(pieces),
            "peak_mb": memory.peak_mb, "peak_growth_mb": memory.growth_mb, "tokens": len(answer.token_ids),
            "text_head": answer.text[:300]}


def long_benchmark(minutes: float, settings: dict, dtype: str) -> dict:
    """The old defaults (float32) and the chosen settings on 5 minutes, then the chosen ones on `minutes`."""
    from salmonn import load_model
    overrides = ["model.device=cpu", "model.max_audio_seconds=7200"]
    short, out = speech_audio(5), {"settings": settings, "dtype": dtype}
    log("long form: 5 min, old defaults (float32)")
    model = configure(load_model(None, overrides), OLD_DEFAULTS)
    out["old defaults, 5 min"] = long_form_run(model, short)
    if dtype != "float32":
        model = load_model(None, overrides + [f"model.dtype={dtype}"])
    configure(model, settings)
    log("long form: 5 min, chosen settings (warms the compiled step)")
    out["chosen, 5 min"] = long_form_run(model, short)
    log(f"long form: {minutes:g} min, chosen settings")
    out[f"chosen, {minutes:g} min"] = long_form_run(model, speech_audio(minutes))
    return out


# ------------------------------------------------------------------------------------------------ report
def report(info: dict, clip: dict | None, long: dict | None) -> str:
    lines = ["# SALMONN-mini speed (benchmarks/mini.py)", "", f"Generated on {info['date']}: {info['machine']}.",
             f"Load average at start {info['load_start']}, at end {info['load_end']} (2 cores shared with other "
             "jobs: wall times are inflated; `CPU s` is this process's CPU time, `CPU share` = CPU s / wall / "
             "threads, the share of its threads' cores the call got).", "", f"torch threads: {info['threads']}.", ""]
    if clip:
        lines += ["## 10 s clip (gunshots.wav) + 32 greedy tokens, target <= 1 s", "",
                  *([f"(From the run of {info['clip_from']}.)", ""] if "clip_from" in info else []),
                  f"Medians of {len(next(iter(clip.values()))['runs'])} interleaved runs; first call (compilation) "
                  "apart.", "",
                  "| variant | median s | x baseline | first token s | decode ms/token | CPU s | CPU share | "
                  "peak MiB (+during call) | first call s | ids = baseline (distinct ids) |", "| --- " * 10 + "|"]
        for name, e in clip.items():
            share = e["cpu_s"] / e["median_s"] / info["threads"]
            lines.append(f"| {name} | {e['median_s']:.3f} | {e['speedup']:.2f} | {e['first_token_s']:.3f} | "
                         f"{e['ms_per_token']:.1f} | {e['cpu_s']:.2f} | {share:.2f} | {e['peak_mb']:.0f} "
                         f"(+{e['peak_growth_mb']:.0f}) | {e['first_call_s']:.1f} | "
                         f"{'yes' if e['same_ids_as_baseline'] else 'no'} ({len(set(e['token_ids']))}) |")
        lines += ["", "Stage medians (s):", "", "| variant | " + " | ".join(next(iter(clip.values()))["stages"]) +
                  " |", "| --- " * 7 + "|"]
        lines += [f"| {n} | " + " | ".join(f"{v:.3f}" for v in e["stages"].values()) + " |" for n, e in clip.items()]
        lines.append("")
    if long:
        lines += ["## Long form: speech transcribed segment by segment, target >= 20x real time", "",
                  *([f"(From the run of {info['long_from']}.)", ""] if "long_from" in info else []),
                  f"`long_form` (as `salmonn infer --long-form`), 8 segments per call, dtype {long['dtype']}, "
                  f"settings {long['settings']}.", "",
                  "| run | audio min | wall s | x real time | CPU s | first segment s | peak MiB (+during) | tokens |",
                  "| --- " * 8 + "|"]
        for name, e in long.items():
            if isinstance(e, dict) and "seconds" in e:
                lines.append(f"| {name} | {e['audio_s'] / 60:.1f} | {e['seconds']:.1f} | {e['x_real_time']:.1f} | "
                             f"{e['cpu_s']:.1f} | {e['first_segment_s']:.2f} | {e['peak_mb']:.0f} "
                             f"(+{e['peak_growth_mb']:.0f}) | {e['tokens']} |")
        lines += ["", "First words of the transcript: " + repr(long[next(k for k in long if k.startswith("chosen"))]
                                                         ["text_head"][:200]), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--only", default="clip,long", help="comma-separated parts: clip, long")
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--long-settings", default="merge_lora=true,greedy_loop=true,compile=true")
    parser.add_argument("--long-dtype", default="auto", help="auto: bfloat16 where the CPU has native bf16")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: the physical cores)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "mini.md")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    from salmonn.hardware import machine_line, native_bf16, physical_cores
    torch.set_num_threads(args.threads or physical_cores())
    info = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine_line(),
            "threads": torch.get_num_threads(), "load_start": [round(x, 2) for x in os.getloadavg()]}
    from report import mini_weights_sha256
    info["weights_sha256"] = mini_weights_sha256()  # the weights measured, stored beside the numbers
    parts = set(args.only.split(","))
    clip = clip_benchmark(args.reps, native_bf16()) if "clip" in parts else None
    long = None
    if "long" in parts:
        settings = {k: v == "true" for k, v in (item.split("=") for item in args.long_settings.split(","))}
        dtype = args.long_dtype if args.long_dtype != "auto" else ("bfloat16" if native_bf16() else "float32")
        long = long_benchmark(args.minutes, settings, dtype)
    info["load_end"] = [round(x, 2) for x in os.getloadavg()]
    stored = args.out.with_suffix(".json")
    earlier = json.loads(stored.read_text()) if stored.exists() else {}
    if clip is None and earlier.get("clip"):  # a part not run keeps its earlier result (and says when)
        clip, info["clip_from"] = earlier["clip"], earlier["info"].get("clip_from", earlier["info"]["date"])
    if long is None and earlier.get("long"):
        long, info["long_from"] = earlier["long"], earlier["info"].get("long_from", earlier["info"]["date"])
    for part in ("clip", "long"):  # a carried part keeps the weights it measured (None: run before they were stored)
        if f"{part}_from" in info:
            info[f"{part}_weights_sha256"] = earlier["info"].get(f"{part}_weights_sha256",
                                                                 earlier["info"].get("weights_sha256"))
    stored.write_text(json.dumps({"info": info, "clip": clip, "long": long}, indent=1))
    args.out.write_text(report(info, clip, long))
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
