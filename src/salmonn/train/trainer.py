"""The training loop: one process, DDP or FSDP under torchrun; exact resume; metrics, validation, plots.

One *iteration* is one micro-batch of `batch_size_train` samples on every rank; one optimizer *step* is
`accum_grad_iters` iterations. The default loss of a step is the mean over every target token of all its
micro-batches on all ranks -- exactly the loss one process computes on the whole global batch -- so N processes
take the same steps as one process with N times the batch (`loss_normalization: batch` gives the reference's
mean of per-micro-batch means instead).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from ..checkpoint import save_ours, save_reference_pth
from ..errors import ConfigError
from ..model import IGNORE_INDEX, SALMONN
from . import dist
from .cache import FrozenCache, encoder_identity, fill_cache
from .config import TrainConfig, train_config_to_dict
from .data import (DataError, GlobalBatchSampler, PromptBook, TrainDataset, collate, eval_batches, load_samples)
from .schedule import WarmupCosine, build_optimizer
from .state import (full_tensor, latest_checkpoint, load_optimizer_state, optimizer_state, prune, read_checkpoint,
                    rng_state, seed_everything, set_rng_state, write_checkpoint)

ENCODER_PREFIXES = ("speech_encoder.", "beats.")


class TrainStep(nn.Module):
    """What DDP wraps: a batch -> (mean loss over its target tokens, number of target tokens)."""

    def __init__(self, model: SALMONN, encoders_trainable: bool = False, run=None, tokenizer=None):
        super().__init__()
        self.model = model
        self.encoders_trainable = encoders_trainable
        self.lm_weight = run.lm_weight if run is not None else 1.0
        self.ctc_weight = run.ctc_weight if run is not None else 0.0
        self.last_ctc: float | None = None  # the latest CTC loss per transcript token (metrics)
        if self.ctc_weight:
            from .ctc import blank_id
            self.ctc_tasks, self.ctc_scale = set(run.ctc_tasks), run.ctc_scale
            self.ctc_blank = blank_id(tokenizer, run.ctc_blank)
            self.end_ids = tokenizer(model.config.model.end_sym, add_special_tokens=False).input_ids

    def audio_tokens(self, batch: dict) -> list[torch.Tensor]:
        m = self.model
        if "whisper" in batch:
            frozen = batch["whisper"], batch.get("beats"), batch.get("beats_mask")
            if "whisper_len" in batch:  # cached with Whisper on each clip's own length
                frozen += (batch["whisper_len"],)
        else:
            with contextlib.nullcontext() if self.encoders_trainable else torch.no_grad():
                frozen = m.encode_frozen(batch["spectrogram"], batch["raw_wav"], batch["padding_mask"])
        tokens = m.segment_tokens(*frozen)  # S x [L_s, d]
        out, at = [], 0
        for n in batch["n_segments"]:
            out.append(torch.cat(tokens[at:at + n]))  # [sum of L_s, d]
            at += n
        return out

    def forward(self, batch: dict):
        tokens = self.audio_tokens(batch)
        if self.lm_weight:
            lm, _, labels = self.model(tokens, batch["prompts"], batch["targets"], return_logits=False)
            n = (labels[:, 1:] != IGNORE_INDEX).sum()
            loss = self.lm_weight * lm
        else:  # connector only: the LLM does not run; the CTC sum is still taken per LM target token
            n = torch.tensor(batch["n_tokens"])
            loss = torch.zeros((), device=tokens[0].device)
        if self.ctc_weight:  # summed over transcript tokens, then per LM target token like the LM loss
            loss = loss + self.ctc_weight * self.ctc_loss(tokens, batch) / n.clamp(min=1).to(loss.device)
        return loss, n

    def ctc_loss(self, tokens: list[torch.Tensor], batch: dict) -> torch.Tensor:
        """Summed CTC loss of the batch's ctc_tasks samples (train/ctc.py); its per-token mean goes to last_ctc."""
        from .ctc import ctc_loss_sum
        rows = [i for i, task in enumerate(batch["tasks"]) if task in self.ctc_tasks and batch["weights"][i] > 0]
        if not rows:
            self.last_ctc = None
            return sum(t.sum() for t in tokens) * 0.0  # keeps every connector parameter in the graph (DDP)
        k = len(self.end_ids)
        targets = [t[:-k] if t[-k:] == self.end_ids else t for t in (batch["targets"][i] for i in rows)]
        table = self.model.llama_model.get_input_embeddings().weight.detach()
        loss, count = ctc_loss_sum([tokens[i] for i in rows], targets, table, self.ctc_blank, self.ctc_scale)
        self.last_ctc = float(loss.detach()) / max(count, 1)
        return loss

    @torch.no_grad()
    def per_sample(self, batch: dict, tokens: list[torch.Tensor] | None = None):
        """Per-sample summed token NLL, token count and correct argmax tokens (validation).

        tokens: the batch's audio tokens if already computed (validation also scores them rolled by one sample,
        each target with another clip's audio: a model that listens does clearly worse there)."""
        tokens = self.audio_tokens(batch) if tokens is None else tokens
        _, logits, labels = self.model(tokens, batch["prompts"], batch["targets"])
        logits, labels = logits[:, :-1].float(), labels[:, 1:]
        valid = labels != IGNORE_INDEX
        nll = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
        correct = (logits.argmax(-1) == labels) & valid
        return (nll * valid).sum(-1), valid.sum(-1), correct.sum(-1)


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


class Trainer:
    def __init__(self, tc: TrainConfig, resume: bool = False):
        self.tc, self.run = tc, tc.run
        self.resume = resume or tc.run.resume
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

    def _write_jsonl(self, name: str, record: dict) -> None:
        if self.env.main:
            with open(self.out / name, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")

    # ------------------------------------------------------------------ setup
    def setup(self) -> "Trainer":
        run = self.run
        if self.env.main:
            self.out.mkdir(parents=True, exist_ok=True)
        if run.use_wandb:
            self.log("note: run.use_wandb is ignored; metrics go to metrics.jsonl")
        self.resume_dir = latest_checkpoint(self.ckpt_root) if self.resume else None
        if self.resume and self.resume_dir is None:
            self.log(f"resume: no checkpoint in {self.ckpt_root}; starting from the beginning")
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
        steps_per_epoch = self.iters_per_epoch // run.accum_grad_iters
        self.steps_per_epoch = steps_per_epoch
        self.schedule = WarmupCosine(run.optims, self.iters_per_epoch, run.accum_grad_iters)
        amp_ok = run.amp and (self.env.device.type == "cuda" or run.amp_on_cpu)
        self.amp_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[run.amp_dtype] if amp_ok else None
        if self.amp_dtype == torch.float16 and self.fsdp:
            raise ConfigError("run.amp_dtype=float16 is not supported with FSDP here; use bfloat16")
        self.scaler = torch.amp.GradScaler(self.env.device.type) if self.amp_dtype == torch.float16 else None
        if self.resume_dir is not None:
            self._restore()
        else:
            seed_everything(run.seed + self.env.rank)
            if self.env.main:
                for name in ("metrics.jsonl", "samples.jsonl"):
                    (self.out / name).unlink(missing_ok=True)
        self.train_loader = self._loader(self.train_set, GlobalBatchSampler(
            self.train_lengths, run.batch_size_train, self.env.rank, self.env.world, run.seed,
            self.tc.datasets.length_bucketing, self.tc.datasets.bucket_factor, start=self.position))
        return self

    def _build_model(self) -> None:
        run, env = self.run, self.env
        config = copy.deepcopy(self.tc.config)
        config.model.device = "cpu" if self.fsdp else str(env.device)
        seed_everything(run.seed)  # fresh trainable weights are the same on every rank
        model = SALMONN.from_config(config, load_checkpoint=False)
        if config.model.speech_llama_proj_model:  # reference: projection from its own file, then ckpt
            from ..checkpoint import read_state_dict
            path = config.model.speech_llama_proj_model
            proj = {k: v for k, v in read_state_dict(path).items() if k.startswith("speech_llama_proj.")}
            if set(proj) != {"speech_llama_proj.weight", "speech_llama_proj.bias"}:
                raise ConfigError(f"model.speech_llama_proj_model: {path} has no speech_llama_proj.weight/.bias")
            model.load_state_dict(proj, strict=False)
            self.log(f"projection initialised from {path}")
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
            return
        if self.fsdp:
            self._shard()
            return
        from torch.nn.parallel import DistributedDataParallel as DDP
        ids = [self.env.device.index] if self.env.device.type == "cuda" else None
        # frozen weights come from the same files on every rank: DDP need not broadcast (GBs for a 13B LLM)
        frozen = [n for n, p in self.step_module.named_parameters() if not p.requires_grad]
        DDP._set_params_and_buffers_to_ignore_for_model(
            self.step_module, frozen + [n for n, _ in self.step_module.named_buffers()])
        self.engine = DDP(self.step_module, device_ids=ids, broadcast_buffers=False)

    def _shard(self) -> None:
        """FSDP2: shard every decoder layer of the LLM; the rest (encoders, Q-Former, embeddings, head) stays
        replicated and the trainable part of it is averaged by hand after backward."""
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        device = self.env.device
        base = self.model.causal_lm
        layers = getattr(getattr(base, "model", base), "layers", None)
        if layers is None:
            raise ConfigError("run.parallel=fsdp: cannot find the LLM's decoder layers (model.layers)")
        inside = {id(m) for layer in layers for m in layer.modules()}
        for module in self.model.modules():  # move everything but the layers (FSDP moves those shard by shard)
            if id(module) in inside:
                continue
            for p in module.parameters(recurse=False):
                p.data = p.data.to(device)
            for key, b in list(module.named_buffers(recurse=False)):
                module._buffers[key] = b.to(device)
        mesh = init_device_mesh(device.type, (self.env.world,))
        dtypes = {p.dtype for p in layers.parameters()}
        policy = MixedPrecisionPolicy(param_dtype=min(dtypes, key=lambda d: torch.finfo(d).bits),
                                      reduce_dtype=torch.float32) if len(dtypes) > 1 else MixedPrecisionPolicy()
        for layer in layers:
            fully_shard(layer, mesh=mesh, mp_policy=policy)
            self.sharded.append(layer)
        self.manual_sync = [p for p in self.model.parameters() if p.requires_grad and type(p).__name__ != "DTensor"]
        self.log(f"fsdp: {len(layers)} decoder layers sharded over {self.env.world} processes; "
                 f"{len(self.manual_sync)} replicated trainable tensors averaged after backward")

    def _samples(self, paths: list[str], what: str):
        """Validated samples (rank 0 reads and checks, every rank gets the result or the same error)."""
        ds, m = self.tc.datasets, self.tc.config.model
        result = None
        if self.env.main:
            try:
                result = load_samples(paths, self.prompts, self.tokenizer, m, check_files=ds.validate,
                                      max_listed=ds.max_listed_errors, what=what)
            except (DataError, ConfigError) as err:
                result = err
        result = dist.broadcast_object(result)
        if isinstance(result, Exception):
            raise result
        return result

    def _load_data(self) -> None:
        from transformers import AutoTokenizer
        from ..model import _require_dir
        run, ds, m = self.run, self.tc.datasets, self.tc.config.model
        extra = {self.tc.activation.story_task: [self.tc.activation.story_prompt]} if run.stage == "activation" else {}
        self.prompts = PromptBook.load(m.prompt_path, m.prompt_template, extra)
        self.tokenizer = AutoTokenizer.from_pretrained(_require_dir(m.llama_path, "llama_path"))  # as SALMONN loads it
        self.train_samples = self._samples(ds.train_ann_path, "training data")
        self.valid_samples = self._samples(ds.valid_ann_path, "validation data") if ds.valid_ann_path else []

    def _prepare_data(self) -> None:
        run, ds, m = self.run, self.tc.datasets, self.tc.config.model
        train, valid = self.train_samples, self.valid_samples
        self.log(f"data: {len(train)} training samples" + (f", {len(valid)} validation samples" if valid else ""))
        cache = None
        if ds.cache_dir:
            cache = FrozenCache(ds.cache_dir, encoder_identity(m), ds.cache_dtype)
            start = time.time()
            wrote = fill_cache(self.model, train + valid, cache, run.batch_size_eval, self.env.rank, self.env.world,
                               progress=self._progress("encoder cache") if self.env.main else None)
            wrote = int(dist.all_reduce_sum(torch.tensor([wrote], device=self._collective_device())).item())
            dist.barrier()
            self.log(f"encoder cache: {wrote} new entries in {time.time() - start:.1f} s ({cache.root})")
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
        self.train_lengths = [s.length(m.long_audio) for s in train]
        global_batch = run.batch_size_train * self.env.world
        batches_per_epoch = len(train) // global_batch
        if run.epoch_based:
            self.iters_per_epoch = batches_per_epoch // run.accum_grad_iters * run.accum_grad_iters
            if self.iters_per_epoch == 0:
                raise DataError(f"epoch_based: {len(train)} samples make {batches_per_epoch} global batches of "
                                f"{global_batch}, fewer than accum_grad_iters={run.accum_grad_iters}")
        else:
            self.iters_per_epoch = run.iters_per_epoch

    def _collective_device(self) -> torch.device:
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
            worker_init_fn=_worker_init if workers else None, prefetch_factor=4 if workers else None)

    # ------------------------------------------------------------------ checkpoints
    def _restore(self) -> None:
        directory = self.resume_dir
        opt_tensors, state = read_checkpoint(directory)
        global_batch = self.run.batch_size_train * self.env.world
        if state["global_batch"] != global_batch or state["accum_grad_iters"] != self.run.accum_grad_iters \
                or state["seed"] != self.run.seed:
            raise ConfigError(f"{directory}: was trained with global batch {state['global_batch']}, accum "
                              f"{state['accum_grad_iters']}, seed {state['seed']}; this run has {global_batch}, "
                              f"{self.run.accum_grad_iters}, {self.run.seed}: the data position cannot be resumed")
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
            for name in ("metrics.jsonl", "samples.jsonl"):
                _truncate_after(self.out / name, self.step)
        self.log(f"resumed from {directory} at step {self.step}")

    def _trainable_tensors(self) -> dict[str, torch.Tensor]:
        state = self.model.state_dict(keep_vars=True)
        return {k: full_tensor(state[k].detach()) for k in self.save_keys}

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
            save_ours(tensors, train_config_to_dict(self.tc), final)
            if self.run.export_reference:
                save_reference_pth(tensors, final / "salmonn.pth")
            model_section = dataclasses.asdict(self.tc.config.model)
            for key in ("llama_path", "whisper_path", "beats_path", "prompt_path", "test_prompt_path"):
                value = model_section[key]
                if value and Path(value).exists():  # absolute, so the YAML works from final/
                    model_section[key] = str(Path(value).resolve())
            model_section.update(ckpt="trainable.safetensors", speech_llama_proj_model="", device="auto",
                                 lora_scale=1.0)
            infer = {"model": model_section, "generate": dataclasses.asdict(self.tc.config.generate)}
            (final / "infer.yaml").write_text(
                "# written by `salmonn train`: salmonn infer --config THIS_FILE --audio a.wav --prompt \"...\"\n"
                + yaml.safe_dump(infer, sort_keys=False, allow_unicode=True))
        dist.barrier()
        return final

    # ------------------------------------------------------------------ one step
    def _no_sync(self, skip: bool):
        if not skip or not self.env.distributed:
            return contextlib.nullcontext()
        if self.fsdp:
            return _FsdpNoSync(self.sharded)
        return self.engine.no_sync()

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.env.device.type, dtype=self.amp_dtype)

    def train_step(self, micro: list[dict]) -> dict:
        env, run = self.env, self.run
        by_tokens = run.loss_normalization == "tokens"
        n_local = sum(b["n_tokens"] for b in micro)
        n_global = float(dist.all_reduce_sum(torch.tensor([n_local], dtype=torch.float64,
                                                          device=self._collective_device())).item())
        total = torch.zeros((), dtype=torch.float64, device=env.device)
        for i, batch in enumerate(micro):
            batch = _to(batch, env.device)
            with self._no_sync(i < len(micro) - 1), self._autocast():
                loss, n = self.engine(batch)
            if by_tokens:
                scaled = loss * (n.to(loss.dtype) * env.world / n_global)
                total += loss.detach().double() * n.double()
            else:
                scaled = loss / len(micro)
                total += loss.detach().double()
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        if self.manual_sync:
            _average_grads(self.manual_sync, env.world)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grad_norm = self._clip(run.optims.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        elif math.isfinite(grad_norm):
            self.optimizer.step()
        else:
            self.log(f"step {self.step + 1}: non-finite gradient norm; update skipped")
        self.optimizer.zero_grad(set_to_none=True)
        total = dist.all_reduce_sum(total.to(self._collective_device()))
        loss = float(total) / (n_global if by_tokens else len(micro) * env.world)
        stats = {"loss": loss, "grad_norm": grad_norm, "tokens": int(n_global)}
        if self.step_module.last_ctc is not None:
            stats["ctc_loss"] = self.step_module.last_ctc  # this rank's last micro-batch, per transcript token
        return stats

    def _clip(self, max_norm: float) -> float:
        """Global gradient norm over replicated and sharded parameters; clip to max_norm when > 0."""
        grads = [p.grad for _, p in self.names_params() if p.grad is not None]
        if not grads:
            return 0.0
        device = self._collective_device()
        local = [g.to_local() for g in grads if type(g).__name__ == "DTensor"]
        plain = [g for g in grads if type(g).__name__ != "DTensor"]
        sq_plain = sum((g.detach().float().pow(2).sum() for g in plain), torch.zeros((), device=device))
        sq_shard = sum((g.detach().float().pow(2).sum() for g in local), torch.zeros((), device=device))
        if local:
            sq_shard = dist.all_reduce_sum(sq_shard.to(device))
        norm = float((sq_plain.to(device) + sq_shard).sqrt())
        if max_norm > 0 and math.isfinite(norm) and norm > max_norm:
            coef = max_norm / (norm + 1e-6)
            for g in grads:
                g.mul_(coef)
        return norm

    def names_params(self):
        return [(self.names[id(p)], p) for g in self.optimizer.param_groups for p in g["params"]]

    # ------------------------------------------------------------------ validation
    def validate(self) -> dict | None:
        if self.valid_set is None:
            return None
        env, run = self.env, self.run
        saved = rng_state()
        self.model.eval()
        try:
            # sums: NLL, tokens, correct; then NLL and NLL-with-another-clip's-audio and tokens of batches >= 2
            sums = torch.zeros(6, dtype=torch.float64, device=self._collective_device())
            batches = eval_batches(len(self.valid_set), run.batch_size_eval, env.rank, env.world,
                                   run.valid_max_batches)
            for keys in batches:
                batch = _to(collate([self.valid_set[k] for k in keys]), env.device)
                with self._autocast():
                    tokens = self.step_module.audio_tokens(batch)
                    nll, count, correct = self.step_module.per_sample(batch, tokens)
                    other = self.step_module.per_sample(batch, tokens[1:] + tokens[:1])[0] \
                        if run.valid_listening and len(keys) > 1 else None
                w = batch["weights"].to(nll.device)
                row = [(nll * w).sum(), (count * w).sum(), (correct * w).sum()]
                row += [(nll * w).sum(), (other * w).sum(), (count * w).sum()] if other is not None else [0 * nll.sum()] * 3
                sums += torch.stack(row).double().to(sums.device)
            sums = dist.all_reduce_sum(sums)
            result = {"type": "valid", "step": self.step, "loss": float(sums[0] / sums[1]),
                      "accuracy": float(sums[2] / sums[1]), "tokens": int(sums[1])}
            message = f"step {self.step}: valid loss {result['loss']:.4f}, token accuracy {result['accuracy']:.3f}"
            if sums[5] > 0:
                result["listening_gap"] = float((sums[4] - sums[3]) / sums[5])
                message += (f", listening gap {result['listening_gap']:.4f} (loss with another clip's audio minus "
                            "with its own: ~0 means the model ignores the audio)")
            self._write_jsonl("metrics.jsonl", result)
            self.log(message)
            self._sample_generations()
            return result
        finally:
            self.model.train()
            set_rng_state(saved)

    @torch.no_grad()
    def _sample_generations(self) -> None:
        k = min(self.run.num_sample_generations, len(self.valid_set))
        if k <= 0:
            return
        keys = [(0, i, 1.0) for i in range(k)]
        batch = _to(collate([self.valid_set[key] for key in keys]), self.env.device)
        with self._autocast():
            tokens = self.step_module.audio_tokens(batch)
            answers = self.model.generate(None, batch["prompts"], templated=True, audio_tokens=tokens, num_beams=1,
                                          do_sample=False, max_new_tokens=self.run.sample_max_new_tokens)
        for i, answer in enumerate(answers):
            sample = self.valid_set.samples[i]
            record = {"step": self.step, "source": sample.source, "task": sample.task, "target": sample.text,
                      "answer": answer.text}
            self._write_jsonl("samples.jsonl", record)
            self.log(f"  sample {i}: [{sample.task}] {answer.text[:100]!r} (target {sample.text[:60]!r})")

    # ------------------------------------------------------------------ the loop
    def train(self) -> Path | None:
        run, env = self.run, self.env
        if run.evaluate:
            if self.validate() is None:
                self.log("run.evaluate: no validation data (datasets.valid_ann_path); nothing to do")
            return None
        total = self.schedule.total_steps
        stop = min(total, run.max_steps) if run.max_steps else total
        global_samples = run.batch_size_train * env.world * run.accum_grad_iters
        self.log(f"training {self.run.stage or 'run'}: {total} steps ({run.optims.max_epoch} epochs x "
                 f"{self.steps_per_epoch}), global batch {run.batch_size_train} x {env.world} processes x "
                 f"{run.accum_grad_iters} accumulation = {global_samples} samples/step"
                 + (f"; starting at step {self.step}" if self.step else ""))
        self.bar = self._progress(run.stage or "train")(total, self.step)
        loader = iter(self.train_loader)
        self.model.train()
        last_saved = last_validated = -1
        try:
            while self.step < stop:
                start = time.time()
                micro = [next(loader) for _ in range(run.accum_grad_iters)]
                lr = self.schedule.apply(self.optimizer, self.step)
                stats = self.train_step(micro)
                self.step += 1
                self.position += run.accum_grad_iters
                elapsed = time.time() - start
                record = {"type": "train", "step": self.step, "epoch": (self.step - 1) // self.steps_per_epoch,
                          "loss": stats["loss"], "lr": lr, "grad_norm": stats["grad_norm"],
                          "samples_per_s": global_samples / elapsed, "tokens_per_s": stats["tokens"] / elapsed,
                          "step_time_s": elapsed, "time": time.time()}
                if "ctc_loss" in stats:
                    record["ctc_loss"] = stats["ctc_loss"]
                self._write_jsonl("metrics.jsonl", record)
                self.bar.update(1)
                if self.step % max(1, run.log_freq) == 0 or self.step == stop:
                    self.bar.set_postfix(loss=f"{stats['loss']:.4f}", lr=f"{lr:.2e}",
                                         sps=f"{record['samples_per_s']:.1f}", refresh=False)
                epoch_end = self.step % self.steps_per_epoch == 0
                if (run.save_every and self.step % run.save_every == 0) or epoch_end or self.step == stop:
                    self.save_checkpoint()
                    last_saved = self.step
                if (run.valid_every and self.step % run.valid_every == 0) or epoch_end:
                    self.validate()
                    last_validated = self.step
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
        final = self.save_final()
        if env.main and run.plot:
            from .plot import plot_metrics
            plot_metrics(self.out / "metrics.jsonl", self.out / "curves.png")
        self.log(f"done: {final} (salmonn infer --config {final / 'infer.yaml'} ...)")
        return final


class _FsdpNoSync:
    """Skip FSDP2's gradient reduce-scatter for all but the last micro-batch of a step."""

    def __init__(self, modules):
        self.modules = modules

    def __enter__(self):
        for m in self.modules:
            m.set_requires_gradient_sync(False)

    def __exit__(self, *exc):
        for m in self.modules:
            m.set_requires_gradient_sync(True)


def _average_grads(params: list[torch.Tensor], world: int) -> None:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce_sum(flat)
    flat /= world
    at = 0
    for g in grads:
        g.copy_(flat[at:at + g.numel()].view_as(g))
        at += g.numel()


def _worker_init(_):
    torch.set_num_threads(1)


def _truncate_after(path: Path, step: int) -> None:
    """Drop metric lines after `step` (written by a run that was killed after its last checkpoint)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")


def train(tc: TrainConfig, resume: bool = False) -> Path | None:
    """Run one training stage end to end (in this process, or in each torchrun process)."""
    trainer = Trainer(tc, resume)
    try:
        return trainer.setup().train()
    finally:
        dist.shutdown()
