"""The command line's option groups shared by commands (`salmonn infer`, `chat`, `score`, `bench`, ...): a
parameter typed with one of these dataclasses becomes an option group (salmonn.cli). They point down: the model
flags end in salmonn.builder.load_model, the decoding flags in salmonn.decoding.decoding_config (imported when
used, so that `salmonn --help` does not load torch)."""

from __future__ import annotations

import dataclasses
from typing import Sequence

from .config import GenerateConfig, optional_fields, options_help


@dataclasses.dataclass
class ModelFlags:
    """Model: which one, where it runs and how (each flag wins over the config and its key=value overrides).

    Options:
      config: the model's YAML (reference layout); default: SALMONN-mini, shipped in the package
      device: auto (cuda when available), cpu, cuda or cuda:N
      dtype: float32, bfloat16 or float16 for the frozen backbones
      quantize: none, 8bit or 4bit LLM weights (bitsandbytes, CUDA only)
      lora_scale: multiplies the trained LoRA scaling at run time (0.5 = the paper's activation)
    """
    config: str | None = None
    device: str | None = None
    dtype: str | None = None
    quantize: str | None = None
    lora_scale: float | None = None

    def load(self, overrides: Sequence[str] = ()):
        """The model these flags name, built by salmonn.builder.load_model."""
        from .builder import load_model
        return load_model(self.config, overrides, device=self.device, dtype=self.dtype, quantize=self.quantize,
                          lora_scale=self.lora_scale)


DECODING_FLAGS = ("num_beams", "max_new_tokens", "min_new_tokens", "do_sample", "temperature", "top_p", "top_k",
                  "seed", "repetition_penalty", "no_repeat_ngram_size", "length_penalty", "stop")  # GenerateConfig's


def _options(self) -> dict:
    """generate() keywords: preset + the options given (unset ones stay None: config / preset decide)."""
    values = dataclasses.asdict(self)
    values["do_sample"] = True if self.do_sample else None  # a flag: given or not
    return values


def _config(self, base: GenerateConfig) -> GenerateConfig:
    """The decoding settings these flags give on top of `base` (the config's generate section)."""
    from .decoding import decoding_config
    options = self.options()
    return decoding_config(base, options.pop("preset"), **options)


DecodingFlags = dataclasses.make_dataclass(
    "DecodingFlags",
    [("preset", str | None, None)] + [(name, bool, False) if name == "do_sample" else (name, kind, default)
                                      for name, kind, default in optional_fields(GenerateConfig, DECODING_FLAGS)],
    namespace={"options": _options, "config": _config, "__module__": __name__, "__doc__": f"""\
Decoding: --preset, then any flag given (each wins over the preset, which wins over the config).

The flags are GenerateConfig's fields (salmonn.config), with its help.

Options:
  preset: reference (beam 4, the reference's defaults), greedy (num_beams 1), sample (top_p 0.9) or transcribe
          (greedy or the connector's CTC spelling, whichever scores higher: SALMONN-mini transcription)
{options_help(GenerateConfig, DECODING_FLAGS)}
"""})
