"""vLLM tests: they run where vLLM is installed (`scripts/setup.sh --vllm` makes .venv-vllm; `scripts/test.sh`
runs this folder there). Each engine starts once per session (about 30 s on 2 cores) and every test shares it."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from ..conftest import AUDIO, FIXTURE, ROOT

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
if not HAVE_VLLM:
    collect_ignore_glob = ["test_*.py"]

EXAMPLES = ROOT / "examples" / "audio"
CLIPS = json.loads((EXAMPLES / "clips.json").read_text())
PROMPTS = json.loads((ROOT / "src" / "salmonn" / "assets" / "mini" / "test_prompts.json").read_text())
TASKS = ("asr", "gender_recognition", "sound_event", "instrument")
# each bundled clip with the instruction of its own label (alone), and every clip x every task (16 at once)
OWN_TASK = {"speech_female.flac": "asr", "speech_male.flac": "gender_recognition", "dog.flac": "sound_event",
            "cello.flac": "instrument"}
ENGINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}


def pytest_report_header(config):
    if not HAVE_VLLM:
        return "tests/vllm: not collected, vLLM is not installed here (scripts/test.sh runs them in .venv-vllm)"


def start_engine(model_dir: Path, **kwargs):
    os.environ.update(ENGINE_ENV)
    from vllm import LLM
    return LLM(model=str(model_dir), dtype="float32", enforce_eager=True, seed=0, **kwargs)


@pytest.fixture(scope="session")
def mini_dir(tmp_path_factory) -> Path:
    from salmonn.vllm.export import export_from_config
    return export_from_config(None, tmp_path_factory.mktemp("vllm") / "mini")


@pytest.fixture(scope="session")
def fixture_dir(tmp_path_factory) -> Path:
    from salmonn.vllm.export import export_from_config
    return export_from_config(str(FIXTURE / "config.yaml"), tmp_path_factory.mktemp("vllm") / "fixture")


def stop_engine(engine) -> None:
    """Shut the engine's processes down while pytest still owns the output (vLLM's exit hooks log otherwise)."""
    engine.llm_engine.engine_core.shutdown()


@pytest.fixture(scope="session")
def mini_engine(mini_dir):
    engine = start_engine(mini_dir, max_model_len=2048, limit_mm_per_prompt={"audio": 1})
    yield engine
    stop_engine(engine)


@pytest.fixture(scope="session")
def fixture_engine(fixture_dir):
    engine = start_engine(fixture_dir, limit_mm_per_prompt={"audio": 1})
    yield engine
    stop_engine(engine)


@pytest.fixture(scope="session")
def mini():
    from salmonn import load_model
    return load_model(None)


def audio_message(path: Path, instruction: str) -> list[dict]:
    """One user turn with the clip as an OpenAI input_audio part (what the server and LLM.chat take)."""
    import base64
    data = base64.b64encode(path.read_bytes()).decode()
    return [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": data,
                                                                                "format": path.suffix[1:]}},
                                         {"type": "text", "text": instruction}]}]


def without_eos(ids, eos: int) -> list[int]:
    ids = list(ids)
    return ids[:-1] if ids and ids[-1] == eos else ids
