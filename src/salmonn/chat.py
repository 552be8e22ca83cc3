"""Chat sessions: a multi-turn conversation about one or more clips, and the loop that drives one from stdin.

    from salmonn.chat import ChatSession
    chat = ChatSession(model, ["a.wav"], num_beams=1)
    chat.ask("What is said?"); chat.ask("And who says it?")             # audio encoded once, history kept
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Iterable

import torch

from .audio import audio_name
from .decoding import Answer, check_streamable, decoding_config, generate_answers
from .errors import PromptError, SalmonnError
from .prompting import Piece, PromptTurn, conversation_pieces, render

if TYPE_CHECKING:
    from .model import SALMONN


class ChatSession:
    """A multi-turn conversation about one or more clips.

    The prompt is the config's template applied turn by turn (salmonn.prompting.render, shared with the server):
        [BOS] USER: <Speech>[clip tokens]</Speech> q1\\nASSISTANT: a1</s>USER: q2\\nASSISTANT: ...
    Clips given at the start go into the first user turn; add_audio() attaches a clip to the next question.
    Each clip is encoded once and reused for every turn; earlier answers enter the history as the exact ids
    generated (+ EOS), not re-tokenised text. The first turn equals SALMONN.generate's prompt.
    """

    def __init__(self, model: "SALMONN", audio: Iterable = (), sample_rate: int | None = None,
                 preset: str | None = None, **options):
        self.model = model
        self.sample_rate = sample_rate
        self.generate_config = decoding_config(model.config.generate, preset, **options)
        self.clips: list[tuple[str, torch.Tensor]] = []  # (name, audio tokens [L, d]) in the order attached
        self.turns: list[PromptTurn] = []  # answered turns; answers as the generated ids
        self.answers: list[Answer] = []  # the answer of each turn
        self.pending = 0  # clips waiting for the next user turn
        for item in audio:
            self.add_audio(item)

    @torch.no_grad()
    def add_audio(self, item, sample_rate: int | None = None) -> int:
        """Encode a clip (once) and attach it to the next question; returns its index. AudioError if unusable."""
        tokens = self.model.encode_audio([item], sample_rate or self.sample_rate)[0]
        self.clips.append((audio_name(item), tokens))
        self.pending += 1
        return len(self.clips) - 1

    def reset(self) -> None:
        """Forget the conversation; keep the clips (they go into the next question again)."""
        self.turns, self.answers = [], []
        self.pending = len(self.clips)

    @property
    def history(self) -> list[tuple[str, str]]:
        return [(turn.user, answer.text) for turn, answer in zip(self.turns, self.answers)]

    def _render(self, question: str | None, as_text: bool) -> list:
        """The conversation (+ `question`'s open turn): earlier answers as the exact generated ids + EOS
        (as_text=False: what the model is fed) or as their text (the transcript)."""
        m = self.model.config.model
        turns = [PromptTurn(t.user, t.clips, a.text if as_text else t.answer) for t, a in zip(self.turns, self.answers)]
        if question is not None:
            turns.append(PromptTurn(question, self.pending))
        return render(turns, m.prompt_template, m.end_sym, self.model.tokenizer.eos_token_id,
                      hint="ask in plain words (clips are inserted for you)")

    def transcript(self, question: str | None = None) -> str:
        """The conversation as text (clips shown as <SpeechHere>), ending with `question`'s open turn if given."""
        return "".join(self._render(question, as_text=True))

    @torch.no_grad()
    def pieces(self, question: str) -> list[Piece]:
        """LLM input pieces for the whole conversation plus the new question."""
        clips = [tokens for _, tokens in self.clips]  # every clip sits in exactly one turn, in order
        return conversation_pieces(self.model, self._render(question, as_text=False), clips)

    @torch.no_grad()
    def ask(self, question: str, streamer=None, **options) -> Answer:
        """Answer `question` in the context of the conversation so far and add the exchange to it."""
        question = question.strip()
        if not question:
            raise PromptError("empty question")
        gen = decoding_config(self.generate_config, None, **options)
        if streamer is not None:
            check_streamable(gen)
        answer = generate_answers(self.model, [self.pieces(question)], gen, streamer=streamer)[0]
        self.turns.append(PromptTurn(question, self.pending, answer.token_ids))
        self.answers.append(answer)
        self.pending = 0
        return answer


CHAT_HELP = ("commands: /audio PATH (add a clip to the next question), /reset (forget the conversation, keep "
             "the clips), /lora S (LoRA scale, 1 = as trained), /history, /help, /quit")


def chat_loop(session: ChatSession, lines: Iterable[str], write=print, error=None, streamer_factory=None) -> None:
    """Drive a session from input lines (stdin): questions and /commands. Errors go to `error` and the
    session continues."""
    error = error or (lambda message: print(f"error: {message}", file=sys.stderr, flush=True))
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        if line.startswith("/"):
            command, _, arg = line.partition(" ")
            if command in ("/quit", "/exit", "/q"):
                return
            try:
                _chat_command(session, command, arg.strip(), write)
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


def _chat_command(session: ChatSession, command: str, arg: str, write) -> None:
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
