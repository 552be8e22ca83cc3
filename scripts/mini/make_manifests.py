"""Split the synthetic corpus into the SALMONN-mini stage manifests (JSONL, absolute paths).

Stage 0 (the connector's CTC warm-up) sees ASR only; stage 1 (pre-training) ASR and captioning; stage 2
(instruction tuning) every trained task except spoken question answering, which stays an *untrained* instruction so
that task over-fitting can be measured on it. Test manifests come from the first corpus only.

    .venv/bin/python scripts/mini/make_manifests.py data/mini --extra data/mini-speech

The mini-v2 corpus (neural voices, issue 15) adds `--spoken-qa`: stage 2 also trains spoken questions whose target
is SmolLM2's own text answer (the held-out `opposites` family, sqa_test.json, stays untrained). Records of a clip
with a gender label carry it ("gender", for run.gender_weight). Transcripts of
audio without speech ("there is no speech in this audio") are capped at --no-speech-share of each stage's ASR.

mini-v8 (issue 33) adds corpora to every stage and validates on a dev split, never on test clips:

    .venv/bin/python scripts/mini/make_manifests.py ~/.cache/salmonn/data/mini-v2 --spoken-qa \
        --add ~/.cache/salmonn/data/voices-v3 ~/.cache/salmonn/data/real-sounds:4 \
        --dev ~/.cache/salmonn/data/voices-v3/dev.json --stage2-per-task 800

`--add DIR[:N]`: DIR/train.json joins the pool of every stage (its tasks permitting), N times over (a small set
of real recordings would be crowded out by the synthetic ones). Any clip that a corpus's test.json (or the --dev
file) also holds refuses to be trained on, as do the Asterisk recordings.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from salmonn.data.asterisk import is_asterisk_audio
from salmonn.data.jobs import NO_SPEECH_TEXT
from salmonn.jsonl import write_jsonl
from salmonn.manifest import read_manifest

STAGE_TASKS = {
    "stage0": ("asr",),
    "stage1": ("asr", "audiocaption"),
    "stage2": ("asr", "audiocaption", "gender_recognition", "sound_event", "music_description", "instrument"),
}
EXTRA_STAGES = ("stage0", "stage1")  # --extra speech aligns the connector; stage 2 keeps its task balance
VALID_PER_TASK = 16


def added_corpus(spec: str) -> tuple[Path, int]:
    """'DIR' or 'DIR:N' -> (DIR resolved, N repeats)."""
    head, _, tail = spec.rpartition(":")
    if head and tail.isdigit() and int(tail) > 0:
        return Path(head).expanduser().resolve(), int(tail)
    return Path(spec).expanduser().resolve(), 1


def refuse_held_out(train: list[dict], held: set[str]) -> None:
    """Stop when a training record's clip is a test or dev clip, or an Asterisk recording (a real-speech test set)."""
    for r in train:
        for path in [r["path"], *r.get("expand_wav", [])]:
            if is_asterisk_audio(path) or path in held:
                raise SystemExit(f"{path}: a held-out clip (test, dev or Asterisk) in a training pool; "
                                 f"remove it from that corpus's train split")


def cap_no_speech(records: list[dict], share: float) -> list[dict]:
    """The records with at most `share` of the ASR ones saying there is no speech (the first ones kept)."""
    speech = sum(r["task"] == "asr" and r["text"] != NO_SPEECH_TEXT for r in records)
    room = int(share * speech / (1 - share)) if share < 1 else len(records)
    kept = []
    for r in records:
        if r["task"] == "asr" and r["text"] == NO_SPEECH_TEXT:
            if room <= 0:
                continue
            room -= 1
        kept.append(r)
    return kept


def first_clips(records: list[dict], spec: str) -> list[dict]:
    """The records, keeping of each KIND in spec ('voice=1840,voice_qa=400') only clips <kind>_<index> below N."""
    limits = {k: int(n) for k, n in (item.split("=") for item in spec.split(",") if item)}
    kept = []
    for r in records:
        kind, index = Path(r["path"]).parent.name, int(Path(r["path"]).stem.rsplit("_", 1)[1])
        if index < limits.get(kind, index + 1):
            kept.append(r)
    return kept


def with_gender(records: list[dict]) -> list[dict]:
    """The records, each of a clip with a gender_recognition label carrying it as "gender" (run.gender_weight)."""
    gender = {r["path"]: r["text"] for r in records if r["task"] == "gender_recognition"}
    return [{**r, "gender": gender[r["path"]]} if r["path"] in gender else r for r in records]


def cap_per_task(records: list[dict], cap: int, balanced: tuple[str, ...] = ()) -> list[dict]:
    """The records with at most `cap` of each task (the first ones kept, order unchanged); a task in `balanced`
    has its cap split evenly over its answers (gender: cap/2 male, cap/2 female, whatever the pool's skew)."""
    labels: dict[str, set[str]] = {}
    for r in records:
        labels.setdefault(r["task"], set()).add(r["text"])
    seen: dict[tuple[str, str], int] = {}
    kept = []
    for r in records:
        key = (r["task"], r["text"] if r["task"] in balanced else "")
        seen[key] = seen.get(key, 0) + 1
        if seen[key] <= (cap // len(labels[r["task"]]) if r["task"] in balanced else cap):
            kept.append(r)
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--extra", type=Path, nargs="*", default=[],
                        help="more corpora (another --seed) whose train split joins the stage 0 and 1 manifests")
    parser.add_argument("--add", nargs="*", default=[], metavar="DIR[:N]",
                        help="more corpora whose train split joins every stage, N times over (default 1)")
    parser.add_argument("--dev", type=Path,
                        help="annotation file of a dev split: the validation samples (default: the first corpus's "
                             "test split, as mini-v6 and before were validated)")
    parser.add_argument("--spoken-qa", action="store_true",
                        help="stage 2 also trains spoken questions (QA) answered by the LLM's own text answers")
    parser.add_argument("--no-speech-share", type=float, default=0.1,
                        help="at most this share of a stage's ASR samples are 'no speech' transcripts")
    parser.add_argument("--first", default="",
                        help="KIND=N,...: train on the first N clips of these kinds only (e.g. voice=1840: what "
                             "a partly rendered corpus held); the manifests equal those of that partial corpus")
    parser.add_argument("--stage2-per-task", type=int, default=0,
                        help="at most N stage-2 samples per task (0: no cap): keeps a partial corpus's task balance")
    parser.add_argument("--balance", nargs="*", default=[], metavar="TASK",
                        help="these tasks' stage-2 cap is split evenly over their answers (gender_recognition: "
                             "voices-v3's new engines are all male)")
    args = parser.parse_args()
    if args.balance and not args.stage2_per_task:
        parser.error("--balance splits the --stage2-per-task cap: give that cap too")
    args.corpus = args.corpus.resolve()  # records carry absolute paths: the manifests work from any folder
    train, test = read_manifest(args.corpus / "train.json"), read_manifest(args.corpus / "test.json")
    dev = read_manifest(args.dev) if args.dev else test
    more = [r for extra in args.extra for r in with_gender(read_manifest(extra.resolve() / "train.json"))]
    added = [(folder, repeats) for folder, repeats in map(added_corpus, args.add)]
    everywhere = [r for folder, repeats in added for r in with_gender(read_manifest(folder / "train.json")) * repeats]
    held = {r["path"] for r in test + dev}
    held |= {r["path"] for folder, _ in added if (folder / "test.json").is_file()
             for r in read_manifest(folder / "test.json")}
    refuse_held_out(train + more + everywhere, held)
    train = with_gender(first_clips(train, args.first)) + everywhere
    random.Random(0).shuffle(train)
    for stage, tasks in STAGE_TASKS.items():
        pool = train
        if stage in EXTRA_STAGES and more:
            pool = train + more
            random.Random(2).shuffle(pool)
        if stage == "stage2" and args.spoken_qa:
            tasks = tasks + ("QA",)
        records = cap_no_speech([r for r in pool if r["task"] in tasks], args.no_speech_share)
        if stage == "stage2" and args.stage2_per_task:
            records = cap_per_task(records, args.stage2_per_task, tuple(args.balance))
        write_jsonl(args.corpus / f"{stage}_train.jsonl", records)
        valid = [r for task in tasks for r in [x for x in dev if x["task"] == task][:VALID_PER_TASK]]
        write_jsonl(args.corpus / f"{stage}_valid.jsonl", valid)
    captions = [r for r in train if r["task"] == "audiocaption"]
    write_jsonl(args.corpus / "stage3_story_sources.jsonl", captions[:64])
    for task in sorted({r["task"] for r in test}):
        write_jsonl(args.corpus / f"test_{task}.jsonl", [r for r in test if r["task"] == task])
    print("wrote stage manifests under", args.corpus)


if __name__ == "__main__":
    main()
