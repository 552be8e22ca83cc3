"""The checks only a CUDA machine can run, as one prepared script (run it through gpu_smoke.sh):

1. fixture parity on the GPU: the reference-tiny fixture's Q-Former tokens, batch training loss, greedy ids
   (exact) and 4-beam answers (scoring at least the reference's), float32, TF32 off;
2. a bf16 `salmonn bench` of the fixture (and of SALMONN-mini when its backbones are installed);
3. one training step with bf16 autocast (stage-1 config on the fixture backbones);
4. the 8-bit and 4-bit bitsandbytes loads of the fixture's LLM, each answering a few tokens.

Each check records {"ok", "seconds", ...} or its error; the whole result goes to one JSON file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from salmonn.jsonl import read_jsonl, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT.parent / "shared" / "fixtures" / "reference-tiny"
AUDIO = ROOT.parent / "shared" / "audio"
SALMONN_CLI = str(Path(sys.executable).parent / "salmonn")


def check(name: str, results: dict, fn) -> None:
    """Run one check, recording its outcome and time; a failure is recorded, never raised."""
    start = time.perf_counter()
    try:
        results[name] = {"ok": True, **(fn() or {})}
    except Exception as err:  # noqa: BLE001 - every failure is a finding to report
        results[name] = {"ok": False, "error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc(-3)}
    results[name]["seconds"] = round(time.perf_counter() - start, 1)
    print(f"{name}: {'ok' if results[name]['ok'] else results[name]['error']}", file=sys.stderr, flush=True)


def fixture_parity() -> dict:
    from salmonn import load_model
    from safetensors.torch import load_file
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    expected = json.loads((FIXTURE / "expected.json").read_text())
    io = load_file(str(FIXTURE / "io.safetensors"))
    clips = [str(AUDIO / name) for name in expected["audio"]]
    model = load_model(FIXTURE / "config.yaml", ["model.device=cuda", "reference_batching=true"])
    segments = [seg for clip in clips for seg in model.clip_segments(clip)]
    tokens = torch.stack(model.encode_segments(segments)).cpu()
    token_diff = float((tokens - io["speech_embeds"]).abs().max())
    loss = float(model.training_loss(clips, [expected["train_prompt"]] * 2, expected["texts"]))
    model = load_model(FIXTURE / "config.yaml", ["model.device=cuda"])
    greedy = [model.generate(c, p, templated=True, num_beams=1, max_new_tokens=12)[0].token_ids
              for c, p in zip(clips, expected["generate_prompts"])]
    beam_ok = []
    for clip, prompt, ref in zip(clips, expected["generate_prompts"], expected["beam4_generated_ids"]):
        audio = model.encode_audio([clip])[0]
        ours = model.generate(None, prompt, templated=True, audio_tokens=[audio], num_beams=4, max_new_tokens=12)
        beam_ok.append(model.sequence_logprob(audio, prompt, ours[0].token_ids)
                       >= model.sequence_logprob(audio, prompt, ref[1:]) - 1e-4)
    result = {"qformer_tokens_max_diff": token_diff, "loss": loss, "loss_diff": abs(loss - expected["loss"]),
              "greedy_ids_exact": greedy == [ids[1:] for ids in expected["generated_ids"]], "beam_at_least_ref": beam_ok}
    result["ok"] = token_diff < 1e-4 and result["loss_diff"] < 1e-4 and result["greedy_ids_exact"] and all(beam_ok)
    return result


def bf16_bench() -> dict:
    runs = {}
    configs = {"reference-tiny": ["--config", str(FIXTURE / "config.yaml")], "salmonn-mini": []}
    for name, config in configs.items():
        cmd = [SALMONN_CLI, "bench", *config, "--audio", str(AUDIO / "gunshots.wav"), "--new-tokens", "32",
               "--reps", "3", "--device", "cuda", "--dtype", "bfloat16", "--json"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
        if done.returncode != 0:
            runs[name] = {"ok": False, "error": done.stderr.strip().splitlines()[-1:]}
            continue
        out = json.loads(done.stdout)
        runs[name] = {k: out[k] for k in ("median_s", "stages", "ms_per_token", "first_token_s", "peak_mb")}
    return {"runs": runs, "ok": runs["reference-tiny"].get("ok", True)}


def training_step_bf16() -> dict:
    import soundfile as sf
    from salmonn.config import load_config
    from salmonn.train.config import load_train_config
    from salmonn.train.trainer import Trainer
    model = load_config(FIXTURE / "config.yaml").model
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        wav = 0.1 * torch.randn(160000).numpy()
        sf.write(tmp / "a.wav", wav, 16000)
        write_jsonl(tmp / "train.jsonl", [{"path": str(tmp / "a.wav"), "task": "asr", "text": "hello"}])
        (tmp / "prompts.json").write_text(json.dumps({"asr": ["Transcribe the speech."]}))
        overrides = [f"model.llama_path={model.llama_path}", f"model.whisper_path={model.whisper_path}",
                     f"model.beats_path={model.beats_path}", f"model.prompt_path={tmp / 'prompts.json'}",
                     "model.prompt_template=USER: {}\\nASSISTANT:", "model.end_sym=</s>",
                     f"datasets.train_ann_path={tmp / 'train.jsonl'}", "datasets.valid_ann_path=",
                     "run.batch_size_train=1", "run.num_workers=0", "run.iters_per_epoch=1", "run.optims.max_epoch=1",
                     "run.progress=false", "run.plot=false", "run.num_sample_generations=0", "run.save_every=0",
                     "run.amp=true", "run.amp_dtype=bfloat16", "run.device=cuda", f"run.output_dir={tmp / 'out'}"]
        config = load_train_config(ROOT / "configs" / "train" / "stage1_pretrain.yaml", overrides)
        Trainer(config).setup().train()
        rows = read_jsonl((tmp / "out" / "metrics.jsonl"), strict=True)
    losses = [r["loss"] for r in rows if r.get("type") == "train" and "loss" in r]
    return {"losses": losses, "ok": bool(losses) and all(loss == loss for loss in losses)}


def quantized_loads() -> dict:
    from salmonn.builder import load_model
    out = {}
    for bits in ("8bit", "4bit"):
        model = load_model(FIXTURE / "config.yaml", device="cuda", quantize=bits)
        answer = model.generate(str(AUDIO / "gunshots.wav"), "Describe the audio.", num_beams=1, max_new_tokens=4)
        out[bits] = {"token_ids": answer[0].token_ids, "llm_bytes": model.causal_lm.get_memory_footprint()}
        del model
        torch.cuda.empty_cache()
    return out


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "benchmarks" / "gpu_smoke.json"
    if not torch.cuda.is_available():
        print("gpu_smoke: CUDA is not available here (torch " + torch.__version__ + "); nothing was run",
              file=sys.stderr)
        sys.exit(2)
    results = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    for name, fn in (("fixture_parity", fixture_parity), ("bf16_bench", bf16_bench),
                     ("training_step_bf16", training_step_bf16), ("quantized_loads", quantized_loads)):
        check(name, results, fn)
        out.write_text(json.dumps(results, indent=1))  # partial results survive a timeout
    results["ok"] = all(v["ok"] for v in results.values() if isinstance(v, dict))
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}: {'all ok' if results['ok'] else 'FAILURES'}", file=sys.stderr)
    sys.exit(0 if results["ok"] else 1)


if __name__ == "__main__":
    main()
