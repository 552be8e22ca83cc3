"""Where SALMONN-mini's long-form time goes: torch.profiler over one 8-segment batch (4 minutes of the cached
espeak-ng speech from mini.py), after a warm-up batch, with the settings mini.py's long-form run uses.

    .venv/bin/python benchmarks/profile_long_form.py [--dtype bfloat16] [--threads 1]   # -> profile_long_form.md
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "profile_long_form.md")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    from torch.profiler import ProfilerActivity, profile
    import mini
    from report import mini_weights_sha256
    from salmonn import load_model
    from salmonn.decoding import decoding_config
    from salmonn.inference import long_form
    audio, _ = sf.read(str(mini.speech_audio(5)), dtype="float32")
    batch = audio[: 8 * 30 * 16000]  # [samples] 8 segments of 30 s
    model = load_model(None, ["model.device=cpu", f"model.dtype={args.dtype}", "model.compile=true"])
    gen = decoding_config(model.config.generate, "greedy")
    long_form(model, (batch, 16000), mini.ASR_PROMPT, gen)  # warm-up (compiled step from the disk cache)
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        answer = long_form(model, (batch, 16000), mini.ASR_PROMPT, gen)
    wall = time.perf_counter() - start
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    shaped = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)
    lines = ["# SALMONN-mini long form: one 8-segment batch (4 min of speech) under torch.profiler", "",
             f"dtype {args.dtype}, {args.threads} thread(s), merged LoRA + greedy loop + compiled step; wall "
             f"{wall:.1f} s under the profiler ({240 / wall:.1f}x real time), {total:.1f} s of op time, "
             f"{len(answer.token_ids)} answer tokens. Decode-step fast paths: model.packed_gqa "
             f"{model.config.model.packed_gqa}, model.contiguous_head {model.config.model.contiguous_head}. "
             f"SALMONN-mini weights sha256 {mini_weights_sha256()}.", "",
             "| op | self s | share | calls |", "| --- | --- | --- | --- |"]
    lines += [f"| {e.key[:80]} | {e.self_cpu_time_total / 1e6:.3f} | {100 * e.self_cpu_time_total / 1e6 / total:.1f}% "
              f"| {e.count} |" for e in events[:15]]
    lines += ["", "By input shapes (which call the time is in: Whisper's attention is [8, 8, 1500, 64], a decoding "
              "step's query [8, 9, 1, 64] or packed [8, 3, 3, 64], the prompt's [8, 9, T, 64]):", "",
              "| op | input shapes | self s | share | calls |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {e.key[:60]} | {str(e.input_shapes)[:110]} | {e.self_cpu_time_total / 1e6:.3f} | "
              f"{100 * e.self_cpu_time_total / 1e6 / total:.1f}% | {e.count} |" for e in shaped[:12]]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
