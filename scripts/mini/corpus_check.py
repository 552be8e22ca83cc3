"""Do the rendered corpus clips (augmented: rooms, noise, levels, speed) still say their transcript? (issue 15)

    nice -n 19 .venv/bin/python scripts/mini/corpus_check.py ~/.cache/salmonn/data/mini-v2 [--clips 40] \
        [--out scripts/mini/results/corpus_check.json]

Transcribes the first --clips finished clips of each speech kind (espeak `speech`, neural `voice`, neural
`voice_mix` over events) with Whisper base and reports the WER per kind and per engine/gender, read from the
resumable chunks of `salmonn data synth` (works while the generation is still running). Also the length and
level statistics of every finished clip: seconds rendered, clips, mean dBFS per kind.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from salmonn.evaluation.metrics import english_words, error_rate
from salmonn.jsonl import read_jsonl

SPEECH_KINDS = ("speech", "voice", "voice_mix")


def finished_clips(corpus: Path) -> list[dict]:
    """Metadata of every clip in a finished chunk (chunks/<split>-<k>.jsonl), in file order."""
    rows = []
    for chunk in sorted((corpus / "chunks").glob("*.jsonl")):
        rows += read_jsonl(chunk, strict=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--clips", type=int, default=40, help="clips per speech kind to transcribe")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "corpus_check.json")
    args = parser.parse_args()
    import sys
    sys.path.insert(0, str(Path(__file__).parent))
    from voice_check import transcriber

    torch.set_num_threads(1)
    rows = finished_clips(args.corpus)
    stats: dict[str, dict] = defaultdict(lambda: {"clips": 0, "seconds": 0.0, "levels": []})
    for r in rows:
        s = stats[r["kind"]]
        s["clips"] += 1
        s["seconds"] += r["seconds"]
        if "level_dbfs" in r.get("aug", {}):  # speech-free clips set their own level, unrecorded
            s["levels"].append(r["aug"]["level_dbfs"])
    transcribe, words = transcriber(), english_words()
    checks: dict[str, dict] = {}
    for kind in SPEECH_KINDS:
        picked = [r for r in rows if r["kind"] == kind][: args.clips]
        if not picked:
            continue
        refs = [next(e["text"] for e in r["entries"] if e["task"] == "asr") for r in picked]
        hyps = [transcribe(sf.read(args.corpus / r["path"], dtype="float32")[0]) for r in picked]
        groups = defaultdict(list)
        for i, r in enumerate(picked):
            groups[f"{r.get('engine', 'espeak')} {r['gender']}"].append(i)
        checks[kind] = {
            "clips": len(picked), "wer": round(error_rate(hyps, refs, words)[0], 2),
            "by_voice": {g: round(error_rate([hyps[i] for i in ix], [refs[i] for i in ix], words)[0], 2)
                         for g, ix in sorted(groups.items())},
            "examples": [{"path": r["path"], "reference": ref, "whisper": hyp}
                         for r, ref, hyp in list(zip(picked, refs, hyps))[:5]],
        }
        print(kind, json.dumps({k: v for k, v in checks[kind].items() if k != "examples"}), flush=True)
    result = {
        "corpus": str(args.corpus), "finished_clips": len(rows),
        "hours": round(sum(s["seconds"] for s in stats.values()) / 3600, 3),
        "kinds": {k: {"clips": s["clips"], "hours": round(s["seconds"] / 3600, 3),
                      "mean_level_dbfs": round(float(np.mean(s["levels"])), 1) if s["levels"] else None}
                  for k, s in sorted(stats.items())},
        "whisper_base": checks,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "whisper_base"}, indent=1))


if __name__ == "__main__":
    main()
