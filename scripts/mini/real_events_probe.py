"""Do mini's features tell the real recordings' sounds apart? Linear probes at each stage of its audio path.

    nice -n 10 .venv/bin/python scripts/mini/real_events_probe.py [--data ~/.cache/salmonn/data/real-sounds] \
        [--out scripts/mini/results/real_events_probe.json]

On `salmonn data real-sounds`' train split (its augmented copies included) a multinomial logistic regression is
fitted to each clip's mean Whisper frame, mean audio token (all queries) and mean token of each query (gender_probe.py's
features of the shipped model), and scored on the test clips whose label the train split has: the test split's
other labels are never trained on, so no probe can name them. real_events.json's `labels_in_real_train` is the
model's own answer on the same clips. A feature far above that accuracy holds what the LLM does not read out; one
near it caps what more training of the LLM and the connector alone can reach.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from salmonn.builder import load_model
from salmonn.manifest import read_manifest

sys.path.insert(0, str(Path(__file__).parent))
from card_numbers import wilson_interval  # noqa: E402
from gender_probe import features  # noqa: E402
from long_form import weights_digest  # noqa: E402
from probe_beats import probe  # noqa: E402

TASK = "sound_event"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path.home() / ".cache" / "salmonn" / "data" / "real-sounds")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "real_events_probe.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    train = [r for r in read_manifest(args.data / "train.json") if r["task"] == TASK]
    labels = sorted({r["text"] for r in train})
    test = [r for r in read_manifest(args.data / "test.json") if r["task"] == TASK and r["text"] in labels]
    model = load_model().eval()
    splits = {"train": train, "test": test}
    feats = {name: features(model, [r["path"] for r in records]) for name, records in splits.items()}
    ys = {name: torch.tensor([labels.index(r["text"]) for r in records]) for name, records in splits.items()}
    result = {"weights_sha256": weights_digest(model),
              "train_clips": len(train), "test_clips": len(test), "labels": len(labels),
              "majority_share": round(max(ys["test"].bincount().tolist()) / len(test), 4), "probes": {}}
    for name in feats["train"]:
        accuracy = probe(torch.tensor(feats["train"][name]), ys["train"], torch.tensor(feats["test"][name]),
                         ys["test"], len(labels))
        k = round(accuracy * len(test))
        result["probes"][name] = {"accuracy": round(accuracy, 4), "correct": k,
                                  "wilson95": wilson_interval(k, len(test))}
        print(name, result["probes"][name])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
