"""SALMONN: a large language model with ears."""

from .config import Config, GenerateConfig, ModelConfig, load_config
from .errors import AudioError, CheckpointError, ConfigError, PromptError, SalmonnError

__all__ = ["SALMONN", "Answer", "load_model", "Config", "ModelConfig", "GenerateConfig", "load_config", "SalmonnError",
           "AudioError", "ConfigError", "CheckpointError", "PromptError"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # The model (torch, transformers) is imported on first use, so that `salmonn --help`, the metrics and other
    # light submodules do not pay for it.
    if name == "SALMONN":
        from .model import SALMONN
        return SALMONN
    if name == "load_model":
        from .builder import load_model
        return load_model
    if name == "Answer":
        from .decoding import Answer
        return Answer
    raise AttributeError(f"module 'salmonn' has no attribute {name!r}")
