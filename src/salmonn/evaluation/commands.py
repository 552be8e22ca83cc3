"""`salmonn eval` (heavy imports stay inside the function: `salmonn --help` stays fast)."""

from __future__ import annotations

from pathlib import Path

from salmonn.errors import SalmonnError


def eval_command(manifest: str, task: str, config: str | None = None, output: str = "salmonn-eval",
                 batch_size: int = 8, lora_scale: str | None = None, prompt: str | None = None,
                 no_java: bool = False, restart: bool = False, overrides: list[str] = ()) -> None:
    """Evaluate a model on one task of a test manifest and write the report.

    Answers every record of MANIFEST (JSONL or the reference's annotation JSON; records naming another task are
    skipped) in batches, scores them (WER/CER/PER, BLEU, CIDEr-D/METEOR/SPICE/SPIDEr, accuracy, following rate,
    story diversity; spoken questions: same answer as the LLM gives to the typed question, and echo rate), and
    writes to --output: <task>.scaling-<s>.jsonl per sample, <task>.summary.json, summary.json, report.md (with
    the paper's SALMONN-13B numbers, issue 15's spoken-QA targets and every metric not computed, with why),
    text_answers.jsonl (spoken QA) and, for sweeps, lora_sweep.png. Re-running resumes; --restart starts the task over.

    The instruction is --prompt, else the task's entry in model.test_prompt_path (the reference's
    test_prompt.json loads as is), else a built-in table; '{}' takes each record's Q.
    --lora-scale 4,2 gives absolute LoRA scalings (alpha / r; the released models are trained at 4);
    a trailing x makes a value relative to the trained scaling (1x,0.5x). Decoding options are config overrides
    (num_beams=1 max_new_tokens=64). --no-java skips METEOR and SPICE (Java).
    Under `torchrun --nproc_per_node N` each process answers every N-th sample and rank 0 merges and scores.

    Options:
      manifest: the test manifest (JSONL or annotation JSON)
      task: the task to score (asr, audiocaption, QA, ...: the records whose "task" is this)
      config: the model's YAML; default: SALMONN-mini
      output: the report folder (one folder can hold a whole task suite of one model)
      batch_size: clips per generate call
      lora_scale: LoRA scalings to sweep, absolute (4,2) or relative to the trained one (1x,0.5x)
      prompt: the instruction instead of the test prompt file's
      no_java: skip METEOR and SPICE (they need java)
      restart: answer every sample again instead of resuming
    """
    from salmonn.config import load_config
    from salmonn.evaluation.run import (Distributed, evaluate, instruction_for, parse_lora_scales, plan_items,
                                        require_eval_extra)

    require_eval_extra()  # one line saying what to install, before the metrics are imported
    from salmonn.evaluation.metrics import TASK_METRICS

    if task not in TASK_METRICS:  # check the cheap things before loading the model
        raise SalmonnError(f"task {task!r} has no metric; known tasks: {', '.join(sorted(TASK_METRICS))}")
    if config is None:
        from salmonn.defaults import default_config_path
        config = default_config_path()
    cfg = load_config(config, list(overrides))
    parse_lora_scales(lora_scale, cfg.model.lora_alpha / cfg.model.lora_rank, cfg.model.lora_scale)
    plan_items(manifest, task, instruction_for(task, prompt, cfg.model.test_prompt_path or None))
    from salmonn.builder import load_model

    with Distributed.from_env() as dist:
        if dist.world_size > 1 and cfg.model.device == "auto":
            import torch
            if torch.cuda.is_available():  # one GPU per local rank (ranks share GPUs when there are fewer)
                cfg.model.device = f"cuda:{dist.local_rank % torch.cuda.device_count()}"
        model = load_model(cfg)
        summary = evaluate(model, manifest, task, output, batch_size=batch_size, lora_scales=lora_scale,
                           prompt=prompt, use_java=not no_java, restart=restart, dist=dist)
    if summary is not None:
        from salmonn.evaluation.report import markdown_report
        print(markdown_report({task: summary}, title=f"{task} ({summary['n_samples']} samples)"), end="")
        print(f"\nwritten to {Path(output).resolve()}: report.md, summary.json, {task}.summary.json, "
              + ", ".join(r["samples_file"] for r in summary["runs"])
              + (", lora_sweep.png" if (Path(output) / "lora_sweep.png").is_file() else ""))
        refuse_failed_clips(summary, Path(output))


def refuse_failed_clips(summary: dict, output: Path) -> None:
    """Exit 1 (as `salmonn infer` does) when clips could not be used: a typo in a path must not pass silently."""
    failed = [run for run in summary["runs"] if run.get("failed", {}).get("count")]
    if failed:
        worst = max(failed, key=lambda run: run["failed"]["count"])
        raise SalmonnError(f"{worst['failed']['count']} of {summary['n_samples']} clips failed and were scored as "
                           f"empty answers (first: {worst['failed']['first']}); each error is in the 'error' field "
                           f"of {', '.join(str(output / run['samples_file']) for run in failed)}")
