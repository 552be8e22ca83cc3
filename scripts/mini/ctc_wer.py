"""WER of a checkpoint's connector alone: the CTC best path of its audio tokens (train/ctc.py), no LLM decoding.

    .venv/bin/python scripts/mini/ctc_wer.py runs/mini/stage0/final/infer.yaml [--limit 48] [--blank " "]

Reads data/mini/test_asr.jsonl (make_manifests.py); prints a few transcripts and the corpus WER (%), normalised
as `salmonn eval` does. What the model card quotes for stage 0.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from salmonn.builder import load_model
from salmonn.evaluation.metrics import english_words, error_rate
from salmonn.jsonl import read_jsonl
from salmonn.train.ctc import blank_id, ctc_greedy, query_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config")
    parser.add_argument("--manifest", type=Path, default=Path("data/mini/test_asr.jsonl"))
    parser.add_argument("--limit", type=int, default=48)
    parser.add_argument("--blank", default=" ", help="run.ctc_blank of the training run")
    parser.add_argument("--query", type=int, default=None, help="run.ctc_query of the training run (None: every token)")
    parser.add_argument("--out", type=Path, default=None, help="also write {config, clips, wer} here (JSON)")
    args = parser.parse_args()
    model = load_model(args.config).eval()
    rows = read_jsonl(args.manifest, strict=True)[:args.limit]
    table = model.llama_model.get_input_embeddings().weight.detach()
    blank = blank_id(model.tokenizer, args.blank)
    with torch.no_grad():
        tokens = model.encode_audio([r["path"] for r in rows])
    tokens = [query_tokens(t, model.config.model.num_speech_query_token, args.query) for t in tokens]
    hyps = [model.tokenizer.decode(ctc_greedy(t, table, blank)).strip() for t in tokens]
    refs = [r["text"] for r in rows]
    for hyp, ref in list(zip(hyps, refs))[:4]:
        print(f"REF {ref}\nHYP {hyp}")
    wer, _ = error_rate(hyps, refs, english_words())
    print(f"CTC best-path WER on {len(rows)} clips: {wer:.1f} %")
    by_kind = {}  # the clip's folder names its kind: speech (espeak-ng), voice (neural), ...
    for kind in sorted({Path(r["path"]).parent.name for r in rows}):
        picked = [i for i, r in enumerate(rows) if Path(r["path"]).parent.name == kind]
        by_kind[kind] = round(error_rate([hyps[i] for i in picked], [refs[i] for i in picked], english_words())[0], 2)
    print("by kind:", by_kind)
    if args.out:
        args.out.write_text(json.dumps({"config": args.config, "manifest": str(args.manifest), "clips": len(rows),
                                        "query": args.query, "wer": round(wer, 2), "wer_by_kind": by_kind},
                                       indent=1) + "\n")


if __name__ == "__main__":
    main()
