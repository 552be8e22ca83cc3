"""SALMONN-mini figures from the training runs and the evaluations of scripts/mini/evaluate.py (written beside the
run; the model card quotes no figure, and v1's were dropped from docs/mini with the rest of its history).

    .venv/bin/python scripts/mini/plots.py --runs runs/mini --evals runs/mini/eval --out runs/mini/plots

training.png: training loss of stage 0 (the connector's CTC warm-up) and the three stages against the step, with
the CTC term per transcript token and the validation loss where logged.
phenomenon.png: following rate on the untrained spoken-question instruction against the LoRA scaling after
stage 2 and after stage 3 (activation tuning), beside the ASR WER at the trained scaling: the paper's task
over-fitting, its partial relief by a lower LoRA scale, and its cure by activation tuning, at small scale.
results.json: every metric of every evaluated stage at every scaling (what the model card's tables quote).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from salmonn.jsonl import read_jsonl  # noqa: E402

STAGES = ("stage1", "stage2", "stage3")
TRAINING_STAGES = ("stage0", *STAGES)


def training_figure(runs: Path, out: Path) -> None:
    stages = [s for s in TRAINING_STAGES if (runs / s / "metrics.jsonl").is_file()] or list(STAGES)
    fig, axes = plt.subplots(1, len(stages), figsize=(3.2 * len(stages), 3.2))
    for ax, stage in zip(axes, stages):
        rows = read_jsonl(runs / stage / "metrics.jsonl")
        train = [r for r in rows if r.get("type") == "train"]
        valid = [r for r in rows if r.get("type") == "valid"]
        if train:
            ax.plot([r["step"] for r in train], [r["loss"] for r in train], lw=0.6, alpha=0.6, label="train")
        ctc = [r for r in train if "ctc_loss" in r]
        if ctc:
            ax.plot([r["step"] for r in ctc], [r["ctc_loss"] for r in ctc], lw=0.6, alpha=0.6, label="CTC term")
        if valid:
            ax.plot([r["step"] for r in valid], [r["loss"] for r in valid], "o-", label="valid")
        ax.set_title(stage)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("loss (nats / target token)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / "training.png", dpi=120)


def task_runs(evals: Path, stage: str, task: str) -> list[dict]:
    path = evals / stage / f"{task}.summary.json"
    return json.loads(path.read_text())["runs"] if path.is_file() else []


def phenomenon_figure(evals: Path, out: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [2, 1]})
    wers = {}
    for stage, style in zip(STAGES, (":", "s-", "o-")):
        qa = sorted(task_runs(evals, stage, "QA"), key=lambda r: r["lora_scaling"])
        if qa:
            left.plot([r["lora_scaling"] for r in qa], [r["metrics"]["following_rate"] for r in qa], style,
                      label=f"after {stage}")
        asr = [r for r in task_runs(evals, stage, "asr") if r["lora_scale"] == 1.0]
        if asr:
            wers[stage] = asr[0]["metrics"]["wer"]
    left.set_xlabel("LoRA scaling (alpha / r x scale; trained at 4)")
    left.set_ylabel("following rate, untrained spoken QA")
    left.set_ylim(-0.02, 1.02)
    left.grid(alpha=0.3)
    left.legend()
    right.bar(list(wers), list(wers.values()), color="tab:gray")
    right.set_ylabel("ASR WER % (held-out)")
    for i, v in enumerate(wers.values()):
        right.text(i, v, f"{v:.1f}", ha="center", va="bottom")
    fig.tight_layout()
    fig.savefig(out / "phenomenon.png", dpi=120)


def results(evals: Path) -> dict:
    table = {}
    for stage in STAGES:
        for summary in sorted((evals / stage).glob("*.summary.json")):
            data = json.loads(summary.read_text())
            table.setdefault(stage, {})[data["task"]] = {
                "n_samples": data["n_samples"], "prompt": data["prompt"],
                "runs": {f"{r['lora_scaling']:g}": r["metrics"] for r in data["runs"]}}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/mini"))
    parser.add_argument("--evals", type=Path, default=Path("runs/mini/eval"))
    parser.add_argument("--out", type=Path, default=Path("runs/mini/plots"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    training_figure(args.runs, args.out)
    phenomenon_figure(args.evals, args.out)
    (args.out / "results.json").write_text(json.dumps(results(args.evals), indent=1) + "\n")
    print("wrote", ", ".join(str(args.out / n) for n in ("training.png", "phenomenon.png", "results.json")))


if __name__ == "__main__":
    main()
