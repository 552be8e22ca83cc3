"""On-disk cache of the frozen encoders' outputs.

Whisper and BEATs are frozen in all three stages, so their outputs for a clip never change: compute
`SALMONN.encode` once per clip and store it as safetensors. The key is a SHA-256 of the clip's files (path, mtime,
size; expand_wav clips included) and of the encoder identity (backbone files, dtype, audio front-end settings),
so editing a file or changing a backbone makes a new entry instead of reusing a stale one.

Each entry holds `whisper` [segments, 1500, Cs] and, with BEATs, `beats` [segments, T', Ca] with each segment's
valid length `beats_len` [segments] (the tokens a clip has on its own: batch padding never enters the cache).
With model.whisper_full_window=False, `whisper` is [segments, F, Cs] (F = the clip's longest segment's frames)
and `whisper_len` [segments] holds each segment's own Whisper frames.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import torch
from safetensors.torch import load_file, save_file

from .. import audio as A
from ..features import whisper_log_mel
from ..checkpoint import atomic_save
from ..errors import ConfigError
from .data import Sample, load_segments

if TYPE_CHECKING:
    from ..config import ModelConfig
    from ..model import SALMONN

CACHE_FORMAT = 1
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _stat(path: str | os.PathLike) -> list:
    p = Path(path)
    if p.is_dir():
        return [str(p.resolve()), sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns)
                                        for f in p.iterdir() if f.is_file())]
    st = p.stat()
    return [str(p.resolve()), st.st_size, st.st_mtime_ns]


def encoder_identity(model_cfg: ModelConfig) -> str:
    """What the cached outputs depend on besides the clip: backbone files and front-end settings."""
    m = model_cfg
    if not m.freeze_whisper or (m.beats_path and not m.freeze_beats):
        raise ConfigError("datasets.cache_dir: the encoder cache needs frozen encoders (model.freeze_whisper and "
                          "model.freeze_beats true); unset cache_dir to train them")
    if m.reference_batching:
        raise ConfigError("datasets.cache_dir: the cache stores each clip's own outputs, which the reference's "
                          "batch padding changes; set model.reference_batching=false or unset cache_dir")
    parts = {"format": CACHE_FORMAT, "whisper": _stat(m.whisper_path) if Path(m.whisper_path).exists() else m.whisper_path,
             "beats": _stat(m.beats_path) if m.beats_path else "", "dtype": m.dtype, "channel": m.channel,
             "resample": m.resample, "long_audio": m.long_audio}
    if not m.whisper_full_window:  # only then, so that existing full-window entries keep their keys
        parts["whisper_frames"] = "clip"
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class FrozenCache:
    def __init__(self, directory: str | os.PathLike, identity: str, dtype: str = "float32"):
        self.root = Path(directory) / identity[:16]
        self.identity, self.dtype = identity, _DTYPES[dtype]

    def key(self, sample: Sample) -> str:
        files = [_stat(p) for p in [sample.path, *sample.expand]]
        return hashlib.sha256(json.dumps([self.identity, files]).encode()).hexdigest()

    def file(self, sample: Sample) -> Path:
        key = self.key(sample)
        return self.root / key[:2] / f"{key}.safetensors"

    def has(self, sample: Sample) -> bool:
        return self.file(sample).is_file()

    def load(self, sample: Sample) -> dict[str, torch.Tensor]:
        tensors = load_file(self.file(sample))
        out = {"whisper": tensors["whisper"].float()}
        if "whisper_len" in tensors:
            out["whisper_len"] = tensors["whisper_len"]
        if "beats" in tensors:
            out.update(beats=tensors["beats"].float(), beats_len=tensors["beats_len"])
        else:
            out["beats"] = None
        return out

    def store(self, sample: Sample, whisper: torch.Tensor, beats: torch.Tensor | None, beats_len: torch.Tensor | None,
              whisper_len: torch.Tensor | None = None):
        if whisper_len is not None:
            whisper = whisper[:, :int(whisper_len.max())]
        tensors = {"whisper": whisper.detach().to("cpu", self.dtype).contiguous()}
        if whisper_len is not None:
            tensors["whisper_len"] = whisper_len.to("cpu", torch.int64).contiguous()
        if beats is not None:
            width = int(beats_len.max())
            tensors["beats"] = beats[:, :width].detach().to("cpu", self.dtype).contiguous()
            tensors["beats_len"] = beats_len.to("cpu", torch.int64).contiguous()
        atomic_save(lambda p: save_file(tensors, str(p), metadata={"identity": self.identity,
                                                                    "source": sample.path}), self.file(sample))


@torch.no_grad()
def encode_clips(model: "SALMONN", samples: Sequence[Sample]) -> list[dict[str, torch.Tensor | None]]:
    """The frozen encoders' outputs of each sample, as `FrozenCache.load` gives them: `whisper` [segments, F, Cs]
    (+ `whisper_len` with model.whisper_full_window=False), `beats` [segments, T', Ca] + `beats_len`, or None."""
    clips = [load_segments(s, model.config.model) for s in samples]
    segments = [seg for clip in clips for seg in clip]
    spectrogram = whisper_log_mel(segments, model.feature_extractor).to(model.device)
    raw_wav, padding_mask = A.batch_waveforms(segments)
    frozen = model.encode(spectrogram, raw_wav.to(model.device), padding_mask.to(model.device))
    whisper, beats, mask, frames = frozen.speech, frozen.audio, frozen.audio_mask, frozen.speech_frames
    out, at = [], 0
    for clip in clips:
        n = len(clip)
        entry = {"whisper": whisper[at:at + n], "beats": None}
        if frames is not None:
            entry["whisper_len"] = frames[at:at + n]
            entry["whisper"] = entry["whisper"][:, :int(entry["whisper_len"].max())]
        if beats is not None:
            lengths = (~mask[at:at + n]).sum(-1)
            entry.update(beats=beats[at:at + n, :int(lengths.max())], beats_len=lengths)
        out.append(entry)
        at += n
    return out


@torch.no_grad()
def fill_cache(model: "SALMONN", samples: Sequence[Sample], cache: FrozenCache, batch_size: int, rank: int = 0,
               world: int = 1, progress: Callable | None = None) -> int:
    """Compute and store the entries that are missing (this rank's share). Returns how many this rank wrote."""
    unique = {}
    for s in samples:
        unique.setdefault(cache.key(s), s)
    missing = [s for _, s in sorted(unique.items()) if not cache.has(s)][rank::world]
    bar = progress(total=len(missing)) if progress and missing else None
    for start in range(0, len(missing), batch_size):
        chunk = missing[start:start + batch_size]
        for sample, entry in zip(chunk, encode_clips(model, chunk)):
            cache.store(sample, entry["whisper"], entry["beats"], entry.get("beats_len"), entry.get("whisper_len"))
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return len(missing)
