"""The `salmonn` command. Each subcommand is a plain function; its docstring is the help text.

Parameters become options (`num_beams` -> `--num-beams`); positional-only parameters (`def f(x, /)`) stay
positional; list parameters may be repeated; a parameter named `overrides` collects trailing `key=value` config
overrides. Errors caused by the input print one line and exit 1
(add --debug for the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import sys
import typing
from typing import Callable

from .errors import SalmonnError

COMMANDS: dict[str, Callable] = {}
# Modules that define more subcommands with @command (imported when the parser is built; keep their heavy
# imports inside the command functions so `salmonn --help` stays fast).
COMMAND_MODULES: list[str] = [
    "salmonn.data.synth",
    "salmonn.evaluation.run",
    "salmonn.serve.commands",
    "salmonn.train.commands",
]


def command(fn: Callable | None = None, *, name: str | None = None):
    """Register a function as a subcommand named after it (or `name`; "data synth" makes a nested command)."""
    def register(f: Callable) -> Callable:
        COMMANDS[name or f.__name__.replace("_", "-")] = f
        return f
    return register(fn) if fn is not None else register


def _load_model(config: str | None, overrides: list[str]):
    from .model import SALMONN
    if config is None:
        from .defaults import default_config_path
        config = default_config_path()
    return SALMONN.from_config(config, overrides)


@command
def infer(audio: list[str], prompt: list[str], config: str | None = None, num_beams: int | None = None,
          max_new_tokens: int | None = None, min_new_tokens: int | None = None, json_output: bool = False,
          overrides: list[str] = ()) -> None:
    """Answer an instruction about each audio clip.

    One --prompt applies to every --audio, or give one per clip. The prompt is the bare instruction; it is
    wrapped as '<Speech><SpeechHere></Speech> ' + TEXT in the config's template. --json prints one object per
    clip per line: {"audio", "prompt", "text", "token_ids"}.
    """
    model = _load_model(config, list(overrides))
    prompts = prompt * len(audio) if len(prompt) == 1 else prompt
    answers = model.generate(audio, prompts, num_beams=num_beams, max_new_tokens=max_new_tokens,
                             min_new_tokens=min_new_tokens)
    for clip, text, answer in zip(audio, prompts, answers):
        if json_output:
            print(json.dumps({"audio": clip, "prompt": text, "text": answer.text, "token_ids": answer.token_ids}))
        else:
            print(answer.text if len(audio) == 1 else f"{clip}: {answer.text}")


@command
def score(audio: str, prompt: str, text: str, config: str | None = None, json_output: bool = False,
          overrides: list[str] = ()) -> None:
    """Mean token negative log-likelihood of TEXT (+ end symbol) as the answer to PROMPT about AUDIO.

    This is the training loss of one sample; lower is more likely. --json prints {"audio", "loss", "tokens"}.
    """
    model = _load_model(config, list(overrides))
    result = model.score(audio, prompt, text)[0]
    if json_output:
        print(json.dumps({"audio": audio, **result}))
    else:
        print(f"loss {result['loss']:.6f} over {result['tokens']} tokens")


def _option_type(annotation) -> tuple[type, bool]:
    """(element type, is_list) for an annotation such as `int | None` or `list[str]`."""
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (list, tuple) or (args and typing.get_origin(args[0]) in (list, tuple)):
        inner = typing.get_args(annotation if origin in (list, tuple) else args[0])
        return (inner[0] if inner else str), True
    if args:
        return args[0], False
    return annotation, False


def build_parser() -> argparse.ArgumentParser:
    for module in COMMAND_MODULES:
        importlib.import_module(module)
    parser = argparse.ArgumentParser(prog="salmonn", description=__doc__.split("\n")[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    subparsers = parser.add_subparsers(dest="command", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for name, fn in COMMANDS.items():
        doc = inspect.getdoc(fn) or ""
        where, leaf = subparsers, name
        if " " in name:
            group, leaf = name.split(" ", 1)
            if group not in groups:
                groups[group] = subparsers.add_parser(group, help=f"{group} commands").add_subparsers(
                    dest="subcommand", required=True)
            where = groups[group]
        sub = where.add_parser(leaf, help=doc.split("\n")[0], description=doc,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.set_defaults(command=name)
        hints = typing.get_type_hints(fn)
        for pname, param in inspect.signature(fn).parameters.items():
            if pname == "overrides":
                sub.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
                continue
            kind, is_list = _option_type(hints[pname])
            if param.kind is inspect.Parameter.POSITIONAL_ONLY:  # `def f(x, /)`: a positional argument
                sub.add_argument(pname, type=kind, metavar=pname.upper())
                continue
            flag = "--json" if pname == "json_output" else "--" + pname.replace("_", "-")
            required = param.default is inspect.Parameter.empty
            if kind is bool:
                sub.add_argument(flag, dest=pname, action="store_true")
            elif is_list:
                sub.add_argument(flag, dest=pname, type=kind, action="append", required=required,
                                 default=None if required else param.default)
            else:
                sub.add_argument(flag, dest=pname, type=kind, required=required,
                                 default=None if required else param.default)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    debug, name = args.pop("debug"), args.pop("command")
    args.pop("subcommand", None)
    if not debug:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        import warnings
        warnings.filterwarnings("ignore")
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
    fn = COMMANDS[name]
    positional = [args.pop(p.name) for p in inspect.signature(fn).parameters.values()
                  if p.kind is inspect.Parameter.POSITIONAL_ONLY]
    try:
        fn(*positional, **args)
    except SalmonnError as err:
        if debug:
            raise
        print(f"salmonn {name}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    # `python -m salmonn.cli` (e.g. under torchrun) runs this file as __main__: use the salmonn.cli module, where
    # the command modules register their subcommands
    from salmonn.cli import main as _main
    sys.exit(_main())
