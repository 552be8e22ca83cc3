"""Issue 32, items 1, 2 and 8: a run that diverges stops and exports nothing; a damaged checkpoint, a full disk or
an unwritable folder is one line naming the file and an intact checkpoint to resume from; files are readable by
the group and others as the umask allows, and resume deletes what a killed write left behind."""

from __future__ import annotations

import errno
import os
import shutil
import stat

import pytest
import torch
from safetensors.torch import load_file, save_file

from salmonn.errors import CheckpointError, ConfigError

from .conftest import CONFIGS, metrics, run_stage, tiny

RUN = ("run.iters_per_epoch=3", "run.optims.max_epoch=1", "run.save_every=1", "run.plot=false",
       "run.export_reference=false")


@pytest.fixture(scope="module")
def two_steps(corpus, tmp_path_factory):
    """A run stopped after step 2 of 3, with checkpoints at steps 1 and 2 (copied by each test)."""
    out = tmp_path_factory.mktemp("two_steps") / "run"
    run_stage("stage1_pretrain.yaml", corpus, out, *RUN, "run.max_steps=2")
    return out


@pytest.fixture
def run_copy(two_steps, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(two_steps, out)
    return out


def step(out, n: int):
    return out / "checkpoints" / f"step_{n:08d}"


def cli_train(corpus, out, capsys, *extra) -> tuple[int, str]:
    """(exit status, stderr) of `salmonn train` on the tiny recipe."""
    from salmonn.cli import main
    flags = [e for e in extra if e.startswith("--") or e.startswith("/")]  # --resume-from's folder too
    overrides = [e for e in extra if e not in flags]
    code = main(["train", *flags, str(CONFIGS / "stage1_pretrain.yaml"), *tiny(corpus, out, *RUN, *overrides)])
    return code, capsys.readouterr().err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("salmonn train: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ------------------------------------------------------------------ item 1: divergence


def test_nan_weights_in_the_latest_checkpoint_are_refused_on_resume(corpus, run_copy, capsys):
    """Was: every later loss NaN, all updates skipped, exit 0 and a NaN final/."""
    weights = step(run_copy, 2) / "trainable.safetensors"
    tensors = load_file(weights)
    name = sorted(tensors)[0]
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, str(weights))
    code, err = cli_train(corpus, run_copy, capsys, "--resume")
    line = one_error_line(err)
    assert code == 1 and "step_00000002/trainable.safetensors" in line and "NaN" in line
    assert f"--resume-from {step(run_copy, 1)}" in line
    assert not (run_copy / "final").exists()


def test_a_diverging_run_stops_naming_the_step_and_exports_nothing(corpus, tmp_path, capsys):
    """Was: init_lr=1e4 skipped 27 of 30 updates, exited 0 and exported final/."""
    out = tmp_path / "run"
    code, err = cli_train(corpus, out, capsys, "run.optims.init_lr=1e4", "run.max_skipped_updates=2",
                          "run.iters_per_epoch=12")
    line = one_error_line(err)
    assert code == 1 and "2 updates in a row were skipped" in line and "run.max_skipped_updates" in line
    last = metrics(out)[-1]["step"]
    assert f"error: step {last}:" in line  # the step where it stopped
    assert last < 12 and not (out / "final").exists()
    for folder in (out / "checkpoints").glob("step_*"):  # what was saved before is finite
        assert all(torch.isfinite(t).all() for t in load_file(folder / "trainable.safetensors").values())


# ------------------------------------------------------------------ item 2: damaged checkpoints, disks, folders


DAMAGE = {
    "optimizer.safetensors": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "trainable.safetensors": lambda p: p.write_bytes(p.read_bytes()[:100]),
    "state.json": lambda p: p.write_text(""),
    "config.json": lambda p: p.write_text(p.read_text()[:50]),
}


@pytest.mark.parametrize("name", list(DAMAGE))
def test_a_damaged_file_names_itself_and_the_intact_checkpoint(run_copy, name):
    """Was: a 27-line traceback (file not named) or a JSONDecodeError."""
    from salmonn.train.state import check_checkpoint
    DAMAGE[name](step(run_copy, 2) / name)
    with pytest.raises(CheckpointError) as caught:
        check_checkpoint(step(run_copy, 2))
    message = str(caught.value)
    assert message.startswith(f"{step(run_copy, 2) / name}: ") and "\n" not in message
    assert f"--resume-from {step(run_copy, 1)}" in message


def test_resume_from_the_intact_checkpoint_after_a_damaged_one(corpus, run_copy, capsys):
    DAMAGE["optimizer.safetensors"](step(run_copy, 2) / "optimizer.safetensors")
    code, err = cli_train(corpus, run_copy, capsys, "--resume")
    line = one_error_line(err)
    assert code == 1 and "step_00000002/optimizer.safetensors: cut off or damaged" in line
    code, err = cli_train(corpus, run_copy, capsys, "--resume-from", str(step(run_copy, 1)))
    assert code == 0, err
    assert [r["step"] for r in metrics(run_copy)] == [1, 2, 3]  # step 2 redone from step 1
    assert (run_copy / "final" / "trainable.safetensors").is_file()


@pytest.mark.parametrize("problem", [errno.ENOSPC, errno.EROFS])
def test_a_full_disk_or_read_only_folder_while_saving_is_one_line(corpus, tmp_path, monkeypatch, problem):
    """Was: a raw traceback; the partial checkpoint folder is removed."""
    import salmonn.train.state as state

    def fail(tensors, path, metadata=None):
        raise OSError(problem, os.strerror(problem))
    monkeypatch.setattr(state, "save_file", fail)
    out = tmp_path / "run"
    with pytest.raises(CheckpointError) as caught:
        run_stage("stage1_pretrain.yaml", corpus, out, *RUN, "run.max_steps=1")
    message = str(caught.value)
    assert message.startswith(f"{step(out, 1)}: cannot write the checkpoint ({os.strerror(problem)})")
    assert "\n" not in message and "--resume" in message
    assert not list((out / "checkpoints").glob(".*"))


def test_a_full_disk_while_filling_the_encoder_cache_is_one_line(corpus, tmp_path, monkeypatch):
    import salmonn.train.cache as cache

    def fail(write, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(cache, "atomic_save", fail)
    with pytest.raises(CheckpointError, match=r"cache: cannot write the encoder cache \(datasets.cache_dir\) \(No "
                                              r"space left on device\)"):
        run_stage("stage1_pretrain.yaml", corpus, tmp_path / "run", *RUN, f"datasets.cache_dir={tmp_path / 'cache'}")


def test_an_unwritable_output_folder_is_one_line_before_training(corpus, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match=r"file/run: cannot write to run.output_dir \(.*\); fix its permissions"):
        run_stage("stage1_pretrain.yaml", corpus, blocker / "run", *RUN)


# ------------------------------------------------------------------ item 8: files


def test_files_follow_the_umask_and_resume_deletes_partial_files(corpus, run_copy, capsys):
    """Was: final/ and checkpoint files mode 0600 whatever the umask; `.trainable.safetensors.*.tmp` left by a
    killed final export stayed after resume."""
    leftovers = [run_copy / "final" / ".trainable.safetensors.123.0a1b2c3d.tmp",
                 run_copy / "checkpoints" / ".step_00000003.tmp" / "trainable.safetensors"]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    old = os.umask(0o022)
    try:
        code, err = cli_train(corpus, run_copy, capsys, "--resume")
    finally:
        os.umask(old)
    assert code == 0, err
    assert not [p for p in run_copy.rglob("*") if p.name.endswith(".tmp")]
    written = [*(run_copy / "final").iterdir(), *step(run_copy, 3).iterdir(), run_copy / "checkpoints" / "latest"]
    modes = {str(p.relative_to(run_copy)): stat.S_IMODE(p.stat().st_mode) for p in written}
    assert set(modes.values()) == {0o644}, modes
