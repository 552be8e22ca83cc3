"""Long-form transcription on real speech: the Asterisk prompts joined into one long file, answered segment by
segment (`salmonn infer --long-form`), against the same prompts answered one clip at a time.

    .venv/bin/python scripts/mini/long_form.py [--config CFG] [--out scripts/mini/results/long_form.json]

The issue-15 target: the long-form WER within 5 points of the clip-level WER (both after salmonn eval's English
normalisation, corpus-level over all words). A word cut by a 30 s segment boundary is lost or split, which is
the cost of the mode; the clip-level run is the same model on the same audio without that cost. Also reports
the long form's real-time factor on this machine. The Asterisk set is a test set: nothing here trains.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from salmonn.audio import load_audio
from salmonn.builder import load_model
from salmonn.data.asterisk import asterisk_records
from salmonn.decoding import decoding_config
from salmonn.evaluation.metrics import english_words, error_rate
from salmonn.inference import answer_all, long_form

INSTRUCTION = "Recognize the speech and give me the transcription."
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=None, help="model YAML (default: SALMONN-mini)")
    parser.add_argument("--out", default="scripts/mini/results/long_form.json")
    parser.add_argument("--limit", type=int, default=0, help="use the first N prompts only (0 = all)")
    parser.add_argument("--max-new-tokens", type=int, default=200, help="per 30 s segment (about 80 words)")
    parser.add_argument("--clip-max-new-tokens", type=int, default=64, help="per prompt (at most ~25 words)")
    args = parser.parse_args()
    model = load_model(args.config)
    records, _ = asterisk_records()
    records = records[: args.limit] if args.limit else records
    gen = decoding_config(model.config.generate, "greedy", max_new_tokens=args.max_new_tokens)

    start = time.perf_counter()
    clips = answer_all(model, [r["path"] for r in records], INSTRUCTION, batch_size=8, progress=True, num_beams=1,
                       max_new_tokens=args.clip_max_new_tokens)
    clip_seconds = time.perf_counter() - start
    clip_wer = wer([c.text or "" for c in clips], [r["text"] for r in records])

    wav, reference = joined_audio(records)
    model.config.model.max_audio_seconds = max(model.config.model.max_audio_seconds, len(wav) / SAMPLE_RATE + 60)
    start = time.perf_counter()
    answer = long_form(model, (wav, SAMPLE_RATE), INSTRUCTION, gen, batch_size=8)
    long_seconds = time.perf_counter() - start
    long_wer = wer([answer.text], [reference])

    result = {"clips": len(records), "audio_minutes": round(len(wav) / SAMPLE_RATE / 60, 2),
              "clip_level_wer": round(clip_wer, 4), "long_form_wer": round(long_wer, 4),
              "gap_points": round(100 * (long_wer - clip_wer), 2), "target_gap_points": 5.0,
              "long_form_seconds": round(long_seconds, 1),
              "long_form_x_real_time": round(len(wav) / SAMPLE_RATE / long_seconds, 2),
              "clip_level_seconds": round(clip_seconds, 1), "config": args.config or "SALMONN-mini (default)",
              "max_new_tokens_per_segment": args.max_new_tokens, "max_new_tokens_per_clip": args.clip_max_new_tokens, "machine": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
              "long_form_text_head": answer.text[:400], "reference_head": reference[:400]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
