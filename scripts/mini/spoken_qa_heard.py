"""Does SALMONN-mini miss spoken questions because it mishears them or because it does not answer? Each held-out
spoken question is transcribed and answered by the shipped model (greedy, its config); the transcripts are scored
against the question.

    .venv/bin/python scripts/mini/spoken_qa_heard.py MANIFEST [MANIFEST ...] [--limit 64]
        [--out scripts/mini/results/spoken_qa_heard.json]

MANIFEST: the spoken-question manifests card_numbers.py writes (`<work>/manifests/QA.jsonl`, espeak-ng voices;
`<work>/manifests/QA@voice_qa.jsonl`, neural voices): records with "path", "question" and "reference" (the known
answer; or a synthetic record's short "text"). Per manifest: the questions' corpus WER, how many are transcribed
exactly, how many answers contain the known answer overall and among the exactly heard ones, and the first examples.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from salmonn import SALMONN, load_model
from salmonn.defaults import MINI_DIR
from salmonn.evaluation.following import contains_answer, qa_reference
from salmonn.evaluation.items import instruction_for
from salmonn.evaluation.metrics import english_words, error_rate
from salmonn.jsonl import read_jsonl

# The instructions the model card's ASR and spoken-QA rows use (mini's test prompts).
ASR_PROMPT = instruction_for("asr", None, MINI_DIR / "test_prompts.json")
QA_PROMPT = instruction_for("QA", None, MINI_DIR / "test_prompts.json")


def heard_and_answered(model: SALMONN, rows: list[dict]) -> dict:
    clips = [r["path"] for r in rows]
    transcripts = [a.text for a in model.generate(clips, ASR_PROMPT)]
    answers = [a.text for a in model.generate(clips, QA_PROMPT)]
    normalise = english_words()
    per_clip = [error_rate([t], [r["question"]], normalise)[0] for t, r in zip(transcripts, rows)]
    known = [qa_reference(r) for r in rows]
    correct = [contains_answer(a, k) for a, k in zip(answers, known)]
    exact = [i for i, wer in enumerate(per_clip) if wer == 0]
    return {"questions": len(rows), "question_wer": error_rate(transcripts, [r["question"] for r in rows], normalise)[0],
            "transcribed_exactly": len(exact), "answer_contains_known_answer": sum(correct),
            "correct_among_exactly_heard": sum(correct[i] for i in exact),
            "examples": [{"question": r["question"], "transcript": t, "answer": a, "known_answer": k}
                         for r, t, a, k in list(zip(rows, transcripts, answers, known))[:12]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("manifests", type=Path, nargs="+")
    parser.add_argument("--limit", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "spoken_qa_heard.json")
    args = parser.parse_args()
    model = load_model(None)
    results: dict = {"prompts": {"transcript": ASR_PROMPT, "answer": QA_PROMPT}}
    for manifest in args.manifests:
        rows = read_jsonl(manifest, strict=True)[:args.limit]
        results[manifest.name] = heard_and_answered(model, rows)
        summary = {k: v for k, v in results[manifest.name].items() if k != "examples"}
        print(manifest.name, summary)
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
