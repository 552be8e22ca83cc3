"""User-facing errors: one line that names the file or field and says what to do."""


class SalmonnError(Exception):
    """Base class for errors caused by the user's input, shown without a traceback by the CLI."""


class AudioError(SalmonnError):
    """An audio file or array that cannot be used (unreadable, empty, NaN, too long...)."""


class ConfigError(SalmonnError):
    """A config file, key or value that is wrong (typo, bad type, missing path)."""


class CheckpointError(SalmonnError):
    """A checkpoint whose keys or shapes do not match the model it is loaded into."""


class PromptError(SalmonnError):
    """A prompt that cannot be used (e.g. missing the <SpeechHere> audio placeholder)."""


class BackboneError(SalmonnError):
    """A pretrained backbone that is missing, corrupted or cannot be converted."""
