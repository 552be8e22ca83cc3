"""Model builder: a config -> a ready SALMONN (backbones read, LoRA added, checkpoint loaded, on its device).

Everything that reads backbone files lives here, so `model.py` only composes and computes.

    from salmonn.builder import load_model
    model = load_model("configs/salmonn-13b.yaml", ["num_beams=1"], device="cpu")
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, WhisperConfig, WhisperFeatureExtractor
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from .hardware import native_bf16
from .checkpoint import load_beats, load_strict, read_prefixed
from .config import Config, load_config
from .errors import ConfigError
from .llm_runtime import apply_fast_paths
from .model import SALMONN

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """auto (cuda when available, else cpu), cpu, cuda or cuda:N; a clear error when CUDA is asked for but absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"model.device: {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"model.device={name}: CUDA is not available here (torch {torch.__version__}, "
                              f"{'no GPU found' if torch.version.cuda else 'a CPU-only build'}); use --device cpu "
                              f"or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"model.device={name}: only {torch.cuda.device_count()} GPU(s) visible")
    elif device.type != "cpu":
        raise ConfigError(f"model.device={name}: only auto, cpu and cuda[:N] are supported")
    return device


def resolve_model_dir(path: str, key: str) -> str:
    """An HF model dir (or hub id) named by config key `key`; `pypi:NAME` is converted once into the cache."""
    if not path:
        raise ConfigError(f"model.{key} is empty: point it at an HF model dir")
    if path.startswith("pypi:"):  # a backbone shipped in a PyPI package
        from .backbones import resolve_backbone
        return resolve_backbone(path)
    if not Path(path).exists() and (path.startswith((".", "/", "~")) or path.count("/") != 1):
        raise ConfigError(f"model.{key}: {path} does not exist (relative paths are resolved against the YAML's "
                          f"folder; hub ids need network access)")
    return path


def load_whisper_encoder(path: str, dtype: torch.dtype) -> tuple[WhisperEncoder, WhisperFeatureExtractor]:
    """Only the encoder of an HF Whisper dir (the decoder's tensors are never read); every tensor of it is loaded
    strictly, so it is built without initialising them."""
    config = WhisperConfig.from_pretrained(path)
    with torch.device("meta"):  # no random init of weights that are all loaded next (half a second for base)
        encoder = WhisperEncoder(config)
    if set(dict(encoder.named_buffers())) - set(encoder.state_dict()):  # a buffer no file holds: initialise it
        encoder = WhisperEncoder(config)
    encoder = encoder.to_empty(device="cpu") if encoder.conv1.weight.is_meta else encoder
    state = read_prefixed(path, ("model.encoder.", "encoder."))
    load_strict(encoder, state, f"{path} (Whisper encoder)")
    return encoder.to(dtype).eval(), WhisperFeatureExtractor.from_pretrained(path)


def quantization_config(quantize: str, dtype: torch.dtype, device: torch.device):
    """transformers' BitsAndBytesConfig for model.quantize=8bit/4bit; clear errors where it cannot work."""
    if device.type != "cuda":
        raise ConfigError(f"model.quantize={quantize} loads the LLM through bitsandbytes, which needs a CUDA GPU; "
                          f"this run is on {device.type}: drop it (bfloat16 halves memory on CPU: --dtype bfloat16)")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError(f"model.quantize={quantize} needs bitsandbytes: pip install 'salmonn[cuda]'") from None
    from transformers import BitsAndBytesConfig
    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
                              bnb_4bit_use_double_quant=True)


def load_tokenizer(path: str):
    """The LLM's tokenizer; one without a pad token gets its unk (or eos) as pad: no new embedding row."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:  # deliberate deviation: the reference adds [PAD] and resizes randomly
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer


def load_llm(path: str, dtype: torch.dtype, quantize: str = "none", device: torch.device | None = None):
    """Causal LM + tokenizer; quantize 8bit/4bit loads the weights through bitsandbytes onto `device` (a GPU)."""
    tokenizer = load_tokenizer(path)
    if quantize != "none":
        device = device or torch.device("cuda")
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype,
                                                     quantization_config=quantization_config(quantize, dtype, device),
                                                     device_map={"": device.index or 0})
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    if model.get_input_embeddings().weight.shape[0] < len(tokenizer):
        raise ConfigError(f"{path}: tokenizer has {len(tokenizer)} tokens but the LLM only "
                          f"{model.get_input_embeddings().weight.shape[0]} embedding rows")
    return model, tokenizer


def load_salmonn(config: Config, load_checkpoint: bool = True) -> SALMONN:
    """Read the backbones a config names, compose SALMONN, load its `ckpt` strictly and move it to its device."""
    m = config.model
    dtype = DTYPES[m.dtype]
    device = resolve_device(m.device)
    quantize = "8bit" if m.low_resource and m.quantize == "none" else m.quantize
    if quantize != "none":
        quantization_config(quantize, dtype, device)  # fail before loading anything
    if dtype == torch.bfloat16 and device.type == "cpu" and not native_bf16():
        warnings.warn("model.dtype=bfloat16 on a CPU without AVX512-BF16/AMX: bf16 matrix products are emulated "
                      "here and run slower than float32", stacklevel=2)
    encoder, features = load_whisper_encoder(resolve_model_dir(m.whisper_path, "whisper_path"), dtype)
    beats = load_beats(m.beats_path).to(dtype) if m.beats_path else None
    llm, tokenizer = load_llm(resolve_model_dir(m.llama_path, "llama_path"), dtype, quantize, device)
    model = SALMONN(config, encoder, features, beats, llm, tokenizer)
    if m.ckpt and load_checkpoint:
        model.load_checkpoint(m.ckpt)
    apply_fast_paths(model.llama_model, m)  # chosen once, from model.packed_gqa / contiguous_head / compile
    if quantize == "none":
        return model.to(device).eval()
    for name, child in model.named_children():  # the quantized LLM is already on its GPU: never move or cast it
        if name != "llama_model":
            child.to(device)
    model.speech_query_tokens.data = model.speech_query_tokens.data.to(device)
    return model.eval()


def load_model(config: str | Path | Config | None = None, overrides: Sequence[str] = (), *, device: str | None = None,
               dtype: str | None = None, quantize: str | None = None, lora_scale: float | None = None,
               load_checkpoint: bool = True) -> SALMONN:
    """A YAML path (None: the default model, SALMONN-mini) + key=value overrides -> a ready model.

    device / dtype / quantize / lora_scale (the CLI's flags) win over the config and the overrides. A Config
    object is used as it is: set its fields instead of passing overrides or flags with it."""
    if isinstance(config, Config):
        if list(overrides) or any(v is not None for v in (device, dtype, quantize, lora_scale)):
            raise ValueError("load_model: overrides and flags apply to a YAML path; set the Config's fields instead")
        return load_salmonn(config, load_checkpoint)
    if config is None:
        from .defaults import default_config_path
        config = default_config_path()
    flags = {"model.device": device, "model.dtype": dtype, "model.quantize": quantize, "model.lora_scale": lora_scale}
    overrides = list(overrides) + [f"{key}={value}" for key, value in flags.items() if value is not None]
    return load_salmonn(load_config(config, overrides), load_checkpoint)
