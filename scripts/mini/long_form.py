"""Long-form transcription on real speech: the Asterisk prompts joined into one long file, answered piece by piece
(`salmonn infer --long-form`) in each long-form mode, against the same prompts answered one clip at a time.

    .venv/bin/python scripts/mini/long_form.py [--config CFG] [--out scripts/mini/results/long_form.json]
        [--modes fixed:30,pause:30,pause:15,pause:8] [--clip-level-from scripts/mini/results/long_form_v1.json]
        [--num-beams 1] [model.dtype=bfloat16 ...]   (config overrides)

The issue-15 target: the long-form WER within 5 points of the clip-level WER (both after salmonn eval's English
normalisation, corpus-level over all words). A word cut by a fixed 30 s segment boundary is lost or split;
pause-aligned chunks (`--long-form-chunks pause`, at most `--long-form-seconds` each) cut where the speaker pauses,
and shorter chunks are closer to the <= 8 s clips SALMONN-mini was trained on. The clip-level run is the same model
on the same audio without either cost. Each mode's real-time factor on this machine is reported too; each piece
gets max_new_tokens in proportion to its maximum length (--max-new-tokens per 30 s). `--clip-level-from` takes the
clip-level numbers from an earlier output of this script on the same weights (the clip-level pass is the slow
one). The Asterisk set is a test set: nothing here trains.

Output keys: clip_level_*; `modes` (one entry per mode: chunks, max_seconds, pieces, wer, gap_points, seconds,
x_real_time, max_new_tokens_per_piece, answer_tokens, load_average_1min at its end, text_head); `default` (the
mode `salmonn infer --long-form` uses) with its gap in default_gap_points; and, as before, long_form_wer /
gap_points / long_form_seconds / long_form_x_real_time for fixed 30 s segments (the mode all earlier outputs
measured).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np

from salmonn.audio import load_audio
from salmonn.builder import load_model
from salmonn.data.asterisk import asterisk_records
from salmonn.decoding import decoding_config
from salmonn.evaluation.items import DEFAULT_TEST_PROMPTS
from salmonn.evaluation.metrics import english_words, error_rate
from salmonn.frames import SEGMENT_SECONDS
from salmonn.inference import answer_all, long_form, long_form_chunking

INSTRUCTION = DEFAULT_TEST_PROMPTS["asr"]
PAUSE_SECONDS = 0.4  # silence between two joined prompts
SAMPLE_RATE = 16000


def joined_audio(records: list[dict]) -> tuple[np.ndarray, str]:
    """Every prompt in order with a short pause between: one long 16 kHz waveform and its transcript."""
    pause = np.zeros(int(PAUSE_SECONDS * SAMPLE_RATE), np.float32)
    pieces = [part for r in records for part in (load_audio(r["path"]), pause)]
    return np.concatenate(pieces), " ".join(r["text"] for r in records)


def wer(hypotheses: list[str], references: list[str]) -> float:
    """Corpus WER (a fraction) after salmonn eval's English normalisation."""
    return error_rate(hypotheses, references, english_words())[0] / 100


def weights_digest(model) -> str | None:
    """sha256 of the shipped trainable weights (None for a config without a checkpoint file)."""
    ckpt = model.config.model.ckpt
    return hashlib.sha256(Path(ckpt).read_bytes()).hexdigest() if ckpt and Path(ckpt).is_file() else None


def parse_modes(text: str) -> list[tuple[str, float]]:
    """"fixed:30,pause:15" -> [("fixed", 30.0), ("pause", 15.0)], each checked as salmonn infer checks it."""
    modes = []
    for item in text.split(","):
        chunks, _, seconds = item.partition(":")
        modes.append(long_form_chunking(chunks, float(seconds) if seconds else None))
    return modes


def run_mode(model, wav: np.ndarray, reference: str, chunks: str, seconds: float, tokens_per_30s: int,
             num_beams: int = 1) -> dict:
    """One long-form pass over the joined audio."""
    tokens = math.ceil(tokens_per_30s * seconds / SEGMENT_SECONDS)
    gen = decoding_config(model.config.generate, "greedy", max_new_tokens=tokens, num_beams=num_beams)
    answered: list = []  # one answer per piece, as it comes
    start = time.perf_counter()
    answer = long_form(model, (wav, SAMPLE_RATE), INSTRUCTION, gen, batch_size=8, on_segment=answered.append,
                       chunks=chunks, max_seconds=seconds)
    elapsed = time.perf_counter() - start
    count = len(answered)
    print(f"{chunks} {seconds:g} s: {count} pieces, {elapsed:.0f} s", flush=True)
    return {"chunks": chunks, "max_seconds": seconds, "pieces": count, "wer": round(wer([answer.text], [reference]), 4),
            "seconds": round(elapsed, 1), "x_real_time": round(len(wav) / SAMPLE_RATE / elapsed, 2),
            "max_new_tokens_per_piece": tokens, "answer_tokens": len(answer.token_ids),
            "load_average_1min": round(os.getloadavg()[0], 2), "text_head": answer.text[:300]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=None, help="model YAML (default: SALMONN-mini)")
    parser.add_argument("overrides", nargs="*", help="model config overrides, e.g. model.dtype=bfloat16")
    parser.add_argument("--out", default="scripts/mini/results/long_form.json")
    parser.add_argument("--limit", type=int, default=0, help="use the first N prompts only (0 = all)")
    parser.add_argument("--modes", default="fixed:30,pause:30,pause:15,pause:8",
                        help="comma-separated CHUNKS:MAX_SECONDS long-form modes to run")
    parser.add_argument("--max-new-tokens", type=int, default=200,
                        help="per 30 s of a piece's maximum length (about 80 words); scaled for shorter pieces")
    parser.add_argument("--clip-max-new-tokens", type=int, default=64, help="per prompt (at most ~25 words)")
    parser.add_argument("--num-beams", type=int, default=1, help="1: greedy; 4 with generate.ctc_weight=0.4 "
                        "generate.ctc_length_bonus=2: the card's CTC rescoring")
    parser.add_argument("--clip-level-from", type=Path, default=None,
                        help="take the clip-level WER and time from this earlier output (same weights, same --limit)")
    args = parser.parse_args()
    modes = parse_modes(args.modes)
    model = load_model(args.config, args.overrides)
    digest = weights_digest(model)
    records, _ = asterisk_records()
    records = records[: args.limit] if args.limit else records

    if args.clip_level_from:
        earlier = json.loads(args.clip_level_from.read_text())
        if (earlier["clips"], earlier.get("max_new_tokens_per_clip"), earlier.get("num_beams", 1)) != (
                len(records), args.clip_max_new_tokens, args.num_beams):
            raise SystemExit(f"{args.clip_level_from}: measured on {earlier['clips']} prompts with other settings")
        if earlier.get("weights_sha256", digest) != digest:
            raise SystemExit(f"{args.clip_level_from}: measured on other weights")
        clip_wer, clip_seconds = earlier["clip_level_wer"], earlier["clip_level_seconds"]
        clip_source = earlier.get("clip_level_source", f"{args.clip_level_from} (an earlier run, same weights)")
    else:
        start = time.perf_counter()
        clips = answer_all(model, [r["path"] for r in records], INSTRUCTION, batch_size=8, progress=True,
                           num_beams=args.num_beams, max_new_tokens=args.clip_max_new_tokens)
        clip_seconds = time.perf_counter() - start
        clip_wer = wer([c.text or "" for c in clips], [r["text"] for r in records])
        clip_source = "this run"

    wav, reference = joined_audio(records)
    model.config.model.max_audio_seconds = max(model.config.model.max_audio_seconds, len(wav) / SAMPLE_RATE + 60)
    results = []
    for chunks, seconds in modes:
        result = run_mode(model, wav, reference, chunks, seconds, args.max_new_tokens, args.num_beams)
        result["gap_points"] = round(100 * (result["wer"] - clip_wer), 2)
        results.append(result)
    default = long_form_chunking(None, None)
    chosen = next((r for r in results if (r["chunks"], r["max_seconds"]) == default), None)
    fixed = next((r for r in results if (r["chunks"], r["max_seconds"]) == ("fixed", SEGMENT_SECONDS)), None)

    result = {"clips": len(records), "audio_minutes": round(len(wav) / SAMPLE_RATE / 60, 2),
              "clip_level_wer": round(clip_wer, 4), "clip_level_seconds": round(clip_seconds, 1),
              "clip_level_source": clip_source, "target_gap_points": 5.0,
              "default": f"{default[0]} {default[1]:g} s",
              "default_gap_points": chosen["gap_points"] if chosen else None, "modes": results}
    if fixed:  # the keys of earlier outputs, still meaning fixed 30 s segments
        result.update(long_form_wer=fixed["wer"], gap_points=fixed["gap_points"],
                      long_form_seconds=fixed["seconds"], long_form_x_real_time=fixed["x_real_time"])
    result.update({"config": args.config or "SALMONN-mini (default)", "overrides": args.overrides,
                   "weights_sha256": digest,
                   "max_new_tokens_per_30s": args.max_new_tokens, "num_beams": args.num_beams,
                   "max_new_tokens_per_clip": args.clip_max_new_tokens,
                   "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                   "load_average_at_end": [round(x, 2) for x in os.getloadavg()], "reference_head": reference[:300]})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
