"""`salmonn export` (heavy imports stay inside the function: `salmonn --help` stays fast)."""

from __future__ import annotations

from ..errors import ConfigError


def export(config: str, out: str, /, vllm: bool = False, lora_scale: float = 1.0, overrides: list[str] = ()) -> None:
    """Export a model for another engine: --vllm writes a folder vLLM loads unchanged (`vllm serve OUT` or
    `LLM(model=OUT)` with salmonn installed beside vLLM).

    CONFIG is the model's YAML (`default`: the bundled SALMONN-mini); OUT a new or empty folder. The folder holds
    config.json (architecture SalmonnForConditionalGeneration), model.safetensors (the LLM with LoRA merged at
    --lora-scale, the audio side in the reference's names), the tokenizer with an audio placeholder, a chat
    template that renders prompts as `salmonn infer` does, generation_config.json (the config's greedy defaults).

    Options:
      config: the model's YAML, or `default`
      out: the folder to write
      vllm: write a vLLM model folder (the only format so far)
      lora_scale: LoRA's scale merged into the weights (1.0 as trained; the paper's activation uses 0.5)
    """
    if not vllm:
        raise ConfigError("say which format: --vllm (a vLLM model folder)")
    from .export import export_from_config
    folder = export_from_config(None if config == "default" else config, out, lora_scale, overrides)
    print(folder)
