"""The run folder (`run.output_dir`): what an earlier run left there, whether a checkpoint may be resumed with
this config, the per-step logs, and the final export.

A fresh run refuses a folder that holds an earlier run's checkpoints or final/: pruning keeps the highest step
numbers, so a new run's checkpoints would be deleted in favour of the old ones and `--resume` would continue the
old run. `--restart` clears the folder first; `--resume` continues the earlier run, and only with the config it
was trained with (except the settings below that do not change what is trained).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import yaml

from ..checkpoint import OURS_CONFIG, TMP_SUFFIX, remove_leftovers, save_ours, save_reference_pth
from ..errors import ConfigError
from ..jsonl import append_jsonl, read_jsonl, write_jsonl
from .config import TrainConfig, train_config_to_dict
from .state import STATE_FILE, read_json, step_dirs, writing

LOGS = ("metrics.jsonl", "samples.jsonl")
RESTART_CLEARS = ("checkpoints", "final", *LOGS, "curves.png")

# Settings that may change on --resume: where and how fast it runs, logging, validation and saving cadence.
# batch_size_train may change with the number of processes as long as the global batch stays (checked apart).
RESUMABLE_CHANGES = {
    *(f"run.{key}" for key in (
        "output_dir", "resume", "max_steps", "evaluate", "log_freq", "num_workers", "device", "progress", "plot",
        "save_every", "keep_last", "max_skipped_updates", "valid_every", "valid_max_batches", "valid_listening",
        "num_sample_generations", "sample_max_new_tokens", "dist_timeout_minutes", "export_reference",
        "use_distributed", "world_size", "dist_url", "gpu", "use_wandb", "wandb_project", "wandb_local_dir",
        "wandb_name", "wandb_entity", "batch_size_train", "batch_size_eval")),
    *(f"datasets.{key}" for key in ("valid_ann_path", "test_ann_path", "cache_dir", "validate", "max_listed_errors")),
}


# ------------------------------------------------------------------ an earlier run


def earlier_run(out: Path) -> str | None:
    """What an earlier run left in `out` that a fresh run would mix with its own, in words, or None."""
    steps = step_dirs(out / "checkpoints")
    if steps:
        return f"checkpoints up to step {int(steps[-1].name.split('_')[1])}"
    if (out / "final").exists():
        return "a final/ checkpoint"
    return None


def refuse_earlier_run(out: Path) -> None:
    found = earlier_run(out)
    if found is not None:
        raise ConfigError(f"{out}: holds an earlier run ({found}); continue it with "
                          f"--resume, start over with --restart (deletes {', '.join(RESTART_CLEARS)}), or set "
                          "another run.output_dir")


def clear_earlier_run(out: Path) -> None:
    """--restart: delete what an earlier run wrote to `out` (its checkpoints, final/, logs and plot)."""
    for name in RESTART_CLEARS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def check_writable(out: Path) -> None:
    """Create run.output_dir and write a probe there: a read-only folder fails in one line before anything slow."""
    probe = out / f".write-probe{TMP_SUFFIX}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"{out}: cannot write to run.output_dir ({err.strerror or err}); fix its permissions or "
                          "set another run.output_dir") from None


# ------------------------------------------------------------------ resuming


def remove_partial_files(out: Path) -> list[Path]:
    """On resume: the `.*.tmp` files and folders a killed checkpoint write or final export left behind."""
    return [p for d in (out, out / "checkpoints", out / "final") for p in remove_leftovers(d)]


def discard_later_checkpoints(directory: Path) -> list[Path]:
    """--resume-from an earlier checkpoint: the step folders after it belong to the run being replaced (they
    would otherwise outrank the new checkpoints when pruning and on the next --resume)."""
    step = int(directory.name.split("_")[1])
    later = [d for d in step_dirs(directory.parent) if int(d.name.split("_")[1]) > step]
    for d in later:
        shutil.rmtree(d)
    return later




def check_resumable(directory: Path, tc: TrainConfig, world: int) -> None:
    """Refuse to resume a checkpoint with another global batch, accumulation or seed (the data position would
    be wrong) or with a config that changes what is trained (e.g. another init_lr)."""
    state = read_json(directory / STATE_FILE)
    run, global_batch = tc.run, tc.run.batch_size_train * world
    if (state["global_batch"], state["accum_grad_iters"], state["seed"]) != (global_batch, run.accum_grad_iters,
                                                                              run.seed):
        raise ConfigError(f"{directory}: was trained with global batch {state['global_batch']}, accum "
                          f"{state['accum_grad_iters']}, seed {state['seed']}; this run has {global_batch}, "
                          f"{run.accum_grad_iters}, {run.seed}: the data position cannot be resumed")
    saved_file = directory / OURS_CONFIG
    if not saved_file.is_file():
        return
    current = json.loads(json.dumps(train_config_to_dict(tc), default=str))  # as saved: tuples become lists
    changed = config_changes(read_json(saved_file), current)
    if changed:
        listed = "; ".join(f"{key}: {then!r} there, {now!r} here" for key, then, now in changed[:5])
        more = f" (and {len(changed) - 5} more)" if len(changed) > 5 else ""
        raise ConfigError(f"{directory}: was trained with another config: {listed}{more}. Resume with the config "
                          "it was trained with, or start over with --restart")


def config_changes(then: dict, now: dict) -> list[tuple[str, object, object]]:
    """(dotted key, saved value, current value) of every setting that differs and matters for training.

    Keys present on one side only (written by another version) are not compared."""
    old, new = _flatten(then), _flatten(now)
    return [(key, old[key], new[key]) for key in sorted(old.keys() & new.keys())
            if old[key] != new[key] and not _may_change(key)]


def _may_change(key: str) -> bool:
    if key in RESUMABLE_CHANGES or key.startswith("generate."):  # decoding: sample answers only
        return True
    return key.startswith("model.") and key.rsplit(".", 1)[-1] == "device"


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# ------------------------------------------------------------------ logs


def append_log(path: Path, record: dict) -> None:
    """One line at the end of a training log (metrics.jsonl, samples.jsonl); a full disk is one clear error."""
    with writing(path, "the log"):
        append_jsonl(path, [record])


def keep_logs_up_to(out: Path, step: int) -> None:
    """On resume: drop the log lines after `step` (written by a run that was killed after its last checkpoint)
    and a line cut off by a full disk or a power loss."""
    for name in LOGS:
        path = out / name
        if path.is_file():
            write_jsonl(path, [row for row in read_jsonl(path) if row.get("step", 0) <= step])


# ------------------------------------------------------------------ final export


def export_final(tensors: dict, tc: TrainConfig, final: Path) -> None:
    """final/: trainable.safetensors + config.json, salmonn.pth (reference layout), infer.yaml."""
    with writing(final, "the final export"):
        _export_final(tensors, tc, final)


def _export_final(tensors: dict, tc: TrainConfig, final: Path) -> None:
    save_ours(tensors, train_config_to_dict(tc), final)
    if tc.run.export_reference:
        save_reference_pth(tensors, final / "salmonn.pth")
    model_section = dataclasses.asdict(tc.config.model)
    for key in ("llama_path", "whisper_path", "beats_path", "prompt_path", "test_prompt_path"):
        value = model_section[key]
        if value and Path(value).exists():  # absolute, so the YAML works from final/
            model_section[key] = str(Path(value).resolve())
    model_section.update(ckpt="trainable.safetensors", speech_llama_proj_model="", device="auto", lora_scale=1.0)
    run = tc.run
    if run.ctc_weight > 0:  # what CTC rescoring (generate.ctc_weight) must read: the query and scale it was trained on
        query = run.ctc_query if run.ctc_query is not None or tc.config.model.num_speech_query_token > 1 else 0
        model_section.update(ctc_query=query, ctc_scale=run.ctc_scale, ctc_blank=run.ctc_blank)
    infer = {"model": model_section, "generate": dataclasses.asdict(tc.config.generate)}
    (final / "infer.yaml").write_text(
        "# written by `salmonn train`: salmonn infer --config THIS_FILE --audio a.wav --prompt \"...\"\n"
        + yaml.safe_dump(infer, sort_keys=False, allow_unicode=True))
