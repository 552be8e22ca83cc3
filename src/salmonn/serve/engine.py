"""What the server needs from a SALMONN model, in one place: audio decoding and limits, prompts, token counts
against the LLM's context, and one batched generate() call with its decoding settings and LoRA scale.

Everything except `run` is safe to call from any thread (no model state is touched); `run` is only called on the
batcher's worker thread.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .. import audio as A
from ..decoding import PRESETS, Answer, cut_at_stop
from ..errors import AudioError, PromptError
from ..frames import clip_tokens
from ..prompting import AUDIO_PLACEHOLDER, DEFAULT_TEST_PROMPTS, PromptTurn, render_text

if TYPE_CHECKING:
    from ..model import SALMONN

ASR_INSTRUCTION = DEFAULT_TEST_PROMPTS["asr"]  # the reference's ASR test instruction, as `salmonn eval` asks it
DURATION_SLACK = 0.05  # s: a clip of exactly the limit may decode a few samples longer


class AudioTooLong(AudioError):
    """Audio longer than the server accepts."""


class ContextExceeded(PromptError):
    """A prompt whose tokens and max_tokens do not fit in the LLM's context."""


class Engine:
    def __init__(self, model: "SALMONN", name: str = "salmonn", max_audio_seconds: float = 300.0):
        self.model, self.name = model, name
        m = model.config.model
        self.max_audio_seconds = min(max_audio_seconds, m.max_audio_seconds)
        self.defaults = model.config.generate
        self.default_lora_scale = float(m.lora_scale)
        self.template, self.end_sym = m.prompt_template, m.end_sym
        self.context = int(model.llama_model.config.max_position_embeddings)
        self.longest_token_chars = _longest_token_chars(model.tokenizer)
        model.encode_audio([(np.zeros(A.SAMPLE_RATE, np.float32), A.SAMPLE_RATE)])  # warm the encoders up

    # ------------------------------------------------------------------ audio
    def load_audio(self, data: bytes, label: str = "audio") -> np.ndarray:
        """Encoded audio bytes -> 16 kHz mono float32; AudioError (one line) when unusable or too long. Decoding
        stops as soon as the limit is passed, whatever the header says (or does not say)."""
        if not data:
            raise AudioError(f"{label}: empty audio")
        limit = self.max_audio_seconds
        declared = A.probe_seconds(data)  # may be a bitrate estimate: refuse up front only when well over
        if declared is not None and declared > A.LENGTH_PROBE_SLACK * limit + 1:
            raise self._too_long(label, f"about {declared:.0f} s")
        m = self.model.config.model
        try:
            segments = list(A.iter_segments(data, channel=m.channel, resample=m.resample, name=label,
                                            max_seconds=limit + DURATION_SLACK))
        except A.AudioTooLong:
            raise self._too_long(label, f"more than {limit:g} s") from None
        except AudioError:
            raise
        except Exception as err:  # noqa: BLE001 - a decoder failure is a property of the input
            raise AudioError(f"{label}: could not decode the audio ({type(err).__name__}: {err})") from None
        return np.concatenate(segments)

    def _too_long(self, label: str, seconds: str) -> AudioTooLong:
        return AudioTooLong(f"{label}: {seconds} is longer than this server's limit of {self.max_audio_seconds:g} s")

    def audio_tokens(self, wav: np.ndarray) -> int:
        return clip_tokens(len(wav), self.model.config.model)

    # ------------------------------------------------------------------ prompts
    def build_prompt(self, turns: Sequence[PromptTurn]) -> str:
        """The full templated prompt, rendered by salmonn.prompting.render_text (the form ChatSession uses too).
        Answers come from the client as text, so they are re-tokenised with the rest of the prompt."""
        return render_text(turns, self.template, self.end_sym, hint="send the audio as an input_audio part instead")

    def count_tokens(self, text: str) -> int:
        return len(self.model.tokenizer(text, add_special_tokens=False).input_ids)

    def prompt_tokens(self, prompt: str, wav: np.ndarray, max_new_tokens: int | None = None) -> int:
        """BOS + text tokens around the audio + audio tokens: the LLM input length of this prompt. With
        `max_new_tokens`, ContextExceeded when the prompt and the answer cannot fit in the LLM's context; a text
        too long for any tokenisation to fit is refused before it is tokenised."""
        audio = self.audio_tokens(wav)
        before, after = prompt.split(AUDIO_PLACEHOLDER)
        if max_new_tokens is not None:
            at_least = 1 + audio + math.ceil((len(before) + len(after)) / self.longest_token_chars)
            self._check_fits(at_least, audio, max_new_tokens, "at least ")
        tokens = 1 + self.count_tokens(before) + audio + self.count_tokens(after)
        if max_new_tokens is not None:
            self._check_fits(tokens, audio, max_new_tokens)
        return tokens

    def _check_fits(self, tokens: int, audio: int, max_new_tokens: int, qualifier: str = "") -> None:
        if tokens + max_new_tokens > self.context:
            raise ContextExceeded(
                f"the prompt is {qualifier}{tokens} tokens ({audio} of them audio) and max_tokens is "
                f"{max_new_tokens}: together more than the model's context of {self.context} tokens; shorten the "
                "conversation or the audio, or ask for fewer max_tokens")

    # ------------------------------------------------------------------ answers
    def finish(self, answer: Answer, overrides: dict[str, Any]) -> tuple[str, str]:
        """(text, finish_reason): text cut before the first stop string; "length" when max_tokens ran out without
        an end of sequence or a stop string."""
        stops = overrides.get("stop", self.defaults.stop) or []
        text, found = cut_at_stop(answer.text, stops)
        if found or (stops and cut_at_stop(self.model.tokenizer.decode(answer.token_ids, skip_special_tokens=True),
                                           stops)[1]):
            return text, "stop"  # (the model cuts the text before the stop string itself)
        limit = overrides.get("max_new_tokens", self.defaults.max_new_tokens)
        return text, "length" if len(answer.token_ids) >= limit else "stop"

    def transcription_decoding(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """/v1/audio/transcriptions' settings: a model whose connector was trained to spell (model.ctc_query, as
        SALMONN-mini's) answers as `--preset transcribe` does, under the request's own options (greedy's answer or the
        CTC best path, rescored: far fewer errors on real speech, scripts/mini/results/ctc_rescore_greedy.json),
        unless the request samples or the config rescores already; any other model, as the config decodes."""
        if (self.model.config.model.ctc_query is None or self.defaults.ctc_weight > 0
                or overrides.get("do_sample", self.defaults.do_sample)):
            return overrides
        return {**PRESETS["transcribe"], **overrides}

    # ------------------------------------------------------------------ generation (worker thread only)
    def run(self, rows: list[tuple[np.ndarray, str]], overrides: dict[str, Any], lora_scale: float,
            streamer=None) -> list[Answer]:
        """One generate() call over (16 kHz waveform, full prompt) rows with the same settings."""
        model = self.model
        model.set_lora_scale(lora_scale)
        try:
            return model.generate([(wav, A.SAMPLE_RATE) for wav, _ in rows], [p for _, p in rows], templated=True,
                                  streamer=streamer, **overrides)
        finally:
            if lora_scale != self.default_lora_scale:
                model.set_lora_scale(self.default_lora_scale)


def _longest_token_chars(tokenizer) -> int:
    """The most characters of text one token can stand for (a bound: no text of n characters is fewer than
    n / this tokens). Token strings spell a text's characters or bytes, so their lengths bound it from above."""
    vocabulary = tokenizer.get_vocab()
    return max(1, max(len(token) for token in vocabulary))
