"""Split the synthetic corpus into the SALMONN-mini stage manifests (JSONL, absolute paths).

Stage 1 (pre-training) sees ASR and captioning; stage 2 (instruction tuning) every trained task except spoken
question answering, which stays an *untrained* instruction so that task over-fitting can be measured on it.

    .venv/bin/python scripts/mini/make_manifests.py data/mini
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from salmonn.data.manifest import read_manifest

STAGE_TASKS = {
    "stage1": ("asr", "audiocaption"),
    "stage2": ("asr", "audiocaption", "gender_recognition", "sound_event", "music_description", "instrument"),
}
VALID_PER_TASK = 16


def write_jsonl(records: list[dict], path: Path) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus", type=Path)
    args = parser.parse_args()
    args.corpus = args.corpus.resolve()  # records carry absolute paths: the manifests work from any folder
    train, test = read_manifest(args.corpus / "train.json"), read_manifest(args.corpus / "test.json")
    random.Random(0).shuffle(train)
    for stage, tasks in STAGE_TASKS.items():
        write_jsonl([r for r in train if r["task"] in tasks], args.corpus / f"{stage}_train.jsonl")
        valid = [r for task in tasks for r in [x for x in test if x["task"] == task][:VALID_PER_TASK]]
        write_jsonl(valid, args.corpus / f"{stage}_valid.jsonl")
    captions = [r for r in train if r["task"] == "audiocaption"]
    write_jsonl(captions[:64], args.corpus / "stage3_story_sources.jsonl")
    for task in sorted({r["task"] for r in test}):
        write_jsonl([r for r in test if r["task"] == task], args.corpus / f"test_{task}.jsonl")
    print("wrote stage manifests under", args.corpus)


if __name__ == "__main__":
    main()
