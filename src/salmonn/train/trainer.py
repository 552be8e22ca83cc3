"""The training loop: one process, DDP or FSDP under torchrun; exact resume; metrics, validation, plots.

One *iteration* is one micro-batch of `batch_size_train` samples on every rank; one optimizer *step* is
`accum_grad_iters` iterations. The default loss of a step is the mean over every target token of all its
micro-batches on all ranks -- exactly the loss one process computes on the whole global batch -- so N processes
take the same steps as one process with N times the batch (`loss_normalization: batch` gives the reference's
mean of per-micro-batch means instead).

Around the loop: step.py (the forward), parallel.py (DDP / FSDP), validation.py, rundir.py (an earlier run in
the folder, resume checks, logs, the final export), state.py (checkpoint files).
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn

from ..builder import load_model
from ..checkpoint import nonfinite
from ..errors import CheckpointError, ConfigError, SalmonnError
from ..model import SALMONN
from . import dist, rundir
from .cache import FrozenCache, encoder_identity, fill_cache
from .config import TrainConfig, train_config_to_dict
from .data import DataError, GlobalBatchSampler, PromptBook, TrainDataset, collate, load_samples
from .parallel import FsdpNoSync, average_grads, clip_grad_norm, shard_llm, wrap_ddp
from .schedule import WarmupCosine, build_optimizer
from .state import (STATE_FILE, check_checkpoint, full_tensor, latest_checkpoint, load_optimizer_state,
                    optimizer_state, prune, read_checkpoint, rng_state, seed_everything, set_rng_state,
                    write_checkpoint, writing)
from .step import TrainStep, to_device
from .validation import validate

__all__ = ["Trainer", "TrainStep", "train"]

ENCODER_PREFIXES = ("speech_encoder.", "beats.")


class Diverged(SalmonnError):
    """The loss or the gradients stopped being finite: the run cannot go on (and exports nothing)."""


class Trainer:
    def __init__(self, tc: TrainConfig, resume: bool = False, restart: bool = False,
                 resume_from: str | Path | None = None):
        if restart and (resume or tc.run.resume or resume_from):
            raise ConfigError("--restart deletes the run that --resume would continue: give one of them")
        self.tc, self.run = tc, tc.run
        self.resume, self.restart = bool(resume or tc.run.resume or resume_from), restart
        self.resume_from = Path(resume_from) if resume_from else None
        self.skipped_in_a_row = 0  # optimizer updates skipped for non-finite gradients since the last good one
        self.env = dist.init(self.run.device, self.run.dist_timeout_minutes)
        self.out = Path(self.run.output_dir)
        self.ckpt_root = self.out / "checkpoints"
        self.bar = None
        self.step = 0  # optimizer steps done
        self.position = 0  # global batches consumed
        self.fsdp = self.run.parallel == "fsdp" and self.env.distributed

    # ------------------------------------------------------------------ logging
    def log(self, message: str) -> None:
        if not self.env.main:
            return
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def write_jsonl(self, name: str, record: dict) -> None:
        if self.env.main:
            rundir.append_log(self.out / name, record)

    # ------------------------------------------------------------------ setup
    def setup(self) -> "Trainer":
        run = self.run
        if run.use_wandb:
            self.log("note: run.use_wandb is ignored; metrics go to metrics.jsonl")
        self._open_run_folder()
        self._load_data()  # validate every manifest before the (slow) model load: bad data fails fast
        self._build_model()
        self._wrap()
        if run.stage == "activation":
            from .activation import write_stories
            self.train_samples = self._samples([str(write_stories(self))], "activation stories")
        self._prepare_data()
        named = self._named_trainable()
        self.names = {id(p): n for n, p in named}
        self.optimizer = build_optimizer(named, run.optims)
        self.steps_per_epoch = self.iters_per_epoch // run.accum_grad_iters
        self.schedule = WarmupCosine(run.optims, self.iters_per_epoch, run.accum_grad_iters)
        self._setup_precision()
        if self.resume_dir is not None:
            self._restore()
        else:
            seed_everything(run.seed + self.env.rank)
            if self.env.main:
                for name in rundir.LOGS:
                    (self.out / name).unlink(missing_ok=True)
        self.train_loader = self._loader(self.train_set, GlobalBatchSampler(
            self.train_lengths, run.batch_size_train, self.env.rank, self.env.world, run.seed,
            self.tc.datasets.length_bucketing, self.tc.datasets.bucket_factor, start=self.position))
        return self

    def _open_run_folder(self) -> None:
        """Find the checkpoint to resume and check it fits this config, or clear (--restart) or refuse a folder
        that holds an earlier run; all before anything slow loads."""
        self.resume_dir = self._resume_dir()
        if self.resume_dir is not None:
            check_checkpoint(self.resume_dir)
            rundir.check_resumable(self.resume_dir, self.tc, self.env.world)
            dist.barrier()
            if self.env.main:
                self._tidy_for_resume()
        elif self.resume:
            self.log(f"resume: no checkpoint in {self.ckpt_root}; starting from the beginning")
        elif self.restart and self.env.main:
            rundir.clear_earlier_run(self.out)
        elif not self.restart:
            rundir.refuse_earlier_run(self.out)
        dist.barrier()
        if self.env.main:
            rundir.check_writable(self.out)

    def _resume_dir(self) -> Path | None:
        """The checkpoint to resume: --resume-from's, else the latest in checkpoints/ (None: not resuming)."""
        if self.resume_from is None:
            return latest_checkpoint(self.ckpt_root) if self.resume else None
        if not (self.resume_from / STATE_FILE).is_file() or not self.resume_from.name.startswith("step_"):
            raise ConfigError(f"--resume-from {self.resume_from}: not a step checkpoint folder "
                              f"(checkpoints/step_NNNNNNNN with {STATE_FILE})")
        if self.resume_from.resolve().parent != self.ckpt_root.resolve():
            raise ConfigError(f"--resume-from {self.resume_from}: not a checkpoint of run.output_dir {self.out}; "
                              "set run.output_dir to the run it belongs to")
        return self.resume_from

    def _tidy_for_resume(self) -> None:
        """Delete what a killed run left half-written and, with --resume-from, the checkpoints after it."""
        for path in rundir.remove_partial_files(self.out):
            self.log(f"resume: removed {path} (left by a killed write)")
        if self.resume_from is not None:
            for path in rundir.discard_later_checkpoints(self.resume_dir):
                self.log(f"resume: removed {path} (after the checkpoint resumed from)")

    def _setup_precision(self) -> None:
        run = self.run
        amp_ok = run.amp and (self.env.device.type == "cuda" or run.amp_on_cpu)
        self.amp_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[run.amp_dtype] if amp_ok else None
        if self.amp_dtype == torch.float16 and self.fsdp:
            raise ConfigError("run.amp_dtype=float16 is not supported with FSDP here; use bfloat16")
        self.scaler = torch.amp.GradScaler(self.env.device.type) if self.amp_dtype == torch.float16 else None

    def _build_model(self) -> None:
        run, env = self.run, self.env
        config = copy.deepcopy(self.tc.config)
        config.model.device = "cpu" if self.fsdp else str(env.device)
        seed_everything(run.seed)  # fresh trainable weights are the same on every rank
        model = load_model(config, load_checkpoint=False)
        if config.model.speech_llama_proj_model:
            self._load_projection(model, config.model.speech_llama_proj_model)
        init = run.init_from or config.model.ckpt
        if init:
            model.load_checkpoint(init, allow_missing=tuple(run.init_allow_missing))
            self.log(f"initialised from {init}")
        params = {k: v for k, v in model.state_dict(keep_vars=True).items() if isinstance(v, nn.Parameter)}
        for pattern in run.unfreeze:
            hits = [p for n, p in params.items() if pattern in n]
            if not hits:
                raise ConfigError(f"run.unfreeze: {pattern!r} matches no parameter name")
            for p in hits:
                p.requires_grad_(True)
        self.save_keys = [k for k, p in params.items() if p.requires_grad]
        if self.resume_dir is not None:
            model.load_checkpoint(self.resume_dir)
        bad = nonfinite({k: params[k].detach() for k in self.save_keys})
        if bad:
            source = self.resume_dir or init or "the fresh initialisation"
            raise CheckpointError(f"{source}: {len(bad)} trainable tensor(s) hold NaN or infinity (e.g. {bad[0]}); "
                                  "start from another checkpoint")
        if run.train_only:
            for name, p in params.items():
                if p.requires_grad and not any(s in name for s in run.train_only):
                    p.requires_grad_(False)
            if not any(p.requires_grad for p in params.values()):
                raise ConfigError(f"run.train_only {run.train_only}: no trainable parameter matches")
        if run.disable_dropout:
            for module in model.modules():
                if isinstance(module, nn.Dropout):
                    module.p = 0.0
        self.encoders_trainable = any(p.requires_grad for n, p in params.items() if n.startswith(ENCODER_PREFIXES))
        self.model = model.train()

    def _load_projection(self, model: SALMONN, path: str) -> None:
        """The reference's model.speech_llama_proj_model: the projection from its own file (then the ckpt)."""
        from ..checkpoint import read_state_dict
        proj = {k: v for k, v in read_state_dict(path).items() if k.startswith("speech_llama_proj.")}
        if set(proj) != {"speech_llama_proj.weight", "speech_llama_proj.bias"}:
            raise ConfigError(f"model.speech_llama_proj_model: {path} has no speech_llama_proj.weight/.bias")
        model.load_state_dict(proj, strict=False)
        self.log(f"projection initialised from {path}")

    def _named_trainable(self) -> list[tuple[str, torch.Tensor]]:
        """(reference name, parameter) of what the optimizer updates, in a fixed order."""
        seen, out = set(), []
        for name, p in self.model.state_dict(keep_vars=True).items():
            if isinstance(p, nn.Parameter) and p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append((name, p))
        return out

    def _wrap(self) -> None:
        self.step_module = TrainStep(self.model, self.encoders_trainable, self.run, self.tokenizer)
        self.engine, self.sharded, self.manual_sync = self.step_module, [], []
        if not self.env.distributed:
            if self.run.parallel == "fsdp":
                self.log("note: run.parallel=fsdp with one process: nothing to shard, training unsharded")
        elif self.fsdp:
            sharded = shard_llm(self.model, self.env)
            self.sharded, self.manual_sync = sharded.layers, sharded.replicated
            self.log(f"fsdp: {len(sharded.layers)} decoder layers sharded over {self.env.world} processes; "
                     f"{len(sharded.replicated)} replicated trainable tensors averaged after backward")
        else:
            self.engine = wrap_ddp(self.step_module, self.env)

    # ------------------------------------------------------------------ data
    def _samples(self, paths: list[str], what: str):
        """Validated samples (rank 0 reads and checks, every rank gets the result or the same error)."""
        ds, m = self.tc.datasets, self.tc.config.model
        result = None
        if self.env.main:
            try:
                result = load_samples(paths, self.prompts, self.tokenizer, m, check_files=ds.validate,
                                      max_listed=ds.max_listed_errors, what=what)
                self._check_genders(result, what)
            except (DataError, ConfigError) as err:
                result = err
        result = dist.broadcast_object(result)
        if isinstance(result, Exception):
            raise result
        return result

    def _check_genders(self, samples, what: str) -> None:
        """With run.gender_weight, every manifest "gender" must be one of run.gender_labels (checked before step 1)."""
        labels = set(self.run.gender_labels)
        bad = [s for s in samples if s.gender is not None and s.gender not in labels] if self.run.gender_weight else []
        if bad:
            shown = "\n  ".join(f"{s.source}: gender {s.gender!r}" for s in bad[:self.tc.datasets.max_listed_errors])
            raise DataError(f"{len(bad)} record(s) of the {what} have a gender that is not in run.gender_labels "
                            f"{sorted(labels)}; fix the manifest or the labels:\n  {shown}")

    def _load_data(self) -> None:
        from ..builder import load_tokenizer, resolve_model_dir
        run, ds, m = self.run, self.tc.datasets, self.tc.config.model
        extra = {self.tc.activation.story_task: [self.tc.activation.story_prompt]} if run.stage == "activation" else {}
        self.prompts = PromptBook.load(m.prompt_path, m.prompt_template, extra)
        self.tokenizer = load_tokenizer(resolve_model_dir(m.llama_path, "llama_path"))  # as SALMONN loads it
        self.train_samples = self._samples(ds.train_ann_path, "training data")
        self.valid_samples = self._samples(ds.valid_ann_path, "validation data") if ds.valid_ann_path else []

    def _prepare_data(self) -> None:
        run, m = self.run, self.tc.config.model
        train, valid = self.train_samples, self.valid_samples
        self.log(f"data: {len(train)} training samples" + (f", {len(valid)} validation samples" if valid else ""))
        cache = self._fill_cache(train + valid)
        fresh = not (run.init_from or m.ckpt or m.speech_llama_proj_model or self.resume_dir is not None)
        if run.connector_init == "data" and fresh:
            from .init import init_connector_from_data
            stats = init_connector_from_data(self.model, train, cache)
            self.log(f"connector initialised from the data ({stats['clips']} clips, {stats['frames']} frames)")
        elif run.connector_init == "data":
            self.log("run.connector_init=data ignored: the connector comes from a checkpoint")
        fe = self.model.feature_extractor
        self.train_set = TrainDataset(train, self.prompts, run.seed, m, fe, cache)
        self.valid_set = TrainDataset(valid, self.prompts, run.seed, m, fe, cache) if valid else None
        self.train_lengths = [s.length(m) for s in train]
        self.iters_per_epoch = self._iters_per_epoch(len(train))

    def _fill_cache(self, samples: list) -> FrozenCache | None:
        ds = self.tc.datasets
        if not ds.cache_dir:
            return None
        start = time.time()
        with writing(Path(ds.cache_dir), "the encoder cache (datasets.cache_dir)"):  # a full disk: one line
            cache = FrozenCache(ds.cache_dir, encoder_identity(self.tc.config.model), ds.cache_dtype)
            wrote = fill_cache(self.model, samples, cache, self.run.batch_size_eval, self.env.rank, self.env.world,
                               progress=self._progress("encoder cache") if self.env.main else None)
        wrote = int(dist.all_reduce_sum(torch.tensor([wrote], device=self.collective_device())).item())
        dist.barrier()
        self.log(f"encoder cache: {wrote} new entries in {time.time() - start:.1f} s ({cache.root})")
        return cache

    def _iters_per_epoch(self, n_train: int) -> int:
        run = self.run
        if not run.epoch_based:
            return run.iters_per_epoch
        global_batch = run.batch_size_train * self.env.world
        batches_per_epoch = n_train // global_batch
        iters = batches_per_epoch // run.accum_grad_iters * run.accum_grad_iters
        if iters == 0:
            raise DataError(f"epoch_based: {n_train} samples make {batches_per_epoch} global batches of "
                            f"{global_batch}, fewer than accum_grad_iters={run.accum_grad_iters}")
        return iters

    def collective_device(self) -> torch.device:
        return self.env.device if self.env.device.type == "cuda" else torch.device("cpu")

    def _progress(self, desc: str):
        from tqdm.auto import tqdm

        def make(total, initial=0):
            return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, file=sys.stderr,
                        disable=not (self.env.main and self.run.progress))
        return make

    def _loader(self, dataset, batch_sampler):
        workers = self.run.num_workers
        return torch.utils.data.DataLoader(
            dataset, batch_sampler=batch_sampler, num_workers=workers, collate_fn=collate,
            pin_memory=self.env.device.type == "cuda", generator=torch.Generator().manual_seed(self.run.seed),
            worker_init_fn=_one_thread if workers else None, prefetch_factor=4 if workers else None)

    # ------------------------------------------------------------------ checkpoints
    def _restore(self) -> None:
        directory = self.resume_dir
        opt_tensors, state = read_checkpoint(directory)
        load_optimizer_state(self.optimizer, self.names, opt_tensors, state["optimizer_groups"], str(directory))
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.position = state["step"], state["position"]
        rngs = state["rng"]
        if len(rngs) == self.env.world:
            set_rng_state(rngs[self.env.rank])
        else:
            self.log(f"note: checkpoint from {len(rngs)} processes, resuming on {self.env.world}: RNG streams "
                     f"are reseeded (dropout differs from an uninterrupted run)")
            seed_everything(self.run.seed + self.env.rank + 7919 * self.step)
        if self.env.main:
            rundir.keep_logs_up_to(self.out, self.step)
        self.log(f"resumed from {directory} at step {self.step}")

    def _trainable_tensors(self) -> dict[str, torch.Tensor]:
        """The trainable weights to save; Diverged when one holds NaN or infinity (never written)."""
        state = self.model.state_dict(keep_vars=True)
        tensors = {k: full_tensor(state[k].detach()) for k in self.save_keys}
        bad = nonfinite(tensors)
        if bad:
            raise Diverged(f"step {self.step}: {len(bad)} trainable tensor(s) hold NaN or infinity (e.g. {bad[0]}); "
                           f"nothing was saved: {self._way_back()}")
        return tensors

    def _way_back(self) -> str:
        last = latest_checkpoint(self.ckpt_root)
        back = f", or go back to the last checkpoint with --resume-from {last}" if last is not None else ""
        return f"lower run.optims.init_lr and start over with --restart{back}"

    def save_checkpoint(self) -> Path:
        tensors = self._trainable_tensors()
        opt_tensors, groups = optimizer_state(self.optimizer, self.names)
        rngs = dist.all_gather_objects(rng_state())
        directory = self.ckpt_root / f"step_{self.step:08d}"
        if self.env.main:
            state = {"step": self.step, "position": self.position, "epoch": self.step // self.steps_per_epoch,
                     "global_batch": self.run.batch_size_train * self.env.world,
                     "accum_grad_iters": self.run.accum_grad_iters, "seed": self.run.seed,
                     "world_size": self.env.world, "optimizer_groups": groups,
                     "scaler": self.scaler.state_dict() if self.scaler is not None else None, "rng": rngs,
                     "time": time.time()}
            write_checkpoint(directory, tensors, train_config_to_dict(self.tc), opt_tensors, state)
            prune(self.ckpt_root, self.run.keep_last)
        dist.barrier()
        return directory

    def save_final(self) -> Path:
        """final/: trainable.safetensors + config.json, salmonn.pth (reference layout), infer.yaml."""
        tensors = self._trainable_tensors()
        final = self.out / "final"
        if self.env.main:
            rundir.export_final(tensors, self.tc, final)
        dist.barrier()
        return final

    # ------------------------------------------------------------------ one step
    def _no_sync(self, skip: bool):
        if not skip or not self.env.distributed:
            return contextlib.nullcontext()
        if self.fsdp:
            return FsdpNoSync(self.sharded)
        return self.engine.no_sync()

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.env.device.type, dtype=self.amp_dtype)

    def train_step(self, micro: list[dict]) -> dict:
        env, run = self.env, self.run
        by_tokens = run.loss_normalization == "tokens"
        n_local = sum(b["n_tokens"] for b in micro)
        n_global = float(dist.all_reduce_sum(torch.tensor([n_local], dtype=torch.float64,
                                                          device=self.collective_device())).item())
        total = torch.zeros((), dtype=torch.float64, device=env.device)
        for i, batch in enumerate(micro):
            batch = to_device(batch, env.device)
            with self._no_sync(i < len(micro) - 1), self.autocast():
                loss, n = self.engine(batch)
            if by_tokens:
                scaled = loss * (n.to(loss.dtype) * env.world / n_global)
                total += loss.detach().double() * n.double()
            else:
                scaled = loss / len(micro)
                total += loss.detach().double()
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        grad_norm, skipped = self._update()
        total = dist.all_reduce_sum(total.to(self.collective_device()))
        loss = float(total) / (n_global if by_tokens else len(micro) * env.world)
        stats = {"loss": loss, "grad_norm": grad_norm, "tokens": int(n_global), "skipped": skipped}
        if self.step_module.last_ctc is not None:
            stats["ctc_loss"] = self.step_module.last_ctc  # this rank's last micro-batch, per transcript token
        if self.step_module.last_gender is not None:
            stats["gender_loss"], stats["gender_acc"] = self.step_module.last_gender  # this rank's last micro-batch
        return stats

    def _update(self) -> tuple[float, bool]:
        """Average, unscale and clip the gradients, step the optimizer (unless they are not finite), zero them;
        returns the gradient norm and whether the update was skipped."""
        if self.manual_sync:
            average_grads(self.manual_sync, self.env.world)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grads = [p.grad for _, p in self.names_params() if p.grad is not None]
        grad_norm = clip_grad_norm(grads, self.run.optims.grad_clip, self.collective_device())
        if self.scaler is not None:
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            skipped = self.scaler.get_scale() < scale  # the scaler found inf/NaN gradients and backed off
        else:
            skipped = not math.isfinite(grad_norm)
            if not skipped:
                self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm, skipped

    def _count_skipped(self, skipped: bool) -> None:
        """After step self.step: Diverged once run.max_skipped_updates updates in a row were skipped (0: never)."""
        self.skipped_in_a_row = self.skipped_in_a_row + 1 if skipped else 0
        if skipped:
            self.log(f"step {self.step}: non-finite gradient norm; update skipped ({self.skipped_in_a_row} in a row)")
        limit = self.run.max_skipped_updates
        if limit and self.skipped_in_a_row >= limit:
            raise Diverged(f"step {self.step}: {self.skipped_in_a_row} updates in a row were skipped for NaN or "
                           f"infinite gradients (run.max_skipped_updates={limit}): the run has diverged; "
                           f"{self._way_back()}")

    def names_params(self):
        return [(self.names[id(p)], p) for g in self.optimizer.param_groups for p in g["params"]]

    def validate(self) -> dict | None:
        return validate(self)

    # ------------------------------------------------------------------ the loop
    def train(self) -> Path | None:
        run = self.run
        if run.evaluate:
            if self.validate() is None:
                self.log("run.evaluate: no validation data (datasets.valid_ann_path); nothing to do")
            return None
        total = self.schedule.total_steps
        stop = min(total, run.max_steps) if run.max_steps else total
        self.log(f"training {run.stage or 'run'}: {total} steps ({run.optims.max_epoch} epochs x "
                 f"{self.steps_per_epoch}), global batch {run.batch_size_train} x {self.env.world} processes x "
                 f"{run.accum_grad_iters} accumulation = {self._global_samples()} samples/step"
                 + (f"; starting at step {self.step}" if self.step else ""))
        self.bar = self._progress(run.stage or "train")(total, self.step)
        try:
            last_saved, last_validated = self._loop(stop)
        finally:
            self.bar.close()
            self.bar = None
        if self.step < total:
            self.log(f"stopped at step {self.step} of {total} (run.max_steps); continue with --resume")
            return None
        if last_validated != self.step:
            self.validate()
        if last_saved != self.step:
            self.save_checkpoint()
        return self._finish()

    def _global_samples(self) -> int:
        return self.run.batch_size_train * self.env.world * self.run.accum_grad_iters

    def _loop(self, stop: int) -> tuple[int, int]:
        """Optimizer steps until `stop`, saving and validating on schedule; (last saved, last validated) step."""
        run = self.run
        loader = iter(self.train_loader)
        self.model.train()
        last_saved = last_validated = -1
        while self.step < stop:
            start = time.time()
            micro = [next(loader) for _ in range(run.accum_grad_iters)]
            lr = self.schedule.apply(self.optimizer, self.step)
            stats = self.train_step(micro)
            self.step += 1
            self.position += run.accum_grad_iters
            self._record_step(stats, lr, time.time() - start, stop)
            self._count_skipped(stats["skipped"])
            epoch_end = self.step % self.steps_per_epoch == 0
            if (run.save_every and self.step % run.save_every == 0) or epoch_end or self.step == stop:
                self.save_checkpoint()
                last_saved = self.step
            if (run.valid_every and self.step % run.valid_every == 0) or epoch_end:
                self.validate()
                last_validated = self.step
        return last_saved, last_validated

    def _record_step(self, stats: dict, lr: float, elapsed: float, stop: int) -> None:
        record = {"type": "train", "step": self.step, "epoch": (self.step - 1) // self.steps_per_epoch,
                  "loss": stats["loss"], "lr": lr, "grad_norm": stats["grad_norm"],
                  "samples_per_s": self._global_samples() / elapsed, "tokens_per_s": stats["tokens"] / elapsed,
                  "step_time_s": elapsed, "time": time.time()}
        for key in ("ctc_loss", "gender_loss", "gender_acc"):
            if key in stats:
                record[key] = stats[key]
        if stats["skipped"]:
            record["skipped"] = True  # non-finite gradients: the optimizer did not step
        self.write_jsonl("metrics.jsonl", record)
        self.bar.update(1)
        if self.step % max(1, self.run.log_freq) == 0 or self.step == stop:
            self.bar.set_postfix(loss=f"{stats['loss']:.4f}", lr=f"{lr:.2e}", sps=f"{record['samples_per_s']:.1f}",
                                 refresh=False)

    def _finish(self) -> Path:
        final = self.save_final()
        if self.env.main and self.run.plot:
            from .plot import plot_metrics
            plot_metrics(self.out / "metrics.jsonl", self.out / "curves.png")
        self.log(f"done: {final} (salmonn infer --config {final / 'infer.yaml'} ...)")
        return final


def _one_thread(_) -> None:
    """DataLoader workers: one torch thread each (the training process has the cores)."""
    torch.set_num_threads(1)


def train(tc: TrainConfig, resume: bool = False, restart: bool = False,
          resume_from: str | Path | None = None) -> Path | None:
    """Run one training stage end to end (in this process, or in each torchrun process).

    resume: continue from the latest checkpoint in run.output_dir; resume_from: continue from this step checkpoint
    of it instead (the later ones are deleted); restart: delete an earlier run there first (a fresh run refuses a
    folder holding another run's checkpoints)."""
    trainer = Trainer(tc, resume, restart, resume_from)
    try:
        return trainer.setup().train()
    finally:
        dist.shutdown()
