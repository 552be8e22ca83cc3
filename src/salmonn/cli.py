"""The `salmonn` command. Each subcommand is a plain function in an area's `commands.py`; its docstring is the help.

Parameters become options (`num_beams` -> `--num-beams`, `json_output` -> `--json`); positional-only parameters
(`def f(x, /)`) stay positional; list parameters may be repeated; a parameter typed with a dataclass (the shared
`ModelFlags`, `DecodingFlags`) becomes an option group; a parameter named `overrides` collects trailing
`key=value` config overrides. Each option's help is its `name: text` line under "Options:" in the docstring
(of the function, or of the dataclass). Errors caused by the input print one line and exit 1 (add --debug for
the traceback).
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import inspect
import os
import re
import sys
import typing
from typing import Any, Callable

from . import commands as inference_commands
from .data import commands as data_commands
from .errors import SalmonnError
from .evaluation import commands as evaluation_commands
from .serve import commands as serve_commands
from .train import commands as train_commands
from .vllm import commands as vllm_commands

COMMANDS: dict[str, Callable] = {
    "infer": inference_commands.infer,
    "chat": inference_commands.chat,
    "score": inference_commands.score,
    "bench": inference_commands.bench,
    "eval": evaluation_commands.eval_command,
    "serve": serve_commands.serve,
    "demo": serve_commands.demo,
    "train": train_commands.train,
    "export": vllm_commands.export,
    **{f"data {name}": fn for name, fn in data_commands.COMMANDS.items()},
}


def option_help(doc: str) -> dict[str, str]:
    """`name: text` entries of a docstring's "Options:" section (continuation lines indented deeper)."""
    helps: dict[str, str] = {}
    lines = [line for line in doc.split("Options:", 1)[1].splitlines() if line.strip()] if "Options:" in doc else []
    indent = len(lines[0]) - len(lines[0].lstrip()) if lines else 0
    name = None
    for line in lines:
        depth = len(line) - len(line.lstrip())
        entry = re.match(r"(\w+): (.*)$", line.strip())
        if depth == indent and entry:
            name, helps[entry.group(1)] = entry.group(1), entry.group(2).strip()
        elif depth > indent and name:
            helps[name] += " " + line.strip()
        else:
            break  # the section ended
    return helps


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


def _add_option(parser, name: str, annotation, default, help_text: str | None, dest: str | None = None) -> None:
    kind, is_list = _option_type(annotation)
    flag = "--json" if name == "json_output" else "--" + name.replace("_", "-")
    dest = dest or name
    if kind is bool:
        parser.add_argument(flag, dest=dest, action="store_true", help=help_text)
        return
    required = default is inspect.Parameter.empty
    parser.add_argument(flag, dest=dest, type=kind, action="append" if is_list else "store", required=required,
                        default=None if required else default, help=help_text, metavar=name.upper())


def _add_command(where, name: str, fn: Callable) -> None:
    doc = inspect.getdoc(fn) or ""
    sub = where.add_parser(name.split(" ")[-1], help=doc.split("\n")[0], description=doc.split("Options:")[0],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    sub.set_defaults(command=name)
    hints, helps = typing.get_type_hints(fn), option_help(doc)
    for pname, param in inspect.signature(fn).parameters.items():
        hint = hints[pname]
        if pname == "overrides":
            sub.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
        elif dataclasses.is_dataclass(hint):
            group = sub.add_argument_group(pname, (inspect.getdoc(hint) or "").split("\n")[0])
            field_hints, field_helps = typing.get_type_hints(hint), option_help(inspect.getdoc(hint) or "")
            for f in dataclasses.fields(hint):
                _add_option(group, f.name, field_hints[f.name], f.default, field_helps.get(f.name),
                            dest=f"{pname}.{f.name}")
        elif param.kind is inspect.Parameter.POSITIONAL_ONLY:  # `def f(x, /)`: a positional argument
            sub.add_argument(pname, type=_option_type(hint)[0], metavar=pname.upper(), help=helps.get(pname))
        else:
            _add_option(sub, pname, hint, param.default, helps.get(pname))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="salmonn", description=__doc__.split("\n")[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    subparsers = parser.add_subparsers(dest="command", required=True)
    groups: dict[str, Any] = {}
    for name, fn in COMMANDS.items():
        where = subparsers
        if " " in name:
            group = name.split(" ", 1)[0]
            if group not in groups:
                groups[group] = subparsers.add_parser(group, help=f"{group} commands").add_subparsers(
                    dest="subcommand", required=True)
            where = groups[group]
        _add_command(where, name, fn)
    return parser


def _call(fn: Callable, args: dict) -> None:
    """Call a command with parsed arguments: positional-only first, dataclass groups rebuilt from their fields."""
    hints = typing.get_type_hints(fn)
    positional, keywords = [], {}
    for pname, param in inspect.signature(fn).parameters.items():
        if dataclasses.is_dataclass(hints[pname]):
            keywords[pname] = hints[pname](**{f.name: args[f"{pname}.{f.name}"]
                                               for f in dataclasses.fields(hints[pname])})
        elif param.kind is inspect.Parameter.POSITIONAL_ONLY:
            positional.append(args[pname])
        else:
            keywords[pname] = args[pname]
    fn(*positional, **keywords)


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    debug, name = args.pop("debug"), args.pop("command")
    if not debug:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        import warnings
        warnings.filterwarnings("ignore")
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
    try:
        _call(COMMANDS[name], args)
    except SalmonnError as err:
        if debug:
            raise
        print(f"salmonn {name}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


# Commands that write only through files they close themselves, so that the process may end without tearing its
# modules down (after torch and transformers are loaded that teardown alone takes ~0.6 s of a ~4 s `salmonn infer`).
QUICK_EXIT = frozenset({"infer", "score", "bench", "export"})


def run() -> None:
    """The console script: main(), then for a QUICK_EXIT command the atexit handlers and an immediate exit."""
    argv = sys.argv[1:]
    status = main(argv)
    if argv and argv[0] in QUICK_EXIT:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":  # `python -m salmonn.cli` (e.g. under torchrun)
    sys.exit(main())
