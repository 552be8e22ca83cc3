"""Config: the reference YAML loads unchanged; overrides and typos behave."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from salmonn import ConfigError, load_config

from .conftest import FIXTURE

REFERENCE_DECODE_CONFIG = """
model:
  llama_path: "lmsys/vicuna-13b-v1.1"
  whisper_path: "openai/whisper-large-v2"
  beats_path: "beats.pt"
  ckpt: "salmonn_v1.pth"
  freeze_whisper: True
  freeze_beats: True
  use_speech_Qformer: True
  freeze_speech_QFormer: False
  window_level_Qformer: True
  num_speech_query_token: 1
  second_per_window: 0.333333
  second_stride: 0.333333
  speech_llama_proj_model: ""
  freeze_speech_llama_proj: False
  lora: True
  lora_rank: 8
  lora_alpha: 32
  lora_dropout: 0.1
  multi_prompt: True
  prompt_template: "USER: {}\\nASSISTANT:"
  prompt_path: "prompts/train_prompt.json"
  test_prompt_path: "prompts/test_prompt.json"
  max_txt_len: 300
  end_sym: "</s>"
  low_resource: False
  device_8bit: 0

generate:
  max_new_tokens: 200
  num_beams: 4
  do_sample: False
  min_length: 1
  temperature: 1.0
  top_p: 0.9
  repetition_penalty: 1.0
  length_penalty: 1.0

run:
  seed: 42
datasets:
  prefix: "data"
"""


def test_reference_yaml_loads_unchanged(tmp_path: Path):
    (tmp_path / "beats.pt").write_bytes(b"")
    path = tmp_path / "decode_config.yaml"
    path.write_text(REFERENCE_DECODE_CONFIG)
    config = load_config(path)
    assert config.model.llama_path == "lmsys/vicuna-13b-v1.1"  # hub ids stay as they are
    assert config.model.beats_path == str(tmp_path / "beats.pt")  # existing relative paths resolve to the YAML dir
    assert config.model.prompt_template == "USER: {}\nASSISTANT:"
    assert config.model.qformer_hidden_size == 768 and config.model.qformer_num_hidden_layers == 2
    assert config.generate.num_beams == 4 and config.generate.top_p == 0.9
    assert config.extra == {"run": {"seed": 42}, "datasets": {"prefix": "data"}}


def test_fixture_config_reads_its_qformer_sizes():
    config = load_config(FIXTURE / "config.yaml")
    assert (config.model.qformer_hidden_size, config.model.qformer_num_attention_heads,
            config.model.qformer_intermediate_size) == (64, 4, 128)
    assert Path(config.model.llama_path) == (FIXTURE / "llama").resolve()


def test_overrides_by_section_and_bare_key():
    config = load_config(FIXTURE / "config.yaml", ["lora_rank=4", "generate.num_beams=1", "model.channel=mean",
                                                   "lora_target_modules=q_proj,k_proj,v_proj"])
    assert config.model.lora_rank == 4 and config.generate.num_beams == 1 and config.model.channel == "mean"
    assert config.model.lora_target_modules == ["q_proj", "k_proj", "v_proj"]


@pytest.mark.parametrize("override, message", [
    ("lora_rnak=4", "did you mean 'lora_rank'"),
    ("lora_rank=four", "lora_rank must be int"),
    ("channel=left", "channel must be one of"),
    ("dtype=float8", "dtype must be one of"),
    ("nonsense", "expected key=value"),
    ("run.seed=3", "section must be"),
])
def test_bad_overrides_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(FIXTURE / "config.yaml", [override])


def test_typo_in_yaml_is_named(tmp_path):
    raw = yaml.safe_load((FIXTURE / "config.yaml").read_text())
    raw["model"]["second_per_windw"] = 0.5
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"typo.yaml \[model\]: unknown key 'second_per_windw' \(did you mean 'second_per_window'"):
        load_config(path)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
