"""Checkpoint I/O: the reference's files (SALMONN `.pth`, BEATs `.pt`, HF dirs) and our own safetensors format.

Pickled files are always opened with `weights_only=True`. Every key is checked: a missing, unexpected or
mis-shaped key is an error that names it (the reference's `strict=False` silently ignores them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .beats import BEATs, BEATsConfig
from .errors import CheckpointError

OURS_WEIGHTS = "trainable.safetensors"  # our checkpoint dir: trainable tensors only ...
OURS_CONFIG = "config.json"  # ... and the config that built the model
TMP_SUFFIX = ".tmp"  # atomic_save's partial files: `.NAME.<pid>.<random>.tmp` next to NAME

# Buffers the reference trainer saves next to the trainable tensors; they carry no learned state.
IGNORED_REFERENCE_KEYS = [
    re.compile(r".*\.rotary_emb\.inv_freq$"),  # LLaMA rotary buffers (transformers 4.28 kept them per layer)
    re.compile(r"^speech_Qformer\.bert\.embeddings\.position_ids$"),  # BERT position ids (no position embedding)
]


def torch_load(path: str | Path) -> dict:
    """Load a pickled checkpoint safely (tensors and plain containers only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError ... for bad files
        raise CheckpointError(f"{path}: cannot be read as a weights-only torch checkpoint ({err}). "
                              f"Re-save it with torch.save(state_dict) or convert it to safetensors") from None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a SALMONN checkpoint: reference `.pth` ({"model": ...}), our dir, or a `.safetensors` file."""
    path = Path(path)
    if path.is_dir():
        path = path / OURS_WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.suffix == ".safetensors":
        try:
            return load_file(path)
        except Exception as err:
            raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None
    obj = torch_load(path)
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected {{'model': state_dict}} of tensors (reference layout)")
    return state


def _describe(keys: list[str], shapes: dict | None = None, limit: int = 10) -> str:
    shown = [f"{k} {tuple(shapes[k])}" if shapes else k for k in keys[:limit]]
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(shown) + more


def check_keys(model_state: dict[str, torch.Tensor], ckpt: dict[str, torch.Tensor], required: set[str],
               source: str, ignored: list[re.Pattern] = ()) -> dict[str, torch.Tensor]:
    """Validate checkpoint keys against a model's state dict; returns the tensors to load.

    required: keys that must be present (the model's trainable tensors for a SALMONN checkpoint).
    """
    usable = {k: v for k, v in ckpt.items() if not any(p.match(k) for p in ignored)}
    missing = sorted(required - usable.keys())
    unexpected = sorted(usable.keys() - model_state.keys())
    wrong = sorted(k for k in usable.keys() & model_state.keys() if usable[k].shape != model_state[k].shape)
    problems = []
    if missing:
        problems.append(f"missing keys: {_describe(missing, model_state)}")
    if unexpected:
        problems.append(f"unexpected keys: {_describe(unexpected, usable)}")
    if wrong:
        problems.append("shape mismatch: " + ", ".join(
            f"{k} checkpoint {tuple(usable[k].shape)} vs model {tuple(model_state[k].shape)}" for k in wrong[:10]))
    if problems:
        raise CheckpointError(f"{source}: does not match the model: " + "; ".join(problems)
                              + ". Check that the config's backbones and sizes are the ones it was trained with")
    return usable


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str, required: set[str] | None = None,
                ignored: list[re.Pattern] = ()) -> None:
    """Load `state` into `module`, requiring `required` keys (default: all) and rejecting anything else."""
    own = module.state_dict()
    usable = check_keys(own, state, set(own) if required is None else required, source, ignored)
    module.load_state_dict(usable, strict=False)


def load_beats(path: str | Path) -> BEATs:
    """Build BEATs from a released `{"cfg", "model"}` checkpoint and load it strictly."""
    obj = torch_load(path)
    if not isinstance(obj, dict) or "cfg" not in obj or "model" not in obj:
        raise CheckpointError(f"{path}: not a BEATs checkpoint (expected a dict with 'cfg' and 'model')")
    model = BEATs(BEATsConfig.from_dict(obj["cfg"]))
    load_strict(model, obj["model"], str(path))
    return model.eval()


def _hf_weight_files(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [directory / f for f in files]
    single = directory / "model.safetensors"
    if single.is_file():
        return [single]
    bins = sorted(directory.glob("pytorch_model*.bin"))
    if bins:
        return bins
    raise CheckpointError(f"{directory}: no model.safetensors or pytorch_model.bin found")


def read_prefixed(directory: str | Path, prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Tensors under the first matching prefix of an HF dir, prefix stripped (reads only those tensors)."""
    directory = Path(directory)
    files = _hf_weight_files(directory)
    for prefix in prefixes:
        found: dict[str, torch.Tensor] = {}
        for file in files:
            if file.suffix == ".safetensors":
                with safe_open(file, framework="pt") as f:
                    found.update({k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)})
            else:
                found.update({k[len(prefix):]: v for k, v in torch_load(file).items() if k.startswith(prefix)})
        if found:
            return found
    raise CheckpointError(f"{directory}: no tensors under any of {prefixes}")


def atomic_save(write, path: Path) -> None:
    """Call write(tmp_path) and move the result onto `path` only when it completed.

    The file gets the mode of any new file under the umask (mkstemp's and safetensors' 0600 would hide it from
    another account that serves the model); a kill leaves `.NAME.*.tmp`, which `remove_leftovers` deletes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    os.close(fd)
    try:
        write(Path(tmp))
        umask_mode(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def umask_mode(path: Path) -> None:
    """Give a written file the mode a new file gets under this process's umask (0666 & ~umask)."""
    os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask would, for a moment, for every thread)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_leftovers(directory: Path) -> list[Path]:
    """Delete the partial files and folders (`.*.tmp`) that a killed writer left in `directory`; returns them."""
    found = sorted(directory.glob(f".*{TMP_SUFFIX}")) if directory.is_dir() else []
    for path in found:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return found


def nonfinite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors that hold a NaN or an infinity."""
    return [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def save_ours(tensors: dict[str, torch.Tensor], config: dict, directory: str | Path) -> Path:
    """Write our checkpoint dir: trainable tensors (safetensors, reference key names) + config.json."""
    directory = Path(directory)
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_save(lambda p: save_file(cpu, str(p), metadata={"format": "salmonn"}), directory / OURS_WEIGHTS)
    atomic_save(lambda p: p.write_text(json.dumps(config, indent=2)), directory / OURS_CONFIG)
    return directory


def save_reference_pth(tensors: dict[str, torch.Tensor], path: str | Path) -> Path:
    """Write the reference trainer's layout: torch.save({"model": trainable state dict})."""
    path = Path(path)
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_save(lambda p: torch.save({"model": cpu}, p), path)
    return path
