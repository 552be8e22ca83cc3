"""How well mini's frozen encoder can hear each ASR test set: Whisper base with its own decoder on the same clips.

    nice -n 19 .venv/bin/python scripts/mini/whisper_ceiling.py [--out scripts/mini/results/whisper_ceiling.json]

mini reads only Whisper base's encoder output; Whisper's own decoder was trained on 680k hours to read exactly that
output, so its WER on a clip set is a practical floor for what a connector on the frozen encoder can reach there.
Scores the model card's ASR clips (the first 64 of the espeak-ng test split and of the neural-voice test split, from
score_candidate.sh's manifests) and all Asterisk prompts, clip by clip, greedy, English, normalised as `salmonn
eval` normalises.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from salmonn.audio import load_audio
from salmonn.data.asterisk import asterisk_records
from salmonn.evaluation.metrics import english_words, error_rate

EVAL = Path.home() / ".cache/salmonn/eval/mini-v6"  # score_candidate.sh's work folders for the shipped model
SETS = {"espeak": Path(f"{EVAL}-base/manifests/asr.jsonl"), "neural": EVAL / "manifests/asr@voice.jsonl"}


def _manifest(path: Path, limit: int) -> list[dict]:
    if not path.is_file():
        raise SystemExit(f"{path}: missing; run scripts/mini/score_candidate.sh for the shipped weights first")
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["task"] == "asr"][:limit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=64, help="clips per synthetic set (the card's 64)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "whisper_ceiling.json")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from voice_check import transcriber

    torch.set_num_threads(2)
    transcribe, words = transcriber(), english_words()
    sets = {name: _manifest(path, args.limit) for name, path in SETS.items()}
    sets["asterisk"] = asterisk_records()[0]
    result = {}
    for name, rows in sets.items():
        hyps = [transcribe(load_audio(r["path"])) for r in rows]
        refs = [r["text"] for r in rows]
        result[name] = {"clips": len(rows), "wer": round(error_rate(hyps, refs, words)[0], 2),
                        "examples": [{"path": str(r["path"]), "reference": ref, "whisper": hyp}
                                     for r, ref, hyp in list(zip(rows, refs, hyps))[:5]]}
        print(name, len(rows), "clips: Whisper base WER", result[name]["wer"], "%", flush=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
