"""`salmonn export --vllm` without vLLM: the folder's contents, the chat template against `prompting.render`, the
exact head widening for vLLM's CPU attention, and the errors. (The engine itself: tests/vllm, in .venv-vllm.)"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from salmonn.errors import ConfigError
from salmonn.prompting import PromptTurn, render_text
from salmonn.vllm.export import LLM_PREFIX, TOWER_PREFIX, chat_template, export_vllm, widen_heads

from .conftest import FIXTURE


@pytest.fixture(scope="module")
def exported(tiny_model, tmp_path_factory):
    from salmonn import load_model
    model = load_model(FIXTURE / "config.yaml")  # export changes the model (LoRA merged and unloaded)
    return export_vllm(model, tmp_path_factory.mktemp("export") / "fixture", lora_scale=0.5)


def _render(template_text: str, messages, tokenizer) -> str:
    tokenizer.chat_template = template_text
    return tokenizer.apply_chat_template(messages, tokenize=False)


CONVERSATIONS = [
    ([PromptTurn("Describe the audio.", clips=1)],
     [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "Describe the audio."}]}]),
    ([PromptTurn("What is it? Answer briefly.", clips=1, answer="a dog"), PromptTurn("Is it loud?")],
     [{"role": "user", "content": [{"type": "text", "text": " What is it? "}, {"type": "audio"},
                                   {"type": "text", "text": "Answer briefly."}]},
      {"role": "assistant", "content": "a dog"}, {"role": "user", "content": "Is it loud?"}]),
    ([PromptTurn("Describe the audio.", clips=1)],  # vLLM's "string" content format
     [{"role": "user", "content": "<SpeechHere>\nDescribe the audio."}]),
]


@pytest.mark.parametrize("turns, messages", CONVERSATIONS)
@pytest.mark.parametrize("template, end_sym", [("USER: {}\nASSISTANT:", "</s>"),
                                               ("user\n{}<|im_end|>\n<|im_start|>assistant\n", "<|im_end|>")])
def test_chat_template_renders_as_prompting(tiny_model, turns, messages, template, end_sym):
    rendered = _render(chat_template(template, end_sym), messages, tiny_model.tokenizer)
    assert rendered == tiny_model.tokenizer.bos_token + render_text(turns, template, end_sym)


def test_chat_template_refuses_system_messages(tiny_model):
    with pytest.raises(Exception, match="no system slot"):
        _render(chat_template("USER: {}\nASSISTANT:", "</s>"), [{"role": "system", "content": "be brief"},
                                                                 {"role": "user", "content": "hi"}],
                tiny_model.tokenizer)


def test_widened_heads_compute_the_same_function():
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM
    llm = AutoModelForCausalLM.from_pretrained(FIXTURE / "llama", dtype=torch.float32).eval()
    state = {k: v.clone() for k, v in llm.state_dict().items()}
    config = llm.config.to_dict()
    widen_heads(state, config, 32)
    wide = LlamaForCausalLM(LlamaConfig.from_dict(config)).eval()
    wide.load_state_dict(state, strict=True)
    ids = torch.randint(3, 400, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(wide(ids).logits, llm(ids).logits, atol=1e-5)
    assert config["head_dim"] == 32 and wide.model.layers[0].self_attn.q_proj.weight.shape[0] == 4 * 32


def test_export_folder(exported, tiny_model):
    config = json.loads((exported / "config.json").read_text())
    assert config["architectures"] == ["SalmonnForConditionalGeneration"]
    section = config["salmonn"]
    assert section["lora_scale"] == 0.5 and section["beats"] is not None and "ckpt" not in section["model"]
    assert config["head_dim"] == 32  # the fixture's 16-wide heads, widened for vLLM's CPU attention
    with safe_open(exported / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    tower = {k[len(TOWER_PREFIX):] for k in keys if k.startswith(TOWER_PREFIX)}
    ours = {k for k in tiny_model.state_dict() if not k.startswith("llama_model.")}
    assert tower == ours  # the audio side in the reference's key names, every tensor
    assert not any("lora_" in k for k in keys) and f"{LLM_PREFIX}model.layers.0.self_attn.q_proj.weight" in keys
    generation = json.loads((exported / "generation_config.json").read_text())
    assert generation["temperature"] == 0.0 and generation["eos_token_id"] == tiny_model.tokenizer.eos_token_id
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(exported)
    assert tokenizer.convert_tokens_to_ids("<SpeechHere>") == section["audio_token_id"] >= config["vocab_size"]


def test_lora_is_merged_at_the_chosen_scale(exported, tiny_model):
    """The exported q_proj equals base + 0.5 x the adapter's delta (and not the 1.0 one)."""
    layer = tiny_model.llama_model.base_model.model.model.layers[0].self_attn.q_proj
    tiny_model.unmerge_lora()
    base, delta = layer.base_layer.weight.detach().clone(), layer.get_delta_weight("default").detach()
    tiny_model.merge_lora()
    with safe_open(exported / "model.safetensors", "pt") as f:
        q = f.get_tensor(f"{LLM_PREFIX}model.layers.0.self_attn.q_proj.weight")  # widened: [4 heads x 32, 64]
    q = q.reshape(4, 2, 16, 64)[:, :, :8].reshape(64, 64) / 2 ** 0.5  # the original rows, unscaled
    assert torch.allclose(q, base + 0.5 * delta, atol=1e-6)
    assert not torch.allclose(q, base + delta, atol=1e-4)


def test_export_refuses_a_folder_with_files(tiny_model, tmp_path):
    (tmp_path / "x").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        export_vllm(tiny_model, tmp_path)
    assert (tmp_path / "x").read_text() == "keep me"


def test_cli_export_needs_a_format(capsys):
    from salmonn.cli import main
    assert main(["export", str(FIXTURE / "config.yaml"), "out"]) == 1
    assert "--vllm" in capsys.readouterr().err
