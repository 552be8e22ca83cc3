"""What vLLM's decoding reproduces of `salmonn infer`'s, beyond the fp32 greedy ids the tests check: beam search
(vLLM's `LLM.beam_search`: each step is a request of its own, so it is slow and has no logits processors, i.e. no
n-gram ban) and bfloat16. Writes scripts/vllm/results/decoding_parity.json.

    .venv-vllm/bin/python scripts/vllm/decoding_parity.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "audio"
FIXTURE = ROOT.parent / "shared" / "fixtures" / "reference-tiny"
TASKS = ("asr", "gender_recognition", "sound_event", "instrument")


def machine() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    name = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "")
    return f"{name or platform.processor()}, {os.cpu_count()} cores"


def requests_for_mini() -> list[tuple[Path, str]]:
    prompts = json.loads((ROOT / "src/salmonn/assets/mini/test_prompts.json").read_text())
    clips = json.loads((EXAMPLES / "clips.json").read_text())
    return [(EXAMPLES / clip, prompts[task]) for clip in clips for task in TASKS]


def token_prompt(engine, path: Path, instruction: str) -> dict:
    import soundfile as sf
    tokenizer = engine.get_tokenizer()
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": instruction}]}], tokenize=False)
    wav, rate = sf.read(path, dtype="float32")
    return {"prompt_token_ids": tokenizer.encode(text, add_special_tokens=False),
            "multi_modal_data": {"audio": (wav, rate)}}


def strip_eos(ids, eos: int) -> list[int]:
    ids = list(ids)
    return ids[:-1] if ids and ids[-1] == eos else ids


def vllm_greedy(engine, requests, max_tokens: int) -> list[list[int]]:
    from vllm import SamplingParams
    outs = engine.generate([token_prompt(engine, *r) for r in requests],
                           SamplingParams(temperature=0, max_tokens=max_tokens), use_tqdm=False)
    return [strip_eos(o.outputs[0].token_ids, engine.get_tokenizer().eos_token_id) for o in outs]


def vllm_beams(engine, requests, beams: int, max_tokens: int) -> list[list[int]]:
    from vllm.sampling_params import BeamSearchParams
    outs = engine.beam_search([token_prompt(engine, *r) for r in requests],
                              BeamSearchParams(beam_width=beams, max_tokens=max_tokens))
    eos = engine.get_tokenizer().eos_token_id
    answers = []
    for out in outs:
        best = out.sequences[0]
        answers.append(strip_eos(best.tokens[len(best.orig_prompt["prompt_token_ids"]):], eos))  # after the prompt
    return answers


def ours(model, requests, **options) -> list[list[int]]:
    return [list(model.generate([str(path)], text, **options)[0].token_ids) for path, text in requests]


def compare(name: str, theirs, mine, requests) -> dict:
    same = [a == b for a, b in zip(theirs, mine)]
    print(f"{name}: {sum(same)} of {len(same)} identical", flush=True)
    return {"identical": sum(same), "of": len(same),
            "differing": [{"clip": p.name, "prompt": t, "vllm": a, "salmonn": b}
                          for (p, t), a, b, s in zip(requests, theirs, mine, same) if not s]}


def engine(folder: Path, dtype: str):
    from vllm import LLM
    return LLM(model=str(folder), dtype=dtype, enforce_eager=True, seed=0, limit_mm_per_prompt={"audio": 1},
               max_model_len=2048 if "mini" in folder.name else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "scripts/vllm/results/decoding_parity.json"))
    args = parser.parse_args()
    os.environ.update(HF_HUB_OFFLINE="1", VLLM_CPU_KVCACHE_SPACE="1")
    import vllm

    from salmonn import load_model
    from salmonn.vllm.export import export_from_config
    work = Path(tempfile.mkdtemp(prefix="decoding-parity-"))
    started = time.time()
    result = {"machine": machine(), "vllm": vllm.__version__, "mini": {}, "fixture": {}}
    mini_dir = export_from_config(None, work / "mini")
    result["weights_sha256"] = json.loads((mini_dir / "salmonn_export.json").read_text())["weights_sha256"]
    requests = requests_for_mini()
    model = load_model(None)
    fp32 = engine(mini_dir, "float32")
    own = requests[::5]  # each clip with its own task (clips.json's order x TASKS' order)
    result["mini"]["beam4_no_ngram_ban"] = compare("mini beam 4", vllm_beams(fp32, own, 4, 32),
                                                   ours(model, own, num_beams=4, no_repeat_ngram_size=0,
                                                        max_new_tokens=32), own)
    del fp32
    bf16 = engine(mini_dir, "bfloat16")
    model_bf16 = load_model(None, dtype="bfloat16")
    result["mini"]["greedy_bf16"] = compare("mini greedy bf16", vllm_greedy(bf16, requests, 64),
                                            ours(model_bf16, requests), requests)
    result["mini"]["greedy_bf16_vs_fp32_salmonn"] = compare("salmonn bf16 vs fp32", ours(model_bf16, requests),
                                                            ours(model, requests), requests)
    del bf16
    fixture_dir = export_from_config(str(FIXTURE / "config.yaml"), work / "fixture")
    tiny = load_model(str(FIXTURE / "config.yaml"))
    expected = json.loads((FIXTURE / "expected.json").read_text())
    instructions = [p.split("</Speech> ")[1].split("\n")[0] for p in expected["generate_prompts"]]
    shared = FIXTURE.parents[1] / "audio"
    fixture_requests = [(shared / clip, text) for clip, text in zip(expected["audio"], instructions)]
    tiny_engine = engine(fixture_dir, "float32")
    result["fixture"]["beam4"] = compare("fixture beam 4", vllm_beams(tiny_engine, fixture_requests, 4, 12),
                                         ours(tiny, fixture_requests, num_beams=4, max_new_tokens=12),
                                         fixture_requests)
    result["fixture"]["beam4_reference"] = expected["beam4_generated_ids"]
    result["seconds"] = round(time.time() - started, 1)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
