"""Speed switches that must not change answers: LoRA merged into the base weights (model.merge_lora, default on)
and our own greedy loop (model.greedy_loop, eager or compiled). Checked against the reference fixture's ids and,
because those ids are mostly one token repeated, against HF generate on SALMONN-mini answers that vary."""

from __future__ import annotations

import pytest
import torch

from salmonn import greedy, load_model
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
    model = load_model(FIXTURE / "config.yaml", ["model.greedy_loop=true", f"model.compile={compile}"])
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
    model = load_model(FIXTURE / "config.yaml")
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


def test_switches_keep_answers_that_vary():
    """SALMONN-mini describes three clips in different words: merged LoRA and the greedy loop give the same ids."""
    mini = load_model(None, ["model.merge_lora=false"])
    clips = [str(AUDIO / name) for name in ("duck.wav", "music.wav", "mountain.wav")]
    answers = {}
    for name, settings in {"HF generate, LoRA apart": {}, "LoRA merged": dict(merge_lora=True),
                           "LoRA merged + greedy loop": dict(merge_lora=True, greedy_loop=True)}.items():
        answers[name] = _greedy(_with(mini, **settings), clips, "Please describe the audio.", tokens=16)
    first = next(iter(answers.values()))
    assert len({i for ids in first for i in ids}) >= 15 and len({tuple(ids) for ids in first}) == 3  # they vary
    assert all(ids == first for ids in answers.values()), answers
