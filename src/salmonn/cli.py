"""The `salmonn` command. Each subcommand is a plain function; its docstring is the help text.

Parameters become options (`num_beams` -> `--num-beams`); list parameters may be repeated; a parameter named
`overrides` collects trailing `key=value` config overrides. Errors caused by the input print one line and exit 1
(add --debug for the traceback).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import typing
from typing import Callable

from .errors import SalmonnError

COMMANDS: dict[str, Callable] = {}


def command(fn: Callable) -> Callable:
    """Register a function as a subcommand named after it."""
    COMMANDS[fn.__name__.replace("_", "-")] = fn
    return fn


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
    parser = argparse.ArgumentParser(prog="salmonn", description=__doc__.split("\n")[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, fn in COMMANDS.items():
        doc = inspect.getdoc(fn) or ""
        sub = subparsers.add_parser(name, help=doc.split("\n")[0], description=doc,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        hints = typing.get_type_hints(fn)
        for pname, param in inspect.signature(fn).parameters.items():
            if pname == "overrides":
                sub.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
                continue
            kind, is_list = _option_type(hints[pname])
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
    if not debug:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        import warnings
        warnings.filterwarnings("ignore")
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
    try:
        COMMANDS[name](**args)
    except SalmonnError as err:
        if debug:
            raise
        print(f"salmonn {name}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
