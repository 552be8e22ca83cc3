"""`salmonn export --vllm`: a SALMONN as one folder vLLM loads unchanged.

The folder holds the LLM's own config.json (architecture renamed to `SalmonnForConditionalGeneration`, our model
config under the key `salmonn`), one safetensors file (the LLM with LoRA merged at the chosen scale, the audio
side under `audio_tower.` in the reference's key names), the tokenizer with an audio placeholder token, a chat
template that renders a conversation exactly as `salmonn.prompting.render` does, a generation_config.json with the
config's greedy defaults, and Whisper's feature-extractor settings. Nothing here imports vLLM.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch
from safetensors.torch import save_file

from ..backbones import file_sha256
from ..config import Config, config_to_dict
from ..errors import ConfigError
from ..prompting import AUDIO_PLACEHOLDER, AUDIO_PREFIX

if TYPE_CHECKING:
    from ..model import SALMONN

from . import ARCHITECTURE
WEIGHTS = "model.safetensors"
FEATURE_EXTRACTOR_DIR = "whisper_feature_extractor"  # a subfolder: vLLM must not take it for the model's processor
TOWER_PREFIX = "audio_tower."  # the audio side's tensors (reference names) in the weights file
LLM_PREFIX = "language_model."  # the LLM's tensors (its own HF names) in the weights file
FORMAT_VERSION = 1


def chat_template(template: str, end_sym: str) -> str:
    """A Jinja chat template (OpenAI content parts) that renders turns as `prompting.render` does: BOS, then each
    user turn as `template` around `<Speech><SpeechHere></Speech> ` per clip + its text parts joined by spaces,
    each assistant turn as " " + answer + end_sym. Content given as parts (vLLM's "openai" content format) or as
    a string with vLLM's placeholder lines (its "string" format) renders the same. System messages are refused,
    as `salmonn serve` refuses them."""
    if template.count("{}") != 1:
        raise ConfigError(f"model.prompt_template {template!r} must hold '{{}}' exactly once")
    before, after = template.split("{}")
    literal = json.dumps
    return (
        "{%- set before = " + literal(before) + " -%}{%- set after = " + literal(after) + " -%}"
        "{%- set clip = " + literal(AUDIO_PREFIX) + " -%}{%- set placeholder = " + literal(AUDIO_PLACEHOLDER) + " -%}"
        "{%- set end_sym = " + literal(end_sym) + " -%}"
        "{{- bos_token -}}"
        "{%- for message in messages -%}"
        "{%- if message['role'] not in ('user', 'assistant') -%}"
        "{{- raise_exception(\"'\" ~ message['role'] ~ \"' messages are not supported: SALMONN's prompt template has "
        "no system slot; put the instruction in the user message\") -}}"
        "{%- endif -%}"
        "{%- set ns = namespace(text='', clips=0) -%}"
        "{%- if message['content'] is string -%}"  # vLLM's 'string' format: a placeholder line per clip, then text
        "{%- set ns.clips = message['content'].count(placeholder) -%}"
        "{%- set parts = [{'type': 'text', 'text': message['content'].replace(placeholder, '')}] -%}"
        "{%- else -%}{%- set parts = message['content'] -%}{%- endif -%}"
        "{%- for part in parts -%}"
        "{%- if part['type'] == 'text' and part['text'] | trim -%}"
        "{%- set ns.text = ns.text ~ (' ' if ns.text else '') ~ (part['text'] | trim) -%}"
        "{%- elif part['type'] in ('audio', 'input_audio', 'audio_url') -%}{%- set ns.clips = ns.clips + 1 -%}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if message['role'] == 'user' -%}{{- before ~ clip * ns.clips ~ ns.text ~ after -}}"
        "{%- else -%}{{- ' ' ~ ns.text ~ end_sym -}}{%- endif -%}"
        "{%- endfor -%}"
    )


def merged_llm_state(model: "SALMONN", lora_scale: float) -> dict[str, torch.Tensor]:
    """The LLM's tensors under its own HF names, LoRA folded in at `lora_scale` (the model is changed: export only)."""
    model.unmerge_lora()
    model.set_lora_scale(lora_scale)
    llm = model.llama_model
    if hasattr(llm, "merge_and_unload"):
        llm = llm.merge_and_unload()
    state = {k: v.detach().contiguous() for k, v in llm.state_dict().items() if not k.endswith("rotary_emb.inv_freq")}
    if getattr(llm.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # one stored copy; vLLM ties it back
    return state


MIN_HEAD_DIM = 32  # the smallest head size vLLM's CPU attention takes (its list: 32, 64, 80, 96, 112, 128, ...)


def widen_heads(state: dict[str, torch.Tensor], config: dict, head_dim: int) -> None:
    """Pad a LLaMA's attention heads to `head_dim` in place, computing the same function: each head's two rotary
    halves get zero dimensions after them (neox-style RoPE pairs dimension j with j + d/2), rope_theta is raised to
    the power head_dim/d so pair j keeps its frequency, and q is scaled by sqrt(head_dim/d) so the attention
    scale 1/sqrt(head_dim) equals the original 1/sqrt(d). V and o_proj get zero dimensions that add nothing."""
    old = int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])
    rope = config.get("rope_parameters") or {"rope_type": "default", "rope_theta": config.get("rope_theta", 10000.0)}
    if rope.get("rope_type", "default") != "default":
        raise ConfigError(f"cannot widen attention heads under rope_type={rope['rope_type']!r}; export without it")
    if any(k.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias")) for k in state):
        raise ConfigError("cannot widen attention heads with q/k/v biases (vLLM's CPU attention needs heads of at "
                          "least 32): serve this model on a GPU")
    half, new_half = old // 2, head_dim // 2

    def rotary_rows(weight: torch.Tensor, heads: int, scale: float = 1.0) -> torch.Tensor:
        w = weight.reshape(heads, 2, half, -1) * scale  # [heads * d, in] -> [heads, 2 halves, d/2, in]
        return torch.nn.functional.pad(w, (0, 0, 0, new_half - half)).reshape(heads * head_dim, -1)

    scale = (head_dim / old) ** 0.5
    for key in [k for k in state if k.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight"))]:
        w = state[key]
        if key.endswith("q_proj.weight"):
            state[key] = rotary_rows(w, config["num_attention_heads"], scale)
        elif key.endswith("k_proj.weight"):
            state[key] = rotary_rows(w, config.get("num_key_value_heads") or config["num_attention_heads"])
        elif key.endswith("v_proj.weight"):
            heads = config.get("num_key_value_heads") or config["num_attention_heads"]
            v = torch.nn.functional.pad(w.reshape(heads, old, -1), (0, 0, 0, head_dim - old))  # [heads, d', in]
            state[key] = v.reshape(heads * head_dim, -1)
        else:
            o = torch.nn.functional.pad(w.reshape(w.shape[0], -1, old), (0, head_dim - old))  # [out, heads, d']
            state[key] = o.reshape(w.shape[0], -1)
    theta = float(rope["rope_theta"]) ** (head_dim / old)
    config.update(head_dim=head_dim, rope_parameters=dict(rope, rope_theta=theta))
    config.pop("rope_theta", None)


def tower_state(model: "SALMONN") -> dict[str, torch.Tensor]:
    """Everything but the LLM (Whisper, BEATs, layer norms, Q-Former, queries, projection), reference key names.
    Tensors shared between keys (BEATs' relative position bias) are stored once per key."""
    seen: set[int] = set()
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("llama_model."):
            continue
        value = value.detach().contiguous()
        state[key] = value.clone() if value.data_ptr() in seen else value
        seen.add(value.data_ptr())
    return state


def salmonn_section(model: "SALMONN", config: Config, lora_scale: float) -> dict:
    """What the vLLM side needs to rebuild the audio side and decode as `salmonn infer` does (config.json key)."""
    model_dict = config_to_dict(config)["model"]
    for key in ("llama_path", "whisper_path", "beats_path", "ckpt", "speech_llama_proj_model", "prompt_path",
                "test_prompt_path"):
        model_dict.pop(key, None)  # the folder is self-contained: no paths into the machine it was made on
    beats = dataclasses.asdict(model.beats.cfg) if model.beats is not None else None
    return {"format_version": FORMAT_VERSION, "model": model_dict, "generate": dataclasses.asdict(config.generate),
            "whisper": model.speech_encoder.config.to_dict(), "beats": beats, "lora_scale": lora_scale,
            "audio_token": AUDIO_PLACEHOLDER, "source": {"config": config.source or "default (SALMONN-mini)",
                                                         "ckpt": config.model.ckpt}}


def generation_defaults(config: Config, eos_id: int, bos_id: int | None, pad_id: int | None) -> dict:
    """generation_config.json: vLLM takes its request defaults from it (greedy, the config's answer length)."""
    g = config.generate
    out = {"eos_token_id": eos_id, "bos_token_id": bos_id, "pad_token_id": pad_id, "max_new_tokens": g.max_new_tokens}
    if not g.do_sample:
        out["temperature"] = 0.0  # the OpenAI API's default (1.0) would sample; SALMONN's configs search greedily
    if g.repetition_penalty != 1.0:
        out["repetition_penalty"] = g.repetition_penalty
    return out


def export_vllm(model: "SALMONN", out: str | Path, lora_scale: float = 1.0) -> Path:
    """Write `model` as a vLLM model folder at `out` (written beside it, then moved into place)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: exists and is not empty; remove it or choose another folder")
    if model.config.model.quantize != "none":
        raise ConfigError("export a float model (model.quantize=none): vLLM quantizes on its own terms")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _write(model, work, lora_scale)
        if out.exists():
            out.rmdir()
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out


def _write(model: "SALMONN", work: Path, lora_scale: float) -> None:
    config = model.config
    tokenizer = model.tokenizer
    tokenizer.add_special_tokens({"additional_special_tokens": [AUDIO_PLACEHOLDER]})
    audio_token_id = tokenizer.convert_tokens_to_ids(AUDIO_PLACEHOLDER)
    section = salmonn_section(model, config, lora_scale)
    llm_state = merged_llm_state(model, lora_scale)
    llm_config = model.causal_lm.config.to_dict()
    head_dim = int(llm_config.get("head_dim") or llm_config["hidden_size"] // llm_config["num_attention_heads"])
    if head_dim < MIN_HEAD_DIM:  # exact up to float rounding; the tiny fixture has 16
        widen_heads(llm_state, llm_config, MIN_HEAD_DIM)
    tensors = {TOWER_PREFIX + k: v for k, v in tower_state(model).items()}
    tensors.update({LLM_PREFIX + k: v for k, v in llm_state.items()})
    save_file(tensors, work / WEIGHTS, metadata={"format": "pt"})
    llm_config.pop("torch_dtype", None)
    llm_config.update(architectures=[ARCHITECTURE], dtype=str(next(iter(llm_state.values())).dtype)[len("torch."):],
                      salmonn=dict(section, audio_token_id=audio_token_id))
    (work / "config.json").write_text(json.dumps(llm_config, indent=2) + "\n")
    tokenizer.chat_template = chat_template(config.model.prompt_template, config.model.end_sym)
    tokenizer.save_pretrained(work)
    model.feature_extractor.save_pretrained(work / FEATURE_EXTRACTOR_DIR)
    defaults = generation_defaults(config, tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.pad_token_id)
    (work / "generation_config.json").write_text(json.dumps(defaults, indent=2) + "\n")
    (work / "salmonn_export.json").write_text(json.dumps(
        {"weights_sha256": file_sha256(work / WEIGHTS), "lora_scale": lora_scale, **section["source"]}, indent=2) + "\n")


def export_from_config(config: str | None, out: str | Path, lora_scale: float = 1.0,
                       overrides: Sequence[str] = ()) -> Path:
    """Load a config's model in float32 on the CPU and export it (what `salmonn export --vllm` runs)."""
    from ..builder import load_model
    model = load_model(config, overrides, device="cpu", dtype="float32")
    return export_vllm(model, out, lora_scale)
