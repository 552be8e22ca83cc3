"""Reports of ``salmonn eval``: the Markdown table, the LoRA-scale figure and the paper's numbers.

A *summary* is the dict ``salmonn eval`` writes to ``<task>.summary.json``: ``task``, ``n_samples``,
``lora`` (``alpha``, ``rank``, ``trained_scaling``) and ``runs``, one per LoRA scaling, each with ``lora_scaling``
(the absolute alpha/r used at test time), ``lora_scale`` (relative to the trained scaling), ``metrics`` and
``not_computed``. The functions here read only those fields.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from salmonn.evaluation.metrics import METRIC_UNITS, TASK_METRICS

Summary = Mapping[str, Any]

# SALMONN-13B as published (Tang et al., ICLR 2024): task -> [(metric, value, data set)], in this package's units.
PUBLISHED: dict[str, list[tuple[str, float, str]]] = {
    "asr": [("wer", 2.1, "LibriSpeech test-clean"), ("wer", 4.9, "LibriSpeech test-other"),
            ("wer", 10.0, "GigaSpeech")],
    "translation_ec": [("bleu", 33.1, "CoVoST2 En->Zh")],
    "translation_ed": [("bleu", 18.6, "CoVoST2 En->De")],
    "audiocaption": [("meteor", 24.0, "AudioCaps"), ("spider", 40.3, "AudioCaps")],
    "phone_recognition": [("per", 4.2, "LibriSpeech")],
    "emotion_recognition": [("accuracy", 0.69, "IEMOCAP")],
    "speaker_verification": [("accuracy", 0.94, "VoxCeleb1")],
    "sqqa": [("accuracy", 0.41, "SQQA"), ("following_rate", 0.98, "SQQA")],
    "slot_filling": [("accuracy", 0.41, "slot filling"), ("following_rate", 0.99, "slot filling")],
    "speech_audio_coreasoning": [("accuracy", 0.50, "co-reasoning"), ("following_rate", 0.73, "co-reasoning")],
    "speech_separation": [("wer", 23.0, "LibriMix")],
    "audio_story_telling": [("diversity", 82.57, "AudioCaps"), ("following_rate", 1.00, "AudioCaps")],
}
PUBLISHED["story"] = PUBLISHED["audio_story_telling"]

# Metrics that describe the answers rather than the task; never the "main" metric of a task.
_SECONDARY = ("following_rate", "repeat_rate", "distinct_1", "distinct_2", "echo_rate")
_LOWER_IS_BETTER = {"wer", "cer", "per", "repeat_rate", "echo_rate"}


def published_cell(task: str, metric: str) -> str:
    """The paper's number(s) for one task metric, e.g. '2.1 (LibriSpeech test-clean); ...', or ''."""
    return "; ".join(f"{v:g} ({data})" for m, v, data in PUBLISHED.get(task, ()) if m == metric)


def main_metric(summary: Summary) -> str | None:
    """The metric a task is judged by (SPIDEr when it exists, else its first task metric), or None."""
    names = [m for run in summary["runs"] for m in run["metrics"]]
    if "spider" in names:
        return "spider"
    return next((m for m in names if m not in _SECONDARY), None)


def _fmt(metric: str, value: float | None) -> str:
    """Fractions with 3 decimals, everything else with 2."""
    if value is None:
        return "—"
    return f"{value:.3f}" if METRIC_UNITS.get(metric) == "fraction" else f"{value:.2f}"


def scaling_label(scaling: float) -> str:
    """Short, file-name-safe text for one LoRA scaling (4.0 -> '4', 1.5 -> '1.5')."""
    return f"{scaling:.4g}"


def _task_order(tasks: Sequence[str]) -> list[str]:
    """Tasks in the order of the metric registry (then any others by name)."""
    known = list(TASK_METRICS)
    return sorted(tasks, key=lambda t: (known.index(t) if t in known else len(known), t))


def markdown_report(summaries: Mapping[str, Summary], title: str = "SALMONN evaluation") -> str:
    """One Markdown table over tasks x metrics x LoRA scalings, the paper's numbers, a not-computed list and the
    clips that failed."""
    scalings = sorted({run["lora_scaling"] for s in summaries.values() for run in s["runs"]}, reverse=True)
    trained = sorted({s["lora"]["trained_scaling"] for s in summaries.values() if s.get("lora")})
    lines = [f"# {title}", ""]
    if trained:
        lines += [f"Columns are the LoRA scaling (alpha / r) used at test time; the model was trained at "
                  f"{', '.join(scaling_label(t) for t in trained)}. Units: error rates in %, BLEU 0-100, caption "
                  "metrics x100, accuracy and rates as fractions, diversity in %.", ""]
    header = ["task", "metric", "unit", "n", *(f"LoRA {scaling_label(s)}" for s in scalings),
              "SALMONN-13B (paper)"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    missing: list[str] = []
    for task in _task_order(list(summaries)):
        s = summaries[task]
        by_scaling = {run["lora_scaling"]: run for run in s["runs"]}
        metrics = list(dict.fromkeys(m for run in s["runs"] for m in run["metrics"]))
        not_computed = list(dict.fromkeys(m for run in s["runs"] for m in run["not_computed"]))
        published = [m for m, _, _ in PUBLISHED.get(task, ())]
        for metric in dict.fromkeys([*metrics, *not_computed, *published]):
            cells = []
            for scaling in scalings:
                run = by_scaling.get(scaling)
                if run is None:
                    cells.append("")
                elif metric in run["metrics"]:
                    cells.append(_fmt(metric, run["metrics"][metric]))
                else:
                    cells.append("not computed" if metric in run["not_computed"] else "—")
            row = [task, metric, METRIC_UNITS.get(metric, ""), str(s["n_samples"]), *cells,
                   published_cell(task, metric)]
            lines.append("| " + " | ".join(row) + " |")
        for metric in not_computed:
            reasons = {run["not_computed"][metric]: [] for run in s["runs"] if metric in run["not_computed"]}
            for run in s["runs"]:
                if metric in run["not_computed"]:
                    reasons[run["not_computed"][metric]].append(scaling_label(run["lora_scaling"]))
            for reason, where in reasons.items():
                text = reason if reason.startswith("not computed") else f"not computed: {reason}"
                missing.append(f"- **{task}** `{metric}` (LoRA {', '.join(where)}): {text}")
    lines += spoken_qa_lines(summaries)
    lines += ["", "## Not computed", ""]
    lines += missing or ["- (every metric was computed)"]
    failed = failed_clips(summaries)
    if failed:
        lines += ["", "## Failed clips", "", *failed]
    notes = [f"- **{t}**: {note}" for t in _task_order(list(summaries)) for note in summaries[t].get("notes", ())]
    if notes:
        lines += ["", "## Notes", "", *notes]
    return "\n".join(lines) + "\n"


def spoken_qa_lines(summaries: Mapping[str, Summary]) -> list[str]:
    """The spoken factual QA section: same-answer and echo rates with their counts beside issue 15's targets."""
    from salmonn.evaluation.spoken_facts import target_met, target_text

    rows = []
    for task in _task_order(list(summaries)):
        for run in summaries[task]["runs"]:
            counts = run.get("details", {}).get("spoken_qa")
            if not counts:
                continue
            cells = []
            for metric, part, whole in (("same_answer_rate", "same", "kept"), ("echo_rate", "echoes", "questions")):
                value = run["metrics"].get(metric)
                met = target_met(metric, value) if value is not None else None
                cells += [_fmt(metric, value) if value is not None else "not computed",
                          f"{counts[part]} / {counts[whole]}", target_text(metric),
                          {True: "met", False: "not met", None: "—"}[met]]
            rows.append("| " + " | ".join([task, scaling_label(run["lora_scaling"]), str(counts["questions"]),
                                           str(counts["with_known_answer"]), str(counts["kept"]), *cells]) + " |")
    if not rows:
        return []
    header = ["task", "LoRA", "spoken questions", "with a known answer", "kept (text answer right)",
              "same answer", "same / kept", "target", "", "echo rate", "echoes / questions", "target", ""]
    return ["", "## Spoken factual QA", "",
            "Kept: the spoken questions whose known answer the backbone LLM gives when the question is typed (no "
            "audio, LoRA off, greedy). Same answer: the answer from audio contains the known answer and is no "
            "near-echo of the question. Echo: the answer from audio is a near-echo of the question (WER <= 0.5).",
            "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header), *rows]


def failed_clips(summaries: Mapping[str, Summary]) -> list[str]:
    """One line per task and scaling with clips that could not be used (they score as empty answers)."""
    lines = []
    for task in _task_order(list(summaries)):
        s = summaries[task]
        for run in s["runs"]:
            failed = run.get("failed", {})
            if failed.get("count"):
                lines.append(f"- **{task}** (LoRA {scaling_label(run['lora_scaling'])}): {failed['count']} of "
                             f"{s['n_samples']} clips failed and were scored as empty answers (first: "
                             f"{failed['first']}; every error is in `{run.get('samples_file', '')}`)")
    return lines


def plot_lora_sweep(summaries: Mapping[str, Summary], path: str | Path) -> Path | None:
    """The paper's LoRA-scaling figure: per task, its main metric (left axis) and following rate (right axis)
    against the test-time LoRA scaling. Only tasks run at two or more scalings are drawn; None if there are none."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tasks = [t for t in _task_order(list(summaries)) if len(summaries[t]["runs"]) >= 2]
    if not tasks:
        return None
    fig = Figure(figsize=(4.6 * len(tasks), 3.6))
    FigureCanvasAgg(fig)
    for i, task in enumerate(tasks):
        s = summaries[task]
        runs = sorted(s["runs"], key=lambda r: r["lora_scaling"])
        xs = [r["lora_scaling"] for r in runs]
        ax = fig.add_subplot(1, len(tasks), i + 1)
        ax.set_title(task)
        ax.set_xlabel("LoRA scaling (alpha / r)")
        handles = []
        main = main_metric(s)
        if main is not None:
            ys = [r["metrics"].get(main, float("nan")) for r in runs]
            arrow = "lower is better" if main in _LOWER_IS_BETTER else "higher is better"
            handles += ax.plot(xs, ys, "o-", color="tab:blue", label=f"{main} ({METRIC_UNITS.get(main, '')})")
            ax.set_ylabel(f"{main} ({arrow})", color="tab:blue")
        if any("following_rate" in r["metrics"] for r in runs):
            right = ax.twinx() if main is not None else ax
            ys = [r["metrics"].get("following_rate", float("nan")) for r in runs]
            handles += right.plot(xs, ys, "s--", color="tab:red", label="following rate")
            right.set_ylim(-0.05, 1.05)
            right.set_ylabel("following rate", color="tab:red")
        trained = (s.get("lora") or {}).get("trained_scaling")
        if trained is not None:
            ax.axvline(trained, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xticks(xs)
        if handles:
            ax.legend(handles=handles, loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return Path(path)
