"""Chat about clips: multi-turn history in the template, encoders run once per clip, commands, piped stdin."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from salmonn.errors import AudioError, ConfigError, PromptError
from salmonn.chat import ChatSession, chat_loop
from salmonn.decoding import clean_answer, decoding_config, hf_generate_kwargs

from .conftest import AUDIO, FIXTURE

CONFIG = str(FIXTURE / "config.yaml")
GREEDY = dict(num_beams=1, max_new_tokens=8)
MOUNTAIN, DUCK = str(AUDIO / "mountain.wav"), str(AUDIO / "duck.wav")


@pytest.fixture(scope="module")
def counted(tiny_model):
    """The fixture model with a count of clips sent through the encoders, and each clip's tokens."""
    calls: list[str] = []
    real = tiny_model.encode_audio
    cache = {clip: real([clip])[0] for clip in (MOUNTAIN, DUCK)}

    def encode(items, sample_rate=None, **kwargs):
        calls.extend(str(i) for i in items)
        return real(items, sample_rate, **kwargs)

    tiny_model.encode_audio = encode
    yield tiny_model, calls, cache
    del tiny_model.encode_audio  # back to the class's method


def _embeds(model, ids: list[int]) -> torch.Tensor:
    return model.llama_model.get_input_embeddings()(torch.tensor(ids))


def test_first_turn_is_the_single_clip_answer_and_history_is_in_the_template(counted):
    model, calls, tokens = counted
    calls.clear()
    chat = ChatSession(model, [MOUNTAIN], **GREEDY)
    first = chat.ask("What is said?")
    assert first == model.generate(None, "What is said?", audio_tokens=[tokens[MOUNTAIN]], **GREEDY)[0]
    second_question = "Who says it?"
    assert chat.transcript(second_question) == (
        f"USER: <Speech><SpeechHere></Speech> What is said?\nASSISTANT: {first.text}</s>"
        f"USER: {second_question}\nASSISTANT:")

    # the second turn's input: [BOS] turn 1 with the clip, the answer's own ids + EOS, then turn 2
    tok = model.tokenizer
    before, after = "USER: <Speech>", "</Speech> What is said?\nASSISTANT:"
    ids = lambda text: tok(text, add_special_tokens=False).input_ids  # noqa: E731
    expected = torch.cat([_embeds(model, [tok.bos_token_id] + ids(before)), tokens[MOUNTAIN],
                          _embeds(model, ids(after) + first.token_ids + [tok.eos_token_id]
                                  + ids(f"USER: {second_question}\nASSISTANT:"))])
    built = torch.cat([piece.embeds for piece in chat.pieces(second_question)])
    assert torch.equal(built, expected)

    second = chat.ask(second_question)
    direct = model.llama_model.generate(inputs_embeds=expected[None], attention_mask=torch.ones(1, len(expected),
                                        dtype=torch.long), **hf_generate_kwargs(decoding_config(model.config.generate, **GREEDY),
                                                                         model.tokenizer))[0]
    assert second.token_ids == clean_answer(direct.tolist(), model.tokenizer).token_ids  # answered with the history in context
    chat.ask("Anything else?")
    assert [q for q, _ in chat.history] == ["What is said?", second_question, "Anything else?"]
    assert calls == [MOUNTAIN]  # three turns, one pass through the encoders


def test_several_clips_audio_command_and_reset(counted):
    model, calls, tokens = counted
    calls.clear()
    chat = ChatSession(model, [MOUNTAIN, DUCK], **GREEDY)
    pieces = chat.pieces("Compare them.")
    audio = [p.embeds for p in pieces if len(p) == 88]
    assert len(audio) == 2 and torch.equal(audio[0], tokens[MOUNTAIN]) and torch.equal(audio[1], tokens[DUCK])
    assert chat.transcript("Compare them.").startswith(
        "USER: <Speech><SpeechHere></Speech> <Speech><SpeechHere></Speech> Compare them.")
    chat.ask("Compare them.")
    chat.add_audio(MOUNTAIN)  # a third clip goes with the next question only
    assert "USER: <Speech><SpeechHere></Speech> And this one?" in chat.transcript("And this one?")
    chat.ask("And this one?")
    chat.reset()  # forget the conversation, keep all three clips for the next question
    assert chat.history == []
    assert chat.transcript("Again.").count("<SpeechHere>") == 3
    assert calls == [MOUNTAIN, DUCK, MOUNTAIN]
    with pytest.raises(AudioError, match="nowhere.wav: file not found"):
        chat.add_audio("/nowhere.wav")
    with pytest.raises(PromptError, match="empty question"):
        chat.ask("  ")
    with pytest.raises(ConfigError, match="num_beams=1"):
        chat.ask("Stream it?", streamer=object(), num_beams=2)


def test_chat_loop_commands(counted):
    model, _, _ = counted
    out, errors = [], []
    chat = ChatSession(model, [MOUNTAIN], **GREEDY)
    lines = ["What is said?", "", "/reset", "/lora 0", "What is said?", "/lora half", "/bogus",
             "/audio /nowhere.wav", "/history", "/quit", "never read"]
    try:
        chat_loop(chat, lines, write=out.append, error=errors.append)
        assert model.lora_scale == 0.0
    finally:
        model.set_lora_scale(1.0)
    assert out[1:3] == ["(conversation reset)", "(LoRA scale 0)"]
    assert out[0] != out[3]  # the same question in a fresh conversation: LoRA off changed the answer
    assert out[4] == f"USER: What is said?\nASSISTANT: {out[3]}" and len(out) == 5  # /history: one turn
    assert [e.split(" ")[0] for e in errors] == ["/lora", "unknown", "/nowhere.wav:"]
    assert len(chat.turns) == 1


def test_chat_command_with_piped_stdin(tiny_model):
    script = "What is said?\n/reset\n/audio /nowhere.wav\nWhat is said?\nAnd then?\n"
    result = subprocess.run([str(Path(sys.executable).parent / "salmonn"), "chat", "--config", CONFIG,
                             "--audio", MOUNTAIN, "--num-beams", "1", "--max-new-tokens", "8"],
                            input=script, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    chat = ChatSession(tiny_model, [MOUNTAIN], **GREEDY)
    first = chat.ask("What is said?").text
    second = chat.ask("And then?").text
    assert lines == [first, "(conversation reset)", first, second]  # after /reset: the first answer again
    assert result.stderr.strip() == "error: /nowhere.wav: file not found; check the path"
