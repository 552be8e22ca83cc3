"""Inference: the one path from audio and instructions to answers, and what people build on it.

    prepare   clips + prompts -> each item's LLM input pieces, or the one-line reason it cannot be answered
    generate  prepare + salmonn.decoding.generate_answers (SALMONN.generate; raises the first problem)
    answer_all / answer_batch   the same, where a bad item fails alone (CLI, manifests, evaluation)
    long_form  each pause-aligned chunk (or fixed 30 s segment) answered with the instruction, answers joined
    run_manifest   resumable JSONL in -> JSONL out

    from salmonn import load_model
    from salmonn.inference import answer_all, run_manifest

    model = load_model("cfg.yaml")
    for r in answer_all(model, ["a.wav", "b.mp3"], "Describe the audio.", batch_size=8, preset="greedy"):
        print(r.audio, r.text if r.ok else r.error)
    run_manifest(model, "in.jsonl", "out.jsonl", batch_size=8)          # resumes where out.jsonl stops
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
import torch

from .audio import audio_name, pad_to_min
from .config import GenerateConfig
from .decoding import Answer, decoding_config, generate_answers
from .errors import ConfigError, PromptError, SalmonnError
from .frames import SAMPLE_RATE, SEGMENT_SECONDS
from .jsonl import append_jsonl, read_jsonl, write_jsonl
from .manifest import ManifestError, iter_records
from .pauses import iter_pause_chunks
from .prompting import IGNORE_INDEX, Piece, format_prompt, pair_prompts, prompt_pieces

if TYPE_CHECKING:
    from .model import SALMONN

SINGLE_CLIP_TYPES = (str, Path, bytes, np.ndarray, torch.Tensor, tuple)  # one clip, not a list of clips
LONG_FORM_HINT = "answer it segment by segment (salmonn infer --long-form, long_form=True) or cut the audio"
# long form: how a long clip is cut before each chunk is answered
LONG_FORM_CHUNKS = ("pause", "fixed")  # pause-aligned chunks (salmonn.pauses), or today's fixed 30 s segments
DEFAULT_LONG_FORM_CHUNKS = "pause"  # chosen by scripts/mini/long_form.py (README, "Long form")
DEFAULT_PAUSE_SECONDS = 8.0  # s, the longest pause-aligned chunk by default (same measurement; mini trained on <= 8 s)
MIN_LONG_FORM_SECONDS = 1.0  # s, the shortest maximum chunk length accepted


def as_clips(audio) -> list:
    """One clip or a sequence of clips -> a list of clips."""
    return [audio] if isinstance(audio, SINGLE_CLIP_TYPES) else list(audio)


# ---------------------------------------------------------------------------------------------------- the pipeline
def full_prompt(model: "SALMONN", prompt: str, templated: bool) -> str:
    """The templated prompt of a bare instruction (templated=True: `prompt` already is one)."""
    return prompt if templated else format_prompt(prompt, model.config.model.prompt_template)


def check_context(model: "SALMONN", pieces: Sequence[Piece], gen: GenerateConfig, name: str) -> None:
    """PromptError when prompt + audio tokens + max_new_tokens do not fit the LLM's positions."""
    used = sum(len(p) for p in pieces)
    if used + gen.max_new_tokens > model.context_length:
        raise PromptError(f"{name}: {used} prompt and audio tokens + max_new_tokens {gen.max_new_tokens} exceed "
                          f"the LLM's context of {model.context_length} positions; {LONG_FORM_HINT}")


def _named(err: SalmonnError, name: str) -> SalmonnError:
    return err if str(err).startswith(name) else type(err)(f"{name}: {err}")


@torch.no_grad()
def prepare(model: "SALMONN", audio: Sequence, prompts: Sequence[str], gen: GenerateConfig, *,
            templated: bool = False, sample_rate: int | None = None,
            audio_tokens: Sequence[torch.Tensor] | None = None,
            fail_fast: bool = False) -> list[list[Piece] | SalmonnError]:
    """Each item's LLM input pieces, or the SalmonnError (naming the item) that keeps it from being answered:
    a bad prompt, unusable audio, or more tokens than the LLM's context. Audio is encoded in one pass.
    fail_fast=True raises the first problem instead (before any audio is encoded when it is a prompt's)."""
    names = [audio_name(a) if a is not None else f"<clip {i + 1}>" for i, a in enumerate(audio)]
    prepared: list[Any] = []

    def failed(err: SalmonnError, name: str) -> SalmonnError:
        if fail_fast:
            raise _named(err, name) from None
        return _named(err, name)

    for prompt, name in zip(prompts, names):
        try:
            prepared.append(full_prompt(model, prompt, templated))
        except SalmonnError as err:
            prepared.append(failed(err, name))
    usable = [i for i, p in enumerate(prepared) if isinstance(p, str)]
    if audio_tokens is None:
        errors = "raise" if fail_fast else "return"
        encoded = model.encode_audio([audio[i] for i in usable], sample_rate, errors=errors)
    else:
        encoded = [audio_tokens[i] for i in usable]
    for i, tokens in zip(usable, encoded):
        try:
            if isinstance(tokens, SalmonnError):
                raise tokens
            pieces = prompt_pieces(model, prepared[i], tokens)
            check_context(model, pieces, gen, names[i])
            prepared[i] = pieces
        except SalmonnError as err:
            prepared[i] = failed(err, names[i])
    return prepared


def generate(model: "SALMONN", audio, prompt: str | Sequence[str], templated: bool = False,
             sample_rate: int | None = None, streamer=None, audio_tokens: list[torch.Tensor] | None = None,
             preset: str | None = None, return_scores: bool = False, **options) -> list[Answer]:
    """Answer each clip; the first unusable item raises its SalmonnError. `prompt` is the bare instruction (one
    for all clips or one per clip); templated=True takes full prompts with <SpeechHere>.

    Decoding: the config's `generate:` section, then `preset` ("reference", "greedy", "sample", "transcribe"), then any
    GenerateConfig field given as a keyword (num_beams, max_new_tokens, min_new_tokens, do_sample,
    temperature, top_p, top_k, repetition_penalty, no_repeat_ngram_size, length_penalty, seed, stop, ctc_weight,
    ctc_length_bonus: salmonn.rescoring); None means "not given".
    A batch is left-padded with correct positions: each clip gets its single-clip answer.
    `streamer`: anything with put(ids)/end() (salmonn.decoding.TokenStreamer); one clip, num_beams 1.
    `audio_tokens`: already encoded clips ([L_i, d] each) instead of `audio`.
    """
    clips = as_clips(audio) if audio_tokens is None else [None] * len(audio_tokens)
    prompts = pair_prompts(len(clips), prompt)
    gen = decoding_config(model.config.generate, preset, **options)
    rows = prepare(model, clips, prompts, gen, templated=templated, sample_rate=sample_rate,
                   audio_tokens=audio_tokens, fail_fast=True)
    return generate_answers(model, rows, gen, streamer=streamer, return_scores=return_scores)


@torch.no_grad()
def score(model: "SALMONN", audio, prompt: str | Sequence[str], text: str | Sequence[str],
          templated: bool = False) -> list[dict]:
    """Per clip: mean token NLL of `text` + end symbol after the prompt ({"loss", "tokens"}): the training loss of
    that one sample."""
    clips = as_clips(audio)
    prompts = [full_prompt(model, p, templated) for p in pair_prompts(len(clips), prompt)]
    texts = pair_prompts(len(clips), text, what="answer text")
    results = []
    for tokens, p, t in zip(model.encode_audio(clips), prompts, texts):  # one at a time: one sample's loss
        loss, _, labels = model([tokens], [p], [t])
        results.append({"loss": float(loss), "tokens": int((labels[:, 1:] != IGNORE_INDEX).sum())})
    return results


# ---------------------------------------------------------------------------------------------------- batches
@dataclasses.dataclass
class Result:
    """One item's outcome: an answer, or the one-line reason it failed."""
    audio: Any
    prompt: str
    answer: Answer | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def text(self) -> str | None:
        return self.answer.text if self.answer else None


def batches(items: Sequence, size: int) -> Iterator[Sequence]:
    """Consecutive slices of `size` items."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def answer_all(model: "SALMONN", audio, prompt: str | Sequence[str], batch_size: int = 8, templated: bool = False,
               sample_rate: int | None = None, preset: str | None = None, progress: bool = False,
               long_form: bool = False, on_segment: Callable[[int, Answer], None] | None = None,
               long_form_chunks: str | None = None, long_form_seconds: float | None = None, **options) -> list[Result]:
    """Answer every clip, `batch_size` clips per generate call; an item that fails (unreadable audio, too long,
    a bad prompt) gets its error and the others still complete. Answers equal single-clip answers.
    long_form=True answers each clip chunk by chunk (see `long_form`: long_form_chunks "pause" or "fixed", chunks
    of at most long_form_seconds); on_segment(clip index, answer) sees each chunk's answer as it comes."""
    clips = as_clips(audio)
    prompts = pair_prompts(len(clips), prompt)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    gen = decoding_config(model.config.generate, preset, **options)  # option errors before any work
    if long_form:
        long_form_chunks, long_form_seconds = long_form_chunking(long_form_chunks, long_form_seconds)
    results: list[Result] = []
    bar = progress_bar(len(clips), progress)
    if long_form:
        for index, (clip, p) in enumerate(zip(clips, prompts)):
            results.append(long_form_result(model, clip, p, gen, templated, sample_rate, batch_size,
                                            None if on_segment is None else lambda a, i=index: on_segment(i, a),
                                            long_form_chunks, long_form_seconds))
            bar.update(1)
    else:
        for chunk in batches(list(zip(clips, prompts)), batch_size):
            results += answer_batch(model, [a for a, _ in chunk], [p for _, p in chunk], gen, templated,
                                    sample_rate)
            bar.update(len(chunk))
    bar.close()
    return results


@torch.no_grad()
def answer_batch(model: "SALMONN", audio: Sequence, prompts: Sequence[str], gen: GenerateConfig,
                 templated: bool = False, sample_rate: int | None = None) -> list[Result]:
    """One generate call for the items that can be answered; per-item errors for the rest."""
    results = [Result(audio=a, prompt=p) for a, p in zip(audio, prompts)]
    rows = prepare(model, audio, prompts, gen, templated=templated, sample_rate=sample_rate)
    good = [i for i, row in enumerate(rows) if not isinstance(row, SalmonnError)]
    for i, row in enumerate(rows):
        if isinstance(row, SalmonnError):
            results[i].error = str(row)
    if good:
        for i, answer in zip(good, generate_answers(model, [rows[i] for i in good], gen)):
            results[i].answer = answer
    return results


def long_form_chunking(chunks: str | None, max_seconds: float | None) -> tuple[str, float]:
    """Checked (chunks, max_seconds) of the long-form mode; None means the default (pause chunks of at most
    DEFAULT_PAUSE_SECONDS; fixed segments of SEGMENT_SECONDS). ConfigError for anything else."""
    chunks = DEFAULT_LONG_FORM_CHUNKS if chunks is None else chunks
    if chunks not in LONG_FORM_CHUNKS:
        raise ConfigError(f"long-form chunks must be one of {', '.join(LONG_FORM_CHUNKS)}, got {chunks!r}")
    if max_seconds is None:
        max_seconds = DEFAULT_PAUSE_SECONDS if chunks == "pause" else float(SEGMENT_SECONDS)
    if not MIN_LONG_FORM_SECONDS <= max_seconds <= SEGMENT_SECONDS:
        raise ConfigError(f"the long-form chunk length must be {MIN_LONG_FORM_SECONDS:g} to {SEGMENT_SECONDS} s "
                          f"(Whisper's window), got {max_seconds:g}")
    if chunks == "fixed" and max_seconds != SEGMENT_SECONDS:
        raise ConfigError(f"fixed long-form segments are {SEGMENT_SECONDS} s (Whisper's window); a shorter maximum "
                          f"is for pause-aligned chunks")
    return chunks, float(max_seconds)


def long_form_segments(model: "SALMONN", audio, sample_rate: int | None = None, chunks: str | None = None,
                       max_seconds: float | None = None) -> Iterator[np.ndarray]:
    """One clip's long-form chunks as they are decoded: fixed 30 s segments (model.clip_segments), or pause-aligned
    chunks of at most `max_seconds` (salmonn.pauses; each padded to 1 s like a segment)."""
    chunks, max_seconds = long_form_chunking(chunks, max_seconds)
    segments = model.clip_segments(audio, sample_rate)
    if chunks == "fixed":
        return segments
    return (pad_to_min(chunk) for chunk in iter_pause_chunks(segments, SAMPLE_RATE, max_seconds))


@torch.no_grad()
def long_form(model: "SALMONN", audio, prompt: str, gen: GenerateConfig, templated: bool = False,
              sample_rate: int | None = None, batch_size: int = 8, on_segment: Callable[[Answer], None] | None = None,
              chunks: str | None = None, max_seconds: float | None = None) -> Answer:
    """Answer each chunk of one clip with the instruction, `batch_size` chunks per generate call, and join the
    answers in order (text joined by spaces, ids concatenated). The chunks: chunks="pause" (the default) cuts at
    pauses so that no chunk is longer than `max_seconds` (default DEFAULT_PAUSE_SECONDS); chunks="fixed" is
    consecutive 30 s segments. Any length of audio within model.max_audio_seconds, on any model: each chunk's
    prompt fits the LLM on its own. on_segment(answer) sees each chunk's answer as it comes."""
    segments = long_form_segments(model, audio, sample_rate, chunks, max_seconds)  # options checked before decoding
    prompt = full_prompt(model, prompt, templated)
    name = audio_name(audio)
    answers: list[Answer] = []
    pending: list[np.ndarray] = []

    def flush() -> None:
        rows = [prompt_pieces(model, prompt, tokens) for tokens in model.encode_segments(pending)]
        for row in rows:
            check_context(model, row, gen, name)
        for answer in generate_answers(model, rows, gen):
            answers.append(answer)
            if on_segment is not None:
                on_segment(answer)
        pending.clear()

    for segment in segments:
        pending.append(segment)
        if len(pending) == batch_size:
            flush()
    if pending:
        flush()
    return Answer(text=" ".join(a.text for a in answers if a.text),
                  token_ids=[i for a in answers for i in a.token_ids])


def long_form_result(model: "SALMONN", audio, prompt: str, gen: GenerateConfig, templated: bool = False,
                     sample_rate: int | None = None, batch_size: int = 8, on_segment: Callable[[Answer],
                     None] | None = None, chunks: str | None = None, max_seconds: float | None = None) -> Result:
    """`long_form` as a Result: a problem with the clip or the prompt is its error."""
    result = Result(audio=audio, prompt=prompt)
    try:
        result.answer = long_form(model, audio, prompt, gen, templated, sample_rate, batch_size, on_segment,
                                  chunks, max_seconds)
    except SalmonnError as err:
        result.error = str(_named(err, audio_name(audio)))
    return result


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, enabled: bool, initial: int = 0, desc: str = "answering"):
    """A tqdm bar over clips (or a silent stand-in)."""
    if not enabled:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="clip", dynamic_ncols=True)


# ---------------------------------------------------------------------------------------------------- manifests
def _done_lines(output: Path) -> dict[int, dict]:
    """Records already in `output` by manifest line (a line a kill cut off is left out: it is answered again)."""
    return {row["line"]: row for row in read_jsonl(output) if isinstance(row.get("line"), int)}


def manifest_settings(model: "SALMONN", gen: GenerateConfig, chunking: tuple[str, float] | None) -> dict:
    """What an answer depends on besides its clip and prompt, recorded on each output line: the decoding, the
    LoRA scale and the long-form chunking. A re-run answers again the lines made with other settings."""
    scale = getattr(model, "lora_scale", model.config.model.lora_scale)
    return json.loads(json.dumps({**dataclasses.asdict(gen), "lora_scale": float(scale),
                                  "long_form": list(chunking) if chunking else None}))  # as read back


def _still_good(done: dict, prompt: str | None, settings: dict) -> bool:
    """An earlier output line that a re-run keeps: an answer (not an error) to the same prompt with the same
    settings (keys only one side has, written by another version, are not compared)."""
    theirs = done.get("settings")
    return ("error" not in done and done.get("prompt") == prompt and isinstance(theirs, dict)
            and all(theirs[k] == v for k, v in settings.items() if k in theirs))


def run_manifest(model: "SALMONN", manifest: str | Path, output: str | Path, prompt: str | None = None,
                 batch_size: int = 8, preset: str | None = None, retry_errors: bool = True, progress: bool = True,
                 long_form: bool = False, long_form_chunks: str | None = None, long_form_seconds: float | None = None,
                 **options) -> dict:
    """Answer every record of a JSONL (or reference annotation JSON) manifest into `output` (JSONL).

    Each record: {"audio" (or "path"), "prompt"?, ...}; `prompt` is used where a record has none. Each output
    line: {"line", "audio", "prompt", "settings", "text", "token_ids"} (+ "id"/"task" when the record has them),
    or {"line", "audio", "prompt", "error"}; a manifest line that is not a JSON object fails alone. Lines are
    written in manifest order and flushed per batch. A re-run keeps the answers already in `output` that were
    made with the same prompt and settings (`manifest_settings`) and answers the rest again: lines made with
    other settings, failed lines (retry_errors is accepted for compatibility: they are always retried) and lines
    a kill cut off. long_form=True answers each clip chunk by chunk (`long_form`; long_form_chunks,
    long_form_seconds). Returns {"answered", "failed", "skipped", "redone"} for this run ("redone": earlier
    lines answered again because their prompt or settings changed; "failed": the errors now in `output`).
    """
    output = Path(output)
    bad: dict[int, str] = {}
    records = list(iter_records(manifest, bad_lines=bad))  # an unreadable file is one clear error before any work
    gen = decoding_config(model.config.generate, preset, **options)
    chunking = long_form_chunking(long_form_chunks, long_form_seconds) if long_form else None
    settings = manifest_settings(model, gen, chunking)
    done = _done_lines(output)
    _check_same_manifest({n: line for n, line in done.items() if n not in bad}, dict(records), output, manifest)
    kept = {n for n, r in records if n in done and _still_good(done[n], r.get("prompt", prompt), settings)}
    stats = {"answered": 0, "failed": len(bad), "skipped": len(kept),
             "redone": sum(1 for n in done if n not in kept and n not in bad and "error" not in done[n])}
    write_jsonl(output, [done[n] for n in sorted(kept)] + [{"line": n, "audio": None, "error": err}
                                                          for n, err in bad.items()])
    todo = [(n, r) for n, r in records if n not in kept]
    bar = progress_bar(len(records) + len(bad), progress, initial=len(kept) + len(bad))
    for chunk in batches(todo, batch_size):
        prompts = [r.get("prompt", prompt) for _, r in chunk]
        results = _manifest_batch(model, [r.get("path") for _, r in chunk], prompts, gen, chunking, batch_size)
        for result in results:
            stats["answered" if result.ok else "failed"] += 1
        append_jsonl(output, [_answer_line(number, record, result, settings)
                              for (number, record), result in zip(chunk, results)])
        bar.update(len(chunk))
    bar.close()
    _sort_by_line(output)
    return stats


def _check_same_manifest(done: dict[int, dict], records: dict[int, dict], output: Path, manifest) -> None:
    """Refuse an output written for another manifest (its lines name other audio)."""
    for number, line in done.items():
        source = records.get(number)
        if source is None or line.get("audio") != source.get("audio", source.get("path")):
            raise ManifestError(f"{output}: line {number} is not an answer to line {number} of {manifest} "
                                f"(written for another manifest?); choose another --output or delete it")


def _answer_line(number: int, record: dict, result: Result, settings: dict) -> dict:
    line = {"line": number, "audio": record.get("audio", record.get("path"))}  # as the manifest says
    for key in ("id", "task"):
        if key in record:
            line[key] = record[key]
    line["prompt"] = result.prompt
    if result.ok:
        line.update(settings=settings, text=result.answer.text, token_ids=result.answer.token_ids)
    else:
        line["error"] = result.error
    return line


def _manifest_batch(model: "SALMONN", audio: list, prompts: list, gen: GenerateConfig, long_form: tuple[str,
                    float] | None = None, batch_size: int = 8) -> list[Result]:
    """long_form: (chunks, max_seconds) to answer each clip chunk by chunk, None for whole clips."""
    results: list[Result | None] = [None] * len(audio)
    usable = []
    for i, (a, p) in enumerate(zip(audio, prompts)):
        if a is None:
            results[i] = Result(audio=a, prompt=p, error='no audio: give each line an "audio" (or "path")')
        elif not isinstance(p, str) or not p:
            results[i] = Result(audio=a, prompt=p, error=f'{a}: no prompt: add "prompt" to the line or pass --prompt')
        else:
            usable.append(i)
    if long_form:
        answered = [long_form_result(model, audio[i], prompts[i], gen, batch_size=batch_size, chunks=long_form[0],
                                     max_seconds=long_form[1]) for i in usable]
    else:
        answered = answer_batch(model, [audio[i] for i in usable], [prompts[i] for i in usable], gen)
    for i, r in zip(usable, answered):
        results[i] = r
    return results


def _sort_by_line(path: Path) -> None:
    """Keep the output in manifest order after retried lines were appended at the end."""
    rows = read_jsonl(path)
    numbers = [row.get("line") for row in rows]
    if numbers != sorted(numbers):
        write_jsonl(path, sorted(rows, key=lambda row: row["line"]))
