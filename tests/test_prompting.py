"""salmonn.prompting: the one renderer of conversations (ChatSession and the server)."""

import pytest

from salmonn.errors import PromptError
from salmonn.prompting import PromptTurn, render, render_text

T, END = "USER: {}\nASSISTANT:", "</s>"


def test_text_answers_render_as_one_prompt():
    turns = [PromptTurn("What is said?", 1, "Hello."), PromptTurn("Louder?")]
    assert render_text(turns, T, END) == ("USER: <Speech><SpeechHere></Speech> What is said?\nASSISTANT: Hello.</s>"
                                          "USER: Louder?\nASSISTANT:")
    assert render_text([PromptTurn("Hi", 1)], T, END) == "USER: <Speech><SpeechHere></Speech> Hi\nASSISTANT:"


def test_id_answers_stay_ids_with_eos():
    turns = [PromptTurn("Q1", 2, [7, 8]), PromptTurn("Q2")]
    assert render(turns, T, END, eos_id=2) == [
        "USER: <Speech><SpeechHere></Speech> <Speech><SpeechHere></Speech> Q1\nASSISTANT:", [7, 8, 2],
        "USER: Q2\nASSISTANT:"]
    with pytest.raises(ValueError):
        render_text(turns, T, END, eos_id=2)


@pytest.mark.parametrize("turn", [PromptTurn("put <SpeechHere> here", 1), PromptTurn("q", 1, "a <SpeechHere>")])
def test_placeholder_in_text_is_refused(turn):
    with pytest.raises(PromptError, match="do this"):
        render([turn], T, END, hint="do this")
