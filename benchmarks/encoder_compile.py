"""Would torch.compile speed up the encoders? The speed issue's benchmark model (`models.py`: Whisper base-sized
encoder on the full 30 s window, BEATs of the released cfg), a 10 s clip (gunshots.wav), eager against compiled,
fp32 and bf16, interleaved call by call in one process; the largest difference of the outputs beside.

    .venv/bin/python benchmarks/encoder_compile.py [--reps 5] [--dtypes float32,bfloat16]

Writes encoder_compile.md / .json next to this file.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
CLIP = str(ROOT.parent / "shared" / "audio" / "gunshots.wav")


def encoder_calls(model):
    """name -> (eager call, compiled call) on one 10 s clip's inputs."""
    import torch

    from salmonn import audio
    from salmonn.features import whisper_log_mel
    segment = next(iter(model.clip_segments(CLIP)))
    spectrogram = whisper_log_mel([segment], model.feature_extractor).to(model.speech_encoder.conv1.weight.dtype)
    wav, padding = audio.batch_waveforms([segment])
    whisper, beats = model.speech_encoder, model.beats.extract_features
    compiled_whisper, compiled_beats = torch.compile(whisper), torch.compile(beats)
    return {"whisper": (lambda: whisper(spectrogram).last_hidden_state,
                        lambda: compiled_whisper(spectrogram).last_hidden_state),
            "beats": (lambda: beats(wav, padding)[0], lambda: compiled_beats(wav, padding)[0])}


def measure(dtype: str, reps: int) -> dict:
    import torch

    import models
    from salmonn import load_model
    model = load_model(models.build(models.DEFAULT_OUT), [f"model.dtype={dtype}", "model.device=cpu"]).eval()
    rows = {}
    with torch.inference_mode():
        for name, (eager, compiled) in encoder_calls(model).items():
            reference = eager()
            start = time.perf_counter()
            out = compiled()
            compile_s = time.perf_counter() - start
            eager_s, compiled_s = [], []
            for _ in range(reps):
                for call, times in ((eager, eager_s), (compiled, compiled_s)):
                    start = time.perf_counter()
                    call()
                    times.append(time.perf_counter() - start)
            rows[f"{name} {dtype}"] = {
                "eager_s": statistics.median(eager_s), "compiled_s": statistics.median(compiled_s),
                "speedup": statistics.median(eager_s) / statistics.median(compiled_s), "compile_s": compile_s,
                "max_abs_diff": (reference.float() - out.float()).abs().max().item(),
                "output_abs_max": reference.float().abs().max().item()}
    return rows


def main() -> None:
    import torch
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    args = parser.parse_args()
    from salmonn.hardware import machine_line
    torch.set_num_threads(2)
    rows = {}
    for dtype in args.dtypes.split(","):
        rows.update(measure(dtype, args.reps))
    import models
    from report import config_weights, write_stored_report
    info = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine_line(), "reps": args.reps,
            **config_weights(models.build(models.DEFAULT_OUT))}
    table = [[name, f"{r['eager_s']:.3f}", f"{r['compiled_s']:.3f}", f"{r['speedup']:.2f}x", f"{r['compile_s']:.0f}",
              f"{r['max_abs_diff']:.2g} ({r['output_abs_max']:.2f})"] for name, r in rows.items()]
    print(write_stored_report(
        Path(__file__).with_suffix(""), f"Encoders eager vs torch.compile ({info['date']})",
        f"Machine: {info['machine']}; 2 threads. The speed issue's benchmark model (weights sha256 "
        f"{info['weights_sha256'][:12]}), 10 s clip, medians of {args.reps} "
        "interleaved calls (`benchmarks/encoder_compile.py`); a compiling call is short when inductor's disk cache "
        "holds the graph from an earlier run.",
        ["encoder", "eager s", "compiled s", "speed-up", "compiling call s", "max abs diff (output max)"], table,
        {"info": info, "rows": rows}))


if __name__ == "__main__":
    main()
