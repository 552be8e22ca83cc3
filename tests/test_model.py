"""The composed SALMONN against the reference implementation's outputs (fixtures/reference-tiny)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from salmonn import PromptError, SalmonnError
from salmonn.features import whisper_log_mel
from salmonn.prompting import format_prompt

ATOL = 1e-4


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a.float() - b.float()).abs().max().item()


@torch.no_grad()
def test_encoders_and_connector_match_reference_batch(reference_model, io_tensors, fixture_clips):
    m = reference_model
    segments = [seg for clip in fixture_clips for seg in m.clip_segments(clip)]
    spectrogram = whisper_log_mel(segments, m.feature_extractor)
    assert _max_diff(spectrogram, io_tensors["spectrogram"]) < ATOL
    whisper = m.speech_encoder(spectrogram).last_hidden_state
    assert _max_diff(whisper, io_tensors["whisper_out"]) < ATOL
    beats, mask = m.beats.extract_features(io_tensors["raw_wav"], io_tensors["padding_mask"])
    assert _max_diff(beats, io_tensors["beats_out"]) < ATOL
    assert torch.equal(mask, io_tensors["beats_padding_mask"])
    tokens = torch.stack(m.encode_segments(segments))  # from the clips on disk, through the public path
    assert tokens.shape == (2, 88, 64)
    assert _max_diff(tokens, io_tensors["speech_embeds"]) < ATOL


@torch.no_grad()
def test_batch_training_loss_matches_reference(reference_model, expected, fixture_clips):
    prompts = [expected["train_prompt"]] * 2
    loss = reference_model.training_loss(fixture_clips, prompts, expected["texts"])
    assert abs(loss.item() - expected["loss"]) < 1e-4


@torch.no_grad()
def test_training_loss_without_full_logits_is_the_same_loss(reference_model, expected, fixture_clips):
    tokens = reference_model.encode_audio(fixture_clips)
    prompts = [expected["train_prompt"]] * 2
    loss, logits, _ = reference_model(tokens, prompts, expected["texts"], return_logits=False)
    assert logits is None
    assert abs(loss.item() - expected["loss"]) < 1e-4


def test_greedy_ids_match_reference_one_clip_at_a_time(tiny_model, expected, fixture_clips):
    for clip, prompt, ref in zip(fixture_clips, expected["generate_prompts"], expected["generated_ids"]):
        answer = tiny_model.generate(clip, prompt, templated=True, num_beams=1, max_new_tokens=12)[0]
        assert answer.token_ids == ref[1:]  # the reference echoes BOS first


def test_beam_answers_score_at_least_the_reference(tiny_model, expected, fixture_clips):
    for clip, prompt, ref in zip(fixture_clips, expected["generate_prompts"], expected["beam4_generated_ids"]):
        tokens = tiny_model.encode_audio([clip])[0]
        ours = tiny_model.generate(None, prompt, templated=True, audio_tokens=[tokens], num_beams=4,
                                   max_new_tokens=12)[0].token_ids
        assert len(ours) == 12
        assert tiny_model.sequence_logprob(tokens, prompt, ours) >= \
            tiny_model.sequence_logprob(tokens, prompt, ref[1:]) - 1e-4


def test_bare_instruction_is_wrapped_like_the_reference_cli(tiny_model, expected, fixture_clips):
    full = tiny_model.generate(fixture_clips[0], expected["generate_prompts"][0], templated=True,
                               num_beams=1, max_new_tokens=12)
    bare = tiny_model.generate(fixture_clips[0], "Recognize the speech and give me the transcription.",
                               num_beams=1, max_new_tokens=12)
    assert bare[0].token_ids == full[0].token_ids == expected["generated_ids"][0][1:]


def test_default_batching_gives_each_clip_its_single_answer(tiny_model, expected, fixture_clips):
    batch = tiny_model.generate(fixture_clips, expected["generate_prompts"], templated=True, num_beams=1,
                                max_new_tokens=12)
    assert [a.token_ids for a in batch] == [ids[1:] for ids in expected["generated_ids"]]


def test_reference_batching_really_differs_from_single_clips(reference_model, tiny_model, fixture_clips):
    segments = [seg for clip in fixture_clips for seg in reference_model.clip_segments(clip)]
    ref = reference_model.encode_segments(segments)
    single = tiny_model.encode_audio(fixture_clips[:1])[0]
    assert _max_diff(ref[0], single) > 1e-3  # the shorter clip sees the reference's padded BEATs tokens
    exact = tiny_model.encode_audio(fixture_clips)[0]
    assert _max_diff(exact, single) < 1e-5


def test_score_is_the_training_loss_of_one_sample(tiny_model, expected, fixture_clips):
    result = tiny_model.score(fixture_clips[1], expected["train_prompt"], expected["texts"][1], templated=True)[0]
    tokens = tiny_model.tokenizer(expected["texts"][1] + "</s>", add_special_tokens=False).input_ids
    assert result["tokens"] == len(tokens)
    loss = tiny_model.training_loss(fixture_clips[1:], [expected["train_prompt"]], expected["texts"][1:])
    assert result["loss"] == pytest.approx(loss.item(), abs=1e-6)


def test_arrays_with_sample_rate_equal_files(tiny_model, fixture_clips):
    wav, sr = sf.read(fixture_clips[0], dtype="float32")
    from_file = tiny_model.encode_audio(fixture_clips[:1])[0]
    from_array = tiny_model.encode_audio([(wav, sr)])[0]
    assert _max_diff(from_file, from_array) < 1e-6


def test_long_audio_is_segmented_and_reference_truncation_is_switchable(tiny_model, fixture_clips):
    wav, sr = sf.read(fixture_clips[1], dtype="float32")
    long = np.tile(wav, int(65 * sr / len(wav)) + 1)[: 65 * sr]  # 65 s: segments of 30, 30, 5 s
    tokens = tiny_model.encode_audio([(long, sr)])[0]
    assert tokens.shape[0] == 3 * 88
    first = tiny_model.encode_audio([(long[: 30 * sr], sr)])[0]
    assert _max_diff(tokens[:88], first) < 1e-5
    tiny_model.config.model.long_audio = "truncate"
    try:
        assert tiny_model.encode_audio([(long, sr)])[0].shape[0] == 88
    finally:
        tiny_model.config.model.long_audio = "segment"


def test_too_long_audio_is_refused(tiny_model):
    limit = tiny_model.config.model.max_audio_seconds
    with pytest.raises(SalmonnError, match="max_audio_seconds"):
        list(tiny_model.clip_segments((np.zeros(int((limit + 1) * 16000), dtype=np.float32), 16000)))


def test_prompt_errors_are_clear(tiny_model, fixture_clips):
    with pytest.raises(PromptError, match="SpeechHere"):
        tiny_model.generate(fixture_clips[0], "USER: no placeholder\nASSISTANT:", templated=True, max_new_tokens=2)
    with pytest.raises(PromptError, match="bare instruction"):
        tiny_model.generate(fixture_clips[0], "<SpeechHere> hi", max_new_tokens=2)
    with pytest.raises(PromptError, match="2 prompts for 1 clips"):
        tiny_model.generate([fixture_clips[0]], ["a", "b"], max_new_tokens=2)


def test_lora_scale_changes_the_answer_and_restores(tiny_model, fixture_clips):
    tokens = tiny_model.encode_audio(fixture_clips[:1])
    prompt = "Please describe the audio."
    base = tiny_model.generate(None, prompt, audio_tokens=tokens, num_beams=1, max_new_tokens=12)[0].token_ids
    logits = []
    for scale in (1.0, 0.0):
        tiny_model.set_lora_scale(scale)
        logits.append(tiny_model.sequence_logprob(tokens[0], format_prompt(prompt, tiny_model.config.model.prompt_template), base))
    tiny_model.set_lora_scale(1.0)
    assert logits[0] != pytest.approx(logits[1], abs=1e-3)
    again = tiny_model.generate(None, prompt, audio_tokens=tokens, num_beams=1, max_new_tokens=12)[0].token_ids
    assert again == base


def test_trainable_set_is_the_references(tiny_model):
    names = set(tiny_model.trainable_state_dict())
    roots = {n.split(".")[0] for n in names}
    assert roots == {"speech_Qformer", "speech_query_tokens", "ln_speech", "ln_audio", "speech_llama_proj",
                     "llama_model"}
    assert all("lora_" in n for n in names if n.startswith("llama_model"))
    assert not any(p.requires_grad for p in tiny_model.speech_encoder.parameters())
    assert not any(p.requires_grad for p in tiny_model.beats.parameters())
