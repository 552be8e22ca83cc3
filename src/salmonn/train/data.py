"""Training data: prompt files, manifest validation, length-aware deterministic batching, loading and collating.

Determinism (what makes multi-process runs equal single-process runs and resumed runs equal uninterrupted ones):
- the order of epoch e is a function of (seed, e) only; it is cut into *global* batches of
  batch_size_train * world_size samples, and rank r takes slice r of each, so the set of samples in global step k
  does not depend on the number of processes;
- the prompt variant of a sample is drawn with an RNG seeded by (seed, epoch, sample index), never by a rank's RNG;
- the position in the stream is one integer (global batches consumed), saved in checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import torch

from .. import audio as A
from ..errors import ConfigError, SalmonnError
from ..features import whisper_log_mel
from ..frames import clip_tokens, segment_samples
from ..manifest import ManifestError, iter_records
from ..prompting import AUDIO_PLACEHOLDER, AUDIO_PREFIX

if TYPE_CHECKING:
    from ..config import ModelConfig
EXPAND_GAP_SAMPLES = 1600  # 0.1 s of silence before each expand_wav clip (reference)


class DataError(SalmonnError):
    """Training data that cannot be used; lists the offending records."""


# ----------------------------------------------------------------------------- prompts


class PromptBook:
    """The reference prompt file: JSON task -> list of instruction variants.

    A variant with `<SpeechHere>` is used as written (the reference's own file); one without gets the reference
    CLI's `<Speech><SpeechHere></Speech> ` prefix. Either is then wrapped in the model's prompt_template.
    `{}` in a variant takes the sample's `Q`.
    """

    def __init__(self, variants: dict[str, list[str]], template: str, source: str = "<prompts>"):
        self.source, self.template = source, template
        self.raw = variants
        self.templated = {task: [template.format(v if AUDIO_PLACEHOLDER in v else AUDIO_PREFIX + v) for v in vs]
                          for task, vs in variants.items()}

    @classmethod
    def load(cls, path: str, template: str, extra: dict[str, list[str]] | None = None) -> "PromptBook":
        if not path:
            raise ConfigError("model.prompt_path is empty: training needs a prompt file (JSON task -> list of "
                              "instructions)")
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"model.prompt_path: {path} not found")
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object task -> list of instructions")
        variants = {}
        for task, value in data.items():
            value = [value] if isinstance(value, str) else value
            if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{path}: task {task!r} must map to a non-empty list of strings")
            variants[task] = value
        for task, value in (extra or {}).items():
            variants.setdefault(task, value)
        return cls(variants, template, str(path))

    def problems(self) -> list[str]:
        """Variants whose templated prompt does not hold exactly one <SpeechHere>."""
        out = []
        for task, prompts in self.templated.items():
            for i, prompt in enumerate(prompts):
                if prompt.count(AUDIO_PLACEHOLDER) != 1:
                    out.append(f"{self.source}: task {task!r} variant {i + 1} {self.raw[task][i][:60]!r}: the "
                               f"templated prompt has {prompt.count(AUDIO_PLACEHOLDER)} {AUDIO_PLACEHOLDER} "
                               f"(needs exactly 1)")
        return out

    def takes_question(self, task: str) -> bool:
        return any("{}" in v for v in self.raw.get(task, ()))

    def sample(self, task: str, question: str | None, rng: np.random.Generator) -> str:
        prompts = self.templated[task]
        prompt = prompts[int(rng.integers(len(prompts)))]
        return prompt.replace("{}", question or "") if "{}" in prompt else prompt


# ----------------------------------------------------------------------------- samples


@dataclasses.dataclass
class Sample:
    """One validated record."""
    source: str  # "manifest:line"
    path: str
    expand: list[str]
    text: str
    task: str
    question: str | None
    seconds: float  # total audio length, expand_wav and gaps included
    target_ids: list[int]  # text + end_sym, tokenised, cut to max_txt_len
    gender: str | None = None  # the speaker's gender label, if the manifest gives one (run.gender_weight)

    @property
    def n_segments(self) -> int:
        return len(segment_samples(round(self.seconds * A.SAMPLE_RATE)))

    def length(self, model_config: ModelConfig) -> int:
        """LLM positions this sample takes (bucketing key): audio tokens + target tokens."""
        return clip_tokens(round(self.seconds * A.SAMPLE_RATE), model_config) + len(self.target_ids)

    def record(self) -> dict:
        out = {"path": self.path, "text": self.text, "task": self.task}
        if self.question is not None:
            out["Q"] = self.question
        if self.expand:
            out["expand_wav"] = self.expand
        if self.gender is not None:
            out["gender"] = self.gender
        return out


def probe_audio(path: str) -> tuple[float | None, str | None]:
    """(duration in seconds, None) or (None, why it cannot be used), reading headers only."""
    file = Path(path)
    if not file.exists():
        return None, "audio file not found"
    if file.is_dir():
        return None, "audio path is a directory"
    if file.stat().st_size == 0:
        return None, "audio file is empty (0 bytes)"
    try:
        import soundfile as sf
        info = sf.info(str(file))
        if info.frames <= 0 or info.samplerate <= 0:
            return None, "audio file holds no samples"
        return info.frames / info.samplerate, None
    except Exception:
        pass
    try:
        import av
        with av.open(str(file)) as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                return None, "no audio stream in the file"
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base), None
            if container.duration is not None:
                return container.duration / 1_000_000, None
            return None, "cannot tell the audio's duration"
    except Exception as err:
        return None, f"unreadable audio ({type(err).__name__}: {str(err)[:80]})"


def _record_problems(record: dict, prompts: PromptBook, probes: dict | None,
                     model_cfg: ModelConfig) -> tuple[list[str], float]:
    """What is wrong with one manifest record (nothing: []) and its audio seconds; probes=None skips the files."""
    bad = []
    path, text, task = record.get("path"), record.get("text"), record.get("task")
    if not isinstance(path, str) or not path:
        bad.append("no 'path'")
    if "text" not in record:
        bad.append("no 'text'")
    elif not isinstance(text, str) or not text.strip():
        bad.append("empty 'text'")
    if not isinstance(task, str) or not task:
        bad.append("no 'task'")
    elif task not in prompts.templated:
        bad.append(f"task {task!r} is not in the prompt file {prompts.source}")
    elif prompts.takes_question(task) and record.get("Q") is None:
        bad.append(f"task {task!r} prompts take a question ({{}}) but the record has no 'Q'")
    if "gender" in record and (not isinstance(record["gender"], str) or not record["gender"]):
        bad.append("'gender' must be a non-empty string (a label of run.gender_labels)")
    expand = record.get("expand_wav") or []
    if not isinstance(expand, list) or not all(isinstance(p, str) for p in expand):
        bad.append("'expand_wav' must be a list of paths")
        expand = []
    seconds = 0.0
    for clip in ([path] if isinstance(path, str) and path else []) + expand:
        duration, error = probes.get(clip, (0.0, None)) if probes is not None else (0.0, None)
        if error:
            bad.append(f"{clip}: {error}")
        else:
            seconds += duration or 0.0
    seconds += len(expand) * EXPAND_GAP_SAMPLES / A.SAMPLE_RATE
    if probes is not None and seconds > model_cfg.max_audio_seconds:
        bad.append(f"{seconds:.1f} s of audio is longer than model.max_audio_seconds={model_cfg.max_audio_seconds:g}")
    return bad, seconds


def load_samples(manifests: Sequence[str], prompts: PromptBook, tokenizer, model_cfg: ModelConfig, *,
                 check_files: bool = True, max_listed: int = 20, what: str = "training data",
                 threads: int = 8) -> list[Sample]:
    """Read and validate every record of the manifests; raise one DataError listing the problems (first N).

    Problems: unreadable manifest lines, missing path/text/task fields, empty texts, tasks not in the prompt
    file, prompts that need a question (`{}`) without `Q`, missing/unreadable/too long audio (main clip and
    expand_wav), and prompt variants without exactly one <SpeechHere> after templating.
    """
    if not manifests:
        raise ConfigError(f"no manifest given for the {what} (datasets.train_ann_path)")
    problems: list[str] = list(prompts.problems())
    raw: list[tuple[str, dict]] = []
    for manifest in manifests:
        try:
            for number, record in iter_records(manifest):
                raw.append((f"{manifest}:{number}", record))
        except ManifestError as err:
            problems.append(str(err))
    files = sorted({p for _, r in raw for p in [r.get("path")] + list(r.get("expand_wav") or []) if isinstance(p, str)})
    probes: dict[str, tuple[float | None, str | None]] = {}
    if check_files and files:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            probes = dict(zip(files, pool.map(probe_audio, files)))
    samples = []
    for where, record in raw:
        bad, seconds = _record_problems(record, prompts, probes if check_files else None, model_cfg)
        if bad:
            problems.append(f"{where}: " + "; ".join(bad))
            continue
        ids = tokenizer(record["text"] + model_cfg.end_sym, add_special_tokens=False).input_ids[:model_cfg.max_txt_len]
        question = record.get("Q")
        samples.append(Sample(where, record["path"], list(record.get("expand_wav") or []), record["text"],
                              record["task"], None if question is None else str(question), seconds, ids,
                              record.get("gender")))
    if problems:
        shown = problems[:max_listed]
        more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        raise DataError(f"{len(problems)} problem(s) in the {what}; fix them before training:\n  "
                        + "\n  ".join(shown) + more)
    if not samples:
        raise DataError(f"the {what} has no records ({', '.join(manifests)})")
    return samples


def load_segments(sample: Sample, model_cfg: ModelConfig) -> list[np.ndarray]:
    """The sample's audio (expand_wav clips appended after 0.1 s of silence) as the encoders' <=30 s segments."""
    def read(path):
        return A.load_audio(path, channel=model_cfg.channel, resample=model_cfg.resample)
    wav = read(sample.path)
    if sample.expand:
        gap = np.zeros(EXPAND_GAP_SAMPLES, dtype=np.float32)
        wav = np.concatenate([wav] + [part for p in sample.expand for part in (gap, read(p))])
    if model_cfg.long_audio == "truncate":
        wav = wav[: A.SEGMENT_SAMPLES]
    return [A.pad_to_min(segment) for segment in A.split_segments(wav)]


# ----------------------------------------------------------------------------- batching


class GlobalBatchSampler:
    """Infinite stream of this rank's batches, as lists of (epoch, sample index, weight) keys.

    Each epoch is a seeded permutation cut into global batches of `per_rank * world` samples (the incomplete last
    one dropped); with bucketing, `bucket_factor` global batches' worth of the permutation is sorted by length
    before cutting and the batch order is shuffled again, so batches hold similar lengths.
    """

    def __init__(self, lengths: Sequence[int], per_rank: int, rank: int, world: int, seed: int,
                 bucketing: bool = True, bucket_factor: int = 50, start: int = 0):
        self.lengths = np.asarray(lengths)
        self.per_rank, self.rank, self.world, self.seed = per_rank, rank, world, seed
        self.global_batch = per_rank * world
        self.bucketing, self.bucket_factor, self.start = bucketing, bucket_factor, start
        if len(self.lengths) < self.global_batch:
            raise DataError(f"{len(self.lengths)} training samples cannot fill one global batch of "
                            f"{self.global_batch} (batch_size_train {per_rank} x {world} processes)")
        self._epoch, self._batches = None, None

    @property
    def batches_per_epoch(self) -> int:
        return len(self.lengths) // self.global_batch

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """The global batches of one epoch (same for every world size with the same global batch)."""
        if self._epoch != epoch:
            rng = np.random.default_rng([self.seed, epoch, 0x5A17])
            order = rng.permutation(len(self.lengths))
            if self.bucketing:
                chunk = self.global_batch * self.bucket_factor
                parts = [order[i:i + chunk] for i in range(0, len(order), chunk)]
                order = np.concatenate([p[np.argsort(-self.lengths[p], kind="stable")] for p in parts])
            count = self.batches_per_epoch
            batches = [order[i * self.global_batch:(i + 1) * self.global_batch] for i in range(count)]
            if self.bucketing:
                batches = [batches[i] for i in rng.permutation(count)]
            self._epoch, self._batches = epoch, batches
        return self._batches

    def position(self, pos: int) -> tuple[int, int]:
        """(epoch, batch within the epoch) of global batch number `pos`."""
        return divmod(pos, self.batches_per_epoch)

    def global_batch_at(self, pos: int) -> np.ndarray:
        epoch, j = self.position(pos)
        return self.epoch_batches(epoch)[j]

    def __iter__(self) -> Iterator[list[tuple[int, int, float]]]:
        pos = self.start
        while True:
            epoch, _ = self.position(pos)
            batch = self.global_batch_at(pos)
            mine = batch[self.rank * self.per_rank:(self.rank + 1) * self.per_rank]
            yield [(epoch, int(i), 1.0) for i in mine]
            pos += 1


def eval_batches(n: int, per_rank: int, rank: int, world: int, limit: int = 0) -> list[list[tuple[int, int, float]]]:
    """This rank's validation batches: every sample once over all ranks; every rank gets the same number of
    batches (short ranks repeat a sample with weight 0, which counts for nothing)."""
    mine = list(range(rank, n, world))
    count = max(1, math.ceil(math.ceil(n / world) / per_rank))
    batches = []
    for b in range(count):
        keys = [(0, i, 1.0) for i in mine[b * per_rank:(b + 1) * per_rank]]
        while len(keys) < per_rank:
            keys.append((0, 0, 0.0))
        batches.append(keys)
    return batches[:limit] if limit else batches


# ----------------------------------------------------------------------------- dataset


class TrainDataset(torch.utils.data.Dataset):
    """Keys (epoch, index, weight) -> one sample ready to collate: prompt, target ids, and either the cached
    frozen-encoder outputs or the encoders' inputs (Whisper log-mel + waveform segments)."""

    def __init__(self, samples: list[Sample], prompts: PromptBook, seed: int, model_cfg: ModelConfig, feature_extractor,
                 cache=None):
        self.samples, self.prompts, self.seed = samples, prompts, seed
        self.model_cfg, self.feature_extractor, self.cache = model_cfg, feature_extractor, cache

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key):
        epoch, index, weight = key
        sample = self.samples[index]
        rng = np.random.default_rng([self.seed, epoch, index, 0x9A])
        item = {"index": index, "weight": weight, "task": sample.task, "gender": sample.gender,
                "prompt": self.prompts.sample(sample.task, sample.question, rng), "target": sample.target_ids}
        if self.cache is not None:
            item.update(self.cache.load(sample))
        else:
            segments = load_segments(sample, self.model_cfg)
            item["segments"] = segments
            item["spectrogram"] = whisper_log_mel(segments, self.feature_extractor)
        return item


def collate(items: list[dict]) -> dict:
    """Items -> a batch. Cached BEATs outputs of different lengths are zero-padded with a True (= pad) mask."""
    batch = {"index": [it["index"] for it in items], "tasks": [it["task"] for it in items],
             "genders": [it.get("gender") for it in items],
             "prompts": [it["prompt"] for it in items],
             "targets": [it["target"] for it in items],
             "weights": torch.tensor([it["weight"] for it in items], dtype=torch.float32),
             "n_tokens": sum(len(it["target"]) for it in items if it["weight"] > 0)}
    if "whisper" in items[0]:
        batch["n_segments"] = [it["whisper"].shape[0] for it in items]
        if "whisper_len" in items[0]:  # Whisper on each clip's own length: pad to the longest, keep the lengths
            frames = max(it["whisper"].shape[1] for it in items)
            pad = [(0, 0, 0, frames - it["whisper"].shape[1]) for it in items]
            batch["whisper"] = torch.cat([torch.nn.functional.pad(it["whisper"], p)
                                          for it, p in zip(items, pad)])  # [S, F, Cs]
            batch["whisper_len"] = torch.cat([it["whisper_len"] for it in items])  # [S]
        else:
            batch["whisper"] = torch.cat([it["whisper"] for it in items])  # [S, 1500, Cs]
        if items[0].get("beats") is not None:
            lengths = torch.cat([it["beats_len"] for it in items])  # [S]
            width = int(lengths.max())
            beats = [torch.nn.functional.pad(it["beats"], (0, 0, 0, width - it["beats"].shape[1])) for it in items]
            batch["beats"] = torch.cat(beats)  # [S, T', Ca]
            batch["beats_mask"] = torch.arange(width)[None, :] >= lengths[:, None]  # [S, T'] True = pad
    else:
        segments = [s for it in items for s in it["segments"]]
        batch["n_segments"] = [len(it["segments"]) for it in items]
        batch["spectrogram"] = torch.cat([it["spectrogram"] for it in items])  # [S, 80, 3000]
        batch["raw_wav"], batch["padding_mask"] = A.batch_waveforms(segments)  # [S, N]
    return batch
