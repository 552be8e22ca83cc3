"""Where the default model comes from when a command gets no --config: SALMONN-mini, shipped in the package."""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError

MINI_DIR = Path(__file__).parent / "assets" / "mini"


def default_config_path() -> Path:
    """The config of the default model (SALMONN-mini), or a clear error when its weights are missing."""
    config = MINI_DIR / "config.yaml"
    if not (MINI_DIR / "trainable.safetensors").is_file():
        raise ConfigError(f"no --config given and the default model's weights are missing ({MINI_DIR}/"
                          "trainable.safetensors): reinstall salmonn, or pass --config CFG.yaml")
    return config
