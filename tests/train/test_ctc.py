"""run.ctc_weight / run.lm_weight: the auxiliary CTC loss that spells transcripts from the audio tokens."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from salmonn import load_model
from salmonn.errors import ConfigError
from salmonn.train.config import load_train_config
from salmonn.train.ctc import blank_id, ctc_greedy, ctc_loss_sum
from salmonn.train.data import PromptBook, TrainDataset, collate, load_samples
from salmonn.train.trainer import TrainStep

from ..conftest import FIXTURE
from .conftest import CONFIGS, metrics, run_stage, tiny

torch.manual_seed(0)
TABLE = torch.randn(50, 16)  # a toy embedding table: 50 word pieces in 16 dims
BLANK = 0


def test_greedy_path_merges_repeats_and_drops_blanks():
    tokens = TABLE[[3, 3, BLANK, 3, 7, 7, BLANK]] * 5.0  # the norm does not matter, only the direction
    assert ctc_greedy(tokens, TABLE, BLANK) == [3, 3, 7]


def test_loss_prefers_the_spelled_target_and_never_returns_nan():
    spelled = TABLE[[BLANK, 3, BLANK, 7, 9, BLANK]]
    right, count = ctc_loss_sum([spelled], [[3, 7, 9]], TABLE, BLANK, scale=16.0)
    wrong, _ = ctc_loss_sum([spelled], [[9, 7, 3]], TABLE, BLANK, scale=16.0)
    assert count == 3 and float(right) < 0.1 * float(wrong)
    short, _ = ctc_loss_sum([TABLE[[3]]], [[3, 7, 9]], TABLE, BLANK, scale=16.0)  # cannot fit: zeroed
    assert torch.isfinite(short) and float(short) == 0.0


def test_blank_must_be_one_token_and_weights_must_train_something(corpus, tmp_path):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(FIXTURE / "llama")
    assert blank_id(tokenizer, " ") == tokenizer(" ", add_special_tokens=False).input_ids[0]
    with pytest.raises(ConfigError, match="run.ctc_blank: 'a steady tone' is .* tokens"):
        blank_id(tokenizer, "a steady tone")
    with pytest.raises(ConfigError, match="lm_weight .* and ctc_weight .* not both 0"):
        load_train_config(CONFIGS / "stage1_pretrain.yaml", tiny(corpus, tmp_path, "run.lm_weight=0"))


def test_step_loss_is_the_lm_loss_plus_the_weighted_ctc_sum_per_target_token(corpus, tmp_path):
    tc = load_train_config(CONFIGS / "stage1_pretrain.yaml", tiny(
        corpus, tmp_path, "run.ctc_weight=0.5", "run.ctc_tasks=[audiocaption]", "run.disable_dropout=true"))
    model = load_model(tc.config, load_checkpoint=False).eval()
    m = model.config.model
    prompts = PromptBook.load(m.prompt_path, m.prompt_template)
    samples = load_samples([str(corpus / "train.jsonl")], prompts, model.tokenizer, m)
    batch = collate([TrainDataset(samples, prompts, 0, m, model.feature_extractor)[(0, i, 1.0)] for i in range(2)])
    with torch.no_grad():
        joint, n = TrainStep(model, run=tc.run, tokenizer=model.tokenizer)(batch)
        tc.run.ctc_weight = 0.0
        lm, n_lm = TrainStep(model, run=tc.run, tokenizer=model.tokenizer)(batch)
        tokens = TrainStep(model).audio_tokens(batch)
    end = model.tokenizer(m.end_sym, add_special_tokens=False).input_ids
    transcripts = [s.target_ids[:-len(end)] for s in samples[:2]]
    assert all(t == model.tokenizer(s.text, add_special_tokens=False).input_ids for t, s in zip(transcripts, samples))
    ctc, count = ctc_loss_sum(tokens, transcripts, model.llama_model.get_input_embeddings().weight,
                              blank_id(model.tokenizer, " "), 16.0)
    assert int(n) == int(n_lm) == batch["n_tokens"] and count == sum(map(len, transcripts))
    torch.testing.assert_close(joint, lm + 0.5 * ctc / n, rtol=1e-4, atol=1e-4)


def test_connector_only_ctc_stage_learns_to_spell_and_leaves_lora_alone(corpus, tmp_path):
    out = tmp_path / "ctc"
    final = run_stage("stage1_pretrain.yaml", corpus, out, "run.lm_weight=0", "run.ctc_weight=1",
                      "run.ctc_tasks=[audiocaption]", "run.train_only=[speech_Qformer,speech_llama_proj]",
                      "run.unfreeze=[]", "run.iters_per_epoch=30", "run.optims.max_epoch=1")
    rows = metrics(out)
    assert all("ctc_loss" in r for r in rows)
    first, last = rows[0]["ctc_loss"], sum(r["ctc_loss"] for r in rows[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    trained = load_file(final / "trainable.safetensors")
    lora_b = [k for k in trained if "lora_B" in k]  # peft starts B at zero: any LoRA update would move it
    assert lora_b and all(not trained[k].any() for k in lora_b)
    spelling = load_model(final / "infer.yaml").config.model  # what CTC rescoring reads (salmonn.rescoring)
    assert (spelling.ctc_query, spelling.ctc_scale, spelling.ctc_blank) == (0, 16.0, " ")


def test_audio_without_speech_is_spelled_as_all_blanks(corpus, tmp_path):
    """'there is no speech in this audio' (quiet, event and music clips) is no transcript to spell over the audio."""
    from salmonn.data.jobs import NO_SPEECH_TEXT
    tc = load_train_config(CONFIGS / "stage1_pretrain.yaml", tiny(corpus, tmp_path, "run.ctc_weight=1"))
    model = load_model(tc.config, load_checkpoint=False).eval()
    step = TrainStep(model, run=tc.run, tokenizer=model.tokenizer)
    tok = model.tokenizer
    end = tok(model.config.model.end_sym, add_special_tokens=False).input_ids
    said = tok("a dog barks", add_special_tokens=False).input_ids
    tokens = [torch.randn(12, model.llama_model.config.hidden_size) for _ in range(2)]
    batch = {"tasks": ["asr", "asr"], "weights": torch.ones(2),
             "targets": [tok(NO_SPEECH_TEXT, add_special_tokens=False).input_ids + end, said + end]}
    table, blank = model.llama_model.get_input_embeddings().weight, blank_id(tok, " ")
    expected, _ = ctc_loss_sum(tokens, [[], said], table, blank, tc.run.ctc_scale)
    spelled, _ = ctc_loss_sum(tokens, [tok(NO_SPEECH_TEXT, add_special_tokens=False).input_ids, said], table,
                              blank, tc.run.ctc_scale)
    with torch.no_grad():
        loss = step.ctc_loss(tokens, batch)
    torch.testing.assert_close(loss, expected)
    assert abs(float(spelled) - float(expected)) > 1.0  # the rule changes the loss


def test_ctc_query_spells_with_one_query_per_window_and_leaves_the_other_free(corpus, tmp_path):
    """run.ctc_query with 2 queries per window: CTC scores only the chosen query's tokens (window-major layout)."""
    tc = load_train_config(CONFIGS / "stage1_pretrain.yaml", tiny(
        corpus, tmp_path, "run.ctc_weight=1", "run.ctc_query=1", "model.num_speech_query_token=2"))
    model = load_model(tc.config, load_checkpoint=False).eval()
    step = TrainStep(model, run=tc.run, tokenizer=model.tokenizer)
    tok = model.tokenizer
    end = tok(model.config.model.end_sym, add_special_tokens=False).input_ids
    said = tok("a dog barks", add_special_tokens=False).input_ids
    tokens = torch.randn(2 * 10, model.llama_model.config.hidden_size, requires_grad=True)  # 10 windows x 2 queries
    batch = {"tasks": ["asr"], "weights": torch.ones(1), "targets": [said + end]}
    table, blank = model.llama_model.get_input_embeddings().weight, blank_id(tok, " ")
    loss = step.ctc_loss([tokens], batch)
    expected, _ = ctc_loss_sum([tokens.detach()[1::2]], [said], table, blank, tc.run.ctc_scale)
    torch.testing.assert_close(loss.detach(), expected)
    loss.backward()
    assert tokens.grad[0::2].abs().sum() == 0 and tokens.grad[1::2].abs().sum() > 0
    with pytest.raises(ConfigError, match="ctc_query 2 is not one of the 2 queries per window"):
        load_train_config(CONFIGS / "stage1_pretrain.yaml", tiny(
            corpus, tmp_path, "run.ctc_query=2", "model.num_speech_query_token=2"))
