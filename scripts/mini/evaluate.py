"""Evaluate a SALMONN-mini checkpoint on the held-out synthetic splits (one model load, `salmonn eval` per task).

    .venv/bin/python scripts/mini/evaluate.py runs/mini/stage2/final/infer.yaml runs/mini/eval/stage2 \
        [key=value ...] [--tasks asr,QA] [--qa-scales 1x,0.75x,0.5x,0.25x] [--limit 0]

Tasks and manifests come from `salmonn data synth` + make_manifests.py under --corpus (default data/mini):
test_<task>.jsonl for the trained tasks and sqa_test.json (the spoken-question family no stage trains) for QA,
which is also swept over LoRA scales (the paper's task over-fitting measurement) and scored as spoken factual QA
(issue 15: same_answer_rate against SmolLM2's own answer to the typed question, echo_rate; salmonn.evaluation.
spoken_facts). Results: OUT/summary.json, OUT/report.md (with the spoken-QA counts and targets), per-sample JSONL and
OUT/text_answers.jsonl (the cached text answers), as `salmonn eval` writes them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from salmonn.builder import load_model
from salmonn.evaluation.run import evaluate
from salmonn.jsonl import read_jsonl

TASKS = ("asr", "gender_recognition", "sound_event", "instrument", "audiocaption", "music_description", "QA")


def split_task(task: str) -> tuple[str, str | None]:
    """'asr@voice' -> ('asr', 'voice'): a task restricted to one clip kind of the corpus (its folder)."""
    base, _, kind = task.partition("@")
    return base, kind or None


def manifest_for(corpus: Path, task: str, limit: int, out: Path) -> Path:
    """The test manifest of a task (its first `limit` records with limit > 0) as OUT/manifests/<task>.jsonl;
    `task@kind` keeps the records of one clip kind (e.g. asr@voice: the neural voices, asr@speech: espeak-ng)."""
    base, kind = split_task(task)
    if base == "QA":
        records = json.loads((corpus / "sqa_test.json").read_text())["annotation"]
        for r in records:
            r["path"] = str((corpus / r["path"]).resolve())
    else:
        records = read_jsonl((corpus / f"test_{base}.jsonl"), strict=True)
    if kind:
        records = [r for r in records if Path(r["path"]).parent.name == kind]
    if limit > 0:
        records = records[:limit]
    path = out / "manifests" / f"{task}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in records)
    if not path.is_file() or path.read_text() != text:  # unchanged files keep `salmonn eval`'s resume
        path.write_text(text)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config")
    parser.add_argument("output", type=Path)
    parser.add_argument("overrides", nargs="*", help="config key=value items, e.g. "
                        "model.test_prompt_path=src/salmonn/assets/mini/test_prompts.json")
    parser.add_argument("--corpus", type=Path, default=Path("data/mini"))
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--qa-scales", default="1x", help="LoRA scalings for QA, e.g. 1x,0.75x,0.5x,0.25x")
    parser.add_argument("--limit", type=int, default=0, help="first N records per task (0: all)")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    model = load_model(args.config, args.overrides)
    for task in args.tasks.split(","):
        start = time.time()
        summary = evaluate(model, manifest_for(args.corpus, task, args.limit, args.output), task, args.output,
                           batch_size=args.batch_size, lora_scales=args.qa_scales if task == "QA" else None,
                           use_java=False)
        for run in summary["runs"]:
            counts = run["details"].get("spoken_qa")
            print(f"{task} @ scaling {run['lora_scaling']:g}: {run['metrics']}"
                  + (f" spoken QA counts {counts}" if counts else "") + f" ({time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
