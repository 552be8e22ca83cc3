"""Shared fixtures: the reference-tiny SALMONN and the real clips in ../shared."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURE = SHARED / "fixtures" / "reference-tiny"
AUDIO = SHARED / "audio"

warnings.filterwarnings("ignore", category=FutureWarning)


@pytest.fixture(scope="session")
def expected() -> dict:
    return json.loads((FIXTURE / "expected.json").read_text())


@pytest.fixture(scope="session")
def io_tensors() -> dict[str, torch.Tensor]:
    return load_file(FIXTURE / "io.safetensors")


@pytest.fixture(scope="session")
def fixture_clips(expected) -> list[str]:
    return [str(AUDIO / name) for name in expected["audio"]]


@pytest.fixture(scope="session")
def tiny_model():
    """The fixture SALMONN with this project's defaults (correct batching)."""
    from salmonn import load_model
    return load_model(FIXTURE / "config.yaml")


@pytest.fixture(scope="session")
def reference_model():
    """The fixture SALMONN batching exactly as the reference does (for the batch tensors and loss)."""
    from salmonn import load_model
    return load_model(FIXTURE / "config.yaml", ["reference_batching=true"])
