"""The LoRA-capacity ablation's table (scripts/mini/lora_ablation.sh): per arm, its training log's summary and the
greedy scores of its three evaluations, with the weights' sha256.

    .venv/bin/python scripts/mini/lora_ablation_table.py [~/.cache/salmonn/runs/lora-ablation] \
        [--out scripts/mini/results/lora_ablation.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from run_summary import stage_summary

EVALS = {"asr@voice": "wer", "asterisk": "wer", "QA@voice_qa": "same_answer_rate"}
SHIPPED = Path(__file__).resolve().parents[2] / "src" / "salmonn" / "assets" / "mini" / "trainable.safetensors"


def arm_row(arm: Path) -> dict:
    weights = SHIPPED if arm.name == "v6" else arm / "final" / "trainable.safetensors"
    row = {"weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    if (arm / "metrics.jsonl").is_file():
        row["train"] = stage_summary(arm / "metrics.jsonl")
    for name, headline in EVALS.items():
        summary = arm / "eval" / name / "summary.json"
        if summary.is_file():
            (task,) = json.loads(summary.read_text()).values()
            run = task["runs"][0]
            extra = {k: run["metrics"][k] for k in ("following_rate", "echo_rate") if k in run["metrics"]}
            row[name] = {"clips": task["n_samples"], headline: run["metrics"][headline], **extra,
                         **({"counts": run["details"]["spoken_qa"]} if "spoken_qa" in run["details"] else {})}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", type=Path, nargs="?",
                        default=Path.home() / ".cache" / "salmonn" / "runs" / "lora-ablation")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "lora_ablation.json")
    args = parser.parse_args()
    arms = {p.name: arm_row(p) for p in sorted(args.runs.iterdir()) if (p / "eval").is_dir()}
    text = json.dumps({"runs": str(args.runs), "arms": arms}, indent=1) + "\n"
    print(text)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
