"""Split the synthetic corpus into the SALMONN-mini stage manifests (JSONL, absolute paths).

Stage 0 (the connector's CTC warm-up) sees ASR only; stage 1 (pre-training) ASR and captioning; stage 2
(instruction tuning) every trained task except spoken question answering, which stays an *untrained* instruction so
that task over-fitting can be measured on it. Test manifests come from the first corpus only.

    .venv/bin/python scripts/mini/make_manifests.py data/mini --extra data/mini-speech
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from salmonn.data.asterisk import is_asterisk_audio
from salmonn.data.manifest import read_manifest

STAGE_TASKS = {
    "stage0": ("asr",),
    "stage1": ("asr", "audiocaption"),
    "stage2": ("asr", "audiocaption", "gender_recognition", "sound_event", "music_description", "instrument"),
}
EXTRA_STAGES = ("stage0", "stage1")  # --extra speech aligns the connector; stage 2 keeps its task balance
VALID_PER_TASK = 16


def write_jsonl(records: list[dict], path: Path) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--extra", type=Path, nargs="*", default=[],
                        help="more corpora (another --seed) whose train split joins the stage 0 and 1 manifests")
    args = parser.parse_args()
    args.corpus = args.corpus.resolve()  # records carry absolute paths: the manifests work from any folder
    train, test = read_manifest(args.corpus / "train.json"), read_manifest(args.corpus / "test.json")
    more = [r for extra in args.extra for r in read_manifest(extra.resolve() / "train.json")]
    leaked = [r["path"] for r in train + more if is_asterisk_audio(r["path"])]
    if leaked:  # the real-speech test set (salmonn data asterisk) must never be trained on
        raise SystemExit(f"{leaked[0]}: an Asterisk test recording in a training split; remove it from the corpus")
    random.Random(0).shuffle(train)
    for stage, tasks in STAGE_TASKS.items():
        pool = train
        if stage in EXTRA_STAGES and more:
            pool = train + more
            random.Random(2).shuffle(pool)
        write_jsonl([r for r in pool if r["task"] in tasks], args.corpus / f"{stage}_train.jsonl")
        valid = [r for task in tasks for r in [x for x in test if x["task"] == task][:VALID_PER_TASK]]
        write_jsonl(valid, args.corpus / f"{stage}_valid.jsonl")
    captions = [r for r in train if r["task"] == "audiocaption"]
    write_jsonl(captions[:64], args.corpus / "stage3_story_sources.jsonl")
    for task in sorted({r["task"] for r in test}):
        write_jsonl([r for r in test if r["task"] == task], args.corpus / f"test_{task}.jsonl")
    print("wrote stage manifests under", args.corpus)


if __name__ == "__main__":
    main()
