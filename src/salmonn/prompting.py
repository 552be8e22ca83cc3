"""The one place where a conversation becomes the LLM prompt (used by ChatSession and the HTTP server).

A conversation is a list of user turns, each with the number of clips attached to it and, for earlier turns,
the assistant's answer. It is rendered in the config's `prompt_template` turn by turn (Vicuna style):

    USER: <Speech><SpeechHere></Speech> q1\\nASSISTANT: a1</s>USER: q2\\nASSISTANT:

Each clip puts `<Speech><SpeechHere></Speech> ` before its turn's text; one turn with one clip is exactly
SALMONN.format_prompt(q1) (the reference CLI's single-turn prompt).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence, Union

from .errors import PromptError
from .model import AUDIO_PLACEHOLDER, AUDIO_PREFIX

Piece = Union[str, list]  # text (may contain <SpeechHere>) or token ids


@dataclasses.dataclass(frozen=True)
class PromptTurn:
    user: str
    clips: int = 0  # clips attached to this user turn (their <SpeechHere> slots come first)
    answer: str | Sequence[int] | None = None  # earlier turns: the answer as text or as generated ids


def render(turns: Sequence[PromptTurn], template: str, end_sym: str, eos_id: int | None = None,
           hint: str = "write plain text (audio is inserted for you)") -> list[Piece]:
    """Render a conversation into prompt pieces: text (adjacent text joined, `<SpeechHere>` per clip) and id lists.

    Earlier answers: a text answer (all an HTTP client can send) becomes " " + answer + end_sym and goes through
    the tokenizer with the rest of the text. An answer given as ids (ChatSession keeps what the model generated)
    is used as is, followed by `eos_id`: exactly the tokens the model produced, including the EOS it stopped on,
    which re-tokenising the decoded text would not always reproduce. The last turn is left open ("ASSISTANT:").
    PromptError when any text contains `<SpeechHere>` (`hint` says what to do instead).
    """
    pieces: list[Piece] = []

    def add(t: str) -> None:
        if pieces and isinstance(pieces[-1], str):
            pieces[-1] += t
        else:
            pieces.append(t)

    for turn in turns:
        for t in (turn.user, turn.answer if isinstance(turn.answer, str) else ""):
            if AUDIO_PLACEHOLDER in t:
                raise PromptError(f"{t[:60]!r} contains {AUDIO_PLACEHOLDER}, which marks where the audio goes: "
                                  f"{hint}")
        add(template.format(AUDIO_PREFIX * turn.clips + turn.user))
        if isinstance(turn.answer, str):
            add(" " + turn.answer + end_sym)
        elif turn.answer is not None:
            if eos_id is None:
                raise ValueError("answers given as ids need eos_id")
            pieces.append(list(turn.answer) + [eos_id])
    return pieces


def render_text(turns: Sequence[PromptTurn], template: str, end_sym: str, **kwargs) -> str:
    """The conversation as one templated prompt string (every answer given as text)."""
    pieces = render(turns, template, end_sym, **kwargs)
    if any(not isinstance(p, str) for p in pieces):
        raise ValueError("render_text needs every answer as text")
    return "".join(pieces)
