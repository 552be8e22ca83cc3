"""Speed switches that must not change answers: LoRA merged into the base weights (model.merge_lora, default on),
our own greedy loop (model.greedy_loop, eager or compiled) and fused q/k/v and gate/up projections of the merged
LLM (decoding.FUSED_PROJECTIONS, default off). Checked against the reference fixture's ids and, because those ids
are mostly one token repeated, against HF generate on SALMONN-mini answers that vary."""

from __future__ import annotations

import pytest
import torch

from salmonn import SALMONN, decoding, greedy
from salmonn.config import GenerateConfig
from salmonn.decoding import TokenStreamer
from salmonn.prompting import format_prompt

from .conftest import AUDIO, FIXTURE


def _greedy(model, clips, prompts, tokens=12, **options):
    return [a.token_ids for a in model.generate(clips, prompts, num_beams=1, max_new_tokens=tokens, **options)]


def _with(model, **settings):
    for key, value in settings.items():
        setattr(model.config.model, key, value)
    model.eval()  # merges or unmerges as merge_lora now says
    return model


def test_lora_is_merged_for_inference_and_restored_exactly_for_training(tiny_model):
    layers = tiny_model._lora_layers()
    assert layers and all(layer.merged for layer in layers)  # eval mode, merge_lora on by default
    merged = [layer.get_base_layer().weight.detach().clone() for layer in layers]
    tiny_model.train()
    assert not any(layer.merged for layer in layers)
    original = [layer.get_base_layer().weight.detach().clone() for layer in layers]
    assert not any(torch.equal(a, b) for a, b in zip(merged, original))
    tiny_model.eval()
    tiny_model.train()  # merging again and unmerging gives back the very same weights
    assert all(torch.equal(layer.get_base_layer().weight, w) for layer, w in zip(layers, original))
    tiny_model.eval()


def test_a_new_lora_scale_is_merged_again(tiny_model, fixture_clips):
    tokens = tiny_model.encode_audio(fixture_clips[:1])[0]
    prompt = format_prompt("Please describe the audio.", tiny_model.config.model.prompt_template)
    ids = _greedy(tiny_model, fixture_clips[0], "Please describe the audio.")[0]
    scores = {}
    for merge in (True, False):
        _with(tiny_model, merge_lora=merge)
        tiny_model.set_lora_scale(0.5)
        scores[merge] = tiny_model.sequence_logprob(tokens, prompt, ids)
        tiny_model.set_lora_scale(1.0)
    _with(tiny_model, merge_lora=True)
    assert scores[True] == pytest.approx(scores[False], abs=1e-4)
    assert _greedy(tiny_model, fixture_clips[0], "Please describe the audio.")[0] == ids


@pytest.mark.parametrize("compile", [False, True])
def test_greedy_loop_keeps_the_reference_ids(expected, fixture_clips, compile):
    model = SALMONN.from_config(FIXTURE / "config.yaml", ["model.greedy_loop=true", f"model.compile={compile}"])
    reference = [ids[1:] for ids in expected["generated_ids"]]
    single = [_greedy(model, c, p, templated=True)[0] for c, p in zip(fixture_clips, expected["generate_prompts"])]
    batch = _greedy(model, fixture_clips, expected["generate_prompts"], templated=True)
    assert single == batch == reference


def test_repeated_ngram_ends_are_the_tokens_that_followed_the_tail():
    assert greedy.repeated_ngram_ends([5, 6, 7, 5, 6], 3) == [7]
    assert greedy.repeated_ngram_ends([5, 6, 5, 6, 5], 2) == [6, 6]
    assert greedy.repeated_ngram_ends([5, 6, 7], 3) == []  # no earlier occurrence of (6, 7)
    assert greedy.repeated_ngram_ends([5, 5], 1) == [5, 5]  # n = 1: no token twice


def _ngrams(ids, n):
    return [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]


def test_greedy_loop_bans_repeated_ngrams_as_generate_does(fixture_clips):
    """The fixture's greedy answers repeat themselves, so a ban changes them; the loop and HF generate agree."""
    model = SALMONN.from_config(FIXTURE / "config.yaml")
    plain = _greedy(model, fixture_clips, "Describe.", tokens=16)
    assert any(len(set(_ngrams(ids, 2))) < len(ids) - 1 for ids in plain)  # some 2-gram repeats: the ban can act
    answers = {}
    for loop in (True, False):
        _with(model, greedy_loop=loop)
        answers[loop] = _greedy(model, fixture_clips, "Describe.", tokens=16, no_repeat_ngram_size=2)
    assert answers[True] == answers[False] != plain
    assert all(len(set(_ngrams(ids, 2))) == len(ids) - 1 for ids in answers[True])


def test_greedy_loop_streams_the_answer_text(tiny_model, fixture_clips):
    pieces = []
    _with(tiny_model, greedy_loop=True)
    try:
        answer = tiny_model.generate(fixture_clips[0], "Describe.", num_beams=1, max_new_tokens=8,
                                     streamer=TokenStreamer(tiny_model.tokenizer, write=pieces.append))[0]
    finally:
        _with(tiny_model, greedy_loop=False)
    assert "".join(pieces) == answer.text and len(answer.token_ids) == 8


def test_switches_keep_answers_that_vary(monkeypatch):
    """SALMONN-mini describes three clips in different words: merged LoRA, the greedy loop and fused projections
    give the same ids."""
    mini = SALMONN.from_config(None, ["model.merge_lora=false"])
    clips = [str(AUDIO / name) for name in ("duck.wav", "music.wav", "mountain.wav")]
    answers = {}
    for name, settings in {"HF generate, LoRA apart": {}, "LoRA merged": dict(merge_lora=True),
                           "LoRA merged + greedy loop": dict(merge_lora=True, greedy_loop=True),
                           "+ fused projections": dict(merge_lora=True, greedy_loop=True, fused=True)}.items():
        monkeypatch.setattr(decoding, "FUSED_PROJECTIONS", settings.pop("fused", False))
        answers[name] = _greedy(_with(mini, **settings), clips, "Please describe the audio.", tokens=16)
    assert len(_fused_groups(mini)) == 2 * mini.causal_lm.config.num_hidden_layers
    first = next(iter(answers.values()))
    assert len({i for ids in first for i in ids}) >= 15 and len({tuple(ids) for ids in first}) == 3  # they vary
    assert all(ids == first for ids in answers.values()), answers


# ---------------------------------------------------------------------------------------------------- fused projections
@pytest.fixture
def compiled_shapes():
    """Every compiled step of the session stays compiled (dynamo's limit of 8 recompilations: eager after)."""
    import torch._dynamo
    with torch._dynamo.config.patch(recompile_limit=64):
        yield


def _fused_groups(model) -> list:
    """The fused linear groups of a SALMONN's LLM (or of an LLM)."""
    llm = getattr(model, "llama_model", model)
    return llm.__dict__.get("_salmonn_fused_linears", [])


@pytest.mark.parametrize("compile", [False, True])
def test_fused_projections_keep_the_reference_ids(expected, fixture_clips, compile, monkeypatch, compiled_shapes):
    """One clip, the two clips in one batch and eight rows (the clips 4 times): the reference ids, fused."""
    model = SALMONN.from_config(FIXTURE / "config.yaml", ["model.greedy_loop=true", f"model.compile={compile}"])
    monkeypatch.setattr(decoding, "FUSED_PROJECTIONS", True)
    reference = [ids[1:] for ids in expected["generated_ids"]]
    prompts = expected["generate_prompts"]
    single = [_greedy(model, c, p, templated=True)[0] for c, p in zip(fixture_clips, prompts)]
    assert len(_fused_groups(model)) == 4  # 2 layers x (q/k/v, gate/up)
    batch = _greedy(model, fixture_clips, prompts, templated=True)
    eight = _greedy(model, fixture_clips * 4, prompts * 4, templated=True)
    assert single == batch == reference and eight == reference * 4


def _random_llm(dtype):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, attn_implementation="sdpa")
    return LlamaForCausalLM(config).eval().to(dtype)


@pytest.mark.parametrize("compile", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_projections_keep_the_ids_of_a_random_llm(dtype, compile, compiled_shapes):
    """A tiny random grouped-query LLaMA, one row and eight left-padded rows, switched on, off and on again
    (compiled: the step follows the switch): the same greedy ids fused and not."""
    llm = _random_llm(dtype)
    if compile:
        decoding.stream_small_linears(llm)  # as generate_answers does: the fused one-row product streams too
    decoding.pack_gqa_steps(llm)
    keys = list(llm.state_dict())
    gen = GenerateConfig(num_beams=1, max_new_tokens=10)
    for rows in (1, 8):
        torch.manual_seed(rows)
        embeds = torch.randn(rows, 9, 64, dtype=dtype)
        mask = torch.ones(rows, 9, dtype=torch.long)
        mask[1:, :3] = 0  # left padding
        ids = {}
        for on in (False, True, False, True):
            decoding.fuse_projections(llm, on)
            assert len(_fused_groups(llm)) == (4 if on else 0)
            ids.setdefault(on, []).append(greedy.greedy_decode(llm, embeds, mask, gen, 2, 0, compile=compile))
        assert all(torch.equal(i, ids[False][0]) for i in ids[False] + ids[True]), ids
        assert len({tuple(row) for row in ids[True][0].tolist()}) >= min(rows, 2)  # rows answer apart
    assert list(llm.state_dict()) == keys
    group = _fused_groups(llm)[0]  # the fused step really reads the fused weight (eager or compiled)
    group.weight = -group.weight
    assert not torch.equal(greedy.greedy_decode(llm, embeds, mask, gen, 2, 0, compile=compile), ids[True][0])


def test_fused_projections_leave_checkpoints_and_training_alone(fixture_clips, monkeypatch):
    model = SALMONN.from_config(FIXTURE / "config.yaml")
    unmerged = {k: v.clone() for k, v in model.train().state_dict().items()}
    state = {k: v.clone() for k, v in model.eval().state_dict().items()}  # merged
    trainable = list(model.trainable_state_dict())
    _greedy(model, fixture_clips[0], "Describe.", tokens=4)
    assert not _fused_groups(model)  # off by default
    monkeypatch.setattr(decoding, "FUSED_PROJECTIONS", True)
    _with(model, merge_lora=False)
    _greedy(model, fixture_clips[0], "Describe.", tokens=4)
    assert not _fused_groups(model)  # unmerged LoRA layers stay as they are
    _with(model, merge_lora=True)
    _greedy(model, fixture_clips[0], "Describe.", tokens=4)
    assert len(_fused_groups(model)) == 4
    attention = model.causal_lm.model.layers[0].self_attn
    assert attention.k_proj.weight.data_ptr() == attention.q_proj.get_base_layer().weight.data_ptr() + 64 * 64 * 4
    after = model.state_dict()
    assert list(after) == list(state) and all(torch.equal(after[k], v) for k, v in state.items())
    assert list(model.trainable_state_dict()) == trainable
    model.train()
    assert not _fused_groups(model)
    assert not any(hasattr(m, "_salmonn_fused") or "forward" in vars(m) for m in model.llama_model.modules())
    bases = [attention.q_proj.get_base_layer(), attention.k_proj, attention.v_proj.get_base_layer()]
    assert len({b.weight.untyped_storage().data_ptr() for b in bases}) == 3  # each weight its own tensor again
    after = model.state_dict()
    assert list(after) == list(unmerged) and all(torch.equal(after[k], v) for k, v in unmerged.items())


def test_a_new_lora_scale_is_merged_again_with_fused_projections(fixture_clips, monkeypatch):
    model = SALMONN.from_config(FIXTURE / "config.yaml")
    unfused = {}
    for scale in (0.5, 1.0):
        model.set_lora_scale(scale)
        unfused[scale] = _greedy(model, fixture_clips[0], "Please describe the audio.")[0]
    assert unfused[0.5] != unfused[1.0]  # the scale changes this answer
    monkeypatch.setattr(decoding, "FUSED_PROJECTIONS", True)
    fused = {}
    for scale in (1.0, 0.5, 1.0):
        model.set_lora_scale(scale)
        assert not _fused_groups(model)  # re-merging unfused them
        fused.setdefault(scale, []).append(_greedy(model, fixture_clips[0], "Please describe the audio.")[0])
        assert len(_fused_groups(model)) == 4
    assert fused == {0.5: [unfused[0.5]], 1.0: [unfused[1.0]] * 2}
