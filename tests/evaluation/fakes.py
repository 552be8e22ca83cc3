"""A stand-in for SALMONN in eval tests: answers depend on the clip, the prompt and the LoRA scale."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from salmonn.config import Config


@dataclass
class FakeAnswer:
    text: str
    token_ids: list


class FakeModel:
    """Implements what ``salmonn.evaluation.run.evaluate`` uses: config, lora_scale, set_lora_scale and
    generate. ``log``: a file that gets one line "RANK AUDIO SCALE" per answered clip."""

    def __init__(self, log: str | Path | None = None, answer=None):
        self.config = Config()
        self.config.source = "fake.yaml"
        self.lora_scale = self.config.model.lora_scale
        self.log, self.answer = log, answer
        self.generated: list[str] = []

    def set_lora_scale(self, scale: float) -> None:
        self.lora_scale = scale

    def generate(self, audio, prompts, **decoding):
        assert len(audio) == len(prompts)
        out = []
        for clip, prompt in zip(audio, prompts):
            name = Path(clip).stem if isinstance(clip, str) else f"array{len(clip[0])}"
            self.generated.append(name)
            if self.log:
                with open(self.log, "a") as f:
                    f.write(f"{os.environ.get('RANK', '0')} {name} {self.lora_scale:g}\n")
            text = self.answer(name, prompt) if self.answer else f"{name} heard: {prompt} at {self.lora_scale:g}"
            out.append(FakeAnswer(text, []))
        return out
