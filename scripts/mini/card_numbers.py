"""Every number of SALMONN-mini's model card that can be measured on the shipped weights, from one script.

    nice -n 19 .venv/bin/python scripts/mini/card_numbers.py [--corpus ~/.cache/salmonn/data/mini-test] \
        [--limit 64] [--tasks asr,...,QA] [--out scripts/mini/results/card_numbers.json]

1. Regenerates the held-out splits the card was measured on (`salmonn data synth --size full --seed 0`, test and
   sqa_test only: the split plans do not depend on the train split) and checks that the bundled clips are their
   first clips, sample for sample.
2. Scores the shipped weights (src/salmonn/assets/mini, the default config) per task on the first --limit records
   with `salmonn eval`'s scorers (greedy, 64 new tokens, the card's test prompts); spoken questions (sqa_test, a
   family no stage trains) at LoRA 1x and 0.5x with the strict rule of salmonn.evaluation.following (answer must
   contain the known answer; near-echoes and trained-task labels never count), plus accuracy, echo and label rates,
   and issue 15's two spoken factual QA numbers (salmonn.evaluation.spoken_facts): same_answer_rate (on the questions
   SmolLM2 answers correctly as text, the share answered the same from audio; target >= 0.60) and echo_rate (near-echoes
   of the question among all answers; target <= 0.05), with their counts; SmolLM2's text answers are cached in
   --work/text_answers.jsonl.
3. The bundled speech clips one by one: WER of the answer against its own transcript, against the other clip's
   (swapped) and of answers that ignore the audio (a fixed sentence, an empty answer): tests/test_mini.py's bounds.
Writes the numbers, the clip counts actually scored and the weights' sha256 to --out, and for every accuracy a
binomial 95 % interval (`intervals`: Wilson's score interval on the clips scored). `--intervals-only` recomputes
those intervals from --out's stored counts without scoring anything (no model, no corpus).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from salmonn.data.synth import SIZES, synth_corpus
from salmonn.defaults import MINI_DIR, default_config_path
from salmonn.evaluation import following as F
from salmonn.evaluation import spoken_facts
from salmonn.evaluation.items import DEFAULT_TEST_PROMPTS
from salmonn.evaluation.metrics import english_words, error_rate
from salmonn.jsonl import read_jsonl

TASKS = ("asr", "gender_recognition", "sound_event", "instrument", "audiocaption", "music_description")
QA_SCALES = "1x,0.5x"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "audio"
ASR_PROMPT = DEFAULT_TEST_PROMPTS["asr"]
FIXED_SENTENCE = "the little boat drifted slowly toward the quiet harbor before dawn"  # ignores the audio
Z95 = 1.959964  # the standard normal's 97.5th percentile: two-sided 95 % intervals


def wilson_interval(correct: int, n: int, z: float = Z95) -> list[float]:
    """Wilson's score interval for a binomial proportion of `correct` of `n` (stays inside [0, 1], sensible at
    0 and n, unlike p +- z * standard error)."""
    p, z2 = correct / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return [round(max(0.0, centre - half), 3), round(min(1.0, centre + half), 3)]


def accuracy_intervals(tasks: dict) -> dict:
    """task -> {accuracy, correct, clips, wilson95} for every scored task whose first run has an accuracy."""
    out = {}
    for task, scored in tasks.items():
        accuracy = scored["runs"][0]["metrics"].get("accuracy")
        if accuracy is not None and scored["clips"]:
            correct = round(accuracy * scored["clips"])
            out[task] = {"accuracy": accuracy, "correct": correct, "clips": scored["clips"],
                         "wilson95": wilson_interval(correct, scored["clips"])}
    return out


def held_out_corpus(corpus: Path) -> None:
    """The seed-0 test and sqa_test splits of the full corpus, with one test_<task>.jsonl per task."""
    if not (corpus / "sqa_test.json").is_file():
        synth_corpus(corpus, seed=0, splits=("test",), workers=1, progress=False, **SIZES["full"])
    records = json.loads((corpus / "test.json").read_text())["annotation"]
    for task in TASKS:
        lines = [dict(r, path=str((corpus / r["path"]).resolve())) for r in records if r["task"] == task]
        (corpus / f"test_{task}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


def bundled_clips_match(corpus: Path) -> dict[str, bool]:
    """Bundled clip -> whether it equals its source clip of the regenerated corpus, sample for sample."""
    clips = json.loads((EXAMPLES / "clips.json").read_text())
    out = {}
    for name, info in clips.items():
        source = corpus / info["source"].split(": ")[1].split(" ")[0]
        a, _ = sf.read(EXAMPLES / name, dtype="int16")
        b, _ = sf.read(source, dtype="int16")
        out[name] = bool(a.shape == b.shape and np.array_equal(a, b))
    return out


def score_tasks(model, corpus: Path, out: Path, limit: int, tasks: list[str], save) -> dict:
    """Per task: metrics and the number of clips scored; spoken QA per LoRA scaling with its failure kinds."""
    import sys
    sys.path.insert(0, str(Path(__file__).parent))
    from evaluate import manifest_for, split_task

    from salmonn.evaluation.run import evaluate

    results = {}
    for task in tasks:
        start = time.time()
        manifest = manifest_for(corpus, task, limit, out)
        base, kind = split_task(task)
        work = out / kind if kind else out  # one folder per kind: salmonn eval names its files by task
        summary = evaluate(model, manifest, base, work, batch_size=8, use_java=False,
                           lora_scales=QA_SCALES if base == "QA" else None)
        runs = []
        for run in summary["runs"]:
            row = {"lora_scaling": run["lora_scaling"], "metrics": run["metrics"]}
            if base == "QA":
                row |= spoken_qa_numbers(run) | qa_breakdown(work / run["samples_file"], manifest)
            runs.append(row)
        results[task] = {"clips": summary["n_samples"], "limit": limit, "runs": runs,
                         "seconds": round(time.time() - start, 1)}
        print(task, json.dumps(runs), flush=True)
        save(results)
    return results


def spoken_qa_numbers(run: dict) -> dict:
    """Issue 15's spoken factual QA numbers of one scaling: same-answer and echo rates, counts, targets, met or not."""
    counts = run["details"].get("spoken_qa", {})
    out = {"spoken_qa": counts}
    for metric in spoken_facts.TARGETS:
        value = run["metrics"].get(metric)
        out[metric] = {"value": value, "target": spoken_facts.target_text(metric),
                       "met": None if value is None else spoken_facts.target_met(metric, value),
                       **({"not_computed": run["not_computed"][metric]} if metric in run["not_computed"] else {})}
    return out


def qa_breakdown(samples_file: Path, manifest: Path) -> dict:
    """Accuracy (contains the known answer), strict echo (the old rule), near-echo and label rates of the answers."""
    records = read_jsonl(manifest, strict=True)
    rows = read_jsonl(samples_file, strict=True)
    answers = [r["hypothesis"] for r in rows]
    samples = [records[r["index"]] for r in rows]
    n = len(rows)
    return {
        "accuracy": sum(F.contains_answer(a, s["text"]) for a, s in zip(answers, samples)) / n,
        "strict_echo_rate": sum(F.is_echo(a, s["question"]) for a, s in zip(answers, samples)) / n,  # WER < 0.3
        "near_echo_rate": sum(F.is_near_echo(a, s["question"]) for a, s in zip(answers, samples)) / n,
        "label_rate": sum(F.is_label(a) for a in answers) / n,
        "examples": [{"question": s["question"], "reference": s["text"], "answer": a}
                     for a, s in list(zip(answers, samples))[:12]],
    }


def bundled_speech(model) -> dict:
    """Per bundled speech clip: WER (%) of its answer vs its transcript, the other's, a fixed sentence, nothing."""
    clips = json.loads((EXAMPLES / "clips.json").read_text())
    names = [n for n, info in clips.items() if "asr" in info]
    answers = [a.text for a in model.generate([str(EXAMPLES / n) for n in names], ASR_PROMPT)]
    words = english_words()

    def wer(hyp: str, ref: str) -> float:
        return round(error_rate([hyp], [ref], words)[0], 1)

    out = {}
    for i, name in enumerate(names):
        ref, other = clips[name]["asr"], clips[names[(i + 1) % len(names)]]["asr"]
        out[name] = {"answer": answers[i], "reference": ref, "wer": wer(answers[i], ref),
                     "wer_swapped": wer(answers[i], other), "wer_fixed_sentence": wer(FIXED_SENTENCE, ref),
                     "wer_empty": wer("", ref)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=Path.home() / ".cache" / "salmonn" / "data" / "mini-test")
    parser.add_argument("--limit", type=int, default=64)
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "salmonn" / "eval" / "card")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "card_numbers.json")
    parser.add_argument("--tasks", default=",".join((*TASKS, "QA")),
                        help="tasks to score ('' for none: only the corpus check and the bundled clips); the numbers "
                             "of tasks not scored in this run stay as --out has them")
    parser.add_argument("--intervals-only", action="store_true",
                        help="recompute the accuracy intervals of --out's stored numbers; score nothing")
    args = parser.parse_args()
    if args.intervals_only:
        stored = json.loads(args.out.read_text())
        stored["intervals"] = accuracy_intervals(stored["tasks"])
        args.out.write_text(json.dumps(stored, indent=1) + "\n")
        print(json.dumps(stored["intervals"], indent=1))
        return
    import torch

    from salmonn import load_model

    torch.set_num_threads(2)
    held_out_corpus(args.corpus)
    weights = MINI_DIR / "trainable.safetensors"
    from safetensors import safe_open
    with safe_open(str(weights), "pt") as f:
        values = sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())
    result = {"weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(), "weights_bytes": weights.stat().st_size,
              "trainable_values": values,
              "bundled_clips_match_corpus": bundled_clips_match(args.corpus)}
    model = load_model(default_config_path())
    result["bundled_speech"] = bundled_speech(model)
    print(json.dumps(result, indent=1), flush=True)
    before = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if before.get("weights_sha256") != result["weights_sha256"]:
        before = {}  # numbers of other weights are not kept

    def save(scored: dict) -> None:
        result["tasks"] = {**before.get("tasks", {}), **scored}
        result["intervals"] = accuracy_intervals(result["tasks"])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")

    save({})
    tasks = [t for t in args.tasks.split(",") if t]
    score_tasks(model, args.corpus, args.work, args.limit, tasks, save)


if __name__ == "__main__":
    main()
