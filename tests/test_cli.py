"""The `salmonn` command as a user runs it: a real subprocess of the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import AUDIO, FIXTURE

SALMONN = str(Path(sys.executable).parent / "salmonn")
CONFIG = str(FIXTURE / "config.yaml")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SALMONN, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_infer_json_reproduces_reference_greedy_ids(expected):
    prompts = ["Recognize the speech and give me the transcription.", "Please describe the audio."]
    args = ["infer", "--config", CONFIG, "--num-beams", "1", "--max-new-tokens", "12", "--json"]
    for clip in expected["audio"]:
        args += ["--audio", str(AUDIO / clip)]
    for p in prompts:
        args += ["--prompt", p]
    result = run(*args)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["token_ids"] for line in lines] == [ids[1:] for ids in expected["generated_ids"]]
    assert [line["prompt"] for line in lines] == prompts
    assert set(lines[0]) == {"audio", "prompt", "text", "token_ids"}


def test_score_json_is_the_python_score(tiny_model, expected):
    clip = str(AUDIO / expected["audio"][1])
    result = run("score", "--config", CONFIG, "--audio", clip, "--prompt", "Please describe the audio.",
                 "--text", expected["texts"][1], "--json")
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout)
    ours = tiny_model.score(clip, "Please describe the audio.", expected["texts"][1])[0]
    assert line["audio"] == clip and line["tokens"] == ours["tokens"]
    assert line["loss"] == pytest.approx(ours["loss"], abs=1e-5)


@pytest.mark.parametrize("args, message", [
    (["--audio", "/no/such/file.wav"], "/no/such/file.wav"),
    (["--audio", str(AUDIO / "duck.wav"), "lora_rnak=2"], "did you mean 'lora_rank'"),
])
def test_bad_input_is_one_line_without_traceback(args, message):
    result = run("infer", "--config", CONFIG, "--prompt", "Describe.", *args)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_debug_shows_the_traceback():
    result = run("--debug", "infer", "--config", CONFIG, "--prompt", "x", "--audio", "/no/such/file.wav")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_the_cli_needs_no_optional_extra():
    """`salmonn infer` on a base install: no eval/serve/train extra may be imported to build the parser."""
    blocked = ["jiwer", "sacrebleu", "pycocoevalcap", "matplotlib", "fastapi", "uvicorn", "bitsandbytes"]
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            f"        if name.split('.')[0] in {blocked!r}: raise ImportError('blocked: ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "from salmonn.cli import build_parser\n"
            "parser = build_parser()\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in " + repr(blocked) + "))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_every_option_has_its_docstring_help():
    from salmonn.cli import COMMANDS, build_parser, option_help
    assert option_help("x\n\nOptions:\n  a: one\n    more\n  b: two\n\nAfter.\n  c: not an option\n") == \
        {"a": "one more", "b": "two"}
    result = run("infer", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "--long-form answer each chunk of the audio with the instruction" in text
    assert "--long-form-chunks LONG_FORM_CHUNKS how --long-form cuts the audio" in text
    assert "--num-beams NUM_BEAMS beam search width" in text and "--config CONFIG the model's YAML" in text
    parser = build_parser()
    for name in ("infer", "chat", "score", "bench", "serve", "demo", "eval"):  # every flag documented
        sub = parser._subparsers._group_actions[0].choices[name]
        undocumented = [a.dest for a in sub._actions if a.option_strings and a.help is None and a.dest != "help"]
        assert not undocumented, (name, undocumented)
    assert set(COMMANDS) >= {"infer", "chat", "score", "bench", "eval", "serve", "demo", "train", "data synth"}
