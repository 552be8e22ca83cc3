"""The frozen-encoder cache gives the same audio tokens as encoding every batch, without the encoders."""

from __future__ import annotations

import os

import numpy as np
import soundfile as sf
import torch

from salmonn import load_model
from salmonn.train.cache import FrozenCache, encoder_identity, fill_cache
from salmonn.train.data import PromptBook, TrainDataset, collate, load_samples
from salmonn.train.trainer import TrainStep

from ..conftest import FIXTURE
from .conftest import SR, make_clip, write_jsonl


def test_cached_tokens_equal_encoded_tokens_without_running_the_encoders(corpus, tmp_path):
    """Speed is measured in benchmarks/train_cache.py; here: the cache gives the same tokens and the frozen
    encoders do not run at all for a cached batch."""
    sf.write(tmp_path / "short.wav", make_clip("tone", 3.3).astype(np.float32), SR)  # BEATs pads it in a batch
    manifest = write_jsonl(tmp_path / "m.jsonl", [
        {"path": str(corpus / "noise.wav"), "text": "a", "task": "t"},
        {"path": str(tmp_path / "short.wav"), "text": "b", "task": "t"},
        {"path": str(corpus / "clicks.wav"), "text": "c", "task": "t", "expand_wav": [str(tmp_path / "short.wav")]}])
    model = load_model(FIXTURE / "config.yaml", ["device=cpu"], load_checkpoint=False).eval()
    prompts = PromptBook({"t": ["Describe."]}, model.config.model.prompt_template)
    samples = load_samples([str(manifest)], prompts, model.tokenizer, model.config.model)
    cache = FrozenCache(tmp_path / "cache", encoder_identity(model.config.model))
    assert fill_cache(model, samples, cache, batch_size=2) == 3 and all(cache.has(s) for s in samples)
    assert fill_cache(model, samples, cache, batch_size=2) == 0
    step = TrainStep(model)
    keys = [(0, i, 1.0) for i in range(3)]
    tokens, encoder_calls = {}, {}
    for name, c in (("encode", None), ("cache", cache)):
        dataset = TrainDataset(samples, prompts, 0, model.config.model, model.feature_extractor, c)
        calls = []
        hooks = [encoder.register_forward_hook(lambda *_: calls.append(1))
                 for encoder in (model.speech_encoder, model.beats)]
        try:
            with torch.no_grad():
                tokens[name] = step.audio_tokens(collate([dataset[k] for k in keys]))
        finally:
            for hook in hooks:
                hook.remove()
        encoder_calls[name] = len(calls)
    assert encoder_calls["encode"] > 0 and encoder_calls["cache"] == 0
    for a, b in zip(tokens["encode"], tokens["cache"], strict=True):
        assert a.shape == b.shape and (a - b).abs().max() < 1e-5
    # an edited file is a new entry, never a stale hit
    os.utime(tmp_path / "short.wav", ns=(1, 1))
    assert cache.has(samples[0]) and not cache.has(samples[1]) and not cache.has(samples[2])


def test_fast_mode_cache_and_encoders_give_each_clips_own_tokens(corpus, tmp_path):
    """model.whisper_full_window=false: cached and freshly encoded batches give every clip exactly the tokens the
    model gives it alone (clips of different lengths in one batch), and the cache keys differ from full-window."""
    sf.write(tmp_path / "short.wav", make_clip("tone", 3.3).astype(np.float32), SR)
    manifest = write_jsonl(tmp_path / "m.jsonl", [
        {"path": str(corpus / "noise.wav"), "text": "a", "task": "t"},
        {"path": str(tmp_path / "short.wav"), "text": "b", "task": "t"},
        {"path": str(corpus / "clicks.wav"), "text": "c", "task": "t", "expand_wav": [str(tmp_path / "short.wav")]}])
    model = load_model(FIXTURE / "config.yaml", ["device=cpu", "model.whisper_full_window=false"],
                                load_checkpoint=False).eval()
    assert encoder_identity(model.config.model) != encoder_identity(
        load_model(FIXTURE / "config.yaml", ["device=cpu"], load_checkpoint=False).config.model)
    prompts = PromptBook({"t": ["Describe."]}, model.config.model.prompt_template)
    samples = load_samples([str(manifest)], prompts, model.tokenizer, model.config.model)
    cache = FrozenCache(tmp_path / "cache", encoder_identity(model.config.model))
    assert fill_cache(model, samples, cache, batch_size=3) == 3
    step = TrainStep(model)
    keys = [(0, i, 1.0) for i in range(3)]
    from salmonn.train.data import load_segments
    with torch.no_grad():
        alone = [torch.cat([model.encode_segments([seg])[0] for seg in load_segments(s, model.config.model)])
                 for s in samples]
        for c in (None, cache):
            dataset = TrainDataset(samples, prompts, 0, model.config.model, model.feature_extractor, c)
            tokens = step.audio_tokens(collate([dataset[k] for k in keys]))
            for a, b in zip(tokens, alone):
                assert a.shape == b.shape and (a - b).abs().max() < 1e-5
    assert [t.shape[0] for t in alone] == [29, 9, 39]  # (frames - 17) // 17 + 1: 500, 165, 670 frames
