"""Long-form transcription on real speech: the Asterisk prompts joined into one long file, answered piece by piece
(`salmonn infer --long-form`) in each long-form mode, against the same prompts answered one clip at a time.

    .venv/bin/python scripts/mini/long_form.py [--config CFG] [--out scripts/mini/results/long_form.json]
        [--modes fixed:30,pause:30,pause:15,pause:8] [--clip-level-from scripts/mini/results/history/long_form_v1.json]
        [--num-beams 1] [model.dtype=bfloat16 ...]   (config overrides)

The issue-15 target: the long-form WER within 5 points of the clip-level WER (both after salmonn eval's English
normalisation, corpus-level over all words). A word cut by a fixed 30 s segment boundary is lost or split;
pause-aligned chunks (`--long-form-chunks pause`, at most `--long-form-seconds` each) cut where the speaker pauses,
and shorter chunks are closer to the <= 8 s clips SALMONN-mini was trained on. The clip-level run is the same model
on the same audio without either cost. Each mode's real-time factor on this machine is reported too; each piece
gets max_new_tokens in proportion to its maximum length (--max-new-tokens per 30 s). `--clip-level-from` takes the
clip-level numbers from an earlier output of this script on the same weights (the clip-level pass is the slow
one). The Asterisk set is a test set: nothing here trains.

A fair clip-level budget: 23 Asterisk prompts are 9-73 s long, and a fixed 64 new tokens per clip would cut their
answers short while long form gets tokens in proportion to its pieces' length. Each clip therefore gets
max(--clip-max-new-tokens, ceil(R * seconds * T)) new tokens, R and T derived here from the transcripts: R the
highest words per second of any clip of at least 2 s (shorter clips get the floor, 32 tokens per second or more),
T the highest LLM tokens per word of any transcript of at least 10 words. The output says how many transcripts
would not fit their budget (0 on the Asterisk set) and how many answers used all of it. The 64-token cap's WER is
measured too (the long clips answered again with the floor), and the comparison is repeated on the clips of at
most 8 s only (the longest clips training had), joined and cut in each mode as the whole set is.

Output keys: clip_level_* (clip_level_wer with the fair budget; clip_level_wer_64 with the floor for every clip, what
outputs before issue 33 called clip_level_wer); clip_budget (R, T, how derived, budgets, fit and use);
`clip_level_by_length` (clips, words and clip-level WER of the clips of 0-1.5, 1.5-3, 3-8, 8-15, 15-30 and 30+ s);
`modes` (one entry per mode: chunks, max_seconds, pieces, wer, gap_points against the fair clip level, seconds,
x_real_time, max_new_tokens_per_piece, answer_tokens, load_average_1min at its end, text_head); `default` (the mode
`salmonn infer --long-form` uses) with its gap in default_gap_points; `short_clips` (the clips of at most 8 s: their
count, clip-level WER and each mode's long-form WER and gap); `clip_answers` (per clip: id, seconds, budget, answer
tokens, text); and, as before, long_form_wer / gap_points / long_form_seconds / long_form_x_real_time for fixed 30 s
segments.
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
LENGTH_BANDS = ((0, 1.5), (1.5, 3), (3, 8), (8, 15), (15, 30), (30, 600))  # s: clip-level WER per band
SHORT_CLIP_SECONDS = 8.0  # the longest clips training had (configs/mini/README.md): the comparison without longer ones
RATE_FROM_SECONDS = 2.0  # the words-per-second bound is taken over clips at least this long
TOKENS_FROM_WORDS = 10  # the tokens-per-word bound over transcripts at least this long


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


def clip_budget(records: list[dict], tokenizer, floor: int) -> dict:
    """Each clip's max_new_tokens, max(floor, ceil(R * seconds * T)), with R and T derived from the transcripts."""
    words = [len(r["text"].split()) for r in records]
    tokens = [len(tokenizer(r["text"], add_special_tokens=False).input_ids) for r in records]
    rate = max((w / r["seconds"] for w, r in zip(words, records) if r["seconds"] >= RATE_FROM_SECONDS), default=4.0)
    per_word = max((t / w for t, w in zip(tokens, words) if w >= TOKENS_FROM_WORDS), default=2.0)
    budgets = [max(floor, math.ceil(rate * r["seconds"] * per_word)) for r in records]
    return {"words_per_second": round(rate, 3), "tokens_per_word": round(per_word, 3), "floor": floor,
            "derived": f"words_per_second: the most words per second of any clip of >= {RATE_FROM_SECONDS:g} s; "
                       f"tokens_per_word: the most LLM tokens per word of any transcript of >= {TOKENS_FROM_WORDS} "
                       "words; budget: max(floor, ceil(words_per_second * seconds * tokens_per_word))",
            "budgets": budgets, "clips_above_floor": sum(b > floor for b in budgets),
            "transcripts_over_budget": sum(t > b for t, b in zip(tokens, budgets)),
            "transcript_tokens_above_floor": sum(max(0, t - floor) for t in tokens)}


def clip_pass(model, records: list[dict], budgets: list[int], num_beams: int) -> list:
    """Every clip answered alone (batches of clips that share a budget), each with its own max_new_tokens."""
    answers: list = [None] * len(records)
    for budget in sorted(set(budgets)):
        chosen = [i for i, b in enumerate(budgets) if b == budget]
        found = answer_all(model, [records[i]["path"] for i in chosen], INSTRUCTION, batch_size=8,
                           progress=budget == min(budgets), num_beams=num_beams, max_new_tokens=budget)
        for i, result in zip(chosen, found):
            answers[i] = result.answer
    return answers


def clip_level(model, records: list[dict], floor: int, num_beams: int) -> dict:
    """The clip-by-clip pass with the fair budget, and the long clips again with the floor (the 64-token cap)."""
    budget = clip_budget(records, model.tokenizer, floor)
    start = time.perf_counter()
    fair = clip_pass(model, records, budget["budgets"], num_beams)
    seconds = time.perf_counter() - start
    longer = [i for i, b in enumerate(budget["budgets"]) if b > floor]
    capped = list(fair)
    for i, answer in zip(longer, clip_pass(model, [records[i] for i in longer], [floor] * len(longer), num_beams)):
        capped[i] = answer
    texts = [a.text if a else "" for a in fair]
    used = [len(a.token_ids) if a else 0 for a in fair]
    budget["answers_at_budget"] = sum(u >= b for u, b in zip(used, budget["budgets"]))
    budget["answer_tokens"] = sum(used)
    references = [r["text"] for r in records]
    return {"wer": wer(texts, references), "wer_64": wer([a.text if a else "" for a in capped], references),
            "seconds": seconds, "texts": texts, "budget": budget,
            "answers": [{"id": r["id"], "seconds": r["seconds"], "budget": b, "answer_tokens": u, "text": t}
                        for r, b, u, t in zip(records, budget["budgets"], used, texts)]}


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


def run_modes(model, records: list[dict], modes, clip_wer: float, args) -> list[dict]:
    """Every long-form mode on the records joined, each with its gap (points) to the clip-level WER."""
    wav, reference = joined_audio(records)
    model.config.model.max_audio_seconds = max(model.config.model.max_audio_seconds, len(wav) / SAMPLE_RATE + 60)
    results = []
    for chunks, seconds in modes:
        result = run_mode(model, wav, reference, chunks, seconds, args.max_new_tokens, args.num_beams)
        result["gap_points"] = round(100 * (result["wer"] - clip_wer), 2)
        results.append(result)
    return results


def earlier_clip_level(path: Path, records: list[dict], args, digest: str | None) -> dict:
    """The clip-level part of an earlier output of this script (same weights, prompts and settings)."""
    earlier = json.loads(path.read_text())
    if (earlier["clips"], earlier.get("max_new_tokens_per_clip"), earlier.get("num_beams", 1)) != (
            len(records), args.clip_max_new_tokens, args.num_beams) or "clip_answers" not in earlier:
        raise SystemExit(f"{path}: measured on {earlier['clips']} prompts with other settings (or before issue 33)")
    if earlier.get("weights_sha256", digest) != digest:
        raise SystemExit(f"{path}: measured on other weights")
    texts = [a["text"] for a in earlier["clip_answers"]]
    return {"wer": earlier["clip_level_wer"], "wer_64": earlier["clip_level_wer_64"], "texts": texts,
            "seconds": earlier["clip_level_seconds"], "budget": earlier["clip_budget"],
            "answers": earlier["clip_answers"],
            "source": earlier.get("clip_level_source", f"{path} (an earlier run, same weights)")}


def clip_level_by_length(records: list[dict], texts: list[str], bands_s=LENGTH_BANDS) -> list[dict]:
    """The clip-level WER of the clips in each band (seconds, low exclusive): clips, reference words, WER."""
    bands = []
    for low, high in bands_s:
        keep = [i for i, r in enumerate(records) if low < r["seconds"] <= high]
        if keep:
            bands.append({"seconds": [low, high], "clips": len(keep),
                          "words": sum(len(english_words()(records[i]["text"])) for i in keep),
                          "wer": round(wer([texts[i] for i in keep], [records[i]["text"] for i in keep]), 4)})
    return bands


def short_clip_comparison(model, records: list[dict], clip: dict, modes, args) -> dict:
    """The same comparison on the clips of at most SHORT_CLIP_SECONDS only."""
    keep = [i for i, r in enumerate(records) if r["seconds"] <= SHORT_CLIP_SECONDS]
    chosen = [records[i] for i in keep]
    clip_wer = wer([clip["texts"][i] for i in keep], [r["text"] for r in chosen])
    results = run_modes(model, chosen, modes, clip_wer, args)
    return {"max_seconds": SHORT_CLIP_SECONDS, "clips": len(chosen),
            "words": sum(len(r["text"].split()) for r in chosen), "clip_level_wer": round(clip_wer, 4),
            "modes": [{k: r[k] for k in ("chunks", "max_seconds", "pieces", "wer", "gap_points", "seconds")}
                      for r in results]}


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
    parser.add_argument("--clip-max-new-tokens", type=int, default=64,
                        help="the floor of each clip's budget (the budget grows with the clip's length)")
    parser.add_argument("--num-beams", type=int, default=1, help="1: greedy; 4 with generate.ctc_weight=0.4 "
                        "generate.ctc_length_bonus=2: the card's CTC rescoring")
    parser.add_argument("--clip-level-from", type=Path, default=None,
                        help="take the clip-level answers from this earlier output (same weights, same --limit)")
    args = parser.parse_args()
    modes = parse_modes(args.modes)
    model = load_model(args.config, args.overrides)
    digest = weights_digest(model)
    records, _ = asterisk_records()
    records = records[: args.limit] if args.limit else records

    if args.clip_level_from:
        clip = earlier_clip_level(args.clip_level_from, records, args, digest)
    else:
        clip = {**clip_level(model, records, args.clip_max_new_tokens, args.num_beams), "source": "this run"}
    results = run_modes(model, records, modes, clip["wer"], args)
    default = long_form_chunking(None, None)
    chosen = next((r for r in results if (r["chunks"], r["max_seconds"]) == default), None)
    fixed = next((r for r in results if (r["chunks"], r["max_seconds"]) == ("fixed", SEGMENT_SECONDS)), None)

    result = {"clips": len(records), "audio_minutes": round(sum(r["seconds"] for r in records) / 60 +
                                                            len(records) * PAUSE_SECONDS / 60, 2),
              "clip_level_wer": round(clip["wer"], 4), "clip_level_wer_64": round(clip["wer_64"], 4),
              "clip_level_seconds": round(clip["seconds"], 1), "clip_level_source": clip["source"],
              "clip_budget": clip["budget"], "clip_level_by_length": clip_level_by_length(records, clip["texts"]),
              "target_gap_points": 5.0,
              "default": f"{default[0]} {default[1]:g} s",
              "default_gap_points": chosen["gap_points"] if chosen else None, "modes": results,
              "short_clips": short_clip_comparison(model, records, clip, modes, args)}
    if fixed:  # the keys of earlier outputs, still meaning fixed 30 s segments
        result.update(long_form_wer=fixed["wer"], gap_points=fixed["gap_points"],
                      long_form_seconds=fixed["seconds"], long_form_x_real_time=fixed["x_real_time"])
    result.update({"config": args.config or "SALMONN-mini (default)", "overrides": args.overrides,
                   "weights_sha256": digest,
                   "max_new_tokens_per_30s": args.max_new_tokens, "num_beams": args.num_beams,
                   "max_new_tokens_per_clip": args.clip_max_new_tokens,
                   "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                   "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
                   "reference_head": " ".join(r["text"] for r in records)[:300], "clip_answers": clip["answers"]})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "clip_answers"}, indent=1))


if __name__ == "__main__":
    main()
