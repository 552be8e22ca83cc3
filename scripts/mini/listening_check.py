"""Does a SALMONN checkpoint listen? Target loss with each clip's own audio vs another clip's vs none vs an oracle.

    .venv/bin/python scripts/mini/listening_check.py CONFIG.yaml [CHECKPOINT] [--manifest M.jsonl] [--n 16]

For each task of the manifest (first --n records), the mean target-token loss of the batch with:
  own       each clip's audio tokens (what training optimises)
  shuffled  the audio tokens of the next clip in the batch: a model that listens does clearly worse here
  zeros     all-zero audio tokens
  oracle    the LLM's own embeddings of the target text in place of the audio tokens: how well the LLM can read
            audio tokens that carry the answer as embedding-scale words (an upper bound for the connector)
own ~= shuffled means the connector's tokens carry nothing the LLM uses: the model answers from its text priors.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch

from salmonn.builder import load_model
from salmonn.jsonl import read_jsonl
from salmonn.prompting import format_prompt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config")
    parser.add_argument("checkpoint", nargs="?", default=None)
    parser.add_argument("--manifest", default="data/mini/stage1_valid.jsonl")
    parser.add_argument("--n", type=int, default=16)
    args = parser.parse_args()
    model = load_model(args.config).eval()
    if args.checkpoint:
        model.load_checkpoint(args.checkpoint)
    path = model.config.model.prompt_path
    prompts = json.loads(Path(path).read_text()) if path else {}
    by_task = defaultdict(list)
    for record in read_jsonl(args.manifest, strict=True):
        if len(by_task[record["task"]]) < args.n:
            by_task[record["task"]].append(record)
    embedding = model.llama_model.get_input_embeddings().weight
    with torch.no_grad():
        for task, records in by_task.items():
            instruction = prompts.get(task, ["Describe the audio."])[0]
            prompt = [format_prompt(instruction, model.config.model.prompt_template)] * len(records)
            texts = [r["text"] for r in records]
            own = model.encode_audio([r["path"] for r in records])
            oracle = [embedding[model.tokenizer(t, add_special_tokens=False).input_ids] for t in texts]
            variants = {"own": own, "shuffled": own[1:] + own[:1], "zeros": [torch.zeros_like(a) for a in own],
                        "oracle": oracle, "oracle shuffled": oracle[1:] + oracle[:1]}
            losses = {k: model(v, prompt, texts, return_logits=False)[0].item() for k, v in variants.items()}
            print(f"{task} ({len(records)} clips): " + ", ".join(f"{k} {v:.3f}" for k, v in losses.items()),
                  flush=True)


if __name__ == "__main__":
    main()
