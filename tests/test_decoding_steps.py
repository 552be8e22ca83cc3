"""One-token decode steps (issue 16): packed grouped-query attention (llm_runtime.pack_gqa_steps) computes what
transformers' sdpa computes, and the output head's contiguous input (llm_runtime.contiguous_head_input) changes no
value; both are chosen where the model is built, from model.packed_gqa / model.contiguous_head (and the streamed
linears from model.compile). The fixture's ids with both on (the defaults) are checked by test_fast_decode."""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from salmonn import llm_runtime

from .conftest import FIXTURE


def _layer(groups: int) -> nn.Module:
    return types.SimpleNamespace(num_key_value_groups=groups, is_causal=True, training=False)


def _inputs(batch=3, heads=6, kv_heads=2, length=40, filled=25, queries=1, dtype=torch.float32):
    torch.manual_seed(0)
    query = torch.randn(batch, heads, queries, 16, dtype=dtype)
    key, value = (torch.randn(batch, kv_heads, length, 16, dtype=dtype) for _ in range(2))
    mask = torch.zeros(batch, 1, queries, length, dtype=torch.bool)
    mask[..., :filled] = True
    mask[0, ..., :5] = False  # a left-padded row
    return query, key, value, mask


def _repeated(query, key, value, mask):
    """transformers' compiled-step path: keys and values repeated per query head."""
    groups = query.shape[1] // key.shape[1]
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1), attn_mask=mask, scale=0.25)
    return out.transpose(1, 2)


def test_packed_gqa_step_equals_repeated_keys_and_values():
    query, key, value, mask = _inputs()
    out, _ = llm_runtime._packed_gqa_attention(_layer(3), query, key, value, mask, scaling=0.25)
    assert out.shape == (3, 1, 6, 16)
    torch.testing.assert_close(out, _repeated(query, key, value, mask), rtol=1e-6, atol=1e-6)


def test_packed_gqa_step_compiled_equals_repeated():
    query, key, value, mask = _inputs()
    step = torch.compile(lambda q, k, v, m: llm_runtime._packed_gqa_attention(_layer(3), q, k, v, m, scaling=0.25)[0])
    torch.testing.assert_close(step(query, key, value, mask), _repeated(query, key, value, mask), rtol=1e-6,
                               atol=1e-6)


@pytest.mark.parametrize("case", ["prompt", "per-head mask", "no groups"])
def test_other_calls_run_transformers_sdpa(case, monkeypatch):
    from transformers.integrations import sdpa_attention
    calls = []
    monkeypatch.setattr(sdpa_attention, "sdpa_attention_forward", lambda *a, **k: calls.append(a) or ("sdpa", None))
    query, key, value, mask = _inputs(queries=4 if case == "prompt" else 1)
    if case == "per-head mask":
        mask = mask.expand(-1, 6, -1, -1)
    out, _ = llm_runtime._packed_gqa_attention(_layer(1 if case == "no groups" else 3), query, key, value, mask)
    assert out == "sdpa" and len(calls) == 1


def test_pack_gqa_steps_switches_sdpa_only():
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, attn_implementation="sdpa")
    llm = LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 64, (2, 7))
    with torch.no_grad():
        before = llm(input_ids=ids).logits
        llm_runtime.pack_gqa_steps(llm, True)
        assert llm.config._attn_implementation == llm_runtime.PACKED_GQA
        torch.testing.assert_close(llm(input_ids=ids).logits, before, rtol=0, atol=0)  # prompts: sdpa itself
        llm_runtime.pack_gqa_steps(llm, False)
        assert llm.config._attn_implementation == "sdpa"
    llm.set_attn_implementation("eager")
    llm_runtime.pack_gqa_steps(llm, True)
    assert llm.config._attn_implementation == "eager"


def test_contiguous_head_input_keeps_the_logits():
    head = nn.Linear(8, 50, bias=False).to(torch.bfloat16)
    llm = types.SimpleNamespace(get_output_embeddings=lambda: head)
    hidden = torch.randn(4, 6, 8, dtype=torch.bfloat16)[:, -1:, :]  # what logits_to_keep=1 hands over
    assert not hidden.is_contiguous()
    expected = head(hidden)
    llm_runtime.contiguous_head_input(llm)
    llm_runtime.contiguous_head_input(llm)  # installed once
    assert len(head._forward_pre_hooks) == 1
    seen = []
    head.register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous()))  # runs after ours
    assert torch.equal(head(hidden), expected) and seen[-1] is True


def _prompt_into_static_cache(filled_after: bool):
    query, key, value, _ = _inputs(queries=5, length=12)
    mask = torch.ones(3, 1, 5, 12, dtype=torch.bool).tril()  # causal over the first 5 slots, free slots masked
    mask[0, ..., :2] = False  # left padding
    mask[0, :, :2, 0] = True  # (padded queries see something)
    if filled_after:
        mask[1, :, :, 7] = True  # a slot after the prompt that the mask lets it see: nothing may be cut
    return query, key, value, mask


@pytest.mark.parametrize("filled_after", [False, True])
def test_a_prompt_attends_only_to_the_slots_its_mask_shows(filled_after, monkeypatch):
    from transformers.integrations import sdpa_attention
    query, key, value, mask = _prompt_into_static_cache(filled_after)
    lengths = []
    real = sdpa_attention.sdpa_attention_forward
    monkeypatch.setattr(sdpa_attention, "sdpa_attention_forward",
                        lambda m, q, k, v, mask, **kw: lengths.append(k.shape[2]) or real(m, q, k, v, mask, **kw))
    out, _ = llm_runtime._packed_gqa_attention(_layer(3), query, key, value, mask, scaling=0.25)
    assert lengths == [12 if filled_after else 5]
    expected = torch.nn.functional.scaled_dot_product_attention(
        query, key.repeat_interleave(3, 1), value.repeat_interleave(3, 1), attn_mask=mask, scale=0.25)
    torch.testing.assert_close(out, expected.transpose(1, 2), rtol=1e-6, atol=1e-6)
    lengths.clear()
    llm_runtime._packed_gqa_attention(_layer(3), query, key, value, mask, scaling=0.25, filled_prompt_keys=False)
    assert lengths == [12]


def _fast_paths(model) -> dict:
    llm = model.llama_model
    head = model.causal_lm.get_output_embeddings()
    linears = [m for m in llm.modules() if type(m) is nn.Linear]
    return {"packed_gqa": model.causal_lm.config._attn_implementation == llm_runtime.PACKED_GQA,
            "contiguous_head": "_salmonn_contiguous_input" in vars(head) and len(head._forward_pre_hooks) == 1,
            "compile": all(getattr(vars(m).get("forward"), "__func__", None) is llm_runtime._streaming_linear_forward
                           for m in linears) and bool(linears)}


@pytest.mark.parametrize("overrides, expected", [
    ([], dict(packed_gqa=True, contiguous_head=True, compile=False)),  # the defaults
    (["model.packed_gqa=false", "model.contiguous_head=false", "model.compile=true"],
     dict(packed_gqa=False, contiguous_head=False, compile=True)),
])
def test_fast_paths_are_chosen_where_the_model_is_built(overrides, expected):
    from salmonn.builder import load_model
    model = load_model(FIXTURE / "config.yaml", overrides)
    assert _fast_paths(model) == expected
    for key in expected:  # a built model follows its config when asked again, and back
        setattr(model.config.model, key, not expected[key])
    llm_runtime.apply_fast_paths(model.llama_model, model.config.model)
    assert _fast_paths(model) == {k: not v for k, v in expected.items()}
    for key in expected:
        setattr(model.config.model, key, expected[key])
    llm_runtime.apply_fast_paths(model.llama_model, model.config.model)
    assert _fast_paths(model) == expected
