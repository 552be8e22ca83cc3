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
import contextlib
import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..checkpoint import OURS_CONFIG, OURS_WEIGHTS, TMP_SUFFIX, atomic_save, nonfinite, umask_mode
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
    """Write a complete checkpoint folder atomically (rank 0 only); a full disk or a read-only folder is a
    CheckpointError that names the folder and the last complete checkpoint (the partial folder is removed)."""
    directory = Path(directory)
    tmp = directory.parent / f".{directory.name}{TMP_SUFFIX}"
    try:
        with writing(directory, "the checkpoint", latest_checkpoint(directory.parent)):
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
            save_file(cpu, str(tmp / OURS_WEIGHTS), metadata={"format": "salmonn"})
            (tmp / OURS_CONFIG).write_text(json.dumps(config, indent=2))
            save_file(opt_tensors, str(tmp / OPTIMIZER_FILE))
            (tmp / STATE_FILE).write_text(json.dumps(state))
            for name in (OURS_WEIGHTS, OPTIMIZER_FILE):  # safetensors writes 0600 whatever the umask
                umask_mode(tmp / name)
            if directory.exists():
                shutil.rmtree(directory)
            tmp.rename(directory)
            atomic_save(lambda p: p.write_text(directory.name), directory.parent / LATEST)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only there when the write failed
    return directory


@contextlib.contextmanager
def writing(path: Path, what: str, last: Path | None = None):
    """Turn a full disk or a read-only folder while writing `what` to `path` into one CheckpointError line."""
    try:
        yield
    except (OSError, SafetensorError) as err:
        resume = f"continue with --resume (from {last.name})" if last is not None else "continue with --resume"
        raise CheckpointError(f"{path}: cannot write {what} ({_reason(err)}); free disk space or fix the folder's "
                              f"permissions, then {resume}") from None


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


def read_json(path: Path) -> dict:
    """A checkpoint's JSON file; CheckpointError naming it when it is missing, empty, cut off or not an object."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise CheckpointError(f"{path}: cannot be read ({_reason(err)})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        what = "empty" if not path.stat().st_size else f"cut off or damaged ({err})"
        raise CheckpointError(f"{path}: {what}") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return value


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's safetensors file, checked for NaN and infinities; CheckpointError naming it otherwise."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"{path}: cut off or damaged ({_reason(err)})") from None
    bad = nonfinite(tensors)
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} tensor(s) hold NaN or infinity (e.g. {bad[0]}): the run had "
                              "diverged or the file is damaged")
    return tensors


def read_checkpoint(directory: Path) -> tuple[dict, dict]:
    """(optimizer tensors, state) of a step checkpoint; CheckpointError naming the damaged file."""
    return read_tensors(directory / OPTIMIZER_FILE), read_json(directory / STATE_FILE)


def check_checkpoint(directory: Path) -> None:
    """Read every file of a step checkpoint (weights and optimizer finite, JSON complete); CheckpointError naming
    the first damaged file and an intact earlier checkpoint to resume from instead."""
    try:
        check_checkpoint_files(directory)
    except CheckpointError as err:
        earlier = intact_before(directory)
        hint = (f"resume from the intact {earlier.name} with --resume-from {earlier}" if earlier is not None
                else "no earlier intact checkpoint: start over with --restart")
        raise CheckpointError(f"{err}; {hint}") from None


def intact_before(directory: Path) -> Path | None:
    """The newest step checkpoint older than `directory` whose files all read back."""
    for candidate in reversed(step_dirs(directory.parent)):
        if int(candidate.name.split("_")[1]) < int(directory.name.split("_")[1]):
            try:
                check_checkpoint_files(candidate)
            except CheckpointError:
                continue
            return candidate
    return None


def check_checkpoint_files(directory: Path) -> None:
    """Every file of a step checkpoint reads back complete (CheckpointError naming the first that does not)."""
    read_json(directory / STATE_FILE)
    read_json(directory / OURS_CONFIG)
    read_tensors(directory / OURS_WEIGHTS)
    read_tensors(directory / OPTIMIZER_FILE)


def _reason(err: Exception) -> str:
    return err.strerror if isinstance(err, OSError) and err.strerror else str(err)
