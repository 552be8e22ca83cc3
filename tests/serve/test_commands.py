"""The serve/demo commands' defaults and the request rules that need no server."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import pytest

from salmonn.cli import COMMANDS, build_parser
from salmonn.errors import PromptError
from salmonn.serve.commands import _is_loopback
from salmonn.prompting import PromptTurn
from salmonn.serve.engine import Engine
from salmonn.serve.schemas import APIError, parse_chat


def test_commands_bind_to_loopback_by_default():
    parser = build_parser()
    for name in ("serve", "demo"):
        assert inspect.signature(COMMANDS[name]).parameters["server"].default.host == "127.0.0.1"
        assert vars(parser.parse_args([name]))["server.host"] == "127.0.0.1"
    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("localhost")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("192.168.1.2")


@pytest.mark.parametrize("argv, compiled", [([], "true"), (["--eager-step"], None),
                                             (["model.compile=false"], "false")])
def test_serve_compiles_the_decoding_step_by_default(monkeypatch, argv, compiled):
    """A long-running server pays for the compiled step (model.compile=true); --eager-step or an override wins."""
    from salmonn import cli
    from salmonn.config import load_config
    from salmonn.serve import commands
    seen = {}
    monkeypatch.setattr(commands, "run_server", lambda config, overrides, **kw: seen.update(overrides=overrides))
    assert cli.main(["serve", *argv]) == 0
    compile_overrides = [o for o in seen["overrides"] if o.startswith("model.compile=")]
    assert (compile_overrides[-1].split("=")[1] if compile_overrides else None) == compiled
    assert load_config(None, seen["overrides"]).model.compile is (compiled == "true")


def engine() -> Engine:
    e = Engine.__new__(Engine)
    e.template, e.end_sym = "USER: {}\nASSISTANT:", "</s>"
    e.model = SimpleNamespace(format_prompt=lambda text: "USER: <Speech><SpeechHere></Speech> " + text + "\nASSISTANT:")
    return e


def test_multi_turn_prompt_form():
    turns = [PromptTurn("What is said?", clips=1, answer="Hello."), PromptTurn("Louder?")]
    assert engine().build_prompt(turns) == ("USER: <Speech><SpeechHere></Speech> What is said?\nASSISTANT: Hello.</s>"
                                            "USER: Louder?\nASSISTANT:")
    assert engine().build_prompt([PromptTurn("Hi", clips=1)]) == "USER: <Speech><SpeechHere></Speech> Hi\nASSISTANT:"
    with pytest.raises(PromptError):
        engine().build_prompt([PromptTurn("put <SpeechHere> here", clips=1)])


def test_parse_chat_turns_and_decoding():
    audio = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
    body = {"messages": [{"role": "user", "content": [audio]}, {"role": "user", "content": "Describe it."},
                         {"role": "assistant", "content": [{"type": "text", "text": "A duck."}]},
                         {"role": "user", "content": "Sure?"}],
            "temperature": 0.7, "max_completion_tokens": 9, "stop": "\n", "n": 2, "seed": -1, "lora_scale": 0.5}
    req = parse_chat(body, max_tokens_limit=64, max_n=4)
    assert req.turns == [PromptTurn("Describe it.", 1, "A duck."), PromptTurn("Sure?", 0, None)]
    assert req.audio == b"RIFF"
    defaults = SimpleNamespace(max_new_tokens=200, do_sample=False)
    assert req.decoding.overrides(defaults, 64) == {"max_new_tokens": 9, "do_sample": True, "temperature": 0.7,
                                                    "num_beams": 1, "seed": 2 ** 64 - 1, "stop": ["\n"]}
    assert req.decoding.n == 2 and req.decoding.lora_scale == 0.5
    greedy = parse_chat({"messages": body["messages"][:2], "temperature": 0, "seed": 3}, 64, 4)
    assert greedy.decoding.overrides(defaults, 64) == {"max_new_tokens": 64, "do_sample": False}  # capped; no seed
    no_loops = parse_chat({"messages": body["messages"][:2], "no_repeat_ngram_size": 4}, 64, 4)
    assert no_loops.decoding.overrides(defaults, 64) == {"max_new_tokens": 64, "no_repeat_ngram_size": 4}
    with pytest.raises(APIError) as err:
        parse_chat({**body, "n": 5}, 64, 4)
    assert err.value.status == 400 and err.value.body()["error"]["param"] == "n"
