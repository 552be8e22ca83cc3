"""Typed configuration. The reference YAML (`model:` and `generate:` sections) loads unchanged.

Relative paths in a YAML file are resolved against the YAML's folder; `key=value` overrides
(`model.lora_rank=4`, `generate.num_beams=1`, or a bare key that names a field of exactly one section)
are applied after loading.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any, Sequence, get_type_hints

import yaml

from .errors import ConfigError


@dataclasses.dataclass
class ModelConfig:
    # --- reference keys (configs/decode_config.yaml of the authors' repository) ---
    llama_path: str = ""  # HF dir (or hub id) of the causal LLM
    whisper_path: str = ""  # HF Whisper dir (or hub id); only the encoder is used
    beats_path: str = ""  # BEATs `{cfg, model}` .pt checkpoint; "" = no BEATs branch
    ckpt: str = ""  # SALMONN trainable-tensor checkpoint (.pth reference or .safetensors ours); "" = fresh init
    freeze_whisper: bool = True  # Whisper is frozen in all three stages
    freeze_beats: bool = True  # BEATs is frozen in all three stages
    use_speech_Qformer: bool = True  # the connector is a Q-Former (the only connector the reference ships)
    freeze_speech_QFormer: bool = False  # train the Q-Former
    window_level_Qformer: bool = True  # one query set per window instead of per clip
    num_speech_query_token: int = 1  # queries per window
    second_per_window: float = 0.333333  # window length in seconds (17 Whisper frames)
    second_stride: float = 0.333333  # window hop in seconds
    speech_llama_proj_model: str = ""  # optional separate checkpoint for the projection
    freeze_speech_llama_proj: bool = False  # train the projection into the LLM
    lora: bool = True  # wrap the LLM with LoRA adapters
    lora_rank: int = 8  # LoRA r
    lora_alpha: int = 32  # LoRA alpha (scaling alpha / r = 4.0)
    lora_dropout: float = 0.1  # LoRA dropout
    multi_prompt: bool = True  # one prompt per sample (reference training flag)
    prompt_template: str = "USER: {}\nASSISTANT:"  # chat template around the instruction (Vicuna v1.1)
    prompt_path: str = ""  # training prompts: JSON task -> list of instructions
    test_prompt_path: str = ""  # evaluation prompts: JSON task -> instruction
    max_txt_len: int = 300  # target tokens kept in training
    end_sym: str = "</s>"  # appended to every training target
    low_resource: bool = False  # reference's 8-bit LLM flag (CUDA + bitsandbytes only)
    device_8bit: int = 0  # GPU of the 8-bit LLM
    token: str | None = None  # hub token (reference key; unused offline)
    # --- Q-Former sizes: the reference hard-codes BERT-base; these keys make them explicit ---
    qformer_hidden_size: int = 768  # Q-Former width
    qformer_num_attention_heads: int = 12  # Q-Former heads
    qformer_intermediate_size: int = 3072  # Q-Former FFN width
    qformer_num_hidden_layers: int = 2  # Q-Former depth
    # --- this project's additions (defaults keep every reference number unchanged) ---
    lora_target_modules: list[str] = dataclasses.field(default_factory=lambda: ["q_proj", "v_proj"])  # peft targets
    # audio input
    channel: str = "first"  # multi-channel audio: "first" (reference) or "mean" (downmix)
    resample: bool = True  # resample other rates to 16 kHz (the reference reads them as 16 kHz: garbage)
    long_audio: str = "segment"  # >30 s: "segment" (88 tokens per 30 s, concatenated) or "truncate" (reference)
    max_audio_seconds: float = 600.0  # refuse longer audio with a clear error
    encode_batch_size: int = 8  # 30 s segments encoded at once: bounds encoder memory whatever the audio length
    # fidelity switches (True/False as below = the reference's numbers)
    reference_batching: bool = False  # True: pad batches exactly as the reference (batch answers then differ)
    whisper_full_window: bool = True  # True: Whisper always sees 30 s (reference); False: only each clip's own
    #                                   length (fast mode: fewer audio tokens, (frames - 17) // 17 + 1 per segment)
    # runtime
    dtype: str = "float32"  # compute dtype of the frozen backbones: float32, bfloat16 or float16
    device: str = "auto"  # auto (cuda if available), cpu or cuda[:N]
    lora_scale: float = 1.0  # multiplies LoRA's alpha / r at run time (paper's activation uses 0.5)
    quantize: str = "none"  # LLM weights: none, 8bit or 4bit (bitsandbytes, CUDA only; low_resource=True means 8bit)
    compile: bool = False  # torch.compile the LLM's per-token step with a static KV cache (each new batch size /
    #                        256-token cache bucket compiles once, about a minute on a CPU; answers may differ in ulps)
    greedy_loop: bool = True  # num_beams=1 greedy through salmonn.greedy's own loop instead of HF generate(): less
    #                           overhead per token (same ids as generate: fixture and SALMONN-mini answers)
    merge_lora: bool = True  # fold LoRA into the base weights in eval mode: no adapter matmuls per token (same
    #                          greedy ids on the fixture; train() restores the original weights exactly)
    # LLM fast paths (salmonn.llm_runtime), applied where the model is built; none changes an answer's ids
    packed_gqa: bool = True  # one-token steps of a grouped-query LLM attend per key/value head (no repeat_kv copies
    #                          of the cache inside the compiled step: 1.18x one clip, benchmarks/decode_step.md)
    contiguous_head: bool = True  # the output head gets a contiguous input (1.3x more on 8-clip batches, same file)
    # a connector trained to spell (SALMONN-mini's CTC query, train/ctc.py): what generate.ctc_weight rescores with
    ctc_query: int | None = None  # the query per window that CTC trained (run.ctc_query); None: no CTC head (reference)
    ctc_scale: float = 32.0  # the cosine-logit scale it was trained with (run.ctc_scale)
    ctc_blank: str = " "  # the one-token text that stands for CTC's blank (run.ctc_blank)


def option(default: Any = dataclasses.MISSING, help: str = "", **kwargs) -> Any:
    """A config field with its one-line help (field metadata): the help of the same option on the command line
    (salmonn.flags.DecodingFlags) and the shape of it in a server request (salmonn.serve.schemas.Decoding)."""
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


@dataclasses.dataclass
class GenerateConfig:
    """Decoding settings (the `generate:` section). Their names, types and help are defined here once; the CLI's
    decoding flags and the server's request fields are derived from them (`optional_fields`)."""
    max_new_tokens: int = option(200, "at most this many answer tokens")  # reference default
    num_beams: int = option(4, "beam search width (1 = greedy)")  # reference default (beam search)
    do_sample: bool = option(False, "sample instead of searching")
    min_length: int = 1  # reference key: counts the echoed BOS, so 1 is a no-op
    min_new_tokens: int = option(0, "at least this many answer tokens (EOS is suppressed before)")
    temperature: float = option(1.0, "sampling temperature")
    top_p: float = option(0.9, "nucleus sampling mass")
    top_k: int = option(0, "sample among the k most likely tokens (0 = off)")
    repetition_penalty: float = option(1.0, "> 1 discourages repeating generated tokens")
    no_repeat_ngram_size: int = option(0, "no run of this many tokens twice in an answer (0 = off, as the "
                                          "reference); ends repetition loops")
    length_penalty: float = option(1.0, "beam scores are divided by length ** this")
    seed: int | None = option(None, "sampling seed: the same seed gives the same answer")
    stop: list[str] = option(help="stop at this string (repeatable); the answer ends before it", default_factory=list)
    ctc_weight: float = 0.0  # > 0: pick among the beams and the CTC best path by (1 - w) LLM + w CTC log-likelihood
    #                          (needs model.ctc_query; transcription only; 0 = the LLM's own choice, as the reference)
    ctc_length_bonus: float = 0.0  # with ctc_weight: added per answer token (offsets the sums' bias to short answers)


def optional_fields(cls, names: Sequence[str]) -> list[tuple[str, Any, Any]]:
    """Fields `names` of dataclass `cls` for dataclasses.make_dataclass as options that may be left unset: type
    `T | None`, default None (= as configured), the same help."""
    hints, fields = get_type_hints(cls), {f.name: f for f in dataclasses.fields(cls)}
    return [(name, hints[name] | None, dataclasses.field(default=None, metadata=fields[name].metadata))
            for name in names]


def options_help(cls, names: Sequence[str]) -> str:
    """An "Options:" docstring section (`  name: help` lines, as salmonn.cli reads them) for fields of `cls`."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    return "\n".join(f"  {name}: {fields[name].metadata.get('help', '')}" for name in names)


@dataclasses.dataclass
class Config:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    generate: GenerateConfig = dataclasses.field(default_factory=GenerateConfig)
    extra: dict = dataclasses.field(default_factory=dict)  # other top-level sections (run:, datasets:) kept as-is
    source: str = ""  # the YAML this came from


_PATH_KEYS = ("llama_path", "whisper_path", "beats_path", "ckpt", "speech_llama_proj_model", "prompt_path",
              "test_prompt_path")


def coerce_field(cls, name: str, value: Any, where: str) -> Any:
    """`value` as the type of field `name` of dataclass `cls`; ConfigError naming the key when it cannot be."""
    hint = get_type_hints(cls)[name]
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {name} must be a mapping, got {value!r}")
        return build_section(hint, value, f"{where}.{name}")
    if value is None and hint in (int | None, str | None):
        return None
    ok = None
    if hint is bool:
        if isinstance(value, bool):
            ok = value
        elif isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            ok = value.lower() in ("true", "1", "yes")
    elif hint in (int, int | None):
        if isinstance(value, int) and not isinstance(value, bool):
            ok = value
        elif isinstance(value, float) and value.is_integer():
            ok = int(value)
    elif hint is float:
        if isinstance(value, str):  # YAML reads 1e-5 (no dot) as a string
            try:
                ok = float(value)
            except ValueError:
                pass
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            ok = float(value)
    elif hint in (str, str | None):
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            ok = str(value)
    elif hint == list[str]:
        if isinstance(value, str):
            ok = [v for v in value.split(",") if v] if value else []
        elif isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
            ok = [str(v) for v in value]
        elif value is None:
            ok = []
    if ok is None:
        raise ConfigError(f"{where}: {name} must be {getattr(hint, '__name__', hint)}, got {value!r}")
    return ok


def build_section(cls, values: dict, where: str):
    """A config dataclass from a YAML mapping: unknown keys (with a \"did you mean\") and wrong types are errors
    that name the key; strings YAML did not convert (\"1e-5\", \"true\", \"a,b\") are read as the field's type."""
    fields = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            raise ConfigError(f"{where}: unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return cls(**{k: coerce_field(cls, k, v, where) for k, v in values.items()})


def _resolve_paths(model: ModelConfig, base: Path) -> None:
    for key in _PATH_KEYS:
        value = getattr(model, key)
        if value and not Path(value).is_absolute() and (base / value).exists():
            setattr(model, key, str((base / value).resolve()))


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a reference-style YAML (or start from defaults when path is None) and apply key=value overrides."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({err})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping with a 'model:' section")
    where = str(path) if path else "<defaults>"
    model_values, generate_values = dict(raw.get("model") or {}), dict(raw.get("generate") or {})
    for item in overrides:
        section, key, value = _parse_override(item)
        (model_values if section == "model" else generate_values)[key] = value
    config = Config(model=build_section(ModelConfig, model_values, f"{where} [model]"),
                    generate=build_section(GenerateConfig, generate_values, f"{where} [generate]"),
                    extra={k: v for k, v in raw.items() if k not in ("model", "generate")},
                    source=str(path or ""))
    if path is not None:
        _resolve_paths(config.model, path.parent)
    _validate(config.model, where)
    return config


def _parse_override(item: str) -> tuple[str, str, Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value")
    key, value = item.split("=", 1)
    parsed = yaml.safe_load(value) if value else ""
    if "." in key:
        section, key = key.split(".", 1)
        if section not in ("model", "generate"):
            raise ConfigError(f"override {item!r}: section must be 'model' or 'generate'")
        return section, key, parsed
    in_model = key in {f.name for f in dataclasses.fields(ModelConfig)}
    in_generate = key in {f.name for f in dataclasses.fields(GenerateConfig)}
    if in_model and in_generate:
        raise ConfigError(f"override {item!r}: ambiguous, write model.{key} or generate.{key}")
    if not in_model and not in_generate:
        names = [f.name for cls in (ModelConfig, GenerateConfig) for f in dataclasses.fields(cls)]
        close = difflib.get_close_matches(key, names, n=1)
        raise ConfigError(f"override {item!r}: unknown key" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return ("model" if in_model else "generate"), key, parsed


def _validate(model: ModelConfig, where: str) -> None:
    choices = {"channel": ("first", "mean"), "long_audio": ("segment", "truncate"),
               "dtype": ("float32", "bfloat16", "float16"), "quantize": ("none", "8bit", "4bit")}
    for key, allowed in choices.items():
        if getattr(model, key) not in allowed:
            raise ConfigError(f"{where} [model]: {key} must be one of {allowed}, got {getattr(model, key)!r}")
    if "{}" not in model.prompt_template:
        raise ConfigError(f"{where} [model]: prompt_template must contain '{{}}' where the instruction goes")
    if model.encode_batch_size < 1:
        raise ConfigError(f"{where} [model]: encode_batch_size must be at least 1, got {model.encode_batch_size}")
    if model.qformer_hidden_size % model.qformer_num_attention_heads:
        raise ConfigError(f"{where} [model]: qformer_hidden_size must be divisible by qformer_num_attention_heads")


def config_to_dict(config: Config) -> dict:
    """The YAML-shaped dict of a config (for saving next to our checkpoints)."""
    return {"model": dataclasses.asdict(config.model), "generate": dataclasses.asdict(config.generate),
            **config.extra}
