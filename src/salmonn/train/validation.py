"""Validation during training: loss, token accuracy and the listening gap, then a few greedy answers.

`listening_gap` is the validation loss with each clip's audio swapped for the next clip's minus the loss with
its own: near 0 means the connector's tokens carry nothing the LLM uses, which a falling loss alone does not show.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from . import dist
from .data import collate, eval_batches
from .state import rng_state, set_rng_state
from .step import to_device

if TYPE_CHECKING:
    from .trainer import Trainer


def validate(trainer: Trainer) -> dict | None:
    """Score the validation set (all ranks), log and record the result; None without validation data.

    The RNG states are restored afterwards, so validating does not change the training run."""
    if trainer.valid_set is None:
        return None
    saved = rng_state()
    trainer.model.eval()
    try:
        sums = dist.all_reduce_sum(_validation_sums(trainer))
        result = {"type": "valid", "step": trainer.step, "loss": float(sums[0] / sums[1]),
                  "accuracy": float(sums[2] / sums[1]), "tokens": int(sums[1])}
        message = f"step {trainer.step}: valid loss {result['loss']:.4f}, token accuracy {result['accuracy']:.3f}"
        if sums[5] > 0:
            result["listening_gap"] = float((sums[4] - sums[3]) / sums[5])
            message += (f", listening gap {result['listening_gap']:.4f} (loss with another clip's audio minus "
                        "with its own: ~0 means the model ignores the audio)")
        trainer.write_jsonl("metrics.jsonl", result)
        trainer.log(message)
        sample_generations(trainer)
        return result
    finally:
        trainer.model.train()
        set_rng_state(saved)


def _validation_sums(trainer: Trainer) -> torch.Tensor:
    """This rank's weighted sums: NLL, tokens, correct tokens; then NLL, NLL with another clip's audio and
    tokens of the batches of two or more clips (the listening gap)."""
    run, env, step = trainer.run, trainer.env, trainer.step_module
    sums = torch.zeros(6, dtype=torch.float64, device=trainer.collective_device())
    for keys in eval_batches(len(trainer.valid_set), run.batch_size_eval, env.rank, env.world, run.valid_max_batches):
        batch = to_device(collate([trainer.valid_set[k] for k in keys]), env.device)
        with trainer.autocast():
            tokens = step.audio_tokens(batch)
            nll, count, correct = step.per_sample(batch, tokens)
            other = step.per_sample(batch, tokens[1:] + tokens[:1])[0] \
                if run.valid_listening and len(keys) > 1 else None
        w = batch["weights"].to(nll.device)
        row = [(nll * w).sum(), (count * w).sum(), (correct * w).sum()]
        row += [(nll * w).sum(), (other * w).sum(), (count * w).sum()] if other is not None else [0 * nll.sum()] * 3
        sums += torch.stack(row).double().to(sums.device)
    return sums


@torch.no_grad()
def sample_generations(trainer: Trainer) -> None:
    """Greedy answers to the first run.num_sample_generations validation clips: logged and in samples.jsonl."""
    k = min(trainer.run.num_sample_generations, len(trainer.valid_set))
    if k <= 0:
        return
    keys = [(0, i, 1.0) for i in range(k)]
    batch = to_device(collate([trainer.valid_set[key] for key in keys]), trainer.env.device)
    with trainer.autocast():
        tokens = trainer.step_module.audio_tokens(batch)
        answers = trainer.model.generate(None, batch["prompts"], templated=True, audio_tokens=tokens, num_beams=1,
                                         do_sample=False, max_new_tokens=trainer.run.sample_max_new_tokens)
    for i, answer in enumerate(answers):
        sample = trainer.valid_set.samples[i]
        record = {"step": trainer.step, "source": sample.source, "task": sample.task, "target": sample.text,
                  "answer": answer.text}
        trainer.write_jsonl("samples.jsonl", record)
        trainer.log(f"  sample {i}: [{sample.task}] {answer.text[:100]!r} (target {sample.text[:60]!r})")
