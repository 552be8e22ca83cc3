"""Speaker gender on real recorded voices, answered by the shipped SALMONN-mini (the card's test prompt, greedy).

    nice -n 10 .venv/bin/python scripts/mini/real_voice_gender.py [--out scripts/mini/results/real_voice_gender.json]

The card's gender rows are measured on synthetic voices from the training data's own generators (espeak-ng, and
Kokoro neural voices whose one male style table training shares). Real voices whose gender is documented and that
are reachable offline: the 542 Asterisk prompts (Debian asterisk-core-sounds-en-wav, a test set never trained on),
all read by one female speaker. That is one voice and one class: the accuracy says whether mini hears this woman
as female, not how it does on real voices in general, and no real male voice with a documented gender is on this
machine (the shared clips' speakers and pocketsphinx-testdata's are not documented). The shared real clips
(`../shared/audio`: mountain.wav, excitement.wav) are answered too and reported with their median F0, unscored.
Each voice's median F0 (YIN, salmonn.data.voices.median_f0) is stored beside the answers: the training voices'
female and male pitch ranges (the card) do not overlap, so a voice between them is a real test of what mini uses.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from salmonn.audio import load_audio
from salmonn.builder import load_model
from salmonn.data.asterisk import asterisk_records
from salmonn.data.voices import median_f0
from salmonn.defaults import MINI_DIR
from salmonn.evaluation.metrics import compute_metrics
from salmonn.inference import answer_all

sys.path.insert(0, str(Path(__file__).parent))
from card_numbers import wilson_interval  # noqa: E402

SHARED_AUDIO = Path(__file__).resolve().parents[3] / "shared" / "audio"
UNLABELLED = ("mountain.wav", "excitement.wav")  # real speech, speaker's gender not documented
PROMPT = json.loads((MINI_DIR / "test_prompts.json").read_text())["gender_recognition"]


def scored_voice(model, paths: list[str], label: str) -> dict:
    """The answers to every clip of one voice of known gender: accuracy, its interval, answer counts, F0."""
    answers = [r.text or "" for r in answer_all(model, paths, PROMPT, batch_size=8, progress=True)]
    accuracy = compute_metrics("gender_recognition", answers, [label] * len(answers))["metrics"]["accuracy"]
    correct = round(accuracy * len(answers))
    f0 = [median_f0(load_audio(p)) for p in paths]
    return {"label": label, "clips": len(paths), "accuracy": round(accuracy, 4), "correct": correct,
            "wilson95": wilson_interval(correct, len(paths)), "answers": dict(Counter(answers).most_common()),
            "median_f0_hz": round(float(np.median([f for f in f0 if f > 0])), 1),
            "f0_hz_p10_p90": [round(float(np.percentile([f for f in f0 if f > 0], q)), 1) for q in (10, 90)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "real_voice_gender.json")
    parser.add_argument("--limit", type=int, default=0, help="the first N Asterisk prompts only (0 = all)")
    args = parser.parse_args()
    model = load_model(None)
    weights = MINI_DIR / "trainable.safetensors"
    records, _ = asterisk_records()
    records = records[: args.limit] if args.limit else records
    unlabelled = [str(SHARED_AUDIO / name) for name in UNLABELLED]
    result = {"weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(), "prompt": PROMPT,
              "voices": {"asterisk (one female speaker)": scored_voice(model, [r["path"] for r in records], "female")},
              "real_male_voices": "none with a documented gender reachable offline",
              "unlabelled": {Path(p).name: {"answer": r.text, "median_f0_hz": round(median_f0(load_audio(p)), 1)}
                             for p, r in zip(unlabelled, answer_all(model, unlabelled, PROMPT))}}
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
