"""/v1/audio/transcriptions on a model whose connector was trained to spell (model.ctc_query) answers as
`--preset transcribe` does, while chat completions keep the config's decoding; a real server on loopback with the
fixture and a CTC query named (the fixture's connector never learnt to spell: this checks which decoding runs)."""

from __future__ import annotations

import pytest

from salmonn import load_model
from salmonn.inference import generate
from salmonn.serve.engine import ASR_INSTRUCTION

from ..conftest import AUDIO, FIXTURE
from .conftest import API_KEY, audio_message, b64, running_server

openai = pytest.importorskip("openai")
SPELLING = ("ctc_query=0",)
CLIP = AUDIO / "mountain.wav"


@pytest.fixture(scope="module")
def spelling_client(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("serve-ctc") / "server.log", SPELLING) as server:
        yield openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=300)


def test_transcriptions_rescore_and_chat_does_not(spelling_client):
    model = load_model(FIXTURE / "config.yaml", [*SPELLING, "num_beams=1", "max_new_tokens=8"]).eval()
    rescored, = generate(model, [str(CLIP)], ASR_INSTRUCTION, preset="transcribe")
    greedy, = generate(model, [str(CLIP)], ASR_INSTRUCTION)
    assert rescored.text != greedy.text  # otherwise this test could not tell them apart
    with open(CLIP, "rb") as f:
        assert spelling_client.audio.transcriptions.create(model="salmonn", file=f).text == rescored.text
    asked = spelling_client.chat.completions.create(model="salmonn", messages=audio_message(b64(CLIP), ASR_INSTRUCTION),
                                                    temperature=0)
    assert asked.choices[0].message.content == greedy.text


def test_a_sampled_transcription_is_not_rescored(spelling_client):
    with open(CLIP, "rb") as f:
        sampled = spelling_client.audio.transcriptions.create(model="salmonn", file=f, temperature=0.7)
    assert isinstance(sampled.text, str)  # rescoring would refuse sampling with a ConfigError (a 400)
