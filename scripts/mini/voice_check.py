"""Do the neural voices say the words, sound like their gender label, and how fast are they? (issue 15)

    nice -n 19 .venv/bin/python scripts/mini/voice_check.py [--sentences 5] [--out scripts/mini/results/voice_check.json]

For every held-out speaker and every sixth training speaker of salmonn.data.voices: synthesise --sentences
held-out fortune sentences (evenly spread over the sorted pool) at speed 1, measure the real-time factor (synthesis seconds / audio seconds, one
thread) and the median F0, and transcribe the clip with Whisper base (the project's PyPI copy, greedy);
WER after Whisper's English normalisation. The RTF is
measured as it runs: on a busy machine it is that machine's number, not the model's. One espeak-ng voice reads the same sentences as a baseline.
Writes per-speaker rows and per-gender/held-out summaries to --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from salmonn.backbones import ensure_backbones
from salmonn.data.jobs import espeak
from salmonn.data.texts import held_out, load_sentences
from salmonn.data.voices import KokoroVoices, all_speakers, median_f0
from salmonn.evaluation.metrics import english_words, error_rate


def transcriber():
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    path = ensure_backbones()["whisper"]
    processor = WhisperProcessor.from_pretrained(path)
    model = WhisperForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()

    def transcribe(x: np.ndarray) -> str:
        features = processor(x.astype(np.float32), sampling_rate=16000, return_tensors="pt").input_features
        with torch.inference_mode():
            ids = model.generate(features, language="en", task="transcribe", max_new_tokens=96)
        return processor.batch_decode(ids, skip_special_tokens=True)[0].strip()

    return transcribe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sentences", type=int, default=5)
    parser.add_argument("--out", default="scripts/mini/results/voice_check.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pool = [s for s in load_sentences() if held_out(s)]
    sentences = pool[len(pool) // (2 * args.sentences)::len(pool) // args.sentences][: args.sentences]
    speakers = [s for i, s in enumerate(all_speakers()) if s.held_out or i % 6 == 0]
    voices, transcribe, words = KokoroVoices(threads=1), transcriber(), english_words()
    rows = []
    for speaker in speakers:
        hyps, synth_s, audio_s, f0 = [], 0.0, 0.0, []
        for text in sentences:
            start = time.perf_counter()
            x = voices.speak(text, speaker, 1.0)
            synth_s += time.perf_counter() - start
            audio_s += len(x) / 16000
            f0.append(median_f0(x))
            hyps.append(transcribe(x))
        wer, _ = error_rate(hyps, sentences, words)
        rows.append({"speaker": speaker.name, "gender": speaker.gender, "held_out": speaker.held_out,
                     "wer": round(wer, 2), "median_f0_hz": round(float(np.median(f0)), 1),
                     "rtf": round(synth_s / audio_s, 3), "audio_seconds": round(audio_s, 2), "hypotheses": hyps})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "hypotheses"}), flush=True)
    baseline = [transcribe(espeak(t, "en-us+m3", 160, 50)) for t in sentences]
    summary = {}
    for gender in ("female", "male"):
        for held in (False, True):
            group = [r for r in rows if r["gender"] == gender and r["held_out"] == held]
            summary[f"{gender} {'held-out' if held else 'train'}"] = {
                "speakers": len(group), "mean_wer": round(float(np.mean([r["wer"] for r in group])), 2),
                "f0_range_hz": [min(r["median_f0_hz"] for r in group), max(r["median_f0_hz"] for r in group)]}
    summary["rtf_mean_one_thread"] = round(float(np.mean([r["rtf"] for r in rows])), 3)
    summary["espeak en-us+m3 wer"] = round(error_rate(baseline, sentences, words)[0], 2)
    result = {"sentences": sentences, "summary": summary, "speakers": rows, "espeak_hypotheses": baseline}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
