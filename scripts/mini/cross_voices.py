"""Which half of mini's generalisation gap is voices and which is sentences: two crossed ASR sets.

    .venv/bin/python scripts/mini/cross_voices.py [CORPUS] [OUT]

From the 96-clip held-out set and the 96 training clips that stage0_ablation.sh scores (48 espeak-ng + 48
neural each), re-render every clip with the other set's sentence, keeping its voice, rate, accent and the seed
of its augmentation (room, noise, level): `heldout_voice_train_sentence.jsonl` (held-out speakers saying
training sentences) and `train_voice_heldout_sentence.jsonl` (training speakers saying held-out sentences),
written to OUT (default ~/.cache/salmonn/diag/cross). ctc_wer.py on those two beside the originals splits the gap.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from salmonn.data.jobs import render_clip
from salmonn.jsonl import read_jsonl

sys.path.insert(0, str(Path(__file__).parent))
from corpus_check import finished_clips  # noqa: E402  (a sibling script)

KINDS = ("speech", "voice")  # espeak-ng, neural


def _records(corpus: Path, manifest: Path) -> dict[str, list[dict]]:
    """The rendered job of each clip in a manifest, by kind, in manifest order (the chunks hold the jobs)."""
    jobs = {str(corpus / rec["path"]): rec for rec in finished_clips(corpus)}
    picked = [jobs[r["path"]] for r in read_jsonl(manifest, strict=True)]
    return {k: [r for r in picked if r["kind"] == k] for k in KINDS}


def _cross(voices: list[dict], sentences: list[dict], root: Path, name: str) -> list[dict]:
    rows = []
    for voice, other in zip(voices, sentences, strict=True):
        job = {k: v for k, v in voice.items() if k not in ("entries", "seconds", "aug")}
        job |= {"text": other["text"], "root": str(root), "path": f"{name}/{voice['kind']}/{Path(voice['path']).name}"}
        render_clip(job)
        rows.append({"path": str(root / job["path"]), "task": "asr", "text": other["text"]})
    return rows


def main() -> None:
    corpus = Path(sys.argv[1] if len(sys.argv) > 1 else Path.home() / ".cache/salmonn/data/mini-v2")
    out = Path(sys.argv[2] if len(sys.argv) > 2 else Path.home() / ".cache/salmonn/diag/cross")
    runs = Path("runs/stage0-ablation")  # the 96 + 96 clips stage0_ablation.sh writes and scores
    test, train = _records(corpus, runs / "test_asr_96.jsonl"), _records(corpus, runs / "train_asr_96.jsonl")
    for name, voices, sentences in (("heldout_voice_train_sentence", test, train),
                                    ("train_voice_heldout_sentence", train, test)):
        rows = [r for k in KINDS for r in _cross(voices[k], sentences[k], out, name)]
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"{out / name}.jsonl: {len(rows)} clips")


if __name__ == "__main__":
    main()
