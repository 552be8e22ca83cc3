"""CTC rescoring (generate.ctc_weight, salmonn.rescoring) on the reference-tiny fixture with a CTC query named.

The fixture's connector was never trained to spell, so these tests check the mechanics (which candidates, which
scores, which choice), not that rescoring helps: scripts/mini/ctc_rescore.py measures that on SALMONN-mini.
"""

from __future__ import annotations

import pytest

from salmonn import load_model
from salmonn.ctc import blank_id
from salmonn.decoding import decoding_config
from salmonn.errors import ConfigError
from salmonn.inference import full_prompt, generate, prepare
from salmonn.rescoring import candidates, ctc_log_likelihood, spelling_log_probs

from .conftest import FIXTURE

PROMPT = "Describe the audio."
BEAMS = dict(num_beams=3, max_new_tokens=6)


@pytest.fixture(scope="module")
def spelling_model():
    return load_model(FIXTURE / "config.yaml", ["ctc_query=0"]).eval()


@pytest.fixture(scope="module")
def scored(spelling_model, fixture_clips):
    gen = decoding_config(spelling_model.config.generate, **BEAMS)
    rows = prepare(spelling_model, fixture_clips, [PROMPT] * len(fixture_clips), gen, fail_fast=True)
    return rows, candidates(spelling_model, rows, gen)


def test_candidates_are_the_beams_and_the_ctc_best_path_once_each(scored):
    for found in scored[1]:
        sources = [s for c in found for s in c.source.split("+")]
        assert sorted(sources) == ["beam0", "beam1", "beam2", "ctc"]
        assert len({tuple(c.token_ids) for c in found}) == len(found)


def test_with_one_beam_the_candidates_are_greedys_answer_from_our_loop_and_the_best_path(spelling_model, fixture_clips,
                                                                                          monkeypatch):
    one = dict(num_beams=1, max_new_tokens=6)
    greedy_ids = [a.token_ids for a in generate(spelling_model, fixture_clips, PROMPT, **one)]
    gen = decoding_config(spelling_model.config.generate, **one)
    rows = prepare(spelling_model, fixture_clips, [PROMPT] * len(fixture_clips), gen, fail_fast=True)

    def no_generate(*args, **kwargs):
        raise AssertionError("one beam goes through salmonn.greedy's loop, not HF generate()")

    monkeypatch.setattr(spelling_model.llama_model, "generate", no_generate)
    for found, ids in zip(candidates(spelling_model, rows, gen), greedy_ids):
        assert sorted(s for c in found for s in c.source.split("+")) == ["beam0", "ctc"]
        assert next(c for c in found if "beam0" in c.source.split("+")).token_ids == ids


def test_llm_scores_are_the_answers_log_probabilities_after_the_prompt(spelling_model, fixture_clips, scored):
    tokens = spelling_model.encode_audio(fixture_clips[:1])[0]
    end = spelling_model.token_ids(spelling_model.config.model.end_sym)
    prompt = full_prompt(spelling_model, PROMPT, False)
    for c in scored[1][0]:
        assert c.llm == pytest.approx(spelling_model.sequence_logprob(tokens, prompt, c.token_ids + end), abs=1e-3)


def test_ctc_scores_bound_the_best_alignment_and_rank_the_best_path_first(spelling_model, scored):
    rows, found = scored
    blank = blank_id(spelling_model.tokenizer, " ")
    log_probs = spelling_log_probs(spelling_model, rows[0])
    path = next(c for c in found[0] if "ctc" in c.source.split("+"))
    best_alignment = float(log_probs.max(-1).values.sum())  # the one alignment the best path comes from
    assert best_alignment <= path.ctc + 1e-4 <= 1e-4
    assert ctc_log_likelihood(log_probs, [], blank) == pytest.approx(float(log_probs[:, blank].sum()))
    too_long = list(range(log_probs.shape[0] + 1))  # more labels than audio tokens: impossible
    assert ctc_log_likelihood(log_probs, too_long, blank) == float("-inf")


def test_the_weight_moves_the_choice_from_the_llm_to_ctc(spelling_model, fixture_clips, scored):
    """With a large length bonus the beams (6 tokens) outrank the 1-token CTC path, and among them the weight
    decides: the fixture's beam 0 has the best LLM score, another beam the best CTC score."""
    by_ctc = [max(found, key=lambda c: c.ctc + 100 * len(c.token_ids)).token_ids for found in scored[1]]
    by_llm = [max(found, key=lambda c: c.llm + 100 * len(c.token_ids)).token_ids for found in scored[1]]
    assert by_ctc != by_llm  # otherwise this test could not tell the weights apart
    for weight, expected in ((1.0, by_ctc), (1e-6, by_llm)):
        answers = generate(spelling_model, fixture_clips, PROMPT, ctc_weight=weight, ctc_length_bonus=100, **BEAMS)
        assert [a.token_ids for a in answers] == expected


def test_a_batch_rescoring_gives_each_clip_its_own_answer(spelling_model, fixture_clips):
    batch = generate(spelling_model, fixture_clips, PROMPT, ctc_weight=0.5, **BEAMS)
    alone = [generate(spelling_model, [clip], PROMPT, ctc_weight=0.5, **BEAMS)[0] for clip in fixture_clips]
    assert [a.token_ids for a in batch] == [a.token_ids for a in alone]


def test_the_length_bonus_favours_longer_answers(spelling_model, fixture_clips, scored):
    longest = max(len(c.token_ids) for c in scored[1][0])
    answer = generate(spelling_model, fixture_clips[:1], PROMPT, ctc_weight=0.5, ctc_length_bonus=1e4, **BEAMS)[0]
    assert len(answer.token_ids) == longest


def test_rescoring_needs_a_spelling_query_and_search(tiny_model, spelling_model, fixture_clips):
    with pytest.raises(ConfigError, match="model.ctc_query"):
        generate(tiny_model, fixture_clips[:1], PROMPT, ctc_weight=0.5, **BEAMS)
    with pytest.raises(ConfigError, match=r"ctc_weight must be in \[0, 1\]"):
        generate(spelling_model, fixture_clips[:1], PROMPT, ctc_weight=1.5, **BEAMS)
    with pytest.raises(ConfigError, match="do_sample=false"):
        generate(spelling_model, fixture_clips[:1], PROMPT, ctc_weight=0.5, do_sample=True, max_new_tokens=4)
    with pytest.raises(ConfigError, match="CTC rescoring"):
        generate(spelling_model, fixture_clips[:1], PROMPT, ctc_weight=0.5, num_beams=1, streamer=object())
    wrong = load_model(FIXTURE / "config.yaml", ["ctc_query=1"])
    with pytest.raises(ConfigError, match="ctc_query 1 is not one of the 1 queries"):
        generate(wrong, fixture_clips[:1], PROMPT, ctc_weight=0.5, **BEAMS)


def test_off_by_default_the_reference_decoding_is_untouched(tiny_model, fixture_clips):
    assert tiny_model.config.generate.ctc_weight == 0 and tiny_model.config.model.ctc_query is None
    plain = generate(tiny_model, fixture_clips, PROMPT, **BEAMS)
    assert [a.token_ids for a in plain] == [a.token_ids for a in generate(tiny_model, fixture_clips, PROMPT,
                                                                          ctc_weight=0.0, **BEAMS)]
