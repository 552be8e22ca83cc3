"""`salmonn serve --engine vllm`: export the model once into a cache folder, then become vLLM's OpenAI server.

The export is keyed by everything that changes its tensors or its template (the resolved config, the checkpoint's
hash, the LoRA scale, the export format), so a second start reuses it and a new checkpoint gets a new folder.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from ..config import Config, config_to_dict, load_config
from ..errors import ConfigError
from ..backbones import file_sha256
from .export import FORMAT_VERSION, export_from_config

DONE_MARK = "salmonn_export.json"  # written last: a folder without it is an interrupted export


def cache_root() -> Path:
    """$SALMONN_VLLM_CACHE, else ~/.cache/salmonn/vllm."""
    return Path(os.environ.get("SALMONN_VLLM_CACHE") or Path.home() / ".cache" / "salmonn" / "vllm").expanduser()


def resolved_config(config: str | None, overrides: Sequence[str]) -> Config:
    from ..defaults import default_config_path
    return load_config(config if config is not None else default_config_path(), list(overrides))


def export_key(config: str | None, overrides: Sequence[str], lora_scale: float) -> str:
    """A hash of what the export's contents depend on."""
    resolved = resolved_config(config, overrides)
    ckpt = resolved.model.ckpt
    parts = {"config": config_to_dict(resolved), "ckpt_sha256": file_sha256(Path(ckpt)) if ckpt else "",
             "lora_scale": lora_scale, "format": FORMAT_VERSION}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def ensure_export(config: str | None, overrides: Sequence[str], lora_scale: float = 1.0) -> Path:
    """The cached export of this config (made now if missing or interrupted)."""
    folder = cache_root() / export_key(config, overrides, lora_scale)
    if (folder / DONE_MARK).is_file():
        return folder
    if folder.exists():
        import shutil
        shutil.rmtree(folder)  # an interrupted export
    print(f"exporting the model for vLLM into {folder} ...", file=sys.stderr, flush=True)
    return export_from_config(config, folder, lora_scale, overrides)


def server_arguments(model_dir: Path, *, host: str, port: int, model_name: str, api_key: str | None,
                     log_level: str, eager: bool, dtype: str, extra: Sequence[str]) -> list[str]:
    """vLLM's OpenAI server command line for an export (audio: one clip per prompt, as `salmonn serve`)."""
    args = ["--model", str(model_dir), "--served-model-name", model_name, "--host", host, "--port", str(port),
            "--dtype", dtype, "--chat-template-content-format", "openai", "--generation-config", "auto",
            "--limit-mm-per-prompt", json.dumps({"audio": 1}), "--uvicorn-log-level", log_level]
    if api_key:
        args += ["--api-key", api_key]
    if eager:
        args.append("--enforce-eager")
    return args + list(extra)


def engine_environment(max_audio_seconds: float) -> dict[str, str]:
    """Offline (nothing from a model hub), a CPU KV cache that fits a laptop unless the user chose one, and vLLM's
    decoder limit above the model's max_audio_seconds, so a long clip gets our message (which names the setting)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB; vLLM's CPU default takes a large share of memory
    env.setdefault("VLLM_MAX_AUDIO_DECODE_DURATION_S", str(int(max_audio_seconds) + 60))
    return env


def require_vllm() -> None:
    if importlib.util.find_spec("vllm") is None:
        raise ConfigError("--engine vllm needs vLLM in this Python environment: run `bash scripts/setup.sh --vllm` "
                          "and start it with .venv-vllm/bin/salmonn serve --engine vllm")


def serve_vllm(config: str | None, overrides: Sequence[str], *, host: str, port: int, model_name: str,
               api_key: str | None, log_level: str, eager: bool, lora_scale: float, extra: Sequence[str]) -> None:
    """Export if needed, then replace this process with vLLM's OpenAI server (signals go straight to vLLM)."""
    require_vllm()
    dtype = next((o.split("=", 1)[1] for o in overrides if o.startswith("model.dtype=")), "float32")
    model_dir = ensure_export(config, [o for o in overrides if not o.startswith("model.dtype=")], lora_scale)
    args = server_arguments(model_dir, host=host, port=port, model_name=model_name, api_key=api_key,
                            log_level=log_level, eager=eager, dtype=dtype, extra=extra)
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", *args]
    print("starting vLLM: " + " ".join(command), file=sys.stderr, flush=True)
    sys.stdout.flush()
    limit = resolved_config(config, overrides).model.max_audio_seconds
    os.execve(sys.executable, command, engine_environment(limit))
