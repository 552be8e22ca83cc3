"""Typed training configuration: the reference YAML's `run:` and `datasets:` sections, plus `activation:`.

They live in `Config.extra` (salmonn.config keeps unknown top-level sections as they are); this module builds
typed dataclasses from them with the same errors as the model config: an unknown key or a wrong type names the
key (with a "did you mean"). Every reference key loads; keys this project adds are marked as additions.
Overrides `run.x=...`, `run.optims.x=...`, `datasets.x=...` and `activation.x=...` apply on top.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path

import yaml

from ..config import Config, build_section, load_config
from ..errors import ConfigError

SECTIONS = ("run", "datasets", "activation")


@dataclasses.dataclass
class OptimConfig:
    # --- reference keys (configs/config.yaml `run.optims`) ---
    max_epoch: int = 30  # epochs of `iters_per_epoch` iterations each
    warmup_steps: int = 3000  # iterations of linear warmup from warmup_start_lr to init_lr
    warmup_start_lr: float = 1e-6  # first warmup learning rate (-1 = init_lr: no warmup ramp)
    init_lr: float = 3e-5  # peak learning rate, start of the cosine
    min_lr: float = 1e-5  # end of the cosine
    weight_decay: float = 0.05  # AdamW decay on >=2-D weights (not bias/ln/bn)
    beta2: float = 0.999  # AdamW beta2
    # --- additions ---
    beta1: float = 0.9  # AdamW beta1 (the reference's fixed value)
    eps: float = 1e-8  # AdamW epsilon (torch default, as the reference)
    grad_clip: float = 0.0  # clip the global gradient norm to this (0 = off, as the reference)


@dataclasses.dataclass
class RunConfig:
    # --- reference keys (configs/config.yaml `run:`) ---
    seed: int = 42  # seeds python, numpy and torch (+ rank for dropout), and the data order
    output_dir: str = "runs/salmonn"  # checkpoints, metrics, plots (relative to the working directory)
    evaluate: bool = False  # only compute the validation loss and sample generations of the initial model
    log_freq: int = 5  # progress-bar / metrics refresh, in optimizer steps
    epoch_based: bool = False  # True: an epoch is one pass over the data; False: iters_per_epoch iterations
    iters_per_epoch: int = 3000  # iterations (micro-batches per rank) per epoch when not epoch_based
    accum_grad_iters: int = 1  # iterations per optimizer step (gradient accumulation)
    batch_size_train: int = 8  # samples per rank per iteration
    batch_size_eval: int = 8  # samples per rank per validation batch (and per frozen-encoder cache batch)
    num_workers: int = 8  # DataLoader worker processes per rank (0 = load in the main process)
    device: str = "auto"  # auto (cuda:LOCAL_RANK if available, else cpu), cpu or cuda
    use_distributed: bool = True  # accepted; torchrun's environment (WORLD_SIZE) decides
    amp: bool = True  # autocast the forward pass (amp_dtype); ignored on CPU unless amp_on_cpu
    world_size: int = 1  # accepted; torchrun decides
    dist_url: str = "env://"  # accepted; torchrun's rendezvous is used
    gpu: int | None = None  # accepted (the reference sets it at run time); LOCAL_RANK is used
    optims: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    use_wandb: bool = False  # accepted; metrics go to metrics.jsonl (no wandb/tensorboard dependency)
    wandb_project: str = ""  # accepted, unused
    wandb_local_dir: str = ""  # accepted, unused
    wandb_name: str = ""  # accepted, unused
    wandb_entity: str = ""  # accepted, unused
    # --- additions ---
    stage: str = ""  # label: pretrain | instruct | activation (activation generates its stories first)
    amp_dtype: str = "bfloat16"  # bfloat16, or float16 (with a gradient scaler; CUDA only)
    amp_on_cpu: bool = False  # autocast bf16 on CPU too (slow on most CPUs)
    init_from: str = ""  # checkpoint to start from (previous stage); "" = model.ckpt, or fresh weights
    init_allow_missing: list[str] = dataclasses.field(default_factory=list)  # key substrings init may lack
    connector_init: str = ""  # "data": a fresh connector starts standardised on the training clips (train/init.py)
    ctc_weight: float = 0.0  # CTC loss spelling ctc_tasks' targets from the audio tokens (train/ctc.py); 0 = off
    ctc_tasks: list[str] = dataclasses.field(default_factory=lambda: ["asr"])  # tasks whose target is a transcript
    ctc_blank: str = " "  # text of the one token whose embedding stands for CTC's blank
    ctc_scale: float = 16.0  # temperature of the cosine classifier against the embedding table
    ctc_query: int | None = None  # with several queries per window, the one CTC spells (others stay free); None: all
    gender_weight: float = 0.0  # speaker-gender loss on manifest rows with "gender" (train/gender.py; scale: ctc_scale)
    gender_query: int | None = None  # the query per window whose clip mean is classified; None: all tokens
    gender_labels: list[str] = dataclasses.field(default_factory=lambda: ["male", "female"])  # one token each
    time_mask_ratio: float = 0.0  # share of each clip's Whisper frames zeroed in training (train/masking.py); 0 = off
    time_mask_span: int = 10  # frames per time mask (10 = 0.2 s at Whisper's 50 frames/s)
    channel_mask_ratio: float = 0.0  # share of each clip's Whisper channels zeroed in training; 0 = off
    lm_weight: float = 1.0  # weight of the LM loss; 0 skips the LLM (connector-only CTC warm-up, needs ctc_weight)
    unfreeze: list[str] = dataclasses.field(default_factory=list)  # extra param-name substrings to train
    train_only: list[str] = dataclasses.field(default_factory=list)  # if set, train only names containing one
    max_steps: int = 0  # stop after this many optimizer steps in total (0 = the whole schedule)
    save_every: int = 0  # checkpoint every N optimizer steps (0 = at the end of each epoch only)
    keep_last: int = 3  # step checkpoints kept (older ones are deleted)
    max_skipped_updates: int = 10  # updates skipped in a row (NaN/inf gradient) that stop the run as diverged; 0 = never
    resume: bool = False  # continue from the latest checkpoint in output_dir (same as --resume)
    valid_every: int = 0  # validation every N optimizer steps (0 = at the end of each epoch)
    valid_max_batches: int = 0  # cap on validation batches per rank (0 = the whole set)
    valid_listening: bool = True  # also score each validation clip with another clip's audio: listening_gap
    num_sample_generations: int = 3  # validation clips answered (greedy) and logged at each validation
    sample_max_new_tokens: int = 60  # length cap of those answers
    disable_dropout: bool = False  # set every dropout to 0 (exact multi-process equivalence tests)
    parallel: str = "ddp"  # ddp, or fsdp (shards the LLM's decoder layers across ranks)
    loss_normalization: str = "tokens"  # tokens: mean over every target token of the global batch;
    #                                     batch: the reference's mean per micro-batch, averaged
    progress: bool = True  # tqdm bar on rank 0
    plot: bool = True  # loss/lr PNG at the end (matplotlib)
    export_reference: bool = True  # also write final/salmonn.pth in the reference layout
    dist_timeout_minutes: int = 30  # collective timeout


@dataclasses.dataclass
class DatasetsConfig:
    # --- reference keys (configs/config.yaml `datasets:`) ---
    train_ann_path: list[str] = dataclasses.field(default_factory=list)  # annotation JSON / JSONL (one or more)
    valid_ann_path: list[str] = dataclasses.field(default_factory=list)  # validation manifests ([] = none)
    test_ann_path: list[str] = dataclasses.field(default_factory=list)  # accepted; `salmonn eval` tests
    # --- additions ---
    cache_dir: str = ""  # on-disk cache of the frozen encoders' outputs ("" = off)
    cache_dtype: str = "float32"  # float32 (exact) or float16 / bfloat16 (half the disk)
    length_bucketing: bool = True  # batch clips of similar length together
    bucket_factor: int = 50  # global batches per sorted bucket
    validate: bool = True  # check every record and file before training starts
    max_listed_errors: int = 20  # problems shown in the validation error


@dataclasses.dataclass
class ActivationConfig:
    """Stage 3 (activation tuning): stories the stage-2 model writes under a reduced LoRA scale."""
    source_ann_path: list[str] = dataclasses.field(default_factory=list)  # clips to tell stories about
    source_tasks: list[str] = dataclasses.field(default_factory=lambda: ["audiocaption", "audiocaption_v2"])
    num_stories: int = 12  # stories kept (the paper: 12)
    max_candidates: int = 48  # clips tried at most to find them
    generation_lora_scale: float = 0.5  # LoRA scale while writing (the paper: scaling 2.0 instead of 4.0)
    story_task: str = "audio_story_telling"  # prompt-file task of the instruction (and of the stories)
    story_prompt: str = ("Based on the audio, write a story in detail. Your story should be highly related to "
                         "the audio.")  # used when the prompt file has no story_task
    judge: str = "audio_story_telling"  # salmonn.data.following rule that decides what is kept
    min_stories: int = 1  # fewer good stories than this is an error
    stories_path: str = ""  # where the stories go ("" = OUTPUT_DIR/stories.jsonl); reused on --resume


@dataclasses.dataclass
class TrainConfig:
    config: Config  # the whole config (model:, generate: and the sections below)
    run: RunConfig
    datasets: DatasetsConfig
    activation: ActivationConfig
    source: str = ""


_CHOICES = {("run", "parallel"): ("ddp", "fsdp"), ("run", "amp_dtype"): ("bfloat16", "float16"),
            ("run", "loss_normalization"): ("tokens", "batch"),
            ("run", "connector_init"): ("", "data"),
            ("run", "stage"): ("", "pretrain", "instruct", "activation"),
            ("datasets", "cache_dtype"): ("float32", "float16", "bfloat16")}
_PATHS = {"datasets": ("train_ann_path", "valid_ann_path", "test_ann_path", "cache_dir"),
          "run": ("init_from",), "activation": ("source_ann_path", "stories_path")}


def split_overrides(overrides: list[str] | tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(model/generate overrides for salmonn.config, run/datasets/activation overrides for this module)."""
    ours, theirs = [], []
    for item in overrides:
        (ours if item.split("=", 1)[0].split(".", 1)[0] in SECTIONS else theirs).append(item)
    return theirs, ours


def _set_nested(raw: dict, item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value")
    key, value = item.split("=", 1)
    parts = key.split(".")
    if len(parts) < 2:
        raise ConfigError(f"override {item!r}: write section.key=value (run., datasets. or activation.)")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part} is not a section")
    node[parts[-1]] = yaml.safe_load(value) if value else ""


def _resolve(value: str, base: Path | None) -> str:
    if not value or base is None or Path(value).is_absolute():
        return value
    candidate = base / value
    return str(candidate.resolve()) if candidate.exists() else value


def build_train_config(config: Config, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Typed run/datasets/activation sections of a loaded Config, with their overrides applied."""
    where = config.source or "<config>"
    raw = {s: dict(config.extra.get(s) or {}) for s in SECTIONS}
    for s in SECTIONS:
        if not isinstance(config.extra.get(s) or {}, dict):
            raise ConfigError(f"{where}: section {s!r} must be a mapping")
    if "optims" in raw["run"]:
        raw["run"]["optims"] = dict(raw["run"]["optims"] or {})
    unknown = [k for k in config.extra if k not in SECTIONS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], ["model", "generate", *SECTIONS], n=1)
        raise ConfigError(f"{where}: unknown section {unknown[0]!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    for item in overrides:
        _set_nested(raw, item)
    run = build_section(RunConfig, raw["run"], f"{where} [run]")
    datasets = build_section(DatasetsConfig, raw["datasets"], f"{where} [datasets]")
    activation = build_section(ActivationConfig, raw["activation"], f"{where} [activation]")
    sections = {"run": run, "datasets": datasets, "activation": activation}
    for (section, key), allowed in _CHOICES.items():
        if getattr(sections[section], key) not in allowed:
            raise ConfigError(f"{where} [{section}]: {key} must be one of {allowed}, "
                              f"got {getattr(sections[section], key)!r}")
    base = Path(config.source).parent if config.source else None
    for section, keys in _PATHS.items():
        obj = sections[section]
        for key in keys:
            value = getattr(obj, key)
            setattr(obj, key, [_resolve(v, base) for v in value] if isinstance(value, list) else _resolve(value, base))
    _check(run, datasets, where)
    queries = config.model.num_speech_query_token
    if run.ctc_query is not None and not 0 <= run.ctc_query < queries:
        raise ConfigError(f"{where} [run]: ctc_query {run.ctc_query} is not one of the {queries} queries per window "
                          f"(model.num_speech_query_token); use 0..{queries - 1}, or null for every token")
    if run.gender_query is not None and not 0 <= run.gender_query < queries:
        raise ConfigError(f"{where} [run]: gender_query {run.gender_query} is not one of the {queries} queries per "
                          f"window (model.num_speech_query_token); use 0..{queries - 1}, or null for every token")
    return TrainConfig(config=config, run=run, datasets=datasets, activation=activation, source=config.source)


def _check(run: RunConfig, datasets: DatasetsConfig, where: str) -> None:
    positive = {"batch_size_train": run.batch_size_train, "batch_size_eval": run.batch_size_eval,
                "accum_grad_iters": run.accum_grad_iters, "keep_last": run.keep_last,
                "optims.max_epoch": run.optims.max_epoch, "bucket_factor": datasets.bucket_factor}
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{where}: {key} must be >= 1, got {value}")
    for key in ("time_mask_ratio", "channel_mask_ratio"):
        if not 0 <= getattr(run, key) < 1:
            raise ConfigError(f"{where} [run]: {key} must be in [0, 1), got {getattr(run, key)}")
    if run.max_skipped_updates < 0:
        raise ConfigError(f"{where} [run]: max_skipped_updates must be >= 0 (0 = never stop), got "
                          f"{run.max_skipped_updates}")
    if run.time_mask_span < 1:
        raise ConfigError(f"{where} [run]: time_mask_span must be >= 1 frame, got {run.time_mask_span}")
    if run.gender_weight < 0:
        raise ConfigError(f"{where} [run]: gender_weight must be >= 0, got {run.gender_weight}")
    if run.lm_weight < 0 or run.ctc_weight < 0 or run.lm_weight + run.ctc_weight == 0:
        raise ConfigError(f"{where} [run]: lm_weight ({run.lm_weight}) and ctc_weight ({run.ctc_weight}) must be >= 0 "
                          "and not both 0")
    if not run.epoch_based and run.iters_per_epoch % run.accum_grad_iters:
        raise ConfigError(f"{where} [run]: iters_per_epoch ({run.iters_per_epoch}) must be a multiple of "
                          f"accum_grad_iters ({run.accum_grad_iters})")


def load_train_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a training YAML (model:, generate:, run:, datasets:, activation:) and apply key=value overrides."""
    model_overrides, train_overrides = split_overrides(list(overrides))
    return build_train_config(load_config(path, model_overrides), train_overrides)


def train_config_to_dict(tc: TrainConfig) -> dict:
    """The YAML-shaped dict of a training config (saved next to checkpoints)."""
    from ..config import config_to_dict
    out = config_to_dict(tc.config)
    out.update(run=dataclasses.asdict(tc.run), datasets=dataclasses.asdict(tc.datasets),
               activation=dataclasses.asdict(tc.activation))
    return out
