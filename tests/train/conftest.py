"""Tiny training runs: the reference-tiny fixture's backbones (fresh trainable weights) on generated audio."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from salmonn import jsonl
from salmonn.frames import SAMPLE_RATE

from ..conftest import FIXTURE, ROOT

CONFIGS = ROOT / "configs" / "train"
SR = SAMPLE_RATE
# Four 10 s clips whose captions depend on the audio (the tiny random encoders tell them apart only faintly).
CLIPS = {"tone": "a steady tone", "noise": "loud noise", "quiet": "near silence", "clicks": "fast clicks"}


def make_clip(kind: str, seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    if kind == "tone":
        return 0.5 * np.sin(2 * np.pi * 440 * t)
    if kind == "noise":
        return 0.3 * rng.standard_normal(t.size)
    if kind == "quiet":
        return 0.001 * rng.standard_normal(t.size)
    clicks = np.zeros(t.size)
    clicks[::1600] = 0.9
    return clicks


def write_jsonl(path: Path, records: list[dict]) -> Path:
    jsonl.write_jsonl(path, records)
    return path


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """data/: 4 clips, prompts.json, train.jsonl, valid.json (annotation layout), and a shared encoder cache."""
    root = tmp_path_factory.mktemp("corpus")
    records = []
    for kind, text in CLIPS.items():
        sf.write(root / f"{kind}.wav", make_clip(kind, 10.0).astype(np.float32), SR)
        records.append({"path": f"{kind}.wav", "text": text, "task": "audiocaption"})
    write_jsonl(root / "train.jsonl", records)
    (root / "valid.json").write_text(json.dumps({"annotation": records[:2]}))
    (root / "prompts.json").write_text(json.dumps({
        "audiocaption": ["Describe the audio.", "What do you hear?"],
        "asr": ["<Speech><SpeechHere></Speech> Transcribe the speech."],
        "QA": ["{}"],
        "audio_story_telling": ["Based on the audio, write a story in detail."]}))
    return root


def tiny(corpus: Path, out: Path, *extra: str) -> list[str]:
    """Overrides that turn a shipped stage recipe into a tiny CPU run on the corpus."""
    return [f"model.llama_path={FIXTURE / 'llama'}", f"model.whisper_path={FIXTURE / 'whisper'}",
            f"model.beats_path={FIXTURE / 'beats.pt'}", "model.qformer_hidden_size=64",
            "model.qformer_num_attention_heads=4", "model.qformer_intermediate_size=128", "model.dtype=float32",
            "model.device=cpu", f"model.prompt_path={corpus / 'prompts.json'}",
            f"datasets.train_ann_path={corpus / 'train.jsonl'}", "datasets.valid_ann_path=",
            f"datasets.cache_dir={corpus / 'cache'}", f"run.output_dir={out}", "run.device=cpu",
            "run.batch_size_train=2", "run.batch_size_eval=2", "run.num_workers=0", "run.progress=false",
            "run.save_every=0", "run.num_sample_generations=1", "run.sample_max_new_tokens=4",
            # the fixture LLM's random head gives near-uniform logits; training it too lets the loss fall fast
            "run.unfreeze=[lm_head,model.model.norm.weight]",
            "run.optims.warmup_steps=2", "run.optims.warmup_start_lr=1e-4", "run.optims.init_lr=5e-3",
            "run.optims.min_lr=1e-3", "generate.num_beams=1", "generate.max_new_tokens=8", *extra]


def metrics(out: Path, kind: str = "train") -> list[dict]:
    rows = jsonl.read_jsonl(out / "metrics.jsonl", strict=True)
    return [r for r in rows if r["type"] == kind]


def run_stage(config: str, corpus: Path, out: Path, *extra: str, resume: bool = False, **options):
    from salmonn.train.config import load_train_config
    from salmonn.train.trainer import train
    return train(load_train_config(CONFIGS / config, tiny(corpus, out, *extra)), resume=resume, **options)
