"""Speed of SALMONN on this machine, all in one process, against a baseline measured in the same run.

    .venv/bin/python benchmarks/run.py [--reps 3] [--only inference,profile,answers,train] [--variants TEXT]
                                       [--bf16 auto|on|off] [--out benchmarks/RESULTS.md]

1. Builds (once) the random-weight model of the speed issue's shapes (benchmarks/models.py -> cache/bench).
2. Describes the machine: CPU model, cores, vector extensions, load average, measured memory copy bandwidth and
   fp32 / bf16 GEMM throughput.
3. Inference, `salmonn bench` style (stage hooks, model load excluded), 32 greedy tokens exactly, answering
   "Please describe the audio." about gunshots.wav (10 s); batches of 8 cycle gunshots.wav and duck.wav (both
   10 s). The baseline is the faithful fp32 single-clip path (30 s Whisper window, transformers' dynamic KV cache,
   one clip per call as the reference does). Variants are interleaved rep by rep, medians reported, greedy ids
   compared with the baseline's.
4. Decode roofline: the LLM's weight bytes one step reads (in the variant's dtype; merged LoRA reads no adapter)
   / the measured READ bandwidth (decoding only reads weights).
5. A torch.profiler breakdown of the baseline and of the fastest faithful fp32 path: where the time goes.
6. Training step samples/s at stage-1 shapes (batch 8, 10 s clips): fp32 with encoders every step (baseline) vs
   the frozen-encoder cache (fp32, fast mode, bf16 autocast).
7. Fast mode's effect on answers: greedy ids with and without the full Whisper window on the reference-tiny
   fixture and on the benchmark model.
Writes RESULTS.md, results.json and results.png next to this file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from salmonn.jsonl import read_jsonl, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
AUDIO = ROOT.parent / "shared" / "audio"
FIXTURE = ROOT.parent / "shared" / "fixtures" / "reference-tiny"
PROMPT = "Please describe the audio."
REFERENCE_S = 3.08  # the reference timing (its own machine: Xeon with AMX, 2 threads)
REFERENCE_STAGES = {"features": 0.03, "whisper": 0.81, "beats": 0.62, "qformer": 0.07, "llm": 1.5}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def best_time(fn, reps: int) -> float:
    """The fastest of `reps` calls: what the machine can do when the neighbours on a shared host pause."""
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


# ------------------------------------------------------------------------------------------------ machine
def machine() -> dict:
    from salmonn.hardware import physical_cores
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    field = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lscpu.splitlines())}
    flags = set(field.get("Flags", "").split())
    return {"cpu": field.get("Model name", platform.processor()), "cpus": os.cpu_count(),
            "physical_cores": physical_cores(), "threads": torch.get_num_threads(),
            "hypervisor": field.get("Hypervisor vendor", ""),
            "extensions": [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags],
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__, "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "load_average_start": list(os.getloadavg())}


def read_bandwidth(x: torch.Tensor) -> float:
    """GB/s of reading `x` once (a sum: the fastest pure read torch has here), best of 5."""
    return x.numel() * x.element_size() / best_time(lambda: x.sum(), 5) / 1e9


def memory_and_gemm() -> dict:
    """Best-of-N bandwidth (read-only sum, copy) and GEMM / GEMV throughput."""
    x = torch.randn(64 * 2**20)  # 256 MiB
    y = torch.empty_like(x)
    copy_s = best_time(lambda: y.copy_(x), 15)
    out = {"copy_GBps": 2 * x.numel() * 4 / copy_s / 1e9, "read_GBps": read_bandwidth(x)}  # copy: read + write
    out["read_GBps_probes"] = [out["read_GBps"]]  # every read probe, so a report can give their median and spread
    del x, y
    for dtype in (torch.float32, torch.bfloat16):
        n = 1024
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        out[f"gemm_{str(dtype)[6:]}_GFLOPs"] = 2 * n**3 / best_time(lambda: a @ b, 3) / 1e9
        w, v = torch.randn(1536, 576, dtype=dtype), torch.randn(1, 576, dtype=dtype)
        out[f"gemv_{str(dtype)[6:]}_GBps"] = w.numel() * w.element_size() / best_time(
            lambda: torch.nn.functional.linear(v, w), 20) / 1e9
    return out


# ------------------------------------------------------------------------------------------------ inference
def llm_bytes_per_token(model) -> int:
    """Bytes of LLM weights one decoding step reads: every parameter but the input embedding table (one row).
    Merged LoRA adds nothing (the adapters are not read); unmerged adapters are counted."""
    llm = model.llama_model
    embed = llm.get_input_embeddings().weight
    merged = {id(p) for layer in model._unmerged_weights for p in layer.parameters() if p is not layer.get_base_layer().weight}
    tied = llm.get_output_embeddings().weight is embed  # then the head reads the whole table every step
    return (sum(p.numel() * p.element_size() for p in llm.parameters() if p is not embed and id(p) not in merged)
            + (embed.numel() if tied else embed.shape[1]) * embed.element_size())


BASELINE = dict(whisper_full_window=True, compile=False, merge_lora=False, greedy_loop=False)  # first issue's path
FAST_DECODE = dict(merge_lora=True, greedy_loop=True, compile=True)
VARIANTS = [  # name, dtype, batch, config.model settings (over BASELINE)
    ("faithful fp32 (baseline)", "float32", 1, {}),
    ("faithful fp32, defaults (LoRA merged + greedy loop)", "float32", 1, dict(merge_lora=True, greedy_loop=True)),
    ("faithful fp32 + compiled decode", "float32", 1, dict(compile=True)),
    ("faithful fp32 + merged + greedy loop + compiled", "float32", 1, FAST_DECODE),
    ("fast fp32 + merged + greedy loop + compiled", "float32", 1, dict(FAST_DECODE, whisper_full_window=False)),
    ("faithful fp32, batch 8", "float32", 8, {}),
    ("faithful fp32 + merged + greedy loop + compiled, batch 8", "float32", 8, FAST_DECODE),
    ("faithful bf16 + merged + greedy loop + compiled", "bfloat16", 1, FAST_DECODE),
    ("fast bf16 + merged + greedy loop + compiled", "bfloat16", 1, dict(FAST_DECODE, whisper_full_window=False)),
    ("faithful bf16 + merged + greedy loop + compiled, batch 8", "bfloat16", 8, FAST_DECODE),
]


def inference(config: Path, reps: int, with_bf16: bool, hw: dict, pattern: str = "") -> dict:
    """Every variant interleaved rep by rep (the first call of each, compilation included, reported apart)."""
    from salmonn.builder import load_model
    models = {"float32": load_model(config, ["model.device=cpu"])}
    if with_bf16:  # backbones' weights stored in bf16 (the Q-Former and projection stay fp32); never on emulated bf16
        models["bfloat16"] = load_model(config, ["model.device=cpu", "model.dtype=bfloat16"])
    wanted = [p.strip() for p in pattern.split(";") if p.strip()]
    variants = [v for v in VARIANTS if v[1] in models and (v[0] == VARIANTS[0][0] or not wanted or v[0] in wanted)]
    results: dict[str, dict] = {}
    probe = torch.randn(64 * 2**20)  # 256 MiB: read between runs, the floor takes the best (neighbours share it)
    for rep in range(reps):
        for variant in variants:
            log(f"rep {rep + 1}/{reps}: {variant[0]}")
            bench_once(results, models, *variant, warmup=int(rep == 0))
            hw.setdefault("read_GBps_probes", [hw["read_GBps"]]).append(read_bandwidth(probe))
            hw["read_GBps"] = max(hw["read_GBps_probes"])
    del probe
    summarize_variants(results)
    for dtype, model in models.items():
        configure(model, {})
        hw[f"llm_bytes_per_token_{dtype}"] = llm_bytes_per_token(model)  # adapters apart, as the baseline reads
        configure(model, dict(merge_lora=True))
        hw[f"llm_bytes_per_token_{dtype}_merged"] = llm_bytes_per_token(model)
    for name, entry in results.items():  # weight bytes one step reads / read bandwidth
        key = f"llm_bytes_per_token_{entry['dtype']}" + ("_merged" if entry["settings"].get("merge_lora") else "")
        entry["roofline_ms_per_token"] = 1000 * hw[key] / (hw["read_GBps"] * 1e9)
    return {"variants": results, "model": models["float32"]}


def configure(model, settings: dict):
    for key, value in {**BASELINE, **settings}.items():
        setattr(model.config.model, key, value)
    return model.eval()  # merges or unmerges LoRA as merge_lora now says


def bench_once(results: dict, models: dict, name: str, dtype: str, batch: int, settings: dict, warmup: int) -> None:
    from salmonn.bench import run_bench
    clips = [str(AUDIO / "gunshots.wav")] if batch == 1 else [str(AUDIO / "gunshots.wav"), str(AUDIO / "duck.wav")]
    model = configure(models[dtype], settings)
    start = time.perf_counter()
    r = run_bench(model, clips, PROMPT, new_tokens=32, reps=1, batch=batch, warmup=warmup)
    entry = results.setdefault(name, {"batch": batch, "dtype": dtype, "settings": {**BASELINE, **settings},
                                      "runs": [], "token_ids": r["token_ids"]})
    entry["runs"] += r["runs"]
    if warmup:
        entry["first_call_s"] = time.perf_counter() - start - r["runs"][0]["total_s"]


def summarize_variants(results: dict) -> None:
    from salmonn.bench import summarize
    base = results["faithful fp32 (baseline)"]
    base_s = statistics.median(r["total_s"] for r in base["runs"])
    for name, entry in results.items():
        entry.update(summarize(entry["runs"], entry["batch"], 32))
        entry["speedup_vs_baseline"] = entry["clips_per_s"] * base_s
        entry["speedup_vs_issue_reference"] = entry["clips_per_s"] * REFERENCE_S
        entry["same_ids_as_baseline"] = entry["token_ids"][0] == base["token_ids"][0]
        entry["distinct_tokens"] = len(set(entry["token_ids"][0]))


def bf16_spot_check(bench_dir: Path) -> dict:
    """fp32 vs bf16 on two pieces, one call each: the Whisper encoder on a 10 s clip (fast mode's 500 frames) and
    one LLM decoding step after a 64-token prompt (median of 3 steps)."""
    from transformers import AutoModelForCausalLM, DynamicCache
    from salmonn import audio as A
    from salmonn import whisper as W
    from salmonn.features import whisper_log_mel
    from salmonn.frames import frames_for
    from salmonn.builder import load_whisper_encoder
    wav = A.load_audio(AUDIO / "gunshots.wav")
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        name = str(dtype)[6:]
        encoder, extractor = load_whisper_encoder(str(bench_dir / "whisper"), dtype)
        mel = whisper_log_mel([wav], extractor).to(dtype)
        frames = frames_for(torch.tensor([len(wav)]))
        llm = AutoModelForCausalLM.from_pretrained(bench_dir / "llama", dtype=dtype).eval()
        with torch.inference_mode():
            start = time.perf_counter()
            W.encode(encoder, mel, frames)
            out[f"whisper_10s_{name}_s"] = time.perf_counter() - start
            cache = DynamicCache(config=llm.config)
            ids = torch.arange(3, 67)[None]
            llm(input_ids=ids, past_key_values=cache, use_cache=True)
            steps = []
            for i in range(3):
                start = time.perf_counter()
                llm(input_ids=torch.tensor([[100 + i]]), past_key_values=cache, use_cache=True)
                steps.append(time.perf_counter() - start)
            out[f"decode_step_{name}_ms"] = 1000 * statistics.median(steps)
        del encoder, llm
    log(f"bf16 spot check: {out}")
    return out


def profile(model, settings: dict, batch: int, label: str) -> dict:
    """Top ops by self CPU time of one answer, and the GFLOP/s the matrix products reach."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    configure(model, settings)
    clips = [str(AUDIO / "gunshots.wav"), str(AUDIO / "duck.wav")]
    clips = [clips[i % 2] for i in range(batch)]
    options = dict(num_beams=1, max_new_tokens=32, min_new_tokens=32, stop=[])
    with torch.inference_mode():
        model.generate(clips, PROMPT, **options)
        with torch_profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
            model.generate(clips, PROMPT, **options)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:10]
    gemm = [e for e in events if e.key in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")]
    gemm_flops = sum(e.flops for e in gemm)
    gemm_s = sum(e.self_cpu_time_total for e in gemm) / 1e6
    return {"label": label, "total_s": total / 1e6,
            "top": [{"op": e.key, "self_s": e.self_cpu_time_total / 1e6, "share": e.self_cpu_time_total / total,
                     "calls": e.count} for e in top],
            "gemm_share": gemm_s * 1e6 / total, "gemm_GFLOPs": gemm_flops / gemm_s / 1e9 if gemm_s else 0.0}


# ------------------------------------------------------------------------------------------------ training
def training(bench_dir: Path, steps: int, with_bf16: bool) -> dict:
    import soundfile as sf
    from salmonn.train.config import load_train_config
    from salmonn.train.trainer import Trainer
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rng = np.random.default_rng(0)
        records = []
        for i in range(16):  # 10 s clips: noise bursts over a tone, captions of ASR-like length
            t = np.arange(160000) / 16000
            wav = 0.2 * np.sin(2 * np.pi * (200 + 40 * i) * t) + 0.05 * rng.standard_normal(t.size)
            sf.write(tmp / f"{i}.wav", wav.astype(np.float32), 16000)
            records.append({"path": str(tmp / f"{i}.wav"), "task": "audiocaption",
                            "text": f"a steady tone at {200 + 40 * i} hertz with a little background noise, clip {i}"})
        write_jsonl(tmp / "train.jsonl", records)
        (tmp / "prompts.json").write_text(json.dumps({"audiocaption": ["Describe the audio."]}))
        base = [f"model.llama_path={bench_dir / 'llama'}", f"model.whisper_path={bench_dir / 'whisper'}",
                f"model.beats_path={bench_dir / 'beats.pt'}", f"model.prompt_path={tmp / 'prompts.json'}",
                f"datasets.train_ann_path={tmp / 'train.jsonl'}", "datasets.valid_ann_path=",
                "run.batch_size_train=8", "run.num_workers=0", f"run.iters_per_epoch={steps + 1}",
                "run.optims.max_epoch=1", "run.progress=false", "run.plot=false", "run.num_sample_generations=0",
                "run.save_every=0"]
        variants = [("fp32, encoders every step (baseline)", ["model.dtype=float32", "run.amp=false"]),
                    ("fp32, encoder cache", ["model.dtype=float32", "run.amp=false", "CACHE"]),
                    ("fp32, encoder cache, fast mode", ["model.dtype=float32", "run.amp=false",
                                                        "model.whisper_full_window=false", "CACHE"])]
        if with_bf16:
            variants.append(("bf16 autocast + bf16 backbones, encoder cache",
                             ["model.dtype=bfloat16", "run.amp=true", "run.amp_on_cpu=true", "run.amp_dtype=bfloat16",
                              "CACHE"]))
        for name, extra in variants:
            out = tmp / f"run{len(results)}"
            extra = [f"datasets.cache_dir={tmp / ('cache' + str(len(results)))}" if e == "CACHE" else e for e in extra]
            tc = load_train_config(ROOT / "configs" / "train" / "stage1_pretrain.yaml",
                                   base + extra + [f"run.output_dir={out}"])
            log(f"training: {name}")
            start = time.perf_counter()
            trainer = Trainer(tc).setup()  # fills the cache, when there is one
            setup = time.perf_counter() - start
            trainer.train()
            rows = read_jsonl((out / "metrics.jsonl"), strict=True)
            times = [r["step_time_s"] for r in rows if r["type"] == "train"][1:]  # the first step warms up
            step = statistics.median(times)
            results[name] = {"setup_s": setup, "step_s": step, "samples_per_s": 8 / step, "steps": len(times)}
            del trainer
    base = results["fp32, encoders every step (baseline)"]["samples_per_s"]
    for entry in results.values():
        entry["speedup"] = entry["samples_per_s"] / base
    return results


# ------------------------------------------------------------------------------------------------ answers
def fast_mode_answers(bench_model) -> dict:
    """Greedy ids with the full window vs fast mode: the fixture (12 tokens, its reference prompts) and all five
    clips on the benchmark model (32 tokens)."""
    expected = json.loads((FIXTURE / "expected.json").read_text())
    from salmonn import load_model
    out = {}
    tiny = load_model(FIXTURE / "config.yaml")
    clips = sorted(AUDIO.glob("*.wav"))
    for name, model, tokens, prompt in (("reference-tiny", tiny, 12, expected["generate_prompts"][1]),
                                        ("benchmark model", bench_model, 32, None)):
        rows = []
        for clip in clips:
            ids = {}
            for full in (True, False):
                configure(model, dict(whisper_full_window=full))
                kwargs = dict(num_beams=1, max_new_tokens=tokens, min_new_tokens=tokens if prompt is None else 0)
                if prompt is None:
                    answer = model.generate(str(clip), PROMPT, **kwargs)[0]
                else:
                    answer = model.generate(str(clip), prompt, templated=True, **kwargs)[0]
                ids[full] = answer.token_ids
            a, b = ids[True], ids[False]
            prefix = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            rows.append({"clip": clip.name, "seconds": len(__import__("salmonn.audio", fromlist=["x"]).load_audio(clip))
                         / 16000, "same": a == b, "common_prefix": prefix, "tokens": len(a)})
        out[name] = rows
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--only", default="inference,profile,answers,train",
                        help="comma-separated parts to run: inference, profile, answers, train (the machine is "
                             "always described)")
    parser.add_argument("--variants", default="", help="variant names to run, separated by ';' (default: all; "
                                                       "the baseline always runs)")
    parser.add_argument("--skip-train", action="store_true", help="same as leaving train out of --only")
    parser.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                        help="bf16 runs: auto = only on CPUs with AVX512-BF16/AMX (emulated bf16 takes minutes per "
                             "answer); a short fp32-vs-bf16 spot check always runs")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: the physical cores)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    args = parser.parse_args()
    parts = set(args.only.split(",")) - ({"train"} if args.skip_train else set())
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    import models
    from report import config_weights, plot, report
    from salmonn.hardware import native_bf16, physical_cores
    torch.set_num_threads(args.threads or physical_cores())
    config = models.build(models.DEFAULT_OUT)
    info = {**machine(), **config_weights(config)}  # the random model's files: their sha256 beside the numbers
    log(f"machine: {info['cpu']}, load {info['load_average_start']}")
    hw = memory_and_gemm()
    log(f"memory/GEMM: {hw}")
    with_bf16 = args.bf16 == "on" or (args.bf16 == "auto" and native_bf16())
    hw["bf16_spot_check"] = bf16_spot_check(models.DEFAULT_OUT)
    inf = inference(config, args.reps, with_bf16, hw, args.variants) if "inference" in parts else None
    model = inf.pop("model") if inf else None
    profiles = []
    if "profile" in parts and model is not None:
        log("profiles")
        profiles = [profile(model, {}, 1, "faithful fp32 baseline, 1 clip"),
                    profile(model, FAST_DECODE, 1, "faithful fp32 + merged + greedy loop + compiled, 1 clip")]
    answers = fast_mode_answers(model) if "answers" in parts and model is not None else {}
    del model
    train = training(models.DEFAULT_OUT, args.train_steps, with_bf16) if "train" in parts else None
    info["load_average_end"] = list(os.getloadavg())
    out = args.out
    if inf:
        plot(inf, out.parent / "results.png")
    (out.parent / "results.json").write_text(json.dumps(
        {"machine": info, "hardware": hw, "inference": inf, "profiles": profiles, "training": train,
         "fast_mode_answers": answers}, indent=1, default=str))
    out.write_text(report(info, hw, inf, profiles, train, answers))
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
