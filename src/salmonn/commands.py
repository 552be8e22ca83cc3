"""`salmonn infer`, `chat`, `score` and `bench`: answering with a model (heavy imports stay inside the functions,
so `salmonn --help` stays fast)."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING

from .errors import SalmonnError
from .flags import DecodingFlags, ModelFlags

if TYPE_CHECKING:
    from .model import SALMONN


def infer(audio: list[str] | None = None, prompt: list[str] | None = None, manifest: str | None = None,
          output: str | None = None, batch_size: int = 8, long_form: bool = False,
          long_form_chunks: str = "pause", long_form_seconds: float | None = None, stream: bool = False,
          retry_errors: bool = False, json_output: bool = False, model: ModelFlags = ModelFlags(),
          decoding: DecodingFlags = DecodingFlags(), overrides: list[str] = ()) -> None:
    """Answer an instruction about each audio clip (or each line of a manifest).

    The prompt is the bare instruction; it is wrapped as '<Speech><SpeechHere></Speech> ' + TEXT in the config's
    template. A clip that cannot be used fails alone; the exit status is then 1.

    Options:
      audio: an audio file (repeatable): wav, flac, ogg, mp3, m4a, opus, video...
      prompt: the instruction: one for every clip, or one per clip (repeatable)
      manifest: a JSONL of {"audio", "prompt"} objects to answer (with --output; the prompt may come from --prompt)
      output: the manifest's answers (JSONL, in manifest order; a rerun skips lines already there)
      batch_size: clips per generate call (answers equal single-clip answers)
      long_form: answer each chunk of the audio with the instruction and join the answers in order (lectures,
        meetings: audio whose tokens would not fit the LLM's context; with SALMONN-mini, a transcript of anything
        longer than the 8 s it was trained on, which it reads far better in chunks: its model card), printed as
        they come; by default the chunks are cut at pauses, at most 8 s each (--long-form-chunks, --long-form-seconds)
      long_form_chunks: how --long-form cuts the audio: "pause" (default: at the longest pause, so that no chunk
        is longer than --long-form-seconds) or "fixed" (consecutive 30 s segments, the earlier behaviour)
      long_form_seconds: the longest pause-aligned chunk, 1 to 30 s (default 8, what SALMONN-mini was trained
        on; 30 for models trained on 30 s windows); fixed segments are 30 s
      stream: print the answer token by token (one clip, num_beams 1)
      retry_errors: accepted for compatibility: a re-run always answers failed lines again (and lines whose prompt
        or decoding settings changed)
      json_output: one {"audio", "prompt", "text", "token_ids"} (or "error") object per clip per line
    """
    chunking = long_form_options(long_form, long_form_chunks, long_form_seconds)
    if manifest:
        if audio or not output:
            raise SalmonnError("--manifest takes --output OUT.jsonl and no --audio")
        if stream:
            raise SalmonnError("--stream shows one answer as it is generated: use it with a single --audio")
        _infer_manifest(model.load(overrides), manifest, output, prompt, batch_size, long_form, retry_errors,
                        decoding, chunking)
        return
    if not audio or not prompt:
        raise SalmonnError("give --audio and --prompt (or --manifest IN.jsonl --output OUT.jsonl)")
    from .prompting import pair_prompts
    prompts = pair_prompts(len(audio), prompt[0] if len(prompt) == 1 else prompt)
    if stream and (len(audio) != 1 or json_output or long_form):
        raise SalmonnError("--stream shows one answer as it is generated: give a single --audio, no --json and "
                           "no --long-form")
    loaded = model.load(overrides)
    if stream:
        from .decoding import TokenStreamer
        gen = decoding.config(loaded.config.generate)
        loaded.generate(audio[0], prompts[0], streamer=TokenStreamer(loaded.tokenizer, stop=gen.stop),
                        **decoding.options())
        return
    _infer_clips(loaded, audio, prompts, batch_size, long_form, json_output, decoding, chunking)


def long_form_options(long_form: bool, chunks: str, seconds: float | None) -> dict:
    """--long-form-chunks/--long-form-seconds as checked keywords of answer_all and run_manifest (before the model
    loads); a SalmonnError when they are wrong or given without --long-form."""
    if not long_form:
        if seconds is not None or chunks != "pause":
            raise SalmonnError("--long-form-chunks and --long-form-seconds go with --long-form")
        return {}
    from .inference import long_form_chunking
    chunks, seconds = long_form_chunking(chunks, seconds)
    return {"long_form_chunks": chunks, "long_form_seconds": seconds}


def _infer_manifest(model: "SALMONN", manifest: str, output: str, prompt: list[str] | None, batch_size: int,
                    long_form: bool, retry_errors: bool, decoding: DecodingFlags, chunking: dict | None = None) -> None:
    from .inference import run_manifest
    stats = run_manifest(model, manifest, output, prompt=prompt[0] if prompt else None, batch_size=batch_size,
                         retry_errors=retry_errors, progress=True, long_form=long_form, **(chunking or {}),
                         **decoding.options())
    redone = f" ({stats['redone']} of them again: prompt or settings changed)" if stats["redone"] else ""
    print(f"{stats['answered']} answered{redone}, {stats['failed']} failed, {stats['skipped']} already in {output}",
          file=sys.stderr)
    if stats["failed"]:
        raise SalmonnError(f"{stats['failed']} line(s) failed; their reasons are in {output} "
                           f"(fix them and run the same command again: failed lines are retried)")


def _infer_clips(model: "SALMONN", audio: list[str], prompts: list[str], batch_size: int, long_form: bool,
                 json_output: bool, decoding: DecodingFlags, chunking: dict | None = None) -> None:
    from .inference import answer_all

    def print_segment(index, answer):  # long form: each segment's answer as soon as it is there
        print(answer.text if len(audio) == 1 else f"{audio[index]}: {answer.text}", flush=True)

    results = answer_all(model, audio, prompts, batch_size=batch_size, long_form=long_form,
                         on_segment=print_segment if long_form and not json_output else None, **(chunking or {}),
                         **decoding.options())
    failed = [r for r in results if not r.ok]
    if len(results) == 1 and failed:
        raise SalmonnError(failed[0].error)
    for r in results:
        if json_output:
            body = {"text": r.answer.text, "token_ids": r.answer.token_ids} if r.ok else {"error": r.error}
            print(json.dumps({"audio": r.audio, "prompt": r.prompt, **body}, ensure_ascii=False), flush=True)
        elif r.ok and not long_form:
            print(r.answer.text if len(audio) == 1 else f"{r.audio}: {r.answer.text}", flush=True)
        if not r.ok:
            print(f"salmonn infer: error: {r.error}", file=sys.stderr, flush=True)
    if failed:
        raise SalmonnError(f"{len(failed)} of {len(results)} clips failed (reasons above)")


def chat(audio: list[str], stream: bool = False, model: ModelFlags = ModelFlags(),
         decoding: DecodingFlags = DecodingFlags(), overrides: list[str] = ()) -> None:
    """Talk about one or more clips: each line of input is a question, answered with the conversation so far.

    The clips go into the first question; each is encoded once. Commands: /audio PATH adds a clip to the next
    question, /reset forgets the conversation (keeps the clips), /lora S sets the LoRA scale, /history, /help,
    /quit (or end of input). Works with piped input: one answer per line on stdout, problems on stderr.

    Options:
      audio: a clip to talk about (repeatable)
      stream: print each answer token by token (num_beams 1)
    """
    from .chat import CHAT_HELP, ChatSession, chat_loop
    from .decoding import TokenStreamer, check_streamable
    loaded = model.load(overrides)
    session = ChatSession(loaded, audio, **decoding.options())
    if stream:
        check_streamable(session.generate_config)
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

    factory = (lambda: TokenStreamer(loaded.tokenizer, stop=session.generate_config.stop)) if stream else None
    chat_loop(session, lines(), write=lambda text: print(text, flush=True), streamer_factory=factory)


def score(audio: str, prompt: str, text: str, json_output: bool = False, model: ModelFlags = ModelFlags(),
          overrides: list[str] = ()) -> None:
    """Mean token negative log-likelihood of TEXT (+ end symbol) as the answer to PROMPT about AUDIO.

    This is the training loss of one sample; lower is more likely.

    Options:
      audio: the clip
      prompt: the bare instruction
      text: the answer to score
      json_output: print {"audio", "loss", "tokens"}
    """
    result = model.load(overrides).score(audio, prompt, text)[0]
    if json_output:
        print(json.dumps({"audio": audio, **result}))
    else:
        print(f"loss {result['loss']:.6f} over {result['tokens']} tokens")


def bench(audio: list[str], prompt: str = "Please describe the audio.", new_tokens: int = 32, reps: int = 3,
          warmup: int = 1, batch: int = 1, threads: int | None = None, json_output: bool = False,
          model: ModelFlags = ModelFlags(), overrides: list[str] = ()) -> None:
    """Time answering PROMPT about AUDIO with exactly --new-tokens greedy tokens (model load excluded).

    Prints the median of --reps runs (after --warmup untimed runs) and the median time of each stage
    (features, whisper, beats, qformer, prefill, decode), ms per decoded token and clips/s. Faster settings
    are config overrides, e.g. model.whisper_full_window=false (encode only each clip's own length).

    Options:
      audio: a clip to answer (repeatable; cycled to fill --batch)
      prompt: the instruction
      new_tokens: answer tokens decoded per clip
      reps: timed runs (the median is reported)
      warmup: untimed runs first
      batch: clips answered in one call
      threads: torch threads (default: the physical cores)
      json_output: print one object: {"median_s", "stages", "ms_per_token", "clips_per_s", "runs", ...}
    """
    from .bench import describe, run_bench, torch_threads
    with torch_threads(threads) as used:
        loaded = model.load(overrides)
        result = run_bench(loaded, audio, prompt, new_tokens=new_tokens, reps=reps, batch=batch, warmup=warmup)
    result.update(threads=used, device=str(loaded.device), dtype=loaded.config.model.dtype,
                  load_average=list(os.getloadavg()) if hasattr(os, "getloadavg") else None)
    if json_output:
        print(json.dumps(result))
        return
    print(describe(result))
    print(f"  threads {used}, device {result['device']}, dtype {result['dtype']}, load average "
          f"{' '.join(f'{x:.2f}' for x in result['load_average'] or [])}", file=sys.stderr)
