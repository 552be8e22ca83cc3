"""Streamed text is exactly the answer's text, whatever the tokens (issue 17.4): sentencepiece decodes a run of
byte-fallback pieces (<0xC3>) as a unit, so the text of the ids so far is not always a prefix of the final text;
the streamer must hold such a run back instead of losing the rest of the answer."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from salmonn import load_model
from salmonn.decoding import TokenStreamer, clean_answer

from ..conftest import AUDIO, FIXTURE

SMOLLM2 = Path.home() / ".cache" / "salmonn" / "backbones" / "smollm2-135m-instruct"


def streamed(tokenizer, ids: list[int], stop: list[str] = ()) -> str:
    pieces: list[str] = []
    streamer = TokenStreamer(tokenizer, write=pieces.append, stop=stop)
    streamer.put(torch.zeros(1, 0, dtype=torch.long))  # generate() hands over the (empty) prompt first
    for token in ids:
        streamer.put(torch.tensor([token]))
    streamer.end()
    return "".join(pieces)


def random_answers(tokenizer, count: int, length: int, seed: int) -> list[list[int]]:
    """Id sequences rich in what breaks naive streaming: byte pieces (valid and invalid UTF-8 runs, ASCII bytes),
    multi-byte characters, spaces and newlines, among ordinary word pieces."""
    rng = random.Random(seed)
    vocabulary = tokenizer.get_vocab()
    byte_pieces = [i for piece, i in vocabulary.items() if piece.startswith("<0x") and piece.endswith(">")]
    special = set(tokenizer.all_special_ids)
    ordinary = [i for i in vocabulary.values() if i not in special and i not in set(byte_pieces)]
    characters = [tokenizer(text, add_special_tokens=False).input_ids
                  for text in ("é", "€", "日本", "🎵", " \n", "  ")]
    answers = []
    for _ in range(count):
        ids: list[int] = []
        while len(ids) < length:
            draw = rng.random()
            if draw < 0.3 and byte_pieces:
                ids += rng.choices(byte_pieces, k=rng.randint(1, 4))
            elif draw < 0.45:
                ids += rng.choice(characters)
            else:
                ids.append(rng.choice(ordinary))
        answers.append(ids[:length])
    return answers


def tokenizers():
    found = [pytest.param(FIXTURE / "llama", id="fixture-sentencepiece")]
    if SMOLLM2.is_dir():
        found.append(pytest.param(SMOLLM2, id="smollm2-byte-level"))
    return found


@pytest.mark.parametrize("path", tokenizers())
def test_streamed_text_equals_the_answer_for_any_tokens(path):
    tokenizer = AutoTokenizer.from_pretrained(path)
    for ids in random_answers(tokenizer, count=40, length=120, seed=17):
        assert streamed(tokenizer, ids) == clean_answer(ids, tokenizer).text


@pytest.mark.parametrize("path", tokenizers())
def test_streamed_text_equals_the_answer_with_stop_strings(path):
    tokenizer = AutoTokenizer.from_pretrained(path)
    rng = random.Random(4)
    for ids in random_answers(tokenizer, count=20, length=80, seed=18):
        text = tokenizer.decode(ids, skip_special_tokens=True)
        start = rng.randrange(len(text) // 2, len(text) - 3)
        stop = [text[start:start + rng.randint(1, 3)], "no such stop string"]
        assert streamed(tokenizer, ids, stop) == clean_answer(ids, tokenizer, stop).text


def test_the_issues_stream_on_the_fixture_model():
    """Tiny fixture, music.wav, 'Describe the audio.', greedy: the answer is full of byte pieces."""
    model = load_model(FIXTURE / "config.yaml")
    pieces: list[str] = []
    [answer] = model.generate([str(AUDIO / "music.wav")], "Describe the audio.", num_beams=1, do_sample=False,
                              max_new_tokens=360, streamer=TokenStreamer(model.tokenizer, write=pieces.append))
    assert len(answer.text) > 400
    assert "".join(pieces) == answer.text


def test_the_issues_stream_through_the_server():
    """The same request over HTTP: the streamed deltas join to the non-streamed answer."""
    import json

    from salmonn.serve.app import ServeSettings
    from salmonn.serve.engine import Engine

    from .conftest import audio_message, b64
    from .fakes import serving

    engine = Engine(load_model(FIXTURE / "config.yaml"))
    body = {"model": "salmonn", "max_tokens": 360, "temperature": 0, "num_beams": 1,
            "messages": audio_message(b64(AUDIO / "music.wav"), "Describe the audio.")}
    with serving(engine, ServeSettings(max_tokens_limit=512)) as (server, _, _):
        status, whole, _ = server.request("POST", "/v1/chat/completions", body, auth=False, timeout=300)
        assert status == 200, whole
        status, raw, _ = server.request("POST", "/v1/chat/completions", {**body, "stream": True}, auth=False,
                                        timeout=300)
    deltas = [choice["delta"].get("content") or "" for line in raw.split("\n") if line.startswith("data: {")
              for choice in json.loads(line[6:])["choices"]]
    assert len(deltas) > 10 and "".join(deltas) == whole["choices"][0]["message"]["content"]
