"""run.gender_weight: the speaker-gender loss on one query per window (train/gender.py), and its manifest field."""

from __future__ import annotations

import pytest
import torch

from salmonn import load_model
from salmonn.errors import ConfigError
from salmonn.train.config import load_train_config
from salmonn.train.data import DataError, PromptBook, load_samples
from salmonn.train.gender import gender_loss, label_ids
from salmonn.train.trainer import TrainStep

from ..conftest import FIXTURE
from .conftest import CLIPS, CONFIGS, metrics, run_stage, tiny, write_jsonl

LABELS = "run.gender_labels=[m,f]"  # one token each for the fixture's tiny tokenizer ("male" is three)


def test_loss_prefers_the_label_the_mean_token_points_at():
    table = torch.randn(2, 16)
    tokens = [table[0] + 0.1 * torch.randn(6, 16), table[1] + 0.1 * torch.randn(9, 16)]
    right, acc = gender_loss(tokens, [0, 1], table, scale=16.0)
    wrong, wrong_acc = gender_loss(tokens, [1, 0], table, scale=16.0)
    assert acc == 1.0 and wrong_acc == 0.0 and float(right) < 0.1 * float(wrong)


def test_labels_must_be_one_token_and_the_query_must_exist(corpus, tmp_path):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(FIXTURE / "llama")
    assert label_ids(tokenizer, ["m", "f"]) == [tokenizer("m", add_special_tokens=False).input_ids[0],
                                                tokenizer("f", add_special_tokens=False).input_ids[0]]
    with pytest.raises(ConfigError, match=r"gender_labels: \['female'\] are not one token"):
        label_ids(tokenizer, ["m", "female"])
    with pytest.raises(ConfigError, match="gender_query 2 is not one of the 2 queries per window"):
        load_train_config(CONFIGS / "stage1_pretrain.yaml", tiny(
            corpus, tmp_path, "run.gender_query=2", "model.num_speech_query_token=2"))
    with pytest.raises(ConfigError, match="gender_weight must be >= 0"):
        load_train_config(CONFIGS / "stage1_pretrain.yaml", tiny(corpus, tmp_path, "run.gender_weight=-1"))


def test_step_scores_only_labelled_rows_on_the_chosen_query(corpus, tmp_path):
    tc = load_train_config(CONFIGS / "stage1_pretrain.yaml", tiny(
        corpus, tmp_path, "run.gender_weight=1", "run.gender_query=1", "model.num_speech_query_token=2", LABELS))
    model = load_model(tc.config, load_checkpoint=False).eval()
    step = TrainStep(model, run=tc.run, tokenizer=model.tokenizer)
    d = model.llama_model.config.hidden_size
    tokens = [torch.randn(2 * 5, d, requires_grad=True) for _ in range(3)]  # 5 windows x 2 queries each
    batch = {"genders": ["f", None, "m"], "weights": torch.ones(3)}
    loss = step.gender_loss(tokens, batch)
    table = model.llama_model.get_input_embeddings().weight[label_ids(model.tokenizer, ["m", "f"])]
    expected, _ = gender_loss([tokens[0].detach()[1::2], tokens[2].detach()[1::2]], [1, 0], table,
                              tc.run.ctc_scale)
    torch.testing.assert_close(loss.detach(), expected)
    loss.backward()
    assert tokens[0].grad[0::2].abs().sum() == 0 and tokens[0].grad[1::2].abs().sum() > 0
    assert tokens[1].grad is None or tokens[1].grad.abs().sum() == 0  # no label: not scored
    with pytest.raises(ValueError, match=r"gender labels \['x'\] are not in run.gender_labels"):
        step.gender_loss(tokens, {"genders": ["x", None, None], "weights": torch.ones(3)})


def test_a_gender_that_is_not_a_string_is_a_data_error(corpus, tmp_path):
    tc = load_train_config(CONFIGS / "stage1_pretrain.yaml", tiny(corpus, tmp_path))
    m = tc.config.model
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"path": str(corpus / "tone.wav"), "text": "a tone",
                                               "task": "audiocaption", "gender": 3}])
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(FIXTURE / "llama")
    with pytest.raises(DataError, match="bad.jsonl:1: 'gender' must be a non-empty string"):
        load_samples([str(bad)], PromptBook.load(m.prompt_path, m.prompt_template), tokenizer, m)


def test_training_with_gender_labels_lowers_the_gender_loss(corpus, tmp_path):
    """Two clips called 'm', two 'f': the connector learns to tell them apart through the label embeddings."""
    labels = dict(zip(CLIPS, ["m", "f", "m", "f"]))
    manifest = write_jsonl(tmp_path / "gendered.jsonl", [
        {"path": str(corpus / f"{kind}.wav"), "text": text, "task": "audiocaption", "gender": labels[kind]}
        for kind, text in CLIPS.items()])
    out = tmp_path / "run"
    run_stage("stage1_pretrain.yaml", corpus, out, f"datasets.train_ann_path={manifest}", "run.gender_weight=1",
              LABELS, "run.iters_per_epoch=30", "run.optims.max_epoch=1")
    rows = metrics(out)
    assert all("gender_loss" in r and 0.0 <= r["gender_acc"] <= 1.0 for r in rows)
    first, last = rows[0]["gender_loss"], sum(r["gender_loss"] for r in rows[-5:]) / 5
    assert last < 0.5 * first, (first, last)


def test_a_gender_outside_the_labels_stops_training_before_the_first_step(corpus, tmp_path):
    manifest = write_jsonl(tmp_path / "odd.jsonl", [
        {"path": str(corpus / f"{kind}.wav"), "text": text, "task": "audiocaption", "gender": "m"}
        for kind, text in CLIPS.items()] + [{"path": str(corpus / "tone.wav"), "text": "a tone",
                                            "task": "audiocaption", "gender": "child"}])
    out = tmp_path / "run"
    with pytest.raises(DataError, match=r"(?s)1 record\(s\) of the training data have a gender that is not in "
                                        r"run.gender_labels \['f', 'm'\].*odd.jsonl:5: gender 'child'"):
        run_stage("stage1_pretrain.yaml", corpus, out, f"datasets.train_ann_path={manifest}", "run.gender_weight=1",
                  LABELS, "run.iters_per_epoch=4", "run.optims.max_epoch=1")
    assert not (out / "metrics.jsonl").exists()
