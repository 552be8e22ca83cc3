"""Kill-and-resume is exact: the resumed run repeats the uninterrupted run's per-step losses and weights."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

from .conftest import metrics, run_stage

# dropout stays on (LoRA and Q-Former): the RNG states must be restored too; one DataLoader worker process
COMMON = ("run.iters_per_epoch=5", "run.optims.max_epoch=1", "run.save_every=3", "run.num_workers=1",
          "run.plot=false")


def test_killed_run_resumes_to_the_same_losses(corpus, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_stage("stage1_pretrain.yaml", corpus, straight, *COMMON)
    expected = [r["loss"] for r in metrics(straight)]
    assert len(expected) == 5

    assert run_stage("stage1_pretrain.yaml", corpus, killed, *COMMON, "run.max_steps=4") is None  # not final
    assert [r["step"] for r in metrics(killed)] == [1, 2, 3, 4]
    # the process "died" after step 4 before its checkpoint was complete: step 3 (mid data epoch) survives
    shutil.rmtree(killed / "checkpoints" / "step_00000004")
    final = run_stage("stage1_pretrain.yaml", corpus, killed, *COMMON, resume=True)
    rows = metrics(killed)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]  # step 4 of the dead run was dropped, then redone
    assert [r["loss"] for r in rows] == pytest.approx(expected, abs=1e-6)
    a, b = load_file(straight / "final" / "trainable.safetensors"), load_file(final / "trainable.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_resume_refuses_a_different_global_batch(corpus, tmp_path):
    from salmonn.errors import ConfigError
    run_stage("stage1_pretrain.yaml", corpus, tmp_path, "run.iters_per_epoch=2", "run.optims.max_epoch=1",
              "run.max_steps=1", "run.save_every=1", "run.plot=false")
    with pytest.raises(ConfigError, match="global batch 2"):
        run_stage("stage1_pretrain.yaml", corpus, tmp_path, "run.iters_per_epoch=2", "run.optims.max_epoch=1",
                  "run.batch_size_train=4", resume=True)
