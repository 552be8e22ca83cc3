"""Stage 3, activation tuning (paper §3.3): the stage-2 model writes stories under a reduced LoRA scale, the
ones that follow the instruction are kept, and LoRA alone is then tuned on them at the normal scale.

The paper: after instruction tuning the model over-fits to the trained tasks (asked for a story, it captions);
halving the LoRA scaling (2.0 instead of 4.0) brings the LLM's own abilities back, so the stories written that
way -- 12 of them, about captioning clips -- teach the full-scale model to answer untrained instructions again.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import ConfigError
from ..frames import SAMPLE_RATE
from ..jsonl import write_jsonl
from ..manifest import iter_records
from . import dist
from .data import DataError, PromptBook, load_segments, load_samples

if TYPE_CHECKING:
    from .trainer import Trainer


def write_stories(trainer: Trainer) -> Path:
    """Generate, judge and store the stories; returns the JSONL manifest to train on (reused on --resume)."""
    act, run, m = trainer.tc.activation, trainer.tc.run, trainer.tc.config.model
    path = Path(act.stories_path or Path(run.output_dir) / "stories.jsonl")
    if trainer.resume and path.is_file():
        trainer.log(f"activation: reusing the stories in {path}")
        return path
    from ..data.following import FOLLOWING_RULES
    if act.judge not in FOLLOWING_RULES:
        raise ConfigError(f"activation.judge: {act.judge!r} is not a following rule ({sorted(FOLLOWING_RULES)})")
    prompts = PromptBook.load(m.prompt_path, m.prompt_template, {act.story_task: [act.story_prompt]})
    samples, captions = _candidates(trainer, prompts, path)
    results = _tell_stories(trainer, prompts, samples, captions, FOLLOWING_RULES[act.judge])
    kept = [r for r in results if r["follows"]][:act.num_stories]
    trainer.log(f"activation: {sum(r['follows'] for r in results)} of {len(results)} stories written at LoRA scale "
                f"{act.generation_lora_scale:g} follow the instruction; keeping {len(kept)}")
    if trainer.env.main:
        write_jsonl(path.parent / "stories_all.jsonl", results)
    if len(kept) < act.min_stories:
        raise DataError(f"activation: only {len(kept)} of {len(results)} generated stories follow the instruction "
                        f"(need activation.min_stories={act.min_stories}); see {path.parent / 'stories_all.jsonl'}. "
                        f"Try a lower activation.generation_lora_scale or more activation.max_candidates")
    if trainer.env.main:
        write_jsonl(path, [{"path": r["path"], "text": r["story"], "task": act.story_task,
                            **({"expand_wav": r["expand_wav"]} if r["expand_wav"] else {})} for r in kept])
    dist.barrier()
    return path


def _candidates(trainer: Trainer, prompts: PromptBook, path: Path) -> tuple[list, dict[str, str]]:
    """Up to max_candidates clips of the source tasks (seeded choice), checked like training data; and their
    captions by path."""
    tc, env = trainer.tc, trainer.env
    act, run, m = tc.activation, tc.run, tc.config.model
    sources = act.source_ann_path or tc.datasets.train_ann_path
    records = []
    for manifest in sources:
        records += [r for _, r in iter_records(manifest) if r.get("task") in act.source_tasks]
    if not records:
        raise DataError(f"activation: no record with a task in {act.source_tasks} in {', '.join(sources)} "
                        f"(activation.source_ann_path / source_tasks)")
    rng = np.random.default_rng([run.seed, 0xAC7])
    chosen = [records[i] for i in rng.permutation(len(records))[:act.max_candidates]]
    captions = {r["path"]: r.get("text", "") for r in chosen}
    relabelled = [{**r, "task": act.story_task, "text": r.get("text") or "-"} for r in chosen]
    tmp = path.parent / f".{path.name}.candidates.jsonl"
    if env.main:
        write_jsonl(tmp, relabelled)
    dist.barrier()
    samples = load_samples([str(tmp)], prompts, trainer.model.tokenizer, m, what="activation source clips")
    dist.barrier()
    if env.main:
        tmp.unlink(missing_ok=True)
    return samples, captions


def _tell_stories(trainer: Trainer, prompts: PromptBook, samples: list, captions: dict[str, str], rule) -> list[dict]:
    """Every candidate's story at the generation LoRA scale and the rule's verdict, in candidate order."""
    env, model = trainer.env, trainer.model
    act, run, m = trainer.tc.activation, trainer.tc.run, trainer.tc.config.model
    # FSDP ranks must run the same forwards, so every rank writes every story; DDP ranks split the work.
    mine = samples if trainer.fsdp else samples[env.rank::env.world]
    batch = max(1, run.batch_size_eval)
    results = []
    previous = model.lora_scale
    model.eval()
    model.set_lora_scale(act.generation_lora_scale)
    try:
        with torch.no_grad():
            for start in range(0, len(mine), batch):
                chunk = mine[start:start + batch]
                instructions = [prompts.sample(act.story_task, None, np.random.default_rng([run.seed, 0x5707, i]))
                                for i in range(start, start + len(chunk))]
                audio = [(np.concatenate(load_segments(s, m)), SAMPLE_RATE) for s in chunk]
                answers = model.generate(audio, instructions, templated=True)
                for sample, prompt, answer in zip(chunk, instructions, answers):
                    caption = captions.get(sample.path, "")
                    good = bool(answer.text) and rule(answer.text, {"caption": caption})
                    results.append({"path": sample.path, "expand_wav": sample.expand, "caption": caption,
                                    "prompt": prompt, "story": answer.text, "follows": good,
                                    "order": samples.index(sample)})
    finally:
        model.set_lora_scale(previous)
        model.train()
    if not trainer.fsdp:
        results = [r for part in dist.all_gather_objects(results) for r in part]
    results.sort(key=lambda r: r["order"])
    return results
