"""What the server needs from a SALMONN model, in one place: audio decoding and limits, prompts, token counts,
and one batched generate() call with its decoding settings and LoRA scale.

Everything except `run` is safe to call from any thread (no model state is touched); `run` is only called on the
batcher's worker thread.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any, Sequence

import numpy as np

from .. import audio as A
from ..errors import AudioError
from ..model import AUDIO_PLACEHOLDER, Answer
from ..prompting import PromptTurn, render_text

ASR_INSTRUCTION = "Recognize the speech and give me the transcription."


@dataclasses.dataclass
class Turn:
    """One user turn (+ the assistant's answer to it, for earlier turns of a conversation)."""
    user: str
    audio: bool = False  # the clip belongs to this turn
    assistant: str | None = None


class Engine:
    def __init__(self, model, name: str = "salmonn", max_audio_seconds: float = 300.0):
        self.model, self.name = model, name
        m = model.config.model
        self.max_audio_seconds = min(max_audio_seconds, m.max_audio_seconds)
        self.defaults = model.config.generate
        self.default_lora_scale = float(m.lora_scale)
        self.template, self.end_sym = m.prompt_template, m.end_sym
        self.truncate_long = m.long_audio == "truncate"
        # audio tokens per <=30 s segment (also warms the encoders up)
        self.tokens_per_segment = int(model.encode_audio([(np.zeros(A.SAMPLE_RATE, np.float32), A.SAMPLE_RATE)])[0]
                                      .shape[0])

    # ------------------------------------------------------------------ audio
    def probe_seconds(self, data: bytes) -> float | None:
        """Duration from the file header when it can be read cheaply (None: unknown until decoded)."""
        try:
            import soundfile as sf
            info = sf.info(io.BytesIO(data))
            if info.samplerate > 0 and info.frames > 0:
                return info.frames / info.samplerate
        except Exception:  # noqa: BLE001 - not a soundfile format: ask the container
            pass
        try:
            import av
            with av.open(io.BytesIO(data)) as container:
                if container.duration:
                    return container.duration / 1_000_000
        except Exception:  # noqa: BLE001
            pass
        return None

    def load_audio(self, data: bytes, label: str = "audio") -> np.ndarray:
        """Encoded audio bytes -> 16 kHz mono float32; AudioError (one line) when unusable or too long."""
        if not data:
            raise AudioError(f"{label}: empty audio")
        limit = self.max_audio_seconds
        seconds = self.probe_seconds(data)
        if seconds is not None and seconds > limit + 0.05:
            raise AudioTooLong(f"{label}: {seconds:.1f} s is longer than this server's limit of {limit:g} s")
        m = self.model.config.model
        try:
            wav = A.load_audio(data, channel=m.channel, resample=m.resample, name=label)
        except AudioError:
            raise
        except Exception as err:  # noqa: BLE001 - a decoder failure is a property of the input
            raise AudioError(f"{label}: could not decode the audio ({type(err).__name__}: {err})") from None
        seconds = len(wav) / A.SAMPLE_RATE
        if seconds > limit + 0.05:
            raise AudioTooLong(f"{label}: {seconds:.1f} s is longer than this server's limit of {limit:g} s")
        return wav

    def audio_tokens(self, wav: np.ndarray) -> int:
        segments = 1 if self.truncate_long else len(A.split_segments(wav))
        return segments * self.tokens_per_segment

    # ------------------------------------------------------------------ prompts
    def build_prompt(self, turns: Sequence[Turn]) -> str:
        """The full templated prompt, rendered by salmonn.prompting.render_text (the form ChatSession uses too):
        each earlier turn as template(user) + " " + answer + end_sym, then template(last user turn); the clip's
        `<Speech><SpeechHere></Speech> ` prefix goes into the user turn that carried the audio. Answers come from
        the client as text, so they are re-tokenised with the rest of the prompt."""
        return render_text([PromptTurn(t.user, int(t.audio), t.assistant) for t in turns], self.template,
                           self.end_sym, hint="send the audio as an input_audio part instead")

    def count_tokens(self, text: str) -> int:
        return len(self.model.tokenizer(text, add_special_tokens=False).input_ids)

    def prompt_tokens(self, prompt: str, wav: np.ndarray) -> int:
        """BOS + text tokens around the audio + audio tokens: the LLM input length of this prompt."""
        before, after = prompt.split(AUDIO_PLACEHOLDER)
        return 1 + self.count_tokens(before) + self.audio_tokens(wav) + self.count_tokens(after)

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


class AudioTooLong(AudioError):
    """Audio longer than the server accepts."""
