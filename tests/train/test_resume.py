"""Kill-and-resume is exact: the resumed run repeats the uninterrupted run's per-step losses and weights."""

from __future__ import annotations

import json
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


ONE_STEP = ("run.iters_per_epoch=2", "run.optims.max_epoch=1", "run.max_steps=1", "run.save_every=1",
            "run.plot=false")


@pytest.fixture(scope="module")
def one_step_run(corpus, tmp_path_factory):
    """A run stopped after step 1 with its checkpoint (copied by each test that changes it)."""
    out = tmp_path_factory.mktemp("one_step")
    run_stage("stage1_pretrain.yaml", corpus, out, *ONE_STEP)
    return out


def copy_run(source, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(source, out)
    return out


def test_a_fresh_run_refuses_a_folder_with_another_runs_checkpoints(corpus, one_step_run, tmp_path):
    from salmonn.errors import ConfigError
    out = copy_run(one_step_run, tmp_path)
    with pytest.raises(ConfigError, match=r"checkpoints.*step 1.*--resume.*--restart"):
        run_stage("stage1_pretrain.yaml", corpus, out, *ONE_STEP)
    assert [d.name for d in sorted((out / "checkpoints").glob("step_*"))] == ["step_00000001"]  # left alone
    assert [r["step"] for r in metrics(out)] == [1]


def test_restart_clears_the_earlier_run(corpus, one_step_run, tmp_path):
    """The earlier run went further (step 2): without clearing it, pruning kept its step 2 over the new step 1 and
    --resume continued the old run."""
    out = copy_run(one_step_run, tmp_path)
    old = out / "checkpoints" / "step_00000002"
    shutil.copytree(out / "checkpoints" / "step_00000001", old)
    (out / "final").mkdir()
    run_stage("stage1_pretrain.yaml", corpus, out, *ONE_STEP, "run.keep_last=1", "run.optims.init_lr=1e-3",
              restart=True)
    assert [d.name for d in (out / "checkpoints").glob("step_*")] == ["step_00000001"]
    assert (out / "checkpoints" / "latest").read_text() == "step_00000001"
    assert not (out / "final").exists() and [r["step"] for r in metrics(out)] == [1]
    saved = json.loads((out / "checkpoints" / "step_00000001" / "config.json").read_text())
    assert saved["run"]["optims"]["init_lr"] == 1e-3  # the new run's own checkpoint, not the earlier one


def test_resume_refuses_a_changed_learning_rate(corpus, one_step_run, tmp_path):
    from salmonn.errors import ConfigError
    out = copy_run(one_step_run, tmp_path)
    with pytest.raises(ConfigError, match=r"step_00000001.*run\.optims\.init_lr: 0\.005 there, 0\.001 here"):
        run_stage("stage1_pretrain.yaml", corpus, out, *ONE_STEP, "run.optims.init_lr=1e-3", resume=True)


def test_resume_survives_cut_off_last_lines(corpus, one_step_run, tmp_path):
    """A full disk or power loss cut the last line of metrics.jsonl and samples.jsonl."""
    out = copy_run(one_step_run, tmp_path)
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"type": "train", "step": 2, "lo')
    (out / "samples.jsonl").write_text('{"step": 1, "source": "a.wav", "answer": "x"}\n{"step": 1, "sou')
    run_stage("stage1_pretrain.yaml", corpus, out, "run.iters_per_epoch=2", "run.optims.max_epoch=1",
              "run.save_every=1", resume=True)
    assert [r["step"] for r in metrics(out)] == [1, 2]
    assert (out / "samples.jsonl").read_text() == '{"step": 1, "source": "a.wav", "answer": "x"}\n'
    assert (out / "curves.png").is_file()
