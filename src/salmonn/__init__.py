"""SALMONN: a large language model with ears."""

from .config import Config, GenerateConfig, ModelConfig, load_config
from .errors import AudioError, CheckpointError, ConfigError, PromptError, SalmonnError
from .model import SALMONN, Answer

__all__ = ["SALMONN", "Answer", "Config", "ModelConfig", "GenerateConfig", "load_config", "SalmonnError",
           "AudioError", "ConfigError", "CheckpointError", "PromptError"]
__version__ = "0.1.0"
