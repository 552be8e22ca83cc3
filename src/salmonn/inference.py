"""Inference people can rely on: batches where a bad item fails alone, manifests that resume, chat sessions.

    from salmonn import SALMONN
    from salmonn.inference import answer_all, run_manifest, ChatSession

    model = SALMONN.from_config("cfg.yaml")
    for r in answer_all(model, ["a.wav", "b.mp3"], "Describe the audio.", batch_size=8, preset="greedy"):
        print(r.audio, r.text if r.ok else r.error)
    run_manifest(model, "in.jsonl", "out.jsonl", batch_size=8)          # resumes where out.jsonl stops
    chat = ChatSession(model, ["a.wav"], num_beams=1)
    chat.ask("What is said?"); chat.ask("And who says it?")             # audio encoded once, history kept
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import torch

from .data.manifest import ManifestError
from .decoding import decoding_config
from .errors import ConfigError, PromptError, SalmonnError
from .model import AUDIO_PLACEHOLDER, SALMONN, Answer, _as_batch, _segment, audio_name
from .prompting import PromptTurn, render


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


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def answer_all(model: SALMONN, audio: Sequence, prompt: str | Sequence[str], batch_size: int = 8,
               templated: bool = False, sample_rate: int | None = None, preset: str | None = None,
               progress: bool = False, **options) -> list[Result]:
    """Answer every clip, `batch_size` clips per generate call; an item that fails (unreadable audio, too long,
    a bad prompt) gets its error and the others still complete. Answers equal single-clip answers."""
    audio, prompts = _as_batch(audio, prompt)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    g = decoding_config(model.config.generate, preset, **options)  # option errors before any work
    pairs = list(zip(audio, prompts))
    results: list[Result] = []
    bar = _progress(len(pairs), progress)
    for chunk in _batches(pairs, batch_size):
        results += answer_batch(model, [a for a, _ in chunk], [p for _, p in chunk], g, templated, sample_rate)
        bar.update(len(chunk))
    bar.close()
    return results


@torch.no_grad()
def answer_batch(model: SALMONN, audio: Sequence, prompts: Sequence[str], g, templated: bool = False,
                 sample_rate: int | None = None) -> list[Result]:
    """One generate call for the items that load; per-item errors for the rest. g: a GenerateConfig."""
    results = [Result(audio=a, prompt=p) for a, p in zip(audio, prompts)]
    rows, good = [], []
    full: list[str | None] = []
    for r in results:
        try:
            full.append(r.prompt if templated else model.format_prompt(r.prompt))
        except SalmonnError as err:
            r.error = f"{audio_name(r.audio)}: {err}"
            full.append(None)
    loadable = [i for i, f in enumerate(full) if f is not None]
    tokens = model.encode_audio([results[i].audio for i in loadable], sample_rate, errors="return")
    for i, t in zip(loadable, tokens):
        if isinstance(t, SalmonnError):
            results[i].error = str(t)
            continue
        try:
            rows.append(model.prompt_segments(full[i], t))
            good.append(i)
        except SalmonnError as err:
            results[i].error = f"{audio_name(results[i].audio)}: {err}"
    if rows:
        for i, answer in zip(good, model.generate_from_segments(rows, g)):
            results[i].answer = answer
    return results


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool, initial: int = 0, desc: str = "answering"):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="clip", dynamic_ncols=True)


# ---------------------------------------------------------------------------------------------------- manifests
def _done_lines(output: Path) -> tuple[dict[int, dict], list[str]]:
    """Records already in `output` by manifest line, and the good raw lines (a torn last line is dropped)."""
    done: dict[int, dict] = {}
    keep: list[str] = []
    if not output.exists():
        return done, keep
    for raw in output.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(raw)
        except json.JSONDecodeError:
            continue  # a line cut off when a previous run was killed: it will be answered again
        if isinstance(record, dict) and isinstance(record.get("line"), int):
            done[record["line"]] = record
            keep.append(raw)
    return done, keep


def run_manifest(model: SALMONN, manifest: str | Path, output: str | Path, prompt: str | None = None,
                 batch_size: int = 8, preset: str | None = None, retry_errors: bool = False,
                 progress: bool = True, **options) -> dict:
    """Answer every record of a JSONL (or reference annotation JSON) manifest into `output` (JSONL).

    Each record: {"audio" (or "path"), "prompt"?, ...}; `prompt` is used where a record has none. Each output
    line: {"line", "audio", "prompt", "text", "token_ids"} (+ "id"/"task" when the record has them), or
    {"line", "audio", "prompt", "error"}. Lines are written in manifest order and flushed per batch; records
    whose line is already in `output` are skipped (retry_errors=True answers failed ones again).
    Returns {"answered", "failed", "skipped"} for this run.
    """
    from .data.manifest import iter_records
    output = Path(output)
    records = list(iter_records(manifest))  # a malformed manifest is one clear error before any work
    g = decoding_config(model.config.generate, preset, **options)
    done, keep = _done_lines(output)
    by_line = dict(records)
    for number, record in done.items():
        source = by_line.get(number)
        if source is None or record.get("audio") != source.get("audio", source.get("path")):
            raise ManifestError(f"{output}: line {number} is not an answer to line {number} of {manifest} "
                                f"(written for another manifest?); choose another --output or delete it")
    if retry_errors:
        failed = {n for n, r in done.items() if "error" in r}
        keep = [raw for raw in keep if json.loads(raw)["line"] not in failed]
        done = {n: r for n, r in done.items() if n not in failed}
    todo = [(n, r) for n, r in records if n not in done]
    output.parent.mkdir(parents=True, exist_ok=True)
    _rewrite(output, keep)  # drop a torn last line (and retried errors) before appending
    stats = {"answered": 0, "failed": 0, "skipped": len(records) - len(todo)}
    bar = _progress(len(records), progress, initial=stats["skipped"])
    with open(output, "a", encoding="utf-8") as out:
        for chunk in _batches(todo, batch_size):
            audio = [r.get("path") for _, r in chunk]
            prompts = [r.get("prompt", prompt) for _, r in chunk]
            results = _manifest_batch(model, audio, prompts, g)
            for (number, record), result in zip(chunk, results):
                line = {"line": number, "audio": record.get("audio", record.get("path"))}  # as the manifest says
                for key in ("id", "task"):
                    if key in record:
                        line[key] = record[key]
                line["prompt"] = result.prompt
                if result.ok:
                    line.update(text=result.answer.text, token_ids=result.answer.token_ids)
                    stats["answered"] += 1
                else:
                    line["error"] = result.error
                    stats["failed"] += 1
                out.write(json.dumps(line, ensure_ascii=False) + "\n")
            out.flush()
            bar.update(len(chunk))
    bar.close()
    _sort_by_line(output)
    return stats


def _manifest_batch(model: SALMONN, audio: list, prompts: list, g) -> list[Result]:
    results: list[Result | None] = [None] * len(audio)
    usable = []
    for i, (a, p) in enumerate(zip(audio, prompts)):
        if a is None:
            results[i] = Result(audio=a, prompt=p, error='no audio: give each line an "audio" (or "path")')
        elif not isinstance(p, str) or not p:
            results[i] = Result(audio=a, prompt=p, error=f'{a}: no prompt: add "prompt" to the line or pass --prompt')
        else:
            usable.append(i)
    answered = answer_batch(model, [audio[i] for i in usable], [prompts[i] for i in usable], g)
    for i, r in zip(usable, answered):
        results[i] = r
    return results


def _rewrite(path: Path, lines: list[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(tmp, path)


def _sort_by_line(path: Path) -> None:
    """Keep the output in manifest order after retried lines were appended at the end."""
    lines = [raw for raw in path.read_text(encoding="utf-8").splitlines() if raw]
    numbers = [json.loads(raw)["line"] for raw in lines]
    if numbers != sorted(numbers):
        _rewrite(path, [raw for _, raw in sorted(zip(numbers, lines), key=lambda x: x[0])])


# ---------------------------------------------------------------------------------------------------- chat
@dataclasses.dataclass
class Turn:
    question: str
    clips: list[int]  # indices of the clips attached to this user turn
    answer: Answer | None = None


class ChatSession:
    """A multi-turn conversation about one or more clips.

    The prompt is the config's template applied turn by turn (Vicuna style):
        [BOS] USER: <Speech>[clip tokens]</Speech> q1\\nASSISTANT: a1</s>USER: q2\\nASSISTANT: ...
    Clips given at the start go into the first user turn; add_audio() attaches a clip to the next question.
    Each clip's encoder outputs are computed once and reused for every turn; earlier answers enter the history
    as the exact ids generated (+ EOS), not re-tokenised text (salmonn.prompting.render, shared with the server).
    The first turn equals SALMONN.generate's prompt.
    """

    def __init__(self, model: SALMONN, audio: Iterable = (), sample_rate: int | None = None,
                 preset: str | None = None, **options):
        self.model = model
        self.sample_rate = sample_rate
        self.generate_config = decoding_config(model.config.generate, preset, **options)
        self.clips: list[tuple[str, torch.Tensor]] = []  # (name, audio tokens [L, d])
        self.turns: list[Turn] = []
        self.pending: list[int] = []  # clips waiting for the next user turn
        for item in audio:
            self.add_audio(item)

    # -- state
    @torch.no_grad()
    def add_audio(self, item, sample_rate: int | None = None) -> int:
        """Encode a clip (once) and attach it to the next question; returns its index. AudioError if unusable."""
        tokens = self.model.encode_audio([item], sample_rate or self.sample_rate)[0]
        self.clips.append((audio_name(item), tokens))
        self.pending.append(len(self.clips) - 1)
        return len(self.clips) - 1

    def reset(self) -> None:
        """Forget the conversation; keep the clips (they go into the next question again)."""
        self.turns = []
        self.pending = list(range(len(self.clips)))

    @property
    def history(self) -> list[tuple[str, str]]:
        return [(t.question, t.answer.text) for t in self.turns if t.answer is not None]

    # -- prompting
    def _render(self, question: str | None, as_text: bool) -> list:
        """The conversation (+ `question`'s open turn) through salmonn.prompting.render: earlier answers as the
        exact generated ids + EOS (as_text=False: what the model is fed) or as their text (the transcript)."""
        model = self.model
        turns = self.turns + ([Turn(question, list(self.pending))] if question is not None else [])
        return render([PromptTurn(t.question, len(t.clips), None if t.answer is None else
                                  t.answer.text if as_text else t.answer.token_ids) for t in turns],
                      model.config.model.prompt_template, model.config.model.end_sym, model.tokenizer.eos_token_id,
                      hint="ask in plain words (clips are inserted for you)")

    def transcript(self, question: str | None = None) -> str:
        """The conversation as text (clips shown as <SpeechHere>), ending with `question`'s open turn if given."""
        return "".join(self._render(question, as_text=True))

    @torch.no_grad()
    def segments(self, question: str) -> list:
        """LLM input segments for the whole conversation plus the new question (embeds, labels, mask)."""
        model = self.model
        clips = [index for turn in self.turns for index in turn.clips] + list(self.pending)
        embed_dtype = model._embed([0]).dtype
        pieces = [model._embed([model.tokenizer.bos_token_id])]
        for piece in self._render(question, as_text=False):
            if isinstance(piece, list):  # an earlier answer's ids + EOS
                pieces.append(model._embed(piece))
                continue
            for k, text in enumerate(piece.split(AUDIO_PLACEHOLDER)):
                if k:
                    pieces.append(self.clips[clips.pop(0)][1].to(model.device, embed_dtype))
                pieces.append(model._embed(model._ids(text)))
        return [_segment(p) for p in pieces if p.shape[0] > 0]

    @torch.no_grad()
    def ask(self, question: str, streamer=None, **options) -> Answer:
        """Answer `question` in the context of the conversation so far and add the exchange to it."""
        question = question.strip()
        if not question:
            raise PromptError("empty question")
        g = decoding_config(self.generate_config, None, **options)
        if streamer is not None and g.num_beams > 1:
            raise ConfigError(f"streaming needs num_beams=1 (got {g.num_beams}): pass --num-beams 1 or "
                              f"--preset greedy")
        rows = [self.segments(question)]
        answer = self.model.generate_from_segments(rows, g, streamer=streamer)[0]
        self.turns.append(Turn(question, list(self.pending), answer))
        self.pending = []
        return answer


CHAT_HELP = ("commands: /audio PATH (add a clip to the next question), /reset (forget the conversation, keep "
             "the clips), /lora S (LoRA scale, 1 = as trained), /history, /help, /quit")


def chat_loop(session: ChatSession, lines: Iterable[str], write=print, error=None, streamer_factory=None) -> None:
    """Drive a session from input lines (stdin): questions and /commands. Errors go to `error` and the
    session continues."""
    import sys
    error = error or (lambda message: print(f"error: {message}", file=sys.stderr, flush=True))
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        if line.startswith("/"):
            command, _, arg = line.partition(" ")
            arg = arg.strip()
            if command in ("/quit", "/exit", "/q"):
                return
            try:
                if command == "/reset":
                    session.reset()
                    write("(conversation reset)")
                elif command == "/audio":
                    if not arg:
                        raise PromptError("/audio needs a path: /audio PATH")
                    index = session.add_audio(os.path.expanduser(arg))
                    write(f"(added clip {index + 1}: {arg}; it goes with your next question)")
                elif command == "/lora":
                    try:
                        scale = float(arg)
                    except ValueError:
                        raise PromptError(f"/lora needs a number, e.g. /lora 0.5 (got {arg!r})") from None
                    session.model.set_lora_scale(scale)
                    write(f"(LoRA scale {scale:g})")
                elif command == "/history":
                    for q, a in session.history:
                        write(f"USER: {q}\nASSISTANT: {a}")
                elif command == "/help":
                    write(CHAT_HELP)
                else:
                    raise PromptError(f"unknown command {command}; {CHAT_HELP}")
            except SalmonnError as err:
                error(str(err))
            continue
        try:
            streamer = streamer_factory() if streamer_factory else None
            answer = session.ask(line, streamer=streamer)
            if streamer is None:
                write(answer.text)
        except SalmonnError as err:
            error(str(err))
