"""Resumable training checkpoints.

A checkpoint is a folder `OUTPUT_DIR/checkpoints/step_00000123/`:
  trainable.safetensors   trainable tensors under the reference's key names (loads with model.load_checkpoint)
  config.json             the training config
  optimizer.safetensors   AdamW state per parameter, keyed "<reference name>::<state key>"
  state.json              step, data position, epoch, global batch, gradient-scaler state, optimizer groups,
                          and the RNG states (python, numpy, torch, cuda) of every rank
It is written to a hidden temporary folder and renamed into place (a crash never leaves half a checkpoint), then
`checkpoints/latest` is replaced atomically and all but the newest `keep_last` step folders are deleted.
No pickles: everything is safetensors or JSON.
"""

from __future__ import annotations

import base64
import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..checkpoint import OURS_CONFIG, OURS_WEIGHTS, atomic_save
from ..errors import CheckpointError

OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
LATEST = "latest"


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A plain tensor (gathered when it is a sharded DTensor: a collective, call it on every rank in order)."""
    if hasattr(t, "full_tensor") and type(t).__name__ == "DTensor":
        return t.full_tensor()
    return t


def like_param(value: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """A full tensor laid out like `param` (sharded again when param is a DTensor)."""
    if type(param).__name__ == "DTensor":
        from torch.distributed.tensor import distribute_tensor
        return distribute_tensor(value.to(param.device, param.dtype), param.device_mesh, param.placements)
    return value.to(param.device, param.dtype)


# ----------------------------------------------------------------------------- RNG


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode()


def _unb64(s: str) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(base64.b64decode(s), dtype=np.uint8).copy())


def rng_state() -> dict:
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(internal), gauss], "numpy": [name, keys.tolist(), int(pos), int(has_gauss),
                                                                 float(cached)],
             "torch": _b64(torch.get_rng_state())}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = _b64(torch.cuda.get_rng_state())
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_unb64(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(_unb64(state["cuda"]))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- optimizer


def optimizer_state(optimizer: torch.optim.Optimizer, names: dict[int, str]) -> tuple[dict, list]:
    """(tensors keyed "name::key", groups [{names, hyperparameters}]); gathers sharded state (all ranks)."""
    tensors, groups = {}, []
    for group in optimizer.param_groups:
        hyper = {k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items() if k != "params"}
        groups.append({"names": [names[id(p)] for p in group["params"]], **hyper})
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value):
                    tensors[f"{names[id(p)]}::{key}"] = full_tensor(value).detach().cpu().contiguous()
                else:
                    tensors[f"{names[id(p)]}::{key}"] = torch.tensor(value)
    return tensors, groups


def load_optimizer_state(optimizer: torch.optim.Optimizer, names: dict[int, str], tensors: dict, groups: list,
                         source: str) -> None:
    ours = [[names[id(p)] for p in g["params"]] for g in optimizer.param_groups]
    theirs = [g["names"] for g in groups]
    if [sorted(g) for g in ours] != [sorted(g) for g in theirs]:
        missing = sorted(set(sum(ours, [])) - set(sum(theirs, [])))[:5]
        extra = sorted(set(sum(theirs, [])) - set(sum(ours, [])))[:5]
        raise CheckpointError(f"{source}: its optimizer holds a different trainable set (missing {missing}, "
                              f"unexpected {extra}); resume with the config it was trained with")
    for group in optimizer.param_groups:
        for p in group["params"]:
            prefix = names[id(p)] + "::"
            state = {}
            for key, value in tensors.items():
                if key.startswith(prefix):
                    name = key[len(prefix):]
                    state[name] = value.clone() if name == "step" else like_param(value, p)
            if state:
                optimizer.state[p] = state


# ----------------------------------------------------------------------------- folders


def write_checkpoint(directory: Path, tensors: dict, config: dict, opt_tensors: dict, state: dict) -> Path:
    """Write a complete checkpoint folder atomically (rank 0 only)."""
    directory = Path(directory)
    tmp = directory.parent / f".{directory.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    save_file(cpu, str(tmp / OURS_WEIGHTS), metadata={"format": "salmonn"})
    (tmp / OURS_CONFIG).write_text(json.dumps(config, indent=2))
    save_file(opt_tensors, str(tmp / OPTIMIZER_FILE))
    (tmp / STATE_FILE).write_text(json.dumps(state))
    if directory.exists():
        shutil.rmtree(directory)
    tmp.rename(directory)
    atomic_save(lambda p: p.write_text(directory.name), directory.parent / LATEST)
    return directory


def step_dirs(root: Path) -> list[Path]:
    """Complete step checkpoints under root, oldest first."""
    if not root.is_dir():
        return []
    found = [d for d in root.iterdir() if d.is_dir() and d.name.startswith("step_") and (d / STATE_FILE).is_file()]
    return sorted(found, key=lambda d: int(d.name.split("_")[1]))


def latest_checkpoint(root: Path) -> Path | None:
    pointer = root / LATEST
    if pointer.is_file():
        target = root / pointer.read_text().strip()
        if (target / STATE_FILE).is_file():
            return target
    dirs = step_dirs(root)
    return dirs[-1] if dirs else None


def prune(root: Path, keep: int) -> None:
    for old in step_dirs(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def read_checkpoint(directory: Path) -> tuple[dict, dict]:
    """(optimizer tensors, state) of a step checkpoint."""
    state_file, opt_file = directory / STATE_FILE, directory / OPTIMIZER_FILE
    if not state_file.is_file() or not opt_file.is_file():
        raise CheckpointError(f"{directory}: not a complete training checkpoint (no {STATE_FILE}/{OPTIMIZER_FILE})")
    return load_file(str(opt_file)), json.loads(state_file.read_text())
