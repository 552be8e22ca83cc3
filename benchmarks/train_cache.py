"""Step time of `salmonn train` with and without the frozen-encoder cache (datasets.cache_dir).

    .venv/bin/python benchmarks/train_cache.py [--steps 12] [--clip-seconds 10] [--batch 2] [key=value ...]

Runs the stage-1 recipe on the reference-tiny fixture's backbones (fresh trainable weights) on generated clips,
once encoding every batch with Whisper + BEATs and once reading their outputs from the cache (filled first, its
time reported separately), and prints the median optimizer-step time of each. Extra key=value items override the
recipe (e.g. model.llama_path=... to time other backbones). Numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from salmonn.jsonl import read_jsonl, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT.parent / "shared" / "fixtures" / "reference-tiny"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--clip-seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    from salmonn.train.config import load_train_config
    from salmonn.train.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rng = np.random.default_rng(0)
        records = []
        for i in range(8):
            wav = 0.3 * rng.standard_normal(int(16000 * args.clip_seconds)).astype(np.float32)
            sf.write(tmp / f"{i}.wav", wav, 16000)
            records.append({"path": str(tmp / f"{i}.wav"), "text": f"clip number {i}", "task": "audiocaption"})
        write_jsonl(tmp / "train.jsonl", records)
        (tmp / "prompts.json").write_text(json.dumps({"audiocaption": ["Describe the audio."]}))
        base = [f"model.llama_path={FIXTURE / 'llama'}", f"model.whisper_path={FIXTURE / 'whisper'}",
                f"model.beats_path={FIXTURE / 'beats.pt'}", "model.qformer_hidden_size=64",
                "model.qformer_num_attention_heads=4", "model.qformer_intermediate_size=128", "model.dtype=float32",
                f"model.prompt_path={tmp / 'prompts.json'}", f"datasets.train_ann_path={tmp / 'train.jsonl'}",
                "datasets.valid_ann_path=", f"run.batch_size_train={args.batch}", f"run.num_workers={args.workers}",
                f"run.iters_per_epoch={args.steps}", "run.optims.max_epoch=1", "run.progress=false",
                "run.plot=false", *args.overrides]
        results = {}
        for name, extra in (("encoders every step", []), ("frozen-encoder cache", [f"datasets.cache_dir={tmp / 'c'}"])):
            out = tmp / name.replace(" ", "_")
            tc = load_train_config(ROOT / "configs" / "train" / "stage1_pretrain.yaml",
                                   base + extra + [f"run.output_dir={out}"])
            start = time.time()
            trainer = Trainer(tc).setup()
            setup = time.time() - start
            trainer.train()
            rows = read_jsonl((out / "metrics.jsonl"), strict=True)
            times = [r["step_time_s"] for r in rows if r["type"] == "train"][1:]  # the first step warms up
            results[name] = statistics.median(times)
            print(f"{name}: setup {setup:.1f} s, median step {results[name]:.3f} s "
                  f"({args.batch / results[name]:.2f} samples/s)", file=sys.stderr)
        speedup = results["encoders every step"] / results["frozen-encoder cache"]
        print(f"cache speed-up per step: {speedup:.1f}x", file=sys.stderr)


if __name__ == "__main__":
    main()
