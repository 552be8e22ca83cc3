"""run.time_mask_ratio / run.channel_mask_ratio: SpecAugment-style masks on the frozen Whisper frames in training."""

from __future__ import annotations

import pytest
import torch

from salmonn import load_model
from salmonn.errors import ConfigError
from salmonn.train.config import load_train_config
from salmonn.train.data import PromptBook, TrainDataset, collate, load_samples
from salmonn.train.masking import channel_mask, time_mask
from salmonn.train.trainer import TrainStep

from .conftest import CONFIGS, tiny


def test_time_masks_cover_about_the_ratio_of_each_clips_own_frames_and_nothing_after_them():
    torch.manual_seed(0)
    speech = torch.ones(2, 400, 8)
    masked = time_mask(speech, torch.tensor([400, 200]), ratio=0.2, span=10)
    zeroed = (masked == 0).all(-1)  # [B, T] whole frames
    assert (masked.eq(0) == zeroed[..., None]).all()  # a masked frame loses every channel
    assert 0.1 <= zeroed[0].float().mean() <= 0.2  # spans may overlap: at most the ratio, not far below
    assert 0.1 <= zeroed[1, :200].float().mean() <= 0.2 and not zeroed[1, 200:].any()
    assert torch.equal(time_mask(speech, None, ratio=0.0, span=10), speech)


def test_channel_masks_drop_the_same_share_of_channels_in_every_frame_of_a_clip():
    torch.manual_seed(0)
    speech = torch.randn(3, 50, 40)
    dropped = channel_mask(speech, 0.25).eq(0).all(dim=1)  # [B, C] channels zero in every frame
    assert dropped.sum(-1).tolist() == [10, 10, 10]
    assert not torch.equal(dropped[0], dropped[1])  # drawn per clip


def test_masks_change_training_steps_only_and_bad_ratios_are_refused(corpus, tmp_path):
    with pytest.raises(ConfigError, match="time_mask_ratio must be in"):
        load_train_config(CONFIGS / "stage1_pretrain.yaml", tiny(corpus, tmp_path, "run.time_mask_ratio=1.5"))
    with pytest.raises(ConfigError, match="time_mask_span must be >= 1"):
        load_train_config(CONFIGS / "stage1_pretrain.yaml", tiny(corpus, tmp_path, "run.time_mask_span=0"))
    tc = load_train_config(CONFIGS / "stage1_pretrain.yaml", tiny(
        corpus, tmp_path, "run.time_mask_ratio=0.3", "run.channel_mask_ratio=0.3"))
    model = load_model(tc.config, load_checkpoint=False)
    for module in model.modules():  # no Q-Former dropout: after the encoders, the masks are the only randomness
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    m = model.config.model
    prompts = PromptBook.load(m.prompt_path, m.prompt_template)
    samples = load_samples([str(corpus / "train.jsonl")], prompts, model.tokenizer, m)
    batch = collate([TrainDataset(samples, prompts, 0, m, model.feature_extractor)[(0, i, 1.0)] for i in range(2)])
    masked, plain = TrainStep(model, run=tc.run, tokenizer=model.tokenizer), TrainStep(model)
    with torch.no_grad():
        model.train()
        trained = []
        for step in (masked, plain):
            torch.manual_seed(0)  # the same draws for any dropout the encoders keep in training mode
            trained.append(torch.cat(step.audio_tokens(batch)))
        model.eval()
        evaluated = [torch.cat(masked.audio_tokens(batch)), torch.cat(plain.audio_tokens(batch))]
    assert not torch.allclose(*trained, atol=1e-3)
    torch.testing.assert_close(*evaluated)
