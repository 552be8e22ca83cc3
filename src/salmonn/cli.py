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
    "salmonn.bench",
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


def _load_model(config: str | None, overrides: list[str], device: str | None = None, dtype: str | None = None,
                quantize: str | None = None, lora_scale: float | None = None):
    """Build the model; --device/--dtype/--quantize/--lora-scale win over the config and key=value overrides."""
    from .model import SALMONN
    if config is None:
        from .defaults import default_config_path
        config = default_config_path()
    flags = {"model.device": device, "model.dtype": dtype, "model.quantize": quantize, "model.lora_scale": lora_scale}
    overrides = list(overrides) + [f"{key}={value}" for key, value in flags.items() if value is not None]
    return SALMONN.from_config(config, overrides)


def _decoding(num_beams, max_new_tokens, min_new_tokens, do_sample, temperature, top_p, top_k, seed,
              repetition_penalty, length_penalty, stop) -> dict:
    """Decoding flags as generate() keywords; unset flags stay None (config / preset decide)."""
    return dict(num_beams=num_beams, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
                do_sample=True if do_sample else None, temperature=temperature, top_p=top_p, top_k=top_k,
                seed=seed, repetition_penalty=repetition_penalty, length_penalty=length_penalty,
                stop=list(stop) if stop else None)


@command
def infer(audio: list[str] | None = None, prompt: list[str] | None = None, manifest: str | None = None,
          output: str | None = None, config: str | None = None, batch_size: int = 8, preset: str | None = None,
          num_beams: int | None = None, max_new_tokens: int | None = None, min_new_tokens: int | None = None,
          do_sample: bool = False, temperature: float | None = None, top_p: float | None = None,
          top_k: int | None = None, seed: int | None = None, repetition_penalty: float | None = None,
          length_penalty: float | None = None, stop: list[str] | None = None, stream: bool = False,
          lora_scale: float | None = None, device: str | None = None, dtype: str | None = None,
          quantize: str | None = None, retry_errors: bool = False, json_output: bool = False,
          overrides: list[str] = ()) -> None:
    """Answer an instruction about each audio clip (or each line of a manifest).

    One --prompt applies to every --audio, or give one per clip. The prompt is the bare instruction; it is
    wrapped as '<Speech><SpeechHere></Speech> ' + TEXT in the config's template. --json prints one object per
    clip per line: {"audio", "prompt", "text", "token_ids"} (or {"audio", "prompt", "error"}).
    --manifest IN.jsonl --output OUT.jsonl answers one {"audio", "prompt"} object per line (the prompt may come
    from --prompt), keeps the order, shows progress and skips lines already in OUT (--retry-errors redoes
    failed ones). A clip that cannot be used fails alone; the exit status is then 1.
    Decoding: --preset reference|greedy|sample, then any explicit flag. --stream prints the answer token by
    token (one clip, num_beams 1). --lora-scale 0.5 halves the trained LoRA scaling at run time.
    """
    from .decoding import TokenStreamer
    from .inference import answer_all, run_manifest
    decoding = _decoding(num_beams, max_new_tokens, min_new_tokens, do_sample, temperature, top_p, top_k, seed,
                         repetition_penalty, length_penalty, stop)
    if manifest:
        if audio or not output:
            raise SalmonnError("--manifest takes --output OUT.jsonl and no --audio")
        if stream:
            raise SalmonnError("--stream shows one answer as it is generated: use it with a single --audio")
        model = _load_model(config, list(overrides), device, dtype, quantize, lora_scale)
        stats = run_manifest(model, manifest, output, prompt=prompt[0] if prompt else None, batch_size=batch_size,
                             preset=preset, retry_errors=retry_errors, progress=True, **decoding)
        print(f"{stats['answered']} answered, {stats['failed']} failed, {stats['skipped']} already in {output}",
              file=sys.stderr)
        if stats["failed"]:
            raise SalmonnError(f"{stats['failed']} line(s) failed; their reasons are in {output} "
                               f"(fix them and re-run with --retry-errors)")
        return
    if not audio or not prompt:
        raise SalmonnError("give --audio and --prompt (or --manifest IN.jsonl --output OUT.jsonl)")
    if len(prompt) not in (1, len(audio)):
        raise SalmonnError(f"got {len(prompt)} prompts for {len(audio)} clips: give one prompt, or one per clip")
    prompts = prompt * len(audio) if len(prompt) == 1 else prompt
    if stream and (len(audio) != 1 or json_output):
        raise SalmonnError("--stream shows one answer as it is generated: give a single --audio and no --json")
    model = _load_model(config, list(overrides), device, dtype, quantize, lora_scale)
    if stream:
        streamer = TokenStreamer(model.tokenizer, stop=decoding["stop"] or model.config.generate.stop)
        model.generate(audio[0], prompts[0], streamer=streamer, preset=preset, **decoding)
        return
    results = answer_all(model, audio, prompts, batch_size=batch_size, preset=preset, **decoding)
    failed = [r for r in results if not r.ok]
    if len(results) == 1 and failed:
        raise SalmonnError(failed[0].error)
    for r in results:
        if json_output:
            body = {"text": r.answer.text, "token_ids": r.answer.token_ids} if r.ok else {"error": r.error}
            print(json.dumps({"audio": r.audio, "prompt": r.prompt, **body}, ensure_ascii=False), flush=True)
        elif r.ok:
            print(r.answer.text if len(audio) == 1 else f"{r.audio}: {r.answer.text}", flush=True)
        if not r.ok:
            print(f"salmonn infer: error: {r.error}", file=sys.stderr, flush=True)
    if failed:
        raise SalmonnError(f"{len(failed)} of {len(results)} clips failed (reasons above)")


@command
def chat(audio: list[str], config: str | None = None, preset: str | None = None, num_beams: int | None = None,
         max_new_tokens: int | None = None, min_new_tokens: int | None = None, do_sample: bool = False,
         temperature: float | None = None, top_p: float | None = None, top_k: int | None = None,
         seed: int | None = None, repetition_penalty: float | None = None, length_penalty: float | None = None,
         stop: list[str] | None = None, stream: bool = False, lora_scale: float | None = None,
         device: str | None = None, dtype: str | None = None, quantize: str | None = None,
         overrides: list[str] = ()) -> None:
    """Talk about one or more clips: each line of input is a question, answered with the conversation so far.

    The clips go into the first question; each is encoded once. Commands: /audio PATH adds a clip to the next
    question, /reset forgets the conversation (keeps the clips), /lora S sets the LoRA scale, /history, /help,
    /quit (or end of input). Works with piped input: one answer per line on stdout, problems on stderr.
    """
    from .decoding import TokenStreamer
    from .inference import CHAT_HELP, ChatSession, chat_loop
    decoding = _decoding(num_beams, max_new_tokens, min_new_tokens, do_sample, temperature, top_p, top_k, seed,
                         repetition_penalty, length_penalty, stop)
    model = _load_model(config, list(overrides), device, dtype, quantize, lora_scale)
    session = ChatSession(model, audio, preset=preset, **decoding)
    if stream and session.generate_config.num_beams > 1:
        raise SalmonnError("--stream needs num_beams=1: add --num-beams 1 or --preset greedy")
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"chatting about {', '.join(audio)}; {CHAT_HELP}", file=sys.stderr)

    def lines():
        if not interactive:
            yield from sys.stdin
            return
        while True:
            try:
                yield input("> ")
            except EOFError:
                print(file=sys.stderr)
                return

    factory = (lambda: TokenStreamer(model.tokenizer, stop=session.generate_config.stop)) if stream else None
    chat_loop(session, lines(), write=lambda text: print(text, flush=True), streamer_factory=factory)


@command
def score(audio: str, prompt: str, text: str, config: str | None = None, lora_scale: float | None = None,
          device: str | None = None, dtype: str | None = None, json_output: bool = False,
          overrides: list[str] = ()) -> None:
    """Mean token negative log-likelihood of TEXT (+ end symbol) as the answer to PROMPT about AUDIO.

    This is the training loss of one sample; lower is more likely. --json prints {"audio", "loss", "tokens"}.
    """
    model = _load_model(config, list(overrides), device, dtype, None, lora_scale)
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
