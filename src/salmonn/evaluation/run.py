"""``salmonn eval``: batched inference over a test manifest, scoring, reports, LoRA-scale sweeps, torchrun sharding.

Output folder layout (one folder can hold a whole task suite of one model):

- ``<task>.scaling-<s>.jsonl``  one line per sample in manifest order: ``index`` (record position in the
  manifest), ``audio``, ``prompt`` (bare instruction), ``hypothesis``, ``reference``, ``score`` (that sample's
  metric values), ``lora_scaling``, ``task``, ``run_key`` (fingerprint of model files and decoding options),
  and ``error`` for a clip that could not be used (scored as an empty answer)
- ``<task>.summary.json``       metrics, not-computed reasons and failed clips per LoRA scaling, settings, the
  paper's numbers
- ``summary.json``, ``report.md``  every task summary in the folder; Markdown table + "not computed" list
- ``lora_sweep.png``            metric and following rate against the LoRA scaling (tasks run at >= 2 scalings)
- ``<task>.scaling-<s>.confusion.png``  for classification tasks
- ``text_answers.jsonl``        spoken QA: the backbone LLM's own answers to the typed questions (keyed by the LLM;
  a rerun reuses them), against which ``same_answer_rate`` is scored (``spoken_facts``)

Re-running resumes: samples already answered (same index, audio, prompt and run_key: the model files' paths, sizes
and times, template and decoding) are not generated again; failed clips are tried again. Under ``torchrun
--nproc_per_node N`` every rank answers every N-th pending sample into ``<file>.part-<rank>``; rank 0 merges the
parts in manifest order, scores and writes the reports.

Modules: items (records, instructions, audio), files (per-sample files, summaries), distributed (torchrun),
metrics, spoken_facts (spoken factual QA), report, commands (the ``salmonn eval`` command).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from salmonn.errors import ConfigError, SalmonnError
from salmonn.evaluation.distributed import Distributed
from salmonn.evaluation.files import (done_rows, dumps, part_files, read_summary, samples_path, write_atomic)
from salmonn.evaluation.items import Item, audio_input, fill_prompt, instruction_for, plan_items, select_records
from salmonn.jsonl import append_jsonl, write_jsonl
from salmonn.prompting import DEFAULT_TEST_PROMPTS

if TYPE_CHECKING:
    from salmonn.model import SALMONN

__all__ = ["DEFAULT_OUTPUT", "DEFAULT_TEST_PROMPTS", "Distributed", "LoraScale", "audio_input", "evaluate",
           "fill_prompt", "instruction_for", "parse_lora_scales", "plan_items", "require_eval_extra", "run_key",
           "select_records", "write_suite_report"]

DEFAULT_OUTPUT = "salmonn-eval"
EVAL_EXTRA = ("jiwer", "sacrebleu", "matplotlib")  # what the metrics and reports import (pyproject's [eval])


def require_eval_extra() -> None:
    """Fail with one line saying what to install when the [eval] extra is missing (before a model loads)."""
    for name in EVAL_EXTRA:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError:
            raise SalmonnError(f"salmonn eval needs the [eval] extra ({name} is not installed): pip install "
                               "'salmonn[eval]' (in a checkout: pip install -e '.[eval]')") from None


# ------------------------------------------------------------------ LoRA scales


@dataclass(frozen=True)
class LoraScale:
    """One test-time LoRA setting: ``scale`` multiplies the trained scaling; ``scaling`` is the absolute alpha/r."""

    scale: float
    scaling: float

    @property
    def label(self) -> str:
        from salmonn.evaluation.report import scaling_label
        return scaling_label(self.scaling)


def parse_lora_scales(text: str | None, trained_scaling: float, current_scale: float = 1.0) -> list[LoraScale]:
    """Parse '4,3,2,1' (absolute LoRA scalings alpha/r) or '1x,0.5x' (relative to the trained scaling).

    Both forms may be mixed. None/'' means the model's current setting (``current_scale`` x trained).
    """
    if not text or not text.strip():
        return [LoraScale(current_scale, current_scale * trained_scaling)]
    out: list[LoraScale] = []
    for item in text.split(","):
        item = item.strip().lower()
        relative = item.endswith("x")
        try:
            value = float(item[:-1] if relative else item)
        except ValueError:
            raise ConfigError(f"--lora-scale: {item!r} is not a number (give scalings like 4,2 or "
                              "relative factors like 1x,0.5x)") from None
        if value < 0:
            raise ConfigError(f"--lora-scale: {item!r} is negative")
        scale = value if relative else value / trained_scaling
        if all(abs(s.scale - scale) > 1e-9 for s in out):
            out.append(LoraScale(scale, scale * trained_scaling))
    if not out:
        raise ConfigError("--lora-scale: no value given")
    return out


# ------------------------------------------------------------------ one task


def file_identity(path: str | None) -> list:
    """A model file as the run key sees it: its path, size and modification time (a folder: those of the files in
    it), so that new weights written over old ones are a new run, not answers to resume."""
    if not path:
        return [path]
    p = Path(path)
    if p.is_file():
        return [path, p.stat().st_size, p.stat().st_mtime_ns]
    if p.is_dir():
        return [path, sorted([f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in p.iterdir() if f.is_file())]
    return [path]


def run_key(model: "SALMONN", decoding: dict) -> str:
    """Fingerprint of what decides the answers besides the LoRA scale: model files (path, size, time), template,
    decoding."""
    m = model.config.model
    identity = {"files": [file_identity(f) for f in (m.llama_path, m.whisper_path, m.beats_path, m.ckpt)],
                "template": m.prompt_template,
                "long_audio": m.long_audio, "channel": m.channel,
                "decoding": {**asdict(model.config.generate), **decoding}}
    return hashlib.sha1(dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


def spelling_json(model: "SALMONN") -> str | None:
    """Whisper's normalizer.json next to the model's Whisper weights, if there is one."""
    whisper = model.config.model.whisper_path
    path = Path(whisper) / "normalizer.json" if whisper else None
    return str(path) if path is not None and path.is_file() else None


@dataclass
class TaskRun:
    """One task of a manifest answered by one model: what every LoRA scaling of it shares."""

    model: object
    task: str
    items: dict[int, Item]
    output: Path
    key: str
    decoding: dict
    batch_size: int
    dist: Distributed
    progress: bool
    use_java: bool
    spelling: str | None
    text_answerer: object = None  # spoken QA: typed questions -> the LLM's text answers (spoken_facts)
    _text_answers: dict | None = None

    def answer(self, scale: LoraScale, restart: bool) -> Path:
        """Answer this rank's share of the samples not answered yet at `scale`; returns the per-sample file."""
        path, dist = samples_path(self.output, self.task, scale.label), self.dist
        if restart and dist.is_main:
            for old in [path, *part_files(path)]:
                old.unlink(missing_ok=True)
        dist.barrier()
        done = done_rows(path, self.items, self.key, with_errors=False)  # failed clips are tried again
        dist.barrier()  # every rank has read the finished rows before any rank writes
        pending = [it for i, it in self.items.items() if i not in done]
        if self.model.config.model.lora:
            self.model.set_lora_scale(scale.scale)
        part = path.with_name(f"{path.name}.part-{dist.rank}")
        self._generate(pending[dist.rank::dist.world_size], part, scale)
        dist.barrier()
        return path

    def _generate(self, items: list[Item], part: Path, scale: LoraScale) -> None:
        """Answer ``items`` in batches, appending one JSON line per sample to ``part``."""
        from tqdm import tqdm

        bar = tqdm(total=len(items), desc=f"{self.task} LoRA {scale.label}", unit="clip", file=sys.stderr,
                   disable=not self.progress or self.dist.rank != 0 or not items, dynamic_ncols=True)
        with bar:
            for start in range(0, len(items), self.batch_size):
                batch = items[start:start + self.batch_size]
                rows = []
                for it, answer in zip(batch, self._answer_batch(batch), strict=True):
                    rows.append({"index": it.index, "task": self.task, "audio": it.audio, "prompt": it.prompt,
                                 "hypothesis": "" if isinstance(answer, str) else answer.text,
                                 "reference": it.reference, "lora_scaling": scale.scaling, "run_key": self.key})
                    if isinstance(answer, str):
                        rows[-1]["error"] = answer
                append_jsonl(part, rows)
                bar.update(len(batch))

    def _answer_batch(self, batch: list[Item]) -> list:
        """Answers for a batch; if one clip cannot be used the batch is answered clip by clip, and a failed clip
        gets its one-line error (a string) instead of an answer, which scores as an empty hypothesis."""
        m = self.model.config.model
        try:
            audio = [audio_input(it.record, m.channel, m.resample) for it in batch]
            return self.model.generate(audio, [it.prompt for it in batch], **self.decoding)
        except SalmonnError:
            if len(batch) == 1:
                raise
        answers = []
        for it in batch:
            try:
                answers += self._answer_batch([it])
            except SalmonnError as err:
                answers.append(str(err))
        return answers

    def score(self, path: Path, scale: LoraScale) -> dict:
        """Merge the ranks' answers at `scale` into `path` (manifest order, today's references), score them;
        returns the scaling's entry of the summary (rank 0)."""
        done = done_rows(path, self.items, self.key)
        missing = [i for i in self.items if i not in done]
        if missing:
            raise SalmonnError(f"{path}: {len(missing)} samples have no answer after all ranks finished "
                               f"(first: record #{missing[0] + 1})")
        rows = [done[i] for i in sorted(done)]
        for row in rows:  # the manifest's references may have changed since the answer was written
            row["reference"] = self.items[row["index"]].reference
        result = self._metrics(rows)
        for row, per in zip(rows, result["per_sample"], strict=True):
            row["score"] = per
        write_jsonl(path, rows)
        for old in part_files(path):
            old.unlink(missing_ok=True)
        errors = [r["error"] for r in rows if "error" in r]
        run = {"lora_scaling": scale.scaling, "lora_scale": scale.scale, "samples_file": path.name,
               "metrics": result["metrics"], "not_computed": result["not_computed"], "details": result["details"],
               "failed": {"count": len(errors), **({"first": errors[0]} if errors else {})}}
        confusion = result["details"].get("confusion")
        if confusion:
            import numpy as np

            from salmonn.evaluation.metrics import plot_confusion
            png = path.with_name(f"{self.task}.scaling-{scale.label}.confusion.png")
            plot_confusion(np.array(confusion["matrix"]), confusion["labels"], png)
            run["confusion_png"] = png.name
        return run

    def _metrics(self, rows: list[dict]) -> dict:
        from salmonn.evaluation.metrics import NEEDS_REFERENCES, compute_metrics

        refs = [r["reference"] for r in rows]
        if self.task not in NEEDS_REFERENCES and any(r is None for r in refs):
            refs = None
        samples = [self.items[r["index"]].record for r in rows]
        return compute_metrics(self.task, [r["hypothesis"] for r in rows], refs, samples,
                               spelling_json=self.spelling, use_java=self.use_java,
                               text_answers=self.text_answers(samples))

    def text_answers(self, samples: list[dict]) -> dict[str, str] | None:
        """Spoken QA: the LLM's text answers to the typed questions (once per task run, cached in the output
        folder); None when the task has none to answer or no answerer."""
        from salmonn.evaluation import spoken_facts

        if self.task not in spoken_facts.TASKS or self.text_answerer is None:
            return None
        if self._text_answers is None:
            questions = spoken_facts.needs_text_answer(samples)
            self._text_answers = spoken_facts.text_answers(self.text_answerer, questions,
                                                           self.output / spoken_facts.CACHE_NAME) if questions else {}
        return self._text_answers


def evaluate(model: "SALMONN", manifest: str | Path, task: str, output: str | Path = DEFAULT_OUTPUT, *,
             batch_size: int = 8, lora_scales: str | Sequence[LoraScale] | None = None, prompt: str | None = None,
             use_java: bool = True, restart: bool = False, decoding: dict | None = None,
             dist: Distributed | None = None, progress: bool = True, text_answerer=None) -> dict | None:
    """Answer and score one task of a manifest at one or more LoRA scalings; write the report files.

    Returns the task summary on rank 0 (None on the other ranks). ``decoding`` is passed to model.generate
    (e.g. {"num_beams": 1}); ``lora_scales`` is a '--lora-scale' string or a list of LoraScale. Clips that
    cannot be used fail alone: the summary counts them per scaling (``runs[i]["failed"]``).
    Spoken QA (tasks QA, sqqa) also scores the answers against the LLM's own answers to the typed questions:
    ``text_answerer`` (a callable: questions -> answers, with a ``key``) gives them; default: the model's own
    backbone LLM (``spoken_facts.BackboneAnswerer``).
    """
    from salmonn.evaluation.metrics import TASK_METRICS

    dist = dist or Distributed()
    decoding = {k: v for k, v in (decoding or {}).items() if v is not None}
    if task not in TASK_METRICS:
        raise SalmonnError(f"task {task!r} has no metric; known tasks: {', '.join(sorted(TASK_METRICS))}")
    if batch_size < 1:
        raise SalmonnError(f"--batch-size must be at least 1, got {batch_size}")
    m = model.config.model
    scales = (parse_lora_scales(lora_scales, m.lora_alpha / m.lora_rank, getattr(model, "lora_scale", 1.0))
              if lora_scales is None or isinstance(lora_scales, str) else list(lora_scales))
    if not m.lora and any(abs(s.scale - 1.0) > 1e-9 for s in scales):
        raise ConfigError("--lora-scale: this model has no LoRA (model.lora is false)")
    template = instruction_for(task, prompt, m.test_prompt_path or None)
    output = Path(output)
    if text_answerer is None and dist.is_main:
        from salmonn.evaluation.spoken_facts import TASKS, backbone_answerer
        text_answerer = backbone_answerer(model) if task in TASKS else None
    job = TaskRun(model, task, plan_items(manifest, task, template), output, run_key(model, decoding), decoding,
                  batch_size, dist, progress, use_java, spelling_json(model), text_answerer)
    output.mkdir(parents=True, exist_ok=True)
    original, runs = getattr(model, "lora_scale", 1.0), []
    try:
        for scale in scales:
            path = job.answer(scale, restart)
            if dist.is_main:
                runs.append(job.score(path, scale))
    finally:
        if m.lora:
            model.set_lora_scale(original)
    if not dist.is_main:
        return None
    summary = _task_summary(job, str(manifest), template, runs)
    write_atomic(output / f"{task}.summary.json", dumps(summary, indent=2) + "\n")
    write_suite_report(output)
    return summary


def _task_summary(job: TaskRun, manifest: str, template: str, runs: list[dict]) -> dict:
    """The <task>.summary.json content; keeps this task's other scalings from earlier runs of the same setup (model,
    decoding, manifest, instruction and references: a scaling scored against other references is dropped)."""
    from salmonn.decoding import decoding_config
    from salmonn.evaluation.metrics import METRIC_UNITS
    from salmonn.evaluation.report import PUBLISHED

    task, m = job.task, job.model.config.model
    references = hashlib.sha1(dumps([it.reference for it in job.items.values()]).encode()).hexdigest()[:12]
    previous = read_summary(job.output / f"{task}.summary.json")
    if (previous and previous.get("run_key") == job.key and previous.get("manifest") == manifest
            and previous.get("prompt") == template and previous.get("references") == references):
        ours = {r["lora_scaling"] for r in runs}
        runs = runs + [r for r in previous.get("runs", []) if r.get("lora_scaling") not in ours
                       and (job.output / r.get("samples_file", "")).is_file()]
    runs.sort(key=lambda r: -r["lora_scaling"])
    notes = [] if task not in ("asr", "speech_separation") or job.spelling else [
        "no Whisper normalizer.json next to the Whisper weights: British/American spellings are not unified "
        "before WER"]
    trained = m.lora_alpha / m.lora_rank
    return {
        "task": task, "manifest": manifest, "references": references, "n_samples": len(job.items), "prompt": template,
        "config": job.model.config.source, "run_key": job.key, "world_size": job.dist.world_size,
        "decoding": asdict(decoding_config(job.model.config.generate, None, **job.decoding)),
        "lora": {"alpha": m.lora_alpha, "rank": m.lora_rank, "trained_scaling": trained} if m.lora else None,
        "spelling_json": job.spelling, "units": {k: METRIC_UNITS[k] for r in runs for k in r["metrics"]},
        "published": [{"metric": mt, "value": v, "data": d} for mt, v, d in PUBLISHED.get(task, ())],
        "notes": notes, "runs": runs,
    }


def write_suite_report(output: str | Path) -> dict[str, Path]:
    """(Re)write summary.json, report.md and lora_sweep.png from every <task>.summary.json in ``output``."""
    from salmonn.evaluation.report import markdown_report, plot_lora_sweep

    output = Path(output)
    summaries = {}
    for file in sorted(output.glob("*.summary.json")):
        data = read_summary(file)
        if data is not None:
            summaries[data["task"]] = data
    files = {"summary": output / "summary.json", "report": output / "report.md"}
    write_atomic(files["summary"], dumps(summaries, indent=2) + "\n")
    write_atomic(files["report"], markdown_report(summaries))
    png = output / "lora_sweep.png"
    if plot_lora_sweep(summaries, png.with_name("lora_sweep.tmp.png")):
        os.replace(png.with_name("lora_sweep.tmp.png"), png)
        files["figure"] = png
    else:
        png.unlink(missing_ok=True)  # no task has a sweep (any more)
    return files
