"""CTC rescoring on the shipped SALMONN-mini (salmonn.rescoring): tune its two weights on held-out clips, then score
the model card's ASR sets with them.

    .venv/bin/python scripts/mini/ctc_rescore.py [--beams 4] [--out scripts/mini/results/ctc_rescore.json]

For every clip: beam search's answers (num_beams, the shipped config otherwise) and the connector's CTC best path, each
with its LLM and CTC log-likelihood (salmonn.rescoring.candidates, the code `generate.ctc_weight` runs). The weights
(ctc_weight, ctc_length_bonus) are picked on a grid by WER on the tuning clips only: neural-voice test clips 65-128
(the card scores clips 1-64). Then, on the card's sets (espeak-ng test clips 1-64 of `card_numbers.py`'s corpus,
neural-voice clips 1-64 of the mini-v2 test split, all Asterisk prompts clip by clip): WER of beam search's own
choice, of the CTC best path, of the rescored choice, and of the best candidate (oracle). `--setting W,B` scores the
sets at the documented setting instead (mini-v8b: `--setting 0.4,2`, the weights picked for v6 that the docs, tests
and long_form.py use) and keeps the grid's own pick beside it. Candidates are cached per set under --work, so a
rerun only re-picks. `--sets` scores some of the sets only (with `--setting` when the tuning clips are not among them):
`--beams 1 --setting 0.4,2 --sets espeak,asterisk` is greedy's answer and the best path, at about greedy's cost.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

from salmonn.builder import load_model
from salmonn.data.asterisk import asterisk_records
from salmonn.decoding import decoding_config
from salmonn.defaults import MINI_DIR, default_config_path
from salmonn.errors import SalmonnError
from salmonn.evaluation.items import DEFAULT_TEST_PROMPTS
from salmonn.evaluation.metrics import english_words, error_rate
from salmonn.inference import batches, prepare
from salmonn.jsonl import read_jsonl
from salmonn.rescoring import candidates, combined_score

CACHE = Path.home() / ".cache" / "salmonn"
WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # ctc_weight grid
BONUSES = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0)  # ctc_length_bonus grid (log-probability per token)


def neural_records(manifest: Path) -> list[dict]:
    if not manifest.is_file():
        raise SystemExit(f"{manifest}: missing; render the mini-v2 corpus and run scripts/mini/make_manifests.py")
    rows = read_jsonl(manifest, strict=True)
    return [r for r in rows if r["task"] == "asr" and Path(r["path"]).parent.name == "voice"]


def espeak_records(corpus: Path, limit: int) -> list[dict]:
    sys.path.insert(0, str(Path(__file__).parent))
    from card_numbers import held_out_corpus
    held_out_corpus(corpus)
    return read_jsonl((corpus / "test_asr.jsonl"), strict=True)[:limit]


SETS = ("tune_neural_65_128", "espeak", "neural", "asterisk")  # the tuning clips first


def set_records(names: list[str], args: argparse.Namespace) -> dict[str, list[dict]]:
    """The chosen sets' clips, in SETS order (the neural manifest read once, for both of its sets)."""
    neural = neural_records(args.neural) if {SETS[0], "neural"} & set(names) else []
    loaders = {SETS[0]: lambda: neural[64:128], "espeak": lambda: espeak_records(args.espeak_corpus, 64),
               "neural": lambda: neural[:64], "asterisk": lambda: asterisk_records()[0]}
    return {name: loaders[name]() for name in SETS if name in names}


def scored_candidates(model, rows: list[dict], gen, path: Path) -> list[dict]:
    """Per clip {path, reference, candidates: [{text, source, tokens, llm, ctc}]}; cached in `path`."""
    if path.is_file():
        cached = json.loads(path.read_text())
        if [c["path"] for c in cached] == [str(r["path"]) for r in rows]:
            return cached
    out, start = [], time.time()
    for chunk in batches(rows, 4):
        pieces = prepare(model, [r["path"] for r in chunk], [DEFAULT_TEST_PROMPTS["asr"]] * len(chunk), gen,
                         fail_fast=True)
        for r, found in zip(chunk, candidates(model, pieces, gen)):
            out.append({"path": str(r["path"]), "reference": r["text"], "candidates": [
                {"text": model.tokenizer.decode(c.token_ids, skip_special_tokens=True).strip(), "source": c.source,
                 "tokens": len(c.token_ids), "llm": round(c.llm, 4), "ctc": round(c.ctc, 4)} for c in found]})
        print(f"{path.stem}: {len(out)} / {len(rows)} clips, {time.time() - start:.0f} s", flush=True)
    path.write_text(json.dumps(out) + "\n")
    return out


def chosen(clip: dict, weight: float, bonus: float) -> str:
    return max(clip["candidates"], key=lambda c: combined_score(c["llm"], c["ctc"], c["tokens"], weight, bonus))["text"]


def wer(clips: list[dict], answers: list[str]) -> float:
    return round(error_rate(answers, [c["reference"] for c in clips], english_words())[0], 2)


def rescored_wer(clips: list[dict], weight: float, bonus: float) -> float:
    return wer(clips, [chosen(c, weight, bonus) for c in clips])


def clip_errors(answer: str, reference: str) -> float:
    """One clip's WER; a reference that normalises to nothing (a few Asterisk prompts) counts the answer's words."""
    try:
        return error_rate([answer], [reference], english_words())[0]
    except SalmonnError:
        return len(answer.split())


def by_source(clip: dict, source: str) -> str:
    return next(c["text"] for c in clip["candidates"] if source in c["source"].split("+"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--beams", type=int, default=4)
    parser.add_argument("--neural", type=Path, default=CACHE / "data" / "mini-v2" / "test_asr.jsonl",
                        help="the mini-v2 corpus's test ASR manifest (make_manifests.py)")
    parser.add_argument("--espeak-corpus", type=Path, default=CACHE / "data" / "mini-test",
                        help="card_numbers.py's regenerated espeak-ng test split")
    parser.add_argument("--work", type=Path, default=CACHE / "eval" / "ctc_rescore")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ctc_rescore.json")
    parser.add_argument("--threads", type=int, default=2, help="1 beside another CPU job (2 threads then thrash)")
    parser.add_argument("--setting", help="W,B: score the sets at this ctc_weight,ctc_length_bonus (the documented "
                                          "one) instead of the grid's pick, which is stored beside as grid_pick")
    parser.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, of {', '.join(SETS)}")
    args = parser.parse_args()
    chosen_sets = args.sets.split(",")
    if unknown := sorted(set(chosen_sets) - set(SETS)):
        parser.error(f"--sets: unknown {', '.join(unknown)}; choose from {', '.join(SETS)}")
    setting = None
    if args.setting:
        try:
            weight, bonus = map(float, args.setting.split(","))
        except ValueError:
            parser.error(f"--setting {args.setting!r}: give ctc_weight,ctc_length_bonus as two numbers, e.g. 0.4,2")
        setting = (weight, bonus)
    if SETS[0] not in chosen_sets and setting is None:
        parser.error(f"--sets without {SETS[0]} has no clips to tune on: give --setting W,B")
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    sets = set_records(chosen_sets, args)
    model = load_model(default_config_path()).eval()
    gen = decoding_config(model.config.generate, num_beams=args.beams)
    sha = hashlib.sha256((MINI_DIR / "trainable.safetensors").read_bytes()).hexdigest()
    clips = {name: scored_candidates(model, rows, gen, args.work / f"{name}_beams{args.beams}_{sha[:12]}.json")
             for name, rows in sets.items()}
    grid = {(w, b): rescored_wer(clips[SETS[0]], w, b) for w in WEIGHTS for b in BONUSES} if SETS[0] in clips else {}
    pick = min(grid, key=grid.get) if grid else None
    weight, bonus = setting or pick
    result = {"beams": args.beams, "ctc_weight": weight, "ctc_length_bonus": bonus, "weights_sha256": sha,
              "grid_pick": pick and {"ctc_weight": pick[0], "ctc_length_bonus": pick[1]},
              "manifests": {"neural": str(args.neural), "espeak": str(args.espeak_corpus / "test_asr.jsonl")},
              "tuning_grid_wer": {f"{w}/{b}": v for (w, b), v in grid.items()}, "sets": {}}
    for name, cs in clips.items():
        best = [min(c["candidates"], key=lambda x: clip_errors(x["text"], c["reference"])) for c in cs]
        result["sets"][name] = {
            "clips": len(cs), "beam_search": wer(cs, [by_source(c, "beam0") for c in cs]),
            "ctc_best_path": wer(cs, [by_source(c, "ctc") for c in cs]),
            "rescored": rescored_wer(cs, weight, bonus), "oracle": wer(cs, [b["text"] for b in best]),
            "candidates_per_clip": round(sum(len(c["candidates"]) for c in cs) / len(cs), 2),
            "examples": [{"reference": c["reference"], "beam_search": by_source(c, "beam0"),
                          "rescored": chosen(c, weight, bonus)} for c in cs[:4]]}
        print(name, result["sets"][name]["rescored"], "% WER rescored,", result["sets"][name]["beam_search"],
              "% beam search", flush=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
