"""Do the voices-v3 corpus's new voices say the words, sound like their gender label, and what do they cost? (issue 33)

    nice -n 10 .venv/bin/python scripts/data/voice_check_v3.py [--sentences 5] [--out scripts/data/results/voice_check_v3.json]

For every voice the voices-v3 plan uses that mini-v2 does not (Festival kal/ked/slt, Piper joe, the Kokoro add-on
speakers, the espeak-ng variants): synthesise the same --sentences held-out fortune sentences as
scripts/mini/voice_check.py (speed 1, no augmentation), transcribe them with Whisper base (that script's
transcriber: the project's PyPI copy, greedy) and score WER after Whisper's English normalisation; measure the
median F0 and the engine's cost in CPU seconds (this process and its children: Festival runs as text2wave) per
second of audio. CPU seconds, not wall time: the machine is shared with other renders.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
from pathlib import Path

import numpy as np
import torch

from salmonn.data.engines import VOICES, speak
from salmonn.data.jobs import espeak
from salmonn.data.texts import held_out, load_sentences
from salmonn.data.voices import KokoroVoices, addon_speakers, median_f0
from salmonn.data.voices_v3 import ESPEAK_VARIANTS
from salmonn.evaluation.metrics import english_words, error_rate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "mini"))
from voice_check import transcriber  # noqa: E402  (the same Whisper base transcriber as the Kokoro check)


def cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def voices() -> list[tuple[str, str, str, object]]:
    """(name, engine, gender, say(text) -> 16 kHz audio) for every voice new in voices-v3."""
    out = [(name, v.engine, v.gender, lambda t, n=name: speak(n, t, 1.0)) for name, v in VOICES.items()]
    kokoro = KokoroVoices(threads=1)
    for pool in ("train", "dev"):
        out += [(s.name, "kokoro", s.gender, lambda t, s=s: kokoro.speak(t, s, 1.0)) for s in addon_speakers(pool)]
    new_male = ESPEAK_VARIANTS["train"]["male"] + ESPEAK_VARIANTS["dev"]["male"]
    for gender, variants in (("male", new_male), ("female", ESPEAK_VARIANTS["dev"]["female"])):
        out += [(f"espeak:en-us+{v}", "espeak", gender, lambda t, v=v: espeak(t, f"en-us+{v}", 160, 50))
                for v in variants]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sentences", type=int, default=5)
    parser.add_argument("--out", default="scripts/data/results/voice_check_v3.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    pool = [s for s in load_sentences() if held_out(s)]
    sentences = pool[len(pool) // (2 * args.sentences)::len(pool) // args.sentences][: args.sentences]
    transcribe, words = transcriber(), english_words()
    rows = []
    for name, engine, gender, say in voices():
        start, clips = cpu_seconds(), [say(t) for t in sentences]
        cpu = cpu_seconds() - start
        audio_s = sum(len(x) for x in clips) / 16000
        hyps = [transcribe(x) for x in clips]
        rows.append({"voice": name, "engine": engine, "gender": gender, "wer": round(error_rate(hyps, sentences, words)[0], 2),
                     "median_f0_hz": round(float(np.median([median_f0(x) for x in clips])), 1),
                     "cpu_s_per_audio_s": round(cpu / audio_s, 3), "audio_seconds": round(audio_s, 2),
                     "hypotheses": hyps})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "hypotheses"}), flush=True)
    summary = {}
    for engine in ("festival", "piper", "kokoro", "espeak"):
        for gender in ("male", "female"):
            group = [r for r in rows if r["engine"] == engine and r["gender"] == gender]
            if group:
                summary[f"{engine} {gender}"] = {
                    "voices": len(group), "mean_wer": round(float(np.mean([r["wer"] for r in group])), 2),
                    "f0_range_hz": [min(r["median_f0_hz"] for r in group), max(r["median_f0_hz"] for r in group)],
                    "cpu_s_per_audio_s": round(float(np.mean([r["cpu_s_per_audio_s"] for r in group])), 3)}
    result = {"sentences": sentences, "summary": summary, "voices": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
