"""Sound events in real recordings, answered by the shipped SALMONN-mini with the card's sound-event scoring.

    nice -n 10 .venv/bin/python scripts/mini/real_events.py [--data ~/.cache/salmonn/data/real-sounds] \
        [--out scripts/mini/results/real_events.json]

The set is `salmonn data real-sounds` (salmonn.data.real_sounds: labeled recordings from PyPI and Debian packages,
split into train and test by source file and series; built into --data when missing). Each split is scored on its
own (the train split is labelled so: mini-v8b trained on it, mini-v6 never saw it; the test split no model trains
on) with what card_numbers.py uses for the synthetic sound events: `salmonn eval`'s evaluate() on task sound_event with the
model's test prompt and greedy decoding; an answer is right when it names the clip's label and no other label of
the split (salmonn.evaluation.metrics.classification). Beside the accuracy: Wilson 95 % intervals, per-label
counts, the mean of the per-label accuracies (label_macro) and of the per-series ones (series_macro: clips cut
from one file, or files of one series, are not independent), the answers mini gives most, the accuracy on the
test clips whose label the real train split also has and on mini's own 10 classes, and two broken baselines:
the split's most frequent label as a constant answer, and the model's answer to 5 s of silence given to every
clip. Writes the numbers and the weights' sha256 to --out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from salmonn.builder import load_model
from salmonn.data.real_sounds import build_real_sounds
from salmonn.data.sounds import EVENT_NAMES
from salmonn.defaults import MINI_DIR
from salmonn.evaluation.metrics import compute_metrics
from salmonn.evaluation.run import evaluate
from salmonn.frames import SAMPLE_RATE
from salmonn.jsonl import jsonl_line, read_jsonl, write_jsonl

sys.path.insert(0, str(Path(__file__).parent))
from card_numbers import wilson_interval  # noqa: E402

TASK = "sound_event"
SILENCE_SECONDS = 5.0


def split_manifest(data: Path, split: str, work: Path) -> tuple[Path, list[dict]]:
    """The split's sound_event records as work/manifests/<split>.jsonl (absolute paths)."""
    records = [dict(r, path=str((data / r["path"]).resolve()))
               for r in json.loads((data / f"{split}.json").read_text())["annotation"] if r["task"] == TASK]
    path = work / "manifests" / f"{split}.jsonl"
    if not path.is_file() or path.read_text() != "".join(map(jsonl_line, records)):  # unchanged: evaluate() resumes
        write_jsonl(path, records)
    return path, records


def accuracy(correct: list[bool]) -> dict:
    """Accuracy, counts and Wilson 95 % interval of a list of right/wrong."""
    n, k = len(correct), int(sum(correct))
    return {"accuracy": round(k / n, 4) if n else None, "correct": k, "clips": n,
            "wilson95": wilson_interval(k, n) if n else None}


def constant_answer(answer: str, refs: list[str]) -> dict:
    """The accuracy of giving `answer` to every clip, scored like the model's answers."""
    per = compute_metrics(TASK, [answer] * len(refs), refs)["per_sample"]
    return {"answer": answer, **accuracy([p["correct"] for p in per])}


def macro(right: list[bool], keys: list[str]) -> dict:
    """The mean over keys (labels, or series of one recording) of their clips' accuracy: each counts once."""
    shares = [np.mean([ok for ok, k2 in zip(right, keys) if k2 == k]) for k in sorted(set(keys))]
    return {"accuracy": round(float(np.mean(shares)), 4), "count": len(shares)}


def score_split(model, data: Path, split: str, work: Path, silence_answer: str, train_labels: set[str]) -> dict:
    """One split: accuracy, interval, per label, the answers given most, subsets and the two baselines."""
    manifest, records = split_manifest(data, split, work)
    summary = evaluate(model, manifest, TASK, work / split, batch_size=8, use_java=False, progress=False)
    run = summary["runs"][0]
    rows = read_jsonl(work / split / run["samples_file"], strict=True)
    right = [bool(r["score"]["correct"]) for r in rows]
    labels = [records[r["index"]]["label"] for r in rows]
    per_label = {lab: accuracy([ok for ok, lab2 in zip(right, labels) if lab2 == lab]) for lab in sorted(set(labels))}
    refs = [r["text"] for r in records]
    group = {s["package"] + "/" + s["path"]: s["group"] for s in json.loads((data / "sources.json").read_text())}
    groups = [group[records[r["index"]]["package"] + "/" + records[r["index"]]["source"]] for r in rows]
    return {
        "clips": len(rows), "labels": len(per_label), "source_files": len({r["source"] for r in records}),
        **accuracy(right), "failed": run["failed"]["count"],
        "label_macro": macro(right, labels), "series_macro": macro(right, groups),
        "labels_in_real_train": accuracy([ok for ok, lab in zip(right, labels) if lab in train_labels]),
        "mini_classes": accuracy([ok for ok, lab in zip(right, labels) if lab in EVENT_NAMES]),
        "baseline_most_frequent_label": constant_answer(Counter(refs).most_common(1)[0][0], refs),
        "baseline_silence_answer": constant_answer(silence_answer, refs),
        "answers_most_given": dict(Counter(r["hypothesis"] for r in rows).most_common(12)),
        "per_label": {lab: {"correct": v["correct"], "clips": v["clips"]} for lab, v in per_label.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path.home() / ".cache" / "salmonn" / "data" / "real-sounds")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "salmonn" / "eval" / "real-events")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "real_events.json")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    if not (args.data / "test.json").is_file():
        build_real_sounds(args.data)
    set_summary = json.loads((args.data / "summary.json").read_text())
    weights = MINI_DIR / "trainable.safetensors"
    model = load_model(None)
    prompt = json.loads((MINI_DIR / "test_prompts.json").read_text())[TASK]
    silence = model.generate([(np.zeros(int(SILENCE_SECONDS * SAMPLE_RATE), np.float32), SAMPLE_RATE)], prompt)[0]
    train_labels = set(set_summary["splits"]["train"]["labels"])
    result = {"weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(), "prompt": prompt,
              "set": set_summary, "silence_answer": silence.text,
              "note": "real recordings, each split scored apart: the test split is in no model's training data, the "
                      "train split in mini-v8b's (not in mini-v6's)"}
    for split in ("test", "train"):
        result[split] = score_split(model, args.data, split, args.work, silence.text, train_labels)
        print(split, json.dumps({k: v for k, v in result[split].items() if k != "per_label"}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
