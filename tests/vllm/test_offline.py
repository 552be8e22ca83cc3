"""The plugin through vLLM's Python API gives `salmonn infer`'s greedy ids (fp32): SALMONN-mini on every bundled
clip, alone and 16 at once, and the reference-tiny fixture (Whisper + BEATs) on its clips."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import AUDIO, CLIPS, EXAMPLES, OWN_TASK, PROMPTS, TASKS, audio_message, without_eos


def vllm_ids(engine, requests: list[tuple], max_tokens: int, **extra) -> list[list[int]]:
    """Greedy ids for (clip path, instruction) requests submitted together (vLLM batches them continuously)."""
    from vllm import SamplingParams
    params = SamplingParams(temperature=0, max_tokens=max_tokens, **extra)
    outs = engine.chat([audio_message(path, text) for path, text in requests], params, use_tqdm=False)
    eos = engine.get_tokenizer().eos_token_id
    return [without_eos(out.outputs[0].token_ids, eos) for out in outs]


def our_ids(model, requests: list[tuple], **options) -> list[list[int]]:
    """`salmonn infer`'s ids (the Python API it calls), one clip at a time."""
    return [list(model.generate([str(path)], text, **options)[0].token_ids) for path, text in requests]


def test_mini_alone_matches_salmonn_infer(mini_engine, mini):
    requests = [(EXAMPLES / clip, PROMPTS[task]) for clip, task in OWN_TASK.items()]
    ours = our_ids(mini, requests)
    theirs = [vllm_ids(mini_engine, [request], 64)[0] for request in requests]
    assert theirs == ours
    texts = [mini.tokenizer.decode(ids) for ids in theirs]
    assert "dog" in texts[2] and "cello" in texts[3].lower()  # it hears: not a constant answer


def test_mini_sixteen_at_once_match(mini_engine, mini):
    requests = [(EXAMPLES / clip, PROMPTS[task]) for clip in CLIPS for task in TASKS]
    assert len(requests) == 16
    assert vllm_ids(mini_engine, requests, 64) == our_ids(mini, requests)


def test_ngram_ban_as_a_logits_processor(fixture_engine, tiny_model, expected):
    """The fixture loops ('umps umps ...'); extra_args={"no_repeat_ngram_size": 3} bans what salmonn infer's ban
    does (a processor that did nothing, or banned differently, would fail)."""
    request = [(AUDIO / expected["audio"][1], "Please describe the audio.")]
    banned = vllm_ids(fixture_engine, request, 24, extra_args={"no_repeat_ngram_size": 3})
    free = vllm_ids(fixture_engine, request, 24)
    assert banned == our_ids(tiny_model, request, num_beams=1, max_new_tokens=24, no_repeat_ngram_size=3)
    assert free == our_ids(tiny_model, request, num_beams=1, max_new_tokens=24)
    assert banned != free


def test_ngram_default_comes_from_the_export(mini_dir, fixture_dir):
    """mini's config decodes with no_repeat_ngram_size=3, the fixture's with none: the processor's default follows
    the exported config, and a request's extra_args wins."""
    from types import SimpleNamespace

    from transformers import AutoConfig
    from vllm.sampling_params import SamplingParams

    from salmonn.vllm.ngram import NoRepeatNGram

    def processor(folder):
        hf_config = AutoConfig.from_pretrained(folder)
        return NoRepeatNGram(SimpleNamespace(model_config=SimpleNamespace(hf_config=hf_config)), "cpu", False)

    assert processor(mini_dir).default == 3 and processor(fixture_dir).default == 0
    assert processor(mini_dir).new_req_logits_processor(SamplingParams(extra_args={"no_repeat_ngram_size": 0})) \
        is None
    with pytest.raises(ValueError, match="no_repeat_ngram_size"):
        NoRepeatNGram.validate_params(SamplingParams(extra_args={"no_repeat_ngram_size": -1}))


def test_any_rate_and_channels_through_our_audio_code(mini_engine, mini):
    """A 44.1 kHz stereo array is resampled and reduced by this package's audio code, as salmonn infer does."""
    import soundfile as sf
    import soxr
    from vllm import SamplingParams
    wav, rate = sf.read(EXAMPLES / "dog.flac", dtype="float32")
    stereo = np.stack([soxr.resample(wav, rate, 44100), np.zeros(len(soxr.resample(wav, rate, 44100)), np.float32)], 1)
    tokenizer = mini_engine.get_tokenizer()
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": PROMPTS["sound_event"]}]}],
        tokenize=False)
    ids = tokenizer(text, add_special_tokens=False).input_ids  # the template holds BOS already
    out = mini_engine.generate({"prompt_token_ids": ids, "multi_modal_data": {"audio": (stereo, 44100)}},
                               SamplingParams(temperature=0, max_tokens=16), use_tqdm=False)
    ours = mini.generate([(stereo, 44100)], PROMPTS["sound_event"], max_new_tokens=16)[0]
    assert without_eos(out[0].outputs[0].token_ids, mini.tokenizer.eos_token_id) == list(ours.token_ids)


def test_audio_over_30_s_is_answered_segment_by_segment(mini_engine, mini, tmp_path):
    """A 36 s clip is two segments (30 s + 6 s), each with its own tokens, as salmonn infer answers it."""
    import soundfile as sf
    wav, rate = sf.read(EXAMPLES / "cello.flac", dtype="float32")
    long = np.concatenate([wav] * 6)  # 6 x 6.02 s
    path = tmp_path / "long.wav"
    sf.write(path, long, rate)
    request = [(path, PROMPTS["audiocaption"])]
    assert vllm_ids(mini_engine, request, 32) == our_ids(mini, request, max_new_tokens=32)


def test_too_long_audio_is_refused_with_our_message(mini_engine):
    from vllm import SamplingParams
    long = np.zeros(16000 * 601, dtype=np.float32)
    with pytest.raises(ValueError, match="longer than max_audio_seconds=600"):
        mini_engine.generate({"prompt": "<SpeechHere>", "multi_modal_data": {"audio": (long, 16000)}},
                             SamplingParams(max_tokens=1), use_tqdm=False)


def test_fixture_matches_salmonn_infer(fixture_engine, tiny_model, expected):
    """Whisper + BEATs + the window-level Q-Former: both fixture clips, both of its prompts, 12 greedy tokens."""
    instructions = [p.split("</Speech> ")[1].split("\n")[0] for p in expected["generate_prompts"]]
    requests = [(AUDIO / clip, text) for clip in expected["audio"] for text in instructions]
    ours = our_ids(tiny_model, requests, num_beams=1, max_new_tokens=12)
    assert vllm_ids(fixture_engine, requests, 12) == ours
    assert vllm_ids(fixture_engine, requests, 12) == ours  # cached audio (vLLM's processor cache) answers the same
