"""``salmonn eval``: batched inference over a test manifest, scoring, reports, LoRA-scale sweeps, torchrun sharding.

Output folder layout (one folder can hold a whole task suite of one model):

- ``<task>.scaling-<s>.jsonl``  one line per sample in manifest order: ``index`` (record position in the
  manifest), ``audio``, ``prompt`` (bare instruction), ``hypothesis``, ``reference``, ``score`` (that sample's
  metric values), ``lora_scaling``, ``task``, ``run_key`` (fingerprint of model files and decoding options)
- ``<task>.summary.json``       metrics and not-computed reasons per LoRA scaling, settings, the paper's numbers
- ``summary.json``, ``report.md``  every task summary in the folder; Markdown table + "not computed" list
- ``lora_sweep.png``            metric and following rate against the LoRA scaling (tasks run at >= 2 scalings)
- ``<task>.scaling-<s>.confusion.png``  for classification tasks

Re-running resumes: samples already answered (same index, audio, prompt and run_key) are not generated again.
Under ``torchrun --nproc_per_node N`` every rank answers every N-th pending sample into
``<file>.part-<rank>``; rank 0 merges the parts in manifest order, scores and writes the reports.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from salmonn.errors import ConfigError, PromptError, SalmonnError

SILENCE_SAMPLES = 1600  # 0.1 s at 16 kHz between a record's clip and its `expand_wav` clips (reference)
SAMPLE_RATE = 16000
DEFAULT_OUTPUT = "salmonn-eval"

# Bare test instructions per task. Where the reference's prompts/test_prompt.json has the task, this is its
# instruction (without the "<Speech><SpeechHere></Speech> " prefix the model adds); "{}" takes the sample's Q.
DEFAULT_TEST_PROMPTS: dict[str, str] = {
    "asr": "Recognize the speech and give me the transcription.",
    "asr_zh": "请将语音中的内容写下来。",
    "asr_de": "Hören Sie sich die Rede an und schreiben Sie ihren Inhalt auf.",
    "speech_separation": "Please write down what you hear each person says.",
    "phone_recognition": "Provide the phonetic transcription for the speech.",
    "translation_ec": "Listen to the speech and translate it into Chinese.",
    "translation_ed": "Listen to the speech and translate it into German.",
    "translation_ej": "Listen to the speech and translate it into Japanese.",
    "audiocaption": "Please describe the audio.",
    "audiocaption_v2": "Please write down what your hear in the audio.",
    "music_description": "Listen to this music clip and describe the music.",
    "emotion_recognition": "Describe the emotion of the speaker in one word.",
    "gender_recognition": "What is the gender of the speaker?",
    "speaker_verification": "Do you only hear the same person talking? Answer yes or no.",
    "sound_event": "What sound event do you hear in the audio? Answer in a few words.",
    "instrument": "Which musical instrument do you hear? Answer in a few words.",
    "QA": "{}",
    "inference_QA": "{}",
    "sqqa": "Please answer the question in detail.",
    "slot_filling": "According to the speech, what is the {}?",
    "keyword_extraction": "Give me only three keywords of the text.",
    "speech_audio_coreasoning": "Use your strong reasoning skills to answer the speaker's question in detail "
                                "based on the background sound.",
    "audio_story_telling": "Based on the audio, write a story in detail. Your story should be highly related "
                           "to the audio.",
}
DEFAULT_TEST_PROMPTS["story"] = DEFAULT_TEST_PROMPTS["audio_story_telling"]

# Our task name -> the reference test_prompt.json key, so that file loads unchanged as model.test_prompt_path.
REFERENCE_PROMPT_KEYS = {"translation_ed": "translation_en2de", "translation_ej": "translation_en2ja",
                         "keyword_extraction": "keywords", "sqqa": "speech_query", "story": "audio_story_telling"}
_PREFIX = re.compile(r"^\s*<Speech><SpeechHere></Speech>\s*")


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


# ------------------------------------------------------------------ prompts and records


def load_test_prompts(path: str | Path) -> dict[str, str]:
    """Task -> bare instruction from a JSON file (the reference's test_prompt.json loads as is).

    Values may be a string or a list (its first entry is used); a leading '<Speech><SpeechHere></Speech>' is
    removed because the model adds it.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: cannot read the test prompt file ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object task -> instruction")
    out = {}
    for task, value in data.items():
        if isinstance(value, list):
            value = value[0] if value else ""
        if not isinstance(value, str):
            raise ConfigError(f"{path}: the prompt of task {task!r} must be a string or a list of strings")
        out[task] = _PREFIX.sub("", value)
    return out


def instruction_for(task: str, prompt: str | None = None, prompt_file: str | Path | None = None) -> str:
    """The instruction template of ``task``: --prompt, else the test prompt file, else the built-in table."""
    if prompt:
        return prompt
    if prompt_file:
        table = load_test_prompts(prompt_file)
        for key in (task, REFERENCE_PROMPT_KEYS.get(task)):
            if key and key in table:
                return table[key]
    if task in DEFAULT_TEST_PROMPTS:
        return DEFAULT_TEST_PROMPTS[task]
    raise PromptError(f"no test prompt for task {task!r}: pass --prompt TEXT or a test_prompt_path JSON")


def fill_prompt(template: str, record: dict, where: str) -> str:
    """Replace '{}' in the template with the record's question Q (every occurrence)."""
    if "{}" not in template:
        return template
    question = record.get("Q", record.get("question"))
    if not isinstance(question, str) or not question.strip():
        raise PromptError(f"{where}: the prompt {template!r} needs the record's question, but it has no 'Q'")
    return template.replace("{}", question.strip())


@dataclass
class Item:
    """One sample to answer: manifest position, record, the audio input and the filled-in instruction."""

    index: int
    record: dict
    prompt: str

    @property
    def audio(self) -> str:
        return self.record["path"]


def select_records(manifest: str | Path, task: str) -> list[tuple[int, dict]]:
    """(manifest position, record) of the records for ``task``: records naming another task are skipped."""
    from salmonn.data.manifest import iter_records

    picked, others = [], set()
    for position, (number, record) in enumerate(iter_records(manifest)):
        if "path" not in record:
            raise SalmonnError(f"{manifest}:{number}: record has no 'path' (or 'audio')")
        if record.get("task", task) != task:
            others.add(str(record["task"]))
            continue
        picked.append((position, record))
    if not picked:
        found = f" (it has tasks: {', '.join(sorted(others))})" if others else ""
        raise SalmonnError(f"{manifest}: no records for task {task!r}{found}")
    return picked


def plan_items(manifest: str | Path, task: str, template: str) -> dict[int, Item]:
    """Manifest position -> Item for every record of the task; checks references and prompts up front."""
    from salmonn.evaluation.metrics import _NEEDS_REFS

    items: dict[int, Item] = {}
    for position, record in select_records(manifest, task):
        where = f"{manifest}: record #{position + 1}"
        if task in _NEEDS_REFS and record.get("text") is None:
            raise SalmonnError(f"{where} has no reference 'text' (task {task!r} needs one)")
        items[position] = Item(position, record, fill_prompt(template, record, where))
    return items


def audio_input(record: dict, channel: str = "first", resample: bool = True):
    """The record's audio for model.generate: its path, or with ``expand_wav`` the clips joined by 0.1 s silence."""
    if not record.get("expand_wav"):
        return record["path"]
    import numpy as np

    from salmonn.audio import load_audio

    parts = [load_audio(record["path"], channel=channel, resample=resample)]
    for extra in record["expand_wav"]:
        parts += [np.zeros(SILENCE_SAMPLES, dtype=np.float32), load_audio(extra, channel=channel, resample=resample)]
    return np.concatenate(parts), SAMPLE_RATE


# ------------------------------------------------------------------ distributed


class Distributed:
    """Rank and world size from torchrun's environment; a gloo process group only when WORLD_SIZE > 1."""

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self._group = False

    @classmethod
    def from_env(cls) -> "Distributed":
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))

    def __enter__(self) -> "Distributed":
        if self.world_size > 1:
            import torch.distributed as dist
            if not dist.is_initialized():
                # Only barriers cross processes, so gloo works for CPU and GPU runs alike; ranks may wait a long
                # time for the slowest shard.
                dist.init_process_group("gloo", timeout=datetime.timedelta(hours=24))
                self._group = True
        return self

    def __exit__(self, *exc) -> None:
        if self._group:
            import torch.distributed as dist
            dist.destroy_process_group()
            self._group = False

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist
            dist.barrier()

    @property
    def is_main(self) -> bool:
        return self.rank == 0


# ------------------------------------------------------------------ files


def _read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL file; a truncated last line (an interrupted write) is ignored."""
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _dumps(obj: Any, **kw) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str, **kw)


def samples_path(output: Path, task: str, scale: LoraScale) -> Path:
    return output / f"{task}.scaling-{scale.label}.jsonl"


def _done_rows(path: Path, items: dict[int, Item], run_key: str) -> dict[int, dict]:
    """Rows already answered for the planned items: same index, audio, prompt and run key."""
    done: dict[int, dict] = {}
    for file in [path, *sorted(path.parent.glob(path.name + ".part-*"))]:
        for row in _read_jsonl(file):
            item = items.get(row.get("index")) if isinstance(row.get("index"), int) else None
            if (item is not None and row["index"] not in done and row.get("run_key") == run_key
                    and row.get("audio") == item.audio and row.get("prompt") == item.prompt
                    and isinstance(row.get("hypothesis"), str)):
                done[row["index"]] = row
    return done


# ------------------------------------------------------------------ evaluation


def run_key(model, decoding: dict) -> str:
    """Fingerprint of what decides the answers besides the LoRA scale: model files, template, decoding."""
    m = model.config.model
    identity = {"files": [m.llama_path, m.whisper_path, m.beats_path, m.ckpt], "template": m.prompt_template,
                "long_audio": m.long_audio, "channel": m.channel,
                "decoding": {**asdict(model.config.generate), **decoding}}
    return hashlib.sha1(_dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


def _spelling_json(model) -> str | None:
    """Whisper's normalizer.json next to the model's Whisper weights, if there is one."""
    whisper = model.config.model.whisper_path
    path = Path(whisper) / "normalizer.json" if whisper else None
    return str(path) if path is not None and path.is_file() else None


def _generate_shard(model, items: list[Item], part: Path, scale: LoraScale, task: str, key: str,
                    batch_size: int, decoding: dict, progress: bool, rank: int) -> None:
    """Answer ``items`` in batches, appending one JSON line per sample to ``part``."""
    from tqdm import tqdm

    m = model.config.model
    bar = tqdm(total=len(items), desc=f"{task} LoRA {scale.label}", unit="clip", file=sys.stderr,
               disable=not progress or rank != 0 or not items, dynamic_ncols=True)
    with bar, part.open("a", encoding="utf-8") as out:
        for start in range(0, len(items), batch_size):
            batch = items[start:start + batch_size]
            for it, answer in zip(batch, _answer_batch(model, batch, m, decoding), strict=True):
                row = {"index": it.index, "task": task, "audio": it.audio, "prompt": it.prompt,
                       "hypothesis": "" if isinstance(answer, str) else answer.text,
                       "reference": it.record.get("text"), "lora_scaling": scale.scaling, "run_key": key}
                if isinstance(answer, str):
                    row["error"] = answer
                out.write(_dumps(row) + "\n")
            out.flush()
            bar.update(len(batch))


def _answer_batch(model, batch: list[Item], m, decoding: dict) -> list:
    """Answers for a batch; if one clip cannot be used the batch is answered clip by clip, and a failed clip
    gets its one-line error (a string) instead of an answer, which scores as an empty hypothesis."""
    try:
        audio = [audio_input(it.record, m.channel, m.resample) for it in batch]
        return model.generate(audio, [it.prompt for it in batch], **decoding)
    except SalmonnError:
        if len(batch) == 1:
            raise
    answers = []
    for it in batch:
        try:
            answers += _answer_batch(model, [it], m, decoding)
        except SalmonnError as err:
            answers.append(str(err))
    return answers


def _score(task: str, rows: list[dict], items: dict[int, Item], use_java: bool, spelling: str | None) -> dict:
    from salmonn.evaluation.metrics import _NEEDS_REFS, compute_metrics

    refs = [items[r["index"]].record.get("text") for r in rows]
    if task not in _NEEDS_REFS and any(r is None for r in refs):
        refs = None
    samples = [items[r["index"]].record for r in rows]
    return compute_metrics(task, [r["hypothesis"] for r in rows], refs, samples, spelling_json=spelling,
                           use_java=use_java)


def evaluate(model, manifest: str | Path, task: str, output: str | Path = DEFAULT_OUTPUT, *, batch_size: int = 8,
             lora_scales: str | Sequence[LoraScale] | None = None, prompt: str | None = None,
             use_java: bool = True, restart: bool = False, decoding: dict | None = None,
             dist: Distributed | None = None, progress: bool = True) -> dict | None:
    """Answer and score one task of a manifest at one or more LoRA scalings; write the report files.

    Returns the task summary on rank 0 (None on the other ranks). ``decoding`` is passed to model.generate
    (e.g. {"num_beams": 1}); ``lora_scales`` is a '--lora-scale' string or a list of LoraScale.
    """
    from salmonn.evaluation.metrics import TASK_METRICS
    from salmonn.evaluation.report import PUBLISHED

    dist = dist or Distributed()
    decoding = {k: v for k, v in (decoding or {}).items() if v is not None}
    if task not in TASK_METRICS:
        raise SalmonnError(f"task {task!r} has no metric; known tasks: {', '.join(sorted(TASK_METRICS))}")
    if batch_size < 1:
        raise SalmonnError(f"--batch-size must be at least 1, got {batch_size}")
    m = model.config.model
    trained = m.lora_alpha / m.lora_rank
    scales = (parse_lora_scales(lora_scales, trained, getattr(model, "lora_scale", 1.0))
              if lora_scales is None or isinstance(lora_scales, str) else list(lora_scales))
    if not m.lora and any(abs(s.scale - 1.0) > 1e-9 for s in scales):
        raise ConfigError("--lora-scale: this model has no LoRA (model.lora is false)")
    template = instruction_for(task, prompt, m.test_prompt_path or None)
    items = plan_items(manifest, task, template)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    key = run_key(model, decoding)
    spelling = _spelling_json(model)
    original = getattr(model, "lora_scale", 1.0)
    runs = []
    try:
        for scale in scales:
            path = samples_path(output, task, scale)
            if restart and dist.is_main:
                for old in [path, *path.parent.glob(path.name + ".part-*")]:
                    old.unlink(missing_ok=True)
            dist.barrier()
            done = _done_rows(path, items, key)
            dist.barrier()  # every rank has read the finished rows before any rank writes
            pending = [it for i, it in items.items() if i not in done]
            mine = pending[dist.rank::dist.world_size]
            if m.lora:
                model.set_lora_scale(scale.scale)
            part = path.with_name(f"{path.name}.part-{dist.rank}")
            _generate_shard(model, mine, part, scale, task, key, batch_size, decoding, progress, dist.rank)
            dist.barrier()
            if not dist.is_main:
                continue
            done = _done_rows(path, items, key)
            missing = [i for i in items if i not in done]
            if missing:
                raise SalmonnError(f"{path}: {len(missing)} samples have no answer after all ranks finished "
                                   f"(first: record #{missing[0] + 1})")
            rows = [done[i] for i in sorted(done)]
            result = _score(task, rows, items, use_java, spelling)
            for row, per in zip(rows, result["per_sample"]):
                row["score"] = per
            _write_atomic(path, "".join(_dumps(r) + "\n" for r in rows))
            for old in path.parent.glob(path.name + ".part-*"):
                old.unlink(missing_ok=True)
            run = {"lora_scaling": scale.scaling, "lora_scale": scale.scale, "samples_file": path.name,
                   "metrics": result["metrics"], "not_computed": result["not_computed"],
                   "details": result["details"]}
            confusion = result["details"].get("confusion")
            if confusion:
                import numpy as np

                from salmonn.evaluation.metrics import plot_confusion
                png = path.with_name(f"{task}.scaling-{scale.label}.confusion.png")
                plot_confusion(np.array(confusion["matrix"]), confusion["labels"], png)
                run["confusion_png"] = png.name
            runs.append(run)
    finally:
        if m.lora:
            model.set_lora_scale(original)
    if not dist.is_main:
        return None
    from salmonn.evaluation.metrics import METRIC_UNITS

    previous = _read_summary(output / f"{task}.summary.json")
    if (previous and previous.get("run_key") == key and previous.get("manifest") == str(manifest)
            and previous.get("prompt") == template):  # keep this task's other scalings from earlier runs
        ours = {r["lora_scaling"] for r in runs}
        runs += [r for r in previous.get("runs", []) if r.get("lora_scaling") not in ours
                 and (output / r.get("samples_file", "")).is_file()]
    runs.sort(key=lambda r: -r["lora_scaling"])
    notes = [] if task not in ("asr", "speech_separation") or spelling else [
        "no Whisper normalizer.json next to the Whisper weights: British/American spellings are not unified "
        "before WER"]
    from salmonn.decoding import decoding_config
    summary = {
        "task": task, "manifest": str(manifest), "n_samples": len(items), "prompt": template,
        "config": model.config.source, "run_key": key, "world_size": dist.world_size,
        "decoding": asdict(decoding_config(model.config.generate, None, **decoding)),
        "lora": {"alpha": m.lora_alpha, "rank": m.lora_rank, "trained_scaling": trained} if m.lora else None,
        "spelling_json": spelling, "units": {k: METRIC_UNITS[k] for r in runs for k in r["metrics"]},
        "published": [{"metric": mt, "value": v, "data": d} for mt, v, d in PUBLISHED.get(task, ())],
        "notes": notes, "runs": runs,
    }
    _write_atomic(output / f"{task}.summary.json", _dumps(summary, indent=2) + "\n")
    write_suite_report(output)
    return summary


def _read_summary(path: Path) -> dict | None:
    """A task summary file, or None if it is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "task" in data and isinstance(data.get("runs"), list) else None


def write_suite_report(output: str | Path) -> dict[str, Path]:
    """(Re)write summary.json, report.md and lora_sweep.png from every <task>.summary.json in ``output``."""
    from salmonn.evaluation.report import markdown_report, plot_lora_sweep

    output = Path(output)
    summaries = {}
    for file in sorted(output.glob("*.summary.json")):
        data = _read_summary(file)
        if data is not None:
            summaries[data["task"]] = data
    files = {"summary": output / "summary.json", "report": output / "report.md"}
    _write_atomic(files["summary"], _dumps(summaries, indent=2) + "\n")
    _write_atomic(files["report"], markdown_report(summaries))
    png = output / "lora_sweep.png"
    if plot_lora_sweep(summaries, png.with_name("lora_sweep.tmp.png")):
        os.replace(png.with_name("lora_sweep.tmp.png"), png)
        files["figure"] = png
    else:
        png.unlink(missing_ok=True)  # no task has a sweep (any more)
    return files


# ------------------------------------------------------------------ command
