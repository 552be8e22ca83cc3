"""The training config: reference run:/datasets: layout, typed additions, typo errors, the shipped recipes."""

from __future__ import annotations

import pytest

from salmonn.errors import ConfigError
from salmonn.train.config import load_train_config

from .conftest import CONFIGS

REFERENCE_YAML = """
model:
  llama_path: "llama"
  prompt_template: "USER: {}\\nASSISTANT:"
datasets:
  train_ann_path: "path to train data"
  valid_ann_path: "path to valid data"
  test_ann_path: "path to test data"
run:
  seed: 42
  output_dir: "output directory"
  evaluate: False
  log_freq: 5
  epoch_based: False
  iters_per_epoch: 3000
  accum_grad_iters: 1
  batch_size_train: 8
  batch_size_eval: 8
  num_workers: 8
  device: "cuda"
  use_distributed: True
  amp: True
  world_size: 1
  dist_url: "env://"
  optims:
    max_epoch: 30
    warmup_steps: 3000
    warmup_start_lr: 1e-6
    init_lr: 3e-5
    min_lr: 1e-5
    weight_decay: 0.05
    beta2: 0.999
  use_wandb: True
  wandb_project: "salmonn-experiments"
  wandb_local_dir: "logs"
  wandb_name: "run_name"
  wandb_entity: "my_org"
"""


def test_reference_training_yaml_loads_unchanged(tmp_path):
    (tmp_path / "c.yaml").write_text(REFERENCE_YAML)
    tc = load_train_config(tmp_path / "c.yaml")
    assert tc.run.optims.warmup_start_lr == 1e-6 and tc.run.optims.init_lr == 3e-5  # YAML reads 1e-6 as a string
    assert tc.run.iters_per_epoch == 3000 and tc.run.batch_size_train == 8 and tc.run.use_wandb
    assert tc.datasets.train_ann_path == ["path to train data"]


@pytest.mark.parametrize("override, message", [
    ("run.batch_size_trian=2", "did you mean 'batch_size_train'"),
    ("run.optims.init_rl=1", "did you mean 'init_lr'"),
    ("datasets.cache_dri=x", "did you mean 'cache_dir'"),
    ("run.batch_size_train=two", "batch_size_train must be int"),
    ("run.parallel=zero", "parallel must be one of"),
    ("run.iters_per_epoch=10", "multiple of accum_grad_iters"),
])
def test_typos_and_bad_values_name_the_key(tmp_path, override, message):
    (tmp_path / "c.yaml").write_text(REFERENCE_YAML)
    extra = ["run.accum_grad_iters=4"] if "iters_per_epoch" in override else []
    with pytest.raises(ConfigError, match=message):
        load_train_config(tmp_path / "c.yaml", [override, *extra])


def test_unknown_section_is_an_error(tmp_path):
    (tmp_path / "c.yaml").write_text(REFERENCE_YAML + "datasetz:\n  x: 1\n")
    with pytest.raises(ConfigError, match="did you mean 'datasets'"):
        load_train_config(tmp_path / "c.yaml")


def test_shipped_recipes_chain_the_three_stages():
    s1, s2, s3 = (load_train_config(CONFIGS / f) for f in
                  ("stage1_pretrain.yaml", "stage2_instruct.yaml", "stage3_activation.yaml"))
    assert (s1.run.stage, s2.run.stage, s3.run.stage) == ("pretrain", "instruct", "activation")
    assert s1.run.init_from == "" and s2.run.init_from == "runs/stage1_pretrain/final"
    assert s3.run.init_from == "runs/stage2_instruct/final" and s3.run.train_only == ["lora_"]
    for tc in (s1, s2):  # the reference optimiser
        o = tc.run.optims
        assert (o.init_lr, o.min_lr, o.warmup_start_lr, o.warmup_steps, o.weight_decay, o.beta2) == \
            (3e-5, 1e-5, 1e-6, 3000, 0.05, 0.999)
    assert s3.activation.num_stories == 12 and s3.activation.generation_lora_scale == 0.5
    assert s3.run.iters_per_epoch * s3.run.optims.max_epoch == 12
    assert s1.config.model.prompt_path.endswith("configs/train/prompts.json")
