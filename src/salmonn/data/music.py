"""Synthetic music for the SALMONN-mini corpus: seeded compositions (instrument, mode, texture, tempo) written as
MIDI and rendered with fluidsynth and the General-MIDI soundfont, with a description of each."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf
import soxr

from salmonn.errors import SalmonnError
from salmonn.frames import SAMPLE_RATE

DEFAULT_SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
FLUIDSYNTH_HINT = "install them with: apt-get install fluidsynth fluid-soundfont-gm"


INSTRUMENTS: dict[str, tuple[int, int, int, bool]] = {  # name -> (GM program, low, high, polyphonic)
    "piano": (0, 48, 84, True),
    "organ": (19, 48, 79, True),
    "guitar": (24, 40, 76, True),
    "marimba": (12, 48, 84, True),
    "violin": (40, 55, 88, False),
    "cello": (42, 36, 67, False),
    "trumpet": (56, 55, 82, False),
    "saxophone": (65, 49, 80, False),
    "flute": (73, 60, 96, False),
    "clarinet": (71, 50, 86, False),
}
INSTRUMENT_NAMES = tuple(INSTRUMENTS)
TEMPI = {"slow": (60, 76), "mid-tempo": (90, 110), "fast": (130, 160)}  # gaps survive +-5 % speed
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
PROGRESSIONS = {
    "major": ((0, 3, 4, 0), (0, 5, 3, 4), (0, 4, 5, 3), (0, 3, 0, 4), (0, 5, 1, 4)),
    "minor": ((0, 3, 4, 0), (0, 5, 2, 6), (0, 6, 5, 4), (0, 3, 6, 4), (0, 5, 3, 4)),
}
_RHYTHMS = ((1, 1, 1, 1), (2, 1, 1), (1, 1, 2), (0.5, 0.5, 1, 1, 1), (1.5, 0.5, 2), (1, 0.5, 0.5, 2),
            (3, 1), (0.5, 0.5, 0.5, 0.5, 2))


def _vlq(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    return bytes(reversed(out))


def write_midi(path: str | os.PathLike, notes: Sequence[tuple[float, float, int, int]], *,
               tempo_bpm: float, program: int, tpq: int = 480) -> None:
    """Write a format-0 Standard MIDI File: ``notes`` = (start_beat, length_beats, pitch, velocity)."""
    events: list[tuple[int, int, bytes]] = []  # (tick, order: offs before ons, message)
    for start, length, pitch, vel in notes:
        on = int(round(start * tpq))
        off = max(on + 1, int(round((start + length) * tpq)))
        events.append((on, 1, bytes([0x90, pitch, vel])))
        events.append((off, 0, bytes([0x80, pitch, 0])))
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    us_per_beat = int(round(60_000_000 / tempo_bpm))
    track = _vlq(0) + b"\xff\x51\x03" + us_per_beat.to_bytes(3, "big")
    track += _vlq(0) + bytes([0xC0, program])
    last = 0
    for tick, _, msg in events:
        track += _vlq(tick - last) + msg
        last = tick
    track += _vlq(0) + b"\xff\x2f\x00"
    data = b"MThd" + struct.pack(">IHHH", 6, 0, 1, tpq) + b"MTrk" + struct.pack(">I", len(track)) + track
    Path(path).write_bytes(data)


def compose(rng: np.random.Generator, *, instrument: str, mode: str, texture: str, root: int,
            bars: int) -> list[tuple[float, float, int, int]]:
    """Notes (start_beat, beats, pitch, velocity) of a short 4/4 piece.

    ``bars`` >= 2: ``bars - 1`` full bars, then a half bar holding the tonic (chord): 4 * bars - 2 beats.
    """
    if bars < 2:
        raise SalmonnError(f"compose: bars={bars}, need at least 2")
    _, lo, hi, _ = INSTRUMENTS[instrument]
    scale = SCALES[mode]
    prog = PROGRESSIONS[mode][int(rng.integers(len(PROGRESSIONS[mode])))]
    chords = [prog[i % len(prog)] for i in range(bars - 1)] + [0]
    # tonic in the lower-middle of the range
    tonic = lo + ((root - lo) % 12)
    if tonic + 12 <= (lo + hi) // 2:
        tonic += 12

    def pitch(degree: int, base: int) -> int:
        octave, d = divmod(degree, 7)
        return base + 12 * octave + scale[d]

    def vel() -> int:
        return int(rng.integers(70, 105))

    notes: list[tuple[float, float, int, int]] = []
    mel_base = tonic if texture != "melody with chords" else min(tonic + 12, hi - 12)
    chord_base = tonic - 12 if tonic - 12 >= lo else tonic
    deg = 0
    for b, c in enumerate(chords):
        t0 = 4.0 * b
        last = b == bars - 1
        if texture in ("chords", "melody with chords"):
            tones = [pitch(c + k, chord_base) for k in (0, 2, 4)]
            hits = (2.0,) if last else (4.0,) if rng.random() < 0.5 else (2.0, 2.0)
            s = t0
            for h in hits:
                for p in tones:
                    notes.append((s, h * 0.95, p, vel() - 10))
                s += h
        if texture == "arpeggios":
            tones = [pitch(c + k, mel_base) for k in (0, 2, 4, 7)]
            seq = tones + tones[-2:0:-1] if rng.random() < 0.5 else tones + tones
            if last:
                notes.append((t0, 2.0, tones[0], vel()))
            else:
                for i, p in enumerate(seq[:8]):
                    notes.append((t0 + 0.5 * i, 0.5, p, vel()))
        if texture in ("melody", "melody with chords"):
            if last:
                notes.append((t0, 2.0, pitch(0, mel_base), vel()))
                continue
            rhythm = _RHYTHMS[int(rng.integers(len(_RHYTHMS)))]
            s = t0
            for i, d in enumerate(rhythm):
                if i == 0:  # chord tone on the downbeat, nearest to the current degree
                    cands = [c + k + 7 * o for k in (0, 2, 4) for o in (-1, 0, 1)]
                    deg = min(cands, key=lambda x: (abs(x - deg), x))
                else:
                    deg += int(rng.choice((-2, -1, -1, 1, 1, 2, 0)))
                deg = int(np.clip(deg, -2, 9))
                p = pitch(deg, mel_base)
                while p > hi:
                    p -= 12
                while p < lo:
                    p += 12
                notes.append((s, d * 0.95, p, vel()))
                s += d
    return notes


def render_midi(path: str | os.PathLike, soundfont: str | os.PathLike = DEFAULT_SOUNDFONT) -> np.ndarray:
    """Render a MIDI file with fluidsynth (no reverb/chorus); float mono at 16 kHz."""
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise SalmonnError(f"fluidsynth not found; {FLUIDSYNTH_HINT}")
    if not Path(soundfont).is_file():
        raise SalmonnError(f"{soundfont}: soundfont not found; {FLUIDSYNTH_HINT}")
    with tempfile.TemporaryDirectory(prefix="salmonn-fs-") as tmp:
        out = Path(tmp) / "out.wav"
        proc = subprocess.run(
            [exe, "-ni", "-q", "-g", "0.5", "-r", "32000", "-R", "0", "-C", "0", "-T", "wav",
             "-O", "s16", "-F", str(out), str(soundfont), str(path)],
            capture_output=True, check=False, stdin=subprocess.DEVNULL)
        if proc.returncode != 0 or not out.is_file():
            raise SalmonnError(f"fluidsynth failed on {path}: {proc.stderr.decode(errors='replace').strip()}")
        x, sr = sf.read(out, dtype="float64")
    if x.ndim > 1:
        x = x.mean(axis=1)
    return soxr.resample(x, sr, SAMPLE_RATE)


def music_description(rng: np.random.Generator, tempo: str, inst: str, texture: str, mode: str) -> str:
    key = f"in a {mode} key"
    if texture == "melody":
        opts = (f"a {tempo} {inst} melody {key}", f"a {tempo} melody played on the {inst} {key}")
    elif texture == "chords":
        opts = (f"{tempo} {inst} chords {key}", f"a {tempo} chord progression on the {inst} {key}")
    elif texture == "arpeggios":
        opts = (f"{tempo} arpeggios played on the {inst} {key}", f"a {tempo} {inst} piece of broken chords {key}")
    else:
        opts = (f"a {tempo} {inst} piece with a melody over chords {key}",
                f"a {tempo} {inst} tune with melody and chords {key}")
    return str(rng.choice(opts))
