"""SALMONN on vLLM: `export` writes a folder vLLM loads (no vLLM import); `model` is the vLLM model and its
processor; `ngram` the n-gram ban as a logits processor; `register` is the `vllm.general_plugins` entry point."""

ARCHITECTURE = "SalmonnForConditionalGeneration"


def register() -> None:
    """Tell vLLM's model registry where SALMONN lives (vLLM calls this in every process it starts)."""
    from vllm import ModelRegistry
    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, "salmonn.vllm.model:SalmonnForConditionalGeneration")
