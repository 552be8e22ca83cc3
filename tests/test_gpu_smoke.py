"""benchmarks/gpu_smoke.sh: runs only on CUDA machines; here it is checked for syntax and for refusing cleanly."""

from __future__ import annotations

import os
import py_compile
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_smoke.sh"


def test_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    py_compile.compile(str(ROOT / "benchmarks" / "gpu_smoke.py"), doraise=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs the checks instead")
def test_refuses_cleanly_without_cuda(tmp_path):
    result = tmp_path / "gpu_smoke.json"
    done = subprocess.run(["bash", str(SCRIPT), str(result)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 2
    assert "no CUDA device" in done.stderr and "Traceback" not in done.stderr
    assert not result.exists()
