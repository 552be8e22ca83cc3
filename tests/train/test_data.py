"""Manifest validation, prompts, deterministic length-aware batching, expand_wav."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from transformers import AutoTokenizer

from salmonn.config import ModelConfig
from salmonn.train.data import (DataError, GlobalBatchSampler, PromptBook, TrainDataset, eval_batches, load_samples,
                                load_segments)

from ..conftest import FIXTURE
from .conftest import write_jsonl

TEMPLATE = "USER: {}\nASSISTANT:"


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(FIXTURE / "llama")


def book(variants):
    return PromptBook(variants, TEMPLATE)


def test_prompt_variants_are_wrapped_like_the_reference():
    b = book({"asr": ["Transcribe."], "ref": ["<Speech><SpeechHere></Speech> Describe."], "QA": ["{}"]})
    rng = np.random.default_rng(0)
    assert b.sample("asr", None, rng) == "USER: <Speech><SpeechHere></Speech> Transcribe.\nASSISTANT:"
    assert b.sample("ref", None, rng) == "USER: <Speech><SpeechHere></Speech> Describe.\nASSISTANT:"
    assert b.sample("QA", "Who speaks?", rng) == "USER: <Speech><SpeechHere></Speech> Who speaks?\nASSISTANT:"
    assert book({"x": ["<SpeechHere> and <SpeechHere>"]}).problems()


def test_bad_manifest_lists_every_problem_with_its_line(corpus, tokenizer, tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("not audio at all")
    good = str(corpus / "tone.wav")
    manifest = write_jsonl(tmp_path / "bad.jsonl", [
        {"path": good, "text": "fine", "task": "audiocaption"},
        {"path": "missing.wav", "text": "x", "task": "audiocaption"},
        {"path": good, "text": "x", "task": "karaoke"},
        {"path": good, "text": "  ", "task": "audiocaption"},
        {"path": "text.wav", "text": "x", "task": "audiocaption"},
        {"path": good, "text": "x", "task": "QA"},
        {"path": good, "text": "x", "task": "audiocaption", "expand_wav": ["empty.wav"]},
        {"text": "x", "task": "audiocaption"},
    ])
    prompts = book({"audiocaption": ["Describe.", "<SpeechHere> twice <SpeechHere>"], "QA": ["{}"]})
    with pytest.raises(DataError) as err:
        load_samples([str(manifest)], prompts, tokenizer, ModelConfig())
    text = str(err.value)
    assert text.startswith("8 problem(s) in the training data")
    assert "variant 2" in text and "needs exactly 1" in text
    for line, why in [(2, "audio file not found"), (3, "task 'karaoke' is not in the prompt file"),
                      (4, "empty 'text'"), (5, "unreadable audio"), (6, "has no 'Q'"),
                      (7, "audio file is empty"), (8, "no 'path'")]:
        assert f"bad.jsonl:{line}: " in text and why in text, (line, why)
    assert "bad.jsonl:1:" not in text
    with pytest.raises(DataError, match=r"and 5 more"):
        load_samples([str(manifest)], prompts, tokenizer, ModelConfig(), max_listed=3)


def test_reference_annotation_json_and_targets(corpus, tokenizer):
    samples = load_samples([str(corpus / "valid.json")], book({"audiocaption": ["Describe."]}), tokenizer,
                           ModelConfig())
    assert [s.source for s in samples] == [f"{corpus / 'valid.json'}:1", f"{corpus / 'valid.json'}:2"]
    assert samples[0].target_ids == tokenizer("a steady tone</s>", add_special_tokens=False).input_ids
    assert samples[0].seconds == pytest.approx(10.0)


def test_expand_wav_is_appended_after_0_1_s_of_silence(corpus, tokenizer, tmp_path):
    manifest = write_jsonl(tmp_path / "m.jsonl", [{"path": str(corpus / "tone.wav"), "text": "x", "task": "a",
                                                    "expand_wav": [str(corpus / "noise.wav")]}])
    sample = load_samples([str(manifest)], book({"a": ["A."]}), tokenizer, ModelConfig())[0]
    wav = np.concatenate(load_segments(sample, ModelConfig()))
    tone, _ = sf.read(corpus / "tone.wav", dtype="float32")
    noise, _ = sf.read(corpus / "noise.wav", dtype="float32")
    assert wav.shape[0] == tone.shape[0] + 1600 + noise.shape[0]
    assert np.array_equal(wav[tone.shape[0]:tone.shape[0] + 1600], np.zeros(1600, np.float32))
    assert np.allclose(wav[-noise.shape[0]:], noise) and sample.seconds == pytest.approx(20.1)


def test_global_batches_do_not_depend_on_the_number_of_processes():
    lengths = np.random.default_rng(0).integers(90, 400, size=103)
    one = GlobalBatchSampler(lengths, 8, 0, 1, seed=3)
    two = [GlobalBatchSampler(lengths, 4, r, 2, seed=3) for r in range(2)]
    streams = [iter(one)] + [iter(s) for s in two]
    for _ in range(30):  # > 2 epochs of 12 batches
        a, b, c = (next(s) for s in streams)
        assert a == b + c
        assert len({k[0] for k in a}) == 1
    # resuming at a position gives the same stream
    later = GlobalBatchSampler(lengths, 8, 0, 1, seed=3, start=17)
    assert [k[1] for k in next(iter(later))] == one.global_batch_at(17).tolist()
    # bucketing: batches are much more uniform in length than random batches
    spread = np.mean([np.ptp(lengths[b]) for b in one.epoch_batches(0)])
    plain = GlobalBatchSampler(lengths, 8, 0, 1, seed=3, bucketing=False)
    assert spread < 0.5 * np.mean([np.ptp(lengths[b]) for b in plain.epoch_batches(0)])
    assert sorted(np.concatenate(plain.epoch_batches(1)).tolist()) != list(range(96))  # drops 7 of 103


def test_prompt_choice_is_seeded_by_sample_not_by_order(corpus, tokenizer):
    prompts = book({"audiocaption": [f"Variant {i}." for i in range(10)]})
    samples = load_samples([str(corpus / "train.jsonl")], prompts, tokenizer, ModelConfig())

    class FakeCache:
        def load(self, sample):
            return {}

    ds = TrainDataset(samples, prompts, seed=5, model_cfg=ModelConfig(), feature_extractor=None, cache=FakeCache())
    keys = [(e, i, 1.0) for e in range(3) for i in range(4)]
    forward = [ds[k]["prompt"] for k in keys]
    backward = [ds[k]["prompt"] for k in reversed(keys)][::-1]
    assert forward == backward
    assert len(set(forward)) > 3  # the variant changes with epoch and sample


def test_validation_shards_cover_every_sample_once():
    shards = [eval_batches(7, 2, r, 3) for r in range(3)]
    assert len({len(s) for s in shards}) == 1  # same number of batches everywhere (FSDP needs that)
    real = sorted(i for s in shards for b in s for (_, i, w) in b if w > 0)
    assert real == list(range(7))
