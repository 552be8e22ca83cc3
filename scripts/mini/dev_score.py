"""Score SALMONN-mini weights on voices-v3's dev split: the numbers every mini-v8 choice is made on.

    nice -n 10 .venv/bin/python scripts/mini/dev_score.py [--weights runs/.../final] [--limit 100] \
        [--data ~/.cache/salmonn/data/voices-v3] [--out scripts/mini/results/dev_v6.json]

The dev split (`salmonn data synth DIR --size voices-v3`) has its own sentences and speakers, in voices and rooms
that neither mini-v6's training corpus nor any test set holds: choosing on it leaves the test sets to be reported
once. Each task is answered as the card answers its test clips (`salmonn eval`'s evaluate(): the model's test
prompts, greedy, 64 new tokens unless --max-new-tokens) on its first --limit records, of one kind of clip where
TASKS names it (task@kind, as card_numbers.py): ASR of the neural and Festival voices, of espeak-ng and of real
recorded voices (`salmonn data real-speech`; WER), speaker gender in both, sound events, instruments (accuracy, with
Wilson 95 % intervals), music descriptions and captions (CIDEr-D) and spoken questions in the neural voices (the share
answered as SmolLM2 answers the typed question). --weights (a run's checkpoint folder or .safetensors) replaces the
shipped weights; default: the shipped ones. `--split test` scores voices-v3's test split (a held-out Festival voice)
the same way: once, for the weights chosen on dev. Writes the numbers and the weights' sha256 to --out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from salmonn.builder import load_model
from salmonn.checkpoint import OURS_WEIGHTS
from salmonn.defaults import MINI_DIR
from salmonn.evaluation.run import evaluate
from salmonn.jsonl import jsonl_line, write_jsonl

sys.path.insert(0, str(Path(__file__).parent))
from card_numbers import wilson_interval  # noqa: E402

TASKS = ("asr@voice", "asr@speech", "asr@real", "gender_recognition@voice", "gender_recognition@speech", "sound_event",
         "instrument", "music_description", "audiocaption", "QA@voice_qa")
HEADLINE = {"asr": "wer", "QA": "same_answer_rate", "music_description": "cider_d", "audiocaption": "cider_d"}
# the rest: accuracy


def weights_file(path: Path | None) -> Path:
    """The .safetensors file of --weights (a checkpoint folder or the file itself); None: the shipped weights."""
    path = path or MINI_DIR
    return path / OURS_WEIGHTS if path.is_dir() else path


def task_manifest(data: Path, split: str, key: str, limit: int, work: Path) -> Path | None:
    """The first `limit` records of `key` (task or task@kind: the clips in the split's <kind>/ folder) in the split as
    work/manifests/<split>_<key>.jsonl (absolute paths); None when the split has none."""
    task, _, kind = key.partition("@")
    records = [dict(r, path=str((data / r["path"]).resolve()))
               for r in json.loads((data / f"{split}.json").read_text())["annotation"]
               if r["task"] == task and (not kind or Path(r["path"]).parent.name == kind)][:limit]
    if not records:
        return None
    path = work / "manifests" / f"{split}_{key}.jsonl"
    if not path.is_file() or path.read_text() != "".join(map(jsonl_line, records)):  # unchanged: evaluate() resumes
        write_jsonl(path, records)
    return path


def answer_budget(max_new_tokens: int | None) -> tuple[list[str], str]:
    """The model overrides and the answers folder's suffix for --max-new-tokens (None: the model's own budget): the
    answers to a budget of its own are kept beside the default budget's instead of replacing them."""
    if not max_new_tokens:
        return [], ""
    return [f"generate.max_new_tokens={max_new_tokens}"], f"-tok{max_new_tokens}"


def headline(key: str, summary: dict) -> dict:
    """The task's main number, its clip count and, for accuracies, the Wilson interval."""
    task, run = key.partition("@")[0], summary["runs"][0]
    metrics, clips = run["metrics"], summary["n_samples"]
    key = HEADLINE.get(task, "accuracy")
    out = {key: metrics.get(key), "clips": clips, "failed": run["failed"]["count"]}
    if key == "accuracy" and clips:
        out["wilson95"] = wilson_interval(round(metrics[key] * clips), clips)
    if task == "QA":
        out.update({"echo_rate": metrics.get("echo_rate"), **run["details"]["spoken_qa"]})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--data", type=Path, default=Path.home() / ".cache" / "salmonn" / "data" / "voices-v3")
    parser.add_argument("--split", choices=("dev", "test"), default="dev")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--work", type=Path, help="answers, resumable (default: ~/.cache/salmonn/eval/dev-<sha>)")
    parser.add_argument("--max-new-tokens", type=int,
                        help="answer budget (default: the model's 64); the joined 8-30 s splits' transcripts need up "
                             "to 140 tokens, and 64 would score the cap, not the listening")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    weights = weights_file(args.weights)
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    budget, tag = answer_budget(args.max_new_tokens)
    work = args.work or Path.home() / ".cache" / "salmonn" / "eval" / f"dev-{sha[:12]}{tag}"
    model = load_model(None, [f"model.ckpt={weights.resolve()}", *budget])
    result = {"weights": str(weights), "weights_sha256": sha, "split": str(args.data / f"{args.split}.json"),
              "limit": args.limit, "max_new_tokens": model.config.generate.max_new_tokens, "tasks": {}}
    for key in TASKS:
        manifest = task_manifest(args.data, args.split, key, args.limit, work)
        if manifest is None:
            continue
        summary = evaluate(model, manifest, key.partition("@")[0], work / f"{args.split}_{key}", batch_size=8,
                           use_java=False, progress=False)
        result["tasks"][key] = headline(key, summary)
        print(key, json.dumps(result["tasks"][key]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
