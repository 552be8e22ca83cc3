"""Where the default model comes from when a command gets no --config."""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError


def default_config_path() -> Path:
    """The config of the default model (SALMONN-mini), or a clear error while it is not available."""
    raise ConfigError("no --config given and no default model is installed yet: pass --config CFG.yaml "
                      "(e.g. ../shared/fixtures/reference-tiny/config.yaml)")
