"""The Asterisk prompts clip by clip as `salmonn infer --long-form` answers each: cut at pauses into <= 8 s chunks.

    nice -n 10 .venv/bin/python scripts/mini/clip_long_form.py [--out scripts/mini/results/clip_long_form.json]
        [generate.ctc_weight=0.4 generate.ctc_length_bonus=2 ...]   (config overrides)

long_form.py answers every prompt whole (clip by clip, with a budget fair to its length) and, apart, all 542 joined
into one recording answered chunk by chunk. mini reads clips of up to 8 s (the longest it trained on) far better than
longer ones (`clip_level_by_length` there). Here each prompt is answered on its own as a user who passes
`--long-form` gets it: the default pause-aligned chunks of at most 8 s (a prompt of <= 8 s is one chunk), each chunk
with the model's own max_new_tokens, the answers joined. Greedy (or the overrides' decoding); the WER overall and by
length, beside the whole-clip pass that long_form_all.json stored for the same weights. The Asterisk set is a test
set: nothing here chooses.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from salmonn.builder import load_model
from salmonn.data.asterisk import asterisk_records
from salmonn.inference import answer_all, long_form_chunking

sys.path.insert(0, str(Path(__file__).parent))
from long_form import INSTRUCTION, clip_level_by_length, weights_digest, wer  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--whole-clips", type=Path, default=RESULTS / "long_form_all.json",
                        help="long_form.py's output for the same weights: the whole-clip answers to compare with")
    parser.add_argument("--out", type=Path, default=RESULTS / "clip_long_form.json")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. generate.ctc_weight=0.4")
    args = parser.parse_args()
    model = load_model(None, args.overrides)
    digest = weights_digest(model)
    whole = json.loads(args.whole_clips.read_text())
    if whole["weights_sha256"] != digest:
        raise SystemExit(f"{args.whole_clips} answered weights {whole['weights_sha256'][:12]}, these are "
                         f"{digest[:12]}: rerun long_form.py on them first")
    records, _ = asterisk_records()
    chunks, seconds = long_form_chunking(None, None)
    found = answer_all(model, [r["path"] for r in records], INSTRUCTION, batch_size=8, long_form=True,
                       progress=True)
    texts = [f.answer.text for f in found]
    result = {"weights_sha256": digest, "overrides": args.overrides, "clips": len(records),
              "chunks": f"{chunks} {seconds:g} s",
              "max_new_tokens_per_chunk": model.config.generate.max_new_tokens,
              "wer": round(wer(texts, [r["text"] for r in records]), 4),
              "by_length": clip_level_by_length(records, texts),
              "whole_clip_wer": whole["clip_level_wer"], "whole_clip_by_length": whole["clip_level_by_length"],
              "answers": [{"id": r["id"], "seconds": r["seconds"], "text": t} for r, t in zip(records, texts)]}
    print(json.dumps({k: v for k, v in result.items() if k != "answers"}, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
