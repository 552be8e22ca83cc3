"""run.connector_init=data: a fresh connector starts standardised on the training clips (train/init.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from salmonn import load_model
from salmonn.train.cache import FrozenCache, encoder_identity, fill_cache
from salmonn.train.data import PromptBook, TrainDataset, collate, load_samples
from salmonn.train.init import init_connector_from_data
from salmonn.train.trainer import TrainStep

from ..conftest import FIXTURE
from .conftest import metrics, run_stage

WINDOWS = 29  # audio tokens of a 10 s clip (the rest of its 30 s window is padding)


def _setup(corpus):
    model = load_model(FIXTURE / "config.yaml", ["device=cpu"], load_checkpoint=False).eval()
    prompts = PromptBook({"audiocaption": ["Describe."]}, model.config.model.prompt_template)
    samples = load_samples([str(corpus / "train.jsonl")], prompts, model.tokenizer, model.config.model)
    return model, prompts, samples


def _tokens(model, prompts, samples, cache=None):
    dataset = TrainDataset(samples, prompts, 0, model.config.model, model.feature_extractor, cache)
    with torch.no_grad():
        return TrainStep(model).audio_tokens(collate([dataset[(0, i, 1.0)] for i in range(len(samples))]))


def _mean_cosine(tokens):
    means = F.normalize(torch.stack([t[:WINDOWS].mean(0) for t in tokens]), dim=-1)
    return float((means @ means.T)[~torch.eye(len(tokens), dtype=torch.bool)].mean())


def test_data_init_standardises_features_scales_tokens_and_separates_clips(corpus, tmp_path):
    model, prompts, samples = _setup(corpus)
    before = _tokens(model, prompts, samples)
    cache = FrozenCache(tmp_path / "cache", encoder_identity(model.config.model))
    fill_cache(model, samples, cache, batch_size=2)
    stats = init_connector_from_data(model, samples, cache)
    assert stats["clips"] == len(samples) and stats["frames"] == len(samples) * 1500
    # the normalised Whisper frames of the training clips: zero mean, unit variance per dimension
    frames = torch.cat([cache.load(s)["whisper"][0] for s in samples])
    normed = model.ln_speech(F.layer_norm(frames, frames.shape[-1:]))
    assert normed.mean(0).abs().max() < 1e-3 and (normed.std(0) - 1).abs().max() < 1e-3
    after = _tokens(model, prompts, samples, cache)
    embedding_rms = float(model.llama_model.get_input_embeddings().weight.pow(2).mean().sqrt())
    rms = float(torch.cat(after).pow(2).mean().sqrt())
    assert 0.5 < rms / embedding_rms < 2.0, (rms, embedding_rms)
    assert _mean_cosine(after) < _mean_cosine(before) - 0.05, (_mean_cosine(before), _mean_cosine(after))
    # without a cache the encoders run: the same statistics
    fresh, _, _ = _setup(corpus)
    init_connector_from_data(fresh, samples, None)
    torch.testing.assert_close(fresh.ln_speech.weight, model.ln_speech.weight, rtol=1e-3, atol=1e-4)


def test_train_applies_data_init_only_to_a_fresh_connector(corpus, tmp_path, capfd):
    one_step = ("run.connector_init=data", "run.iters_per_epoch=1", "run.optims.max_epoch=1")
    final = run_stage("stage1_pretrain.yaml", corpus, tmp_path / "fresh", *one_step)
    assert "connector initialised from the data" in capfd.readouterr().err and metrics(tmp_path / "fresh")
    run_stage("stage1_pretrain.yaml", corpus, tmp_path / "seeded", *one_step, f"run.init_from={final}")
    err = capfd.readouterr().err
    assert "connector_init=data ignored" in err and "connector initialised from the data" not in err
