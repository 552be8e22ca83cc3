"""scripts/mini/average_weights.py: a weighted average of checkpoints from one start, refused for unlike ones."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "mini" / "average_weights.py"


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def checkpoint(folder: Path, **tensors: torch.Tensor) -> Path:
    folder.mkdir()
    save_file(tensors, folder / "trainable.safetensors")
    return folder


def test_shares_weigh_each_checkpoint(tmp_path):
    a = checkpoint(tmp_path / "a", w=torch.zeros(2, 3), b=torch.ones(3))
    b = checkpoint(tmp_path / "b", w=torch.ones(2, 3) * 4, b=torch.ones(3) * 3)
    done = run(tmp_path / "out", a, b / "trainable.safetensors", "--weights", "0.75,0.25")
    assert done.returncode == 0, done.stderr
    out = load_file(tmp_path / "out" / "trainable.safetensors")
    assert torch.equal(out["w"], torch.ones(2, 3)) and torch.equal(out["b"], torch.ones(3) * 1.5)


def test_unlike_checkpoints_are_refused(tmp_path):
    a = checkpoint(tmp_path / "a", w=torch.zeros(2, 3))
    other_name = checkpoint(tmp_path / "b", v=torch.zeros(2, 3))
    other_shape = checkpoint(tmp_path / "c", w=torch.zeros(3, 2))
    assert "other tensors" in run(tmp_path / "o1", a, other_name).stderr
    assert "is (3, 2)" in run(tmp_path / "o2", a, other_shape).stderr
    assert "summing to 1" in run(tmp_path / "o3", a, a, "--weights", "0.5,0.6").stderr
    assert not (tmp_path / "o1").exists()
