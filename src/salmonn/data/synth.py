"""Seeded synthetic corpus for training a small SALMONN ("SALMONN-mini") on a CPU.

Everything is generated locally from Debian packages and numpy, in the reference annotation
format (SPEC §3): one ``<split>.json`` per split with
``{"annotation": [{"path", "text", "task", "Q"?}]}`` (paths relative to the annotation file's
folder), plus ``prompts.json`` (task -> instruction variants), ``summary.json`` (counts and
hours) and ``meta/<split>.jsonl`` (one line per clip with everything that was drawn for it:
voice, sentence, class, SNR, augmentation...; not read by the trainer).

Content (16 kHz mono PCM16 wav, 1-8 s per clip):

* ``speech``: espeak-ng voices (8 English accents x male/female variants), sentences from the
  ``fortunes`` packages. Tasks ``asr`` and ``gender_recognition`` on the same clip.
* ``qa``: spoken questions with known answers (arithmetic, capitals, colours, animals, next
  day/month); task ``QA``, ``Q`` empty (the question is in the audio), text = the answer,
  ``question`` = what is said (so that following-rate checks can tell an echo from an answer).
  The ``opposites`` family never appears in train/test; it forms the ``sqa_test`` split, for
  evaluating spoken-question answering as an untrained instruction.
* ``events``: ten procedurally synthesised sound-event classes (one or two per clip). Tasks
  ``audiocaption`` and (single-class clips) ``sound_event``.
* ``music``: MIDI written here, rendered by fluidsynth with the FluidR3 GM soundfont; ten
  instruments, three tempo classes, major/minor, four textures. Tasks ``music_description``
  and ``instrument``.
* ``mix``: speech over a sound event at 0/5/10/20 dB SNR. Tasks ``asr`` and ``audiocaption``.

Every clip then goes through a seeded augmentation chain (speed perturbation, synthetic-RIR
reverberation, 8/11.025/22.05 kHz resampling round trip, additive noise, level change).
All targets are lower case without punctuation.

Held out: every split other than ``train`` (e.g. ``test``) draws from sentences, voice variants
and QA items that ``train`` never uses; the partition is a fixed function of the sentence /
variant / item, independent of the seed, so a model trained on one seed's ``train`` can be
tested on another seed's ``test``. Each split has its own random streams.

Reproducible: each clip is a pure function of (seed, split, kind, index), so the same seed gives
byte-identical files whatever the number of worker processes.

System requirements (Debian): ``apt-get install espeak-ng fluidsynth fluid-soundfont-gm fortunes
fortunes-min``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import multiprocessing
import os
import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import soundfile as sf
import soxr

from salmonn.errors import SalmonnError

SR = 16000
MIN_SECONDS = 1.0
MAX_SECONDS = 8.0

APT_PACKAGES = ("espeak-ng", "fluidsynth", "fluid-soundfont-gm", "fortunes", "fortunes-min")
DEFAULT_SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
DEFAULT_FORTUNES_DIR = "/usr/share/games/fortunes"
_APT_HINT = "install the corpus tools with: apt-get install " + " ".join(APT_PACKAGES)

# ----------------------------------------------------------------------------- voices
ACCENTS = (
    "en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
    "en-029", "en-us-nyc",
)
# espeak-ng voice variants (voices/!v/<name>; their own "gender" line agrees with these labels).
# Variants that are near-copies of each other (steph*, belinda/linda) sit in the same split.
# Marco (high male) and aunty (low female) are left out so that the two genders do not
# overlap in pitch after the pitch and speed ranges used here.
TRAIN_VARIANTS = {
    "male": ("m1", "m2", "m3", "m4", "m5", "m6", "Denis", "Diogo", "Henrique", "Hugo",
             "antonio", "miguel", "travis"),
    "female": ("f1", "f2", "f3", "f4", "Alicia", "anika", "belinda", "linda", "steph",
               "steph2", "steph3"),
}
TEST_VARIANTS = {
    "male": ("m7", "m8", "michel", "sandro", "victor"),
    "female": ("f5", "Andrea", "Annie", "grandma"),
}
RATE_WPM = (120, 200)
NEURAL_SPEED = (0.85, 1.2)  # Kokoro's speed factor (1 = its natural rate)
PITCH = {"male": (30, 60), "female": (40, 70)}  # espeak-ng -p, 0..99

# ----------------------------------------------------------------------------- sentences
# Files of the fortunes packages that are not plain prose, or too often offensive.
_FORTUNE_SKIP = frozenset({
    "art", "ascii-art", "translate-me", "perl", "ethnic", "men-women", "drugs", "politics",
    "linuxcookie", "debian", "knghtbrd", "zippy", "computers", "linux",
})
_WORD = re.compile(r"^[A-Za-z]+(?:'[A-Za-z]+)?$")
# words of one or two letters that are real words (drops fragments like "ot", initials, units)
_SHORT_WORDS = frozenset("a i am an as at be by do go he if in is it me my no of oh on or so to up us we ok".split())


def _held_out(key: str, percent: int = 20) -> bool:
    """Fixed, seed-independent membership of a sentence / item in the held-out pool."""
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) % 100 < percent


def load_sentences(fortunes_dir: str | os.PathLike = DEFAULT_FORTUNES_DIR) -> list[str]:
    """Clean sentences of 4-14 words (ASCII letters, apostrophes inside words) from fortune files.

    Returned lower case, without punctuation, sorted, deduplicated. Skips the ``off/`` folder
    (offensive fortunes), non-prose files and anything in all capitals.
    """
    root = Path(fortunes_dir)
    if not root.is_dir():
        raise SalmonnError(f"{root}: fortune files not found; {_APT_HINT}")
    found: set[str] = set()
    for f in sorted(root.iterdir()):
        if not f.is_file() or f.suffix in (".dat", ".u8") or f.name in _FORTUNE_SKIP:
            continue
        text = f.read_text("latin-1")
        for fortune in re.split(r"^%\s*$", text, flags=re.M):
            lines = [ln.strip() for ln in fortune.splitlines()
                     if ln.strip() and not ln.strip().startswith("--") and not ln.startswith("\t\t")]
            for sent in re.split(r"(?<=[.!?])\s+", " ".join(lines)):
                sent = sent.strip()
                if not sent or sent[-1] not in ".!?":
                    continue
                toks = [t.strip(",;:") for t in sent[:-1].split()]
                if not 4 <= len(toks) <= 14:
                    continue
                if not all(_WORD.match(t) for t in toks):
                    continue
                if any(len(t) > 1 and t.isupper() for t in toks):
                    continue
                if any(len(t) <= 2 and t.lower() not in _SHORT_WORDS for t in toks):
                    continue
                found.add(" ".join(toks).lower())
    if len(found) < 50:
        raise SalmonnError(f"{root}: only {len(found)} usable sentences; {_APT_HINT}")
    return sorted(found)


# ----------------------------------------------------------------------------- spoken QA
_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
          "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """0..100 in words, e.g. 42 -> 'forty two'."""
    if n < 20:
        return _UNITS[n]
    if n == 100:
        return "one hundred"
    t, u = divmod(n, 10)
    return _TENS[t] + ("" if u == 0 else " " + _UNITS[u])


def _qa_families() -> dict[str, list[tuple[list[str], str]]]:
    """family -> [(question phrasings, answer)]."""
    fam: dict[str, list[tuple[list[str], str]]] = {}
    arith = []
    for a in range(1, 11):
        for b in range(1, 11):
            wa, wb = number_words(a), number_words(b)
            arith.append(([f"what is {wa} plus {wb}", f"how much is {wa} plus {wb}",
                           f"what do you get if you add {wa} and {wb}"], number_words(a + b)))
            if a > b:
                arith.append(([f"what is {wa} minus {wb}", f"how much is {wa} minus {wb}",
                               f"what is {wb} less than {wa}"], number_words(a - b)))
            if a <= 9 and b <= 9 and a >= 2 and b >= 2:
                arith.append(([f"what is {wa} times {wb}", f"how much is {wa} times {wb}",
                               f"what is {wa} multiplied by {wb}"], number_words(a * b)))
    fam["arithmetic"] = arith
    capitals = {
        "france": "paris", "germany": "berlin", "italy": "rome", "spain": "madrid",
        "japan": "tokyo", "china": "beijing", "russia": "moscow", "egypt": "cairo",
        "greece": "athens", "portugal": "lisbon", "ireland": "dublin", "norway": "oslo",
        "sweden": "stockholm", "finland": "helsinki", "denmark": "copenhagen",
        "austria": "vienna", "poland": "warsaw", "hungary": "budapest", "canada": "ottawa",
        "australia": "canberra", "kenya": "nairobi", "peru": "lima", "cuba": "havana",
        "thailand": "bangkok", "england": "london", "scotland": "edinburgh",
        "belgium": "brussels", "the netherlands": "amsterdam", "turkey": "ankara",
        "argentina": "buenos aires", "mexico": "mexico city", "india": "new delhi",
        "south korea": "seoul", "iran": "tehran", "chile": "santiago", "iceland": "reykjavik",
    }
    fam["capitals"] = [([f"what is the capital of {c}", f"which city is the capital of {c}",
                         f"name the capital city of {c}"], a) for c, a in capitals.items()]
    colours = {
        "the sky on a clear day": "blue", "fresh grass": "green", "snow": "white",
        "a ripe banana": "yellow", "coal": "black", "a ripe tomato": "red", "milk": "white",
        "a lemon": "yellow", "chocolate": "brown", "a carrot": "orange", "the sea": "blue",
        "a strawberry": "red", "a crow": "black", "a pumpkin": "orange", "a frog": "green",
        "an elephant": "grey", "a flamingo": "pink", "a polar bear": "white",
        "a fire engine": "red", "a lime": "green", "a plum": "purple", "the sun": "yellow",
    }
    fam["colours"] = [([f"what colour is {o}", f"what is the colour of {o}",
                        f"tell me the colour of {o}"], a) for o, a in colours.items()]
    animals = {
        "moo": "cow", "woof": "dog", "meow": "cat", "oink": "pig", "baa": "sheep",
        "quack": "duck", "neigh": "horse", "hoot": "owl", "roar": "lion", "hiss": "snake",
        "buzz": "bee", "croak": "frog", "cluck": "chicken", "squeak": "mouse",
    }
    fam["animals"] = [([f"which animal says {s}", f"what animal goes {s}",
                        f"which animal makes the sound {s}"], a) for s, a in animals.items()]
    days = "monday tuesday wednesday thursday friday saturday sunday".split()
    months = ("january february march april may june july august september october november "
              "december").split()
    seq = []
    for name, items in (("day", days), ("month", months)):
        for i, it in enumerate(items):
            nxt = items[(i + 1) % len(items)]
            seq.append(([f"what {name} comes after {it}", f"which {name} follows {it}",
                         f"what is the {name} after {it}"], nxt))
    fam["sequence"] = seq
    opposites = {
        "hot": "cold", "big": "small", "up": "down", "fast": "slow", "happy": "sad",
        "light": "dark", "open": "closed", "early": "late", "tall": "short", "full": "empty",
        "old": "new", "wet": "dry", "hard": "soft", "loud": "quiet", "rich": "poor",
        "thick": "thin", "heavy": "light", "inside": "outside", "strong": "weak",
        "day": "night", "left": "right", "win": "lose", "true": "false", "clean": "dirty",
        "black": "white", "first": "last", "push": "pull", "above": "below",
    }
    fam["opposites"] = [([f"what is the opposite of {w}", f"what word means the opposite of {w}",
                          f"tell me the opposite of {w}"], a) for w, a in opposites.items()]
    return fam


QA_FAMILIES = _qa_families()
SQA_FAMILY = "opposites"  # never in train/test: the sqa_test split (untrained-instruction eval)
TRAINED_QA_FAMILIES = tuple(f for f in QA_FAMILIES if f != SQA_FAMILY)

_OPEN_TOPICS = (
    "a bicycle", "a kitchen", "the moon", "a river", "a library", "a piano", "an umbrella", "a volcano",
    "a hospital", "the ocean", "a garden", "a camera", "a bridge", "a forest", "a clock", "a train",
    "a desert", "a farm", "a museum", "the weather", "a mountain", "a market", "a lighthouse", "a computer",
    "a teacher", "a doctor", "a painter", "a baker", "a pilot", "a farmer", "an island", "a castle",
    "a rainbow", "a storm", "winter", "summer", "breakfast", "a birthday", "a map", "a letter",
    "a telescope", "a candle", "a violin", "a honey bee", "a whale", "a penguin", "an airport", "a school",
)
_OPEN_FORMS = ("tell me one thing about {}", "what is {} used for", "describe {} in one sentence",
               "why do people like {}", "what do you know about {}")


def open_questions() -> list[str]:
    """Everyday questions without a reference answer: their targets are SmolLM2's own answers."""
    return [form.format(topic) for topic in _OPEN_TOPICS for form in _OPEN_FORMS]


# ----------------------------------------------------------------------------- prompts


def mini_prompts() -> dict[str, list[str]]:
    """Task -> instruction variants for this corpus.

    The template adds ``<Speech><SpeechHere></Speech>``; no variant contains it. ``{}`` would take
    the sample's ``Q``; no task of this corpus uses it (spoken questions carry ``Q == ""``).
    """
    return {
        "asr": [
            "Recognize the speech and give me the transcription.",
            "Transcribe the speech.",
            "Write down exactly what the speaker says.",
            "What does the person say? Give the exact words.",
            "Listen to the speech and write it down word for word.",
        ],
        "gender_recognition": [
            "Is the speaker male or female?",
            "What is the gender of the speaker? Answer male or female.",
            "Identify the speaker's gender.",
            "Tell me whether a man or a woman is speaking: answer male or female.",
        ],
        "QA": [
            "Answer the question in the audio.",
            "Listen to the spoken question and answer it briefly.",
            "Please answer the question the speaker asks.",
            "The speaker asks a question. What is the answer?",
        ],
        "audiocaption": [
            "Describe the audio.",
            "Write a short caption for the audio.",
            "What can you hear in this recording? Answer in one sentence.",
            "Please describe the sounds you hear.",
        ],
        "sound_event": [
            "What sound event is this? Answer with its name.",
            "Name the sound you hear.",
            "Classify the sound event in the audio.",
        ],
        "music_description": [
            "Describe the music.",
            "Write a short description of this music: tempo, instrument and key.",
            "What kind of music is this?",
            "Listen to the music and describe it in one sentence.",
        ],
        "instrument": [
            "Which instrument is playing?",
            "Name the musical instrument you hear.",
            "What instrument is this? Answer with its name.",
        ],
    }


# ----------------------------------------------------------------------------- tools


def check_tools(*, speech: bool = True, music: bool = True,
                soundfont: str | os.PathLike = DEFAULT_SOUNDFONT,
                fortunes_dir: str | os.PathLike = DEFAULT_FORTUNES_DIR) -> None:
    """Raise SalmonnError naming every missing system tool and the apt packages to install."""
    missing = []
    if speech:
        if shutil.which("espeak-ng") is None:
            missing.append("espeak-ng (program, apt package espeak-ng)")
        if not Path(fortunes_dir).is_dir() or not any(Path(fortunes_dir).iterdir()):
            missing.append(f"{fortunes_dir} (apt packages fortunes, fortunes-min)")
    if music:
        if shutil.which("fluidsynth") is None:
            missing.append("fluidsynth (program, apt package fluidsynth)")
        if not Path(soundfont).is_file():
            missing.append(f"{soundfont} (apt package fluid-soundfont-gm)")
    if missing:
        raise SalmonnError("synthetic corpus: missing " + "; ".join(missing) + f"; {_APT_HINT}")


# ----------------------------------------------------------------------------- dsp helpers


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)) + 1e-20))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / _rms(x)


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """Pad with zeros or cut to exactly n samples."""
    if len(x) >= n:
        return x[:n]
    return np.concatenate([x, np.zeros(n - len(x))])


def _band_noise(rng: np.random.Generator, n: int, lo: float, hi: float,
                slope: float = 0.0) -> np.ndarray:
    """Unit-RMS noise limited to [lo, hi] Hz with a spectral tilt f**-slope (1.0 = pink power)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    gain = ((f >= lo) & (f <= hi)).astype(float)
    if slope:
        gain *= np.power(np.maximum(f, 1.0), -slope / 2)
    return _unit(np.fft.irfft(spec * gain, n))


def _conv(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Linear convolution via FFT, trimmed to len(x)."""
    n = len(x) + len(h) - 1
    nfft = 1 << (n - 1).bit_length()
    return np.fft.irfft(np.fft.rfft(x, nfft) * np.fft.rfft(h, nfft), nfft)[: len(x)]


def _phase(freq: np.ndarray) -> np.ndarray:
    return 2 * np.pi * np.cumsum(freq) / SR


def _fade(x: np.ndarray, seconds: float = 0.02) -> np.ndarray:
    m = min(int(seconds * SR), len(x) // 2)
    if m > 0:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, m))
        x = x.copy()
        x[:m] *= ramp
        x[-m:] *= ramp[::-1]
    return x


def _impulses(n: int, times: Iterable[float], amps: Iterable[float]) -> np.ndarray:
    out = np.zeros(n)
    for t, a in zip(times, amps):
        i = int(t * SR)
        if 0 <= i < n:
            out[i] += a
    return out


# ----------------------------------------------------------------------------- sound events


def _ev_dog(rng: np.random.Generator, n: int) -> np.ndarray:
    out = np.zeros(n)
    t0 = rng.uniform(0.05, 0.4)
    f_base = rng.uniform(450, 850)
    rough_hz = rng.uniform(30, 60)
    while True:
        d = rng.uniform(0.12, 0.28)
        m, s = int(d * SR), int(t0 * SR)
        if s + m > n:
            break
        tt = np.arange(m) / SR
        f = f_base * rng.uniform(0.9, 1.1) * (1 + 0.3 * np.exp(-tt / 0.03)) * (1 - 0.35 * tt / d)
        ph = _phase(f)
        harm = sum(np.sin(k * ph) / k for k in range(1, 8) if k * f.max() < 7500)
        noise = 0.3 * _band_noise(rng, m, 700, 4000)
        env = (1 - np.exp(-tt / 0.006)) * np.exp(-tt / (0.35 * d))
        out[s:s + m] += (harm + noise) * env * (1 + 0.4 * np.sin(2 * np.pi * rough_hz * tt))
        t0 += d + rng.uniform(0.15, 0.6)
    return out


def _ev_siren(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.arange(n) / SR
    lo = rng.uniform(550, 850)
    hi = lo * rng.uniform(1.6, 2.2)
    if rng.random() < 0.6:  # wail
        lfo = 0.5 - 0.5 * np.cos(2 * np.pi * rng.uniform(0.15, 0.45) * t + rng.uniform(0, 2 * np.pi))
    else:  # yelp
        lfo = np.mod(rng.uniform(2.5, 5.0) * t + rng.random(), 1.0)
    ph = _phase(lo + (hi - lo) * lfo)
    return _fade(np.sin(ph) + 0.35 * np.sin(2 * ph) + 0.15 * np.sin(3 * ph), 0.05)


def _ev_alarm(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.arange(n) / SR
    f1 = rng.uniform(1800, 3200)
    period, duty = rng.uniform(0.2, 0.6), rng.uniform(0.35, 0.6)
    cyc = t / period + rng.random()
    gate = (np.mod(cyc, 1.0) < duty).astype(float)
    gate = _conv(gate, np.hanning(int(0.004 * SR)) / (0.002 * SR))
    f = np.full(n, f1)
    if rng.random() < 0.35:  # two-tone alarm
        f = np.where(np.mod(np.floor(cyc), 2) == 0, f1, f1 * rng.uniform(0.72, 0.85))
    ph = _phase(f)
    return gate * (np.sin(ph) + 0.25 * np.sin(2 * ph) * (2 * f1 < 7800))


def _ev_rain(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.arange(n) / SR
    base = _band_noise(rng, n, 300, 7800, slope=rng.uniform(0.3, 1.0))
    base *= 1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t + rng.uniform(0, 6.3))
    drops = np.zeros(n)
    for _ in range(3):
        k = int(rng.uniform(15, 50) * n / SR)
        imp = _impulses(n, rng.uniform(0, n / SR, k), rng.lognormal(0, 0.5, k))
        kt = np.arange(int(0.012 * SR)) / SR
        kern = np.sin(2 * np.pi * rng.uniform(2000, 6000) * kt) * np.exp(-kt / rng.uniform(0.002, 0.004))
        drops += _conv(imp, kern)
    return _fade(0.6 * base + rng.uniform(0.5, 1.2) * _unit(drops), 0.1)


def _ev_engine(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.arange(n) / SR
    f0 = rng.uniform(25, 60) * (1 + rng.uniform(-0.12, 0.12) * t / t[-1])
    f0 = f0 * (1 + 0.03 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t))
    ph = _phase(f0)
    x = np.zeros(n)
    for k in range(1, 41):
        if k * f0.max() > 3500:
            break
        x += rng.uniform(0.5, 1.0) * k ** -0.8 * np.sin(k * ph + rng.uniform(0, 6.3))
    rumble = _band_noise(rng, n, 20, 700) * (1 + 0.6 * np.sin(ph))
    return _fade(_unit(x) + 0.5 * rumble, 0.1)


_BELL_RATIOS = np.array([0.5, 1.0, 1.183, 1.506, 2.0, 2.514, 2.662, 3.011, 4.166, 5.433])


def _ev_bell(rng: np.random.Generator, n: int) -> np.ndarray:
    f0 = rng.uniform(300, 1000)
    ratios = _BELL_RATIOS * rng.uniform(0.99, 1.01, len(_BELL_RATIOS))
    freqs = f0 * ratios
    keep = freqs < 7500
    freqs, ratios = freqs[keep], ratios[keep]
    amps = rng.uniform(0.3, 1.0, len(freqs))
    t60 = rng.uniform(1.5, 3.5)
    taus = t60 / 6.9 / ratios ** 0.6
    m = n
    tt = np.arange(m) / SR
    strike = np.zeros(m)
    for f, a, tau in zip(freqs, amps, taus):
        strike += a * np.sin(2 * np.pi * f * tt + rng.uniform(0, 6.3)) * np.exp(-tt / tau)
    strike[: int(0.005 * SR)] += 0.5 * rng.standard_normal(int(0.005 * SR))
    times = [rng.uniform(0.02, 0.3)]
    while len(times) < 3 and rng.random() < 0.6:
        times.append(times[-1] + rng.uniform(0.8, 2.0))
    return _conv(_impulses(n, times, rng.uniform(0.6, 1.0, len(times))), strike)


def _ev_clapping(rng: np.random.Generator, n: int) -> np.ndarray:
    dur = n / SR
    if rng.random() < 0.5:  # one person clapping
        period = 1 / rng.uniform(2, 5)
        times = np.arange(rng.uniform(0.05, 0.3), dur - 0.05, period)
        times = times + rng.normal(0, 0.05 * period, len(times))
    else:  # applause
        times = np.sort(rng.uniform(0, dur, int(rng.uniform(15, 50) * dur)))
    x = np.zeros(n)
    kl = int(0.03 * SR)
    kt = np.arange(kl) / SR
    groups = rng.integers(0, 4, len(times))
    for g in range(4):
        sel = groups == g
        kern = _band_noise(rng, kl, rng.uniform(700, 1200), rng.uniform(2500, 4000))
        kern *= np.exp(-kt / rng.uniform(0.004, 0.012))
        x += _conv(_impulses(n, times[sel], rng.uniform(0.5, 1.0, sel.sum())), kern)
    return x


def _ev_whistle(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.arange(n) / SR
    if rng.random() < 0.35:  # referee whistle: trilled blasts
        f = rng.uniform(2000, 3200) * (1 + 0.03 * np.sin(2 * np.pi * rng.uniform(20, 30) * t))
        gate = np.zeros(n)
        s = rng.uniform(0.05, 0.3)
        while s < n / SR - 0.3:
            e = min(s + rng.uniform(0.3, 1.0), n / SR)
            gate[int(s * SR):int(e * SR)] = 1
            s = e + rng.uniform(0.2, 0.6)
    else:  # a person whistling a few gliding notes
        f = np.zeros(n)
        gate = np.zeros(n)
        s = rng.uniform(0.05, 0.3)
        note = rng.uniform(1000, 2600)
        f[:] = note
        while s < n / SR - 0.2:
            e = min(s + rng.uniform(0.2, 0.8), n / SR)
            f[int(s * SR):] = note
            gate[int(s * SR):int(e * SR)] = 1
            note = float(np.clip(note * 2 ** (rng.integers(-5, 6) / 12), 1000, 2800))
            s = e + rng.uniform(0.02, 0.2)
        f = _conv(f - f[0], np.ones(int(0.04 * SR)) / (0.04 * SR)) + f[0]
        f = f * (1 + 0.01 * np.sin(2 * np.pi * rng.uniform(5, 7) * t))
    gate = _conv(gate, np.hanning(int(0.02 * SR)) / (0.01 * SR))
    ph = _phase(f)
    breath = _band_noise(rng, n, 800, 4500)
    return gate * (np.sin(ph) + 0.04 * breath)


def _ev_knocking(rng: np.random.Generator, n: int) -> np.ndarray:
    kl = int(0.15 * SR)
    kt = np.arange(kl) / SR
    kern = (np.sin(2 * np.pi * rng.uniform(120, 250) * kt) * np.exp(-kt / rng.uniform(0.015, 0.035))
            + 0.6 * np.sin(2 * np.pi * rng.uniform(400, 800) * kt) * np.exp(-kt / 0.012)
            + 0.3 * np.sin(2 * np.pi * rng.uniform(1200, 2000) * kt) * np.exp(-kt / 0.005))
    kern[: int(0.002 * SR)] += 0.5 * rng.standard_normal(int(0.002 * SR))
    times: list[float] = []
    s = rng.uniform(0.05, 0.5)
    while s < n / SR - 0.5:
        gap = rng.uniform(0.12, 0.2)
        for j in range(int(rng.integers(2, 5))):
            times.append(s + j * gap + rng.normal(0, 0.005))
        s = times[-1] + rng.uniform(0.6, 1.5)
    return _conv(_impulses(n, times, rng.uniform(0.6, 1.0, len(times))), kern)


def _ev_bird(rng: np.random.Generator, n: int) -> np.ndarray:
    x = np.zeros(n)
    s = rng.uniform(0.05, 0.4)
    f_center = rng.uniform(3000, 5500)
    while s < n / SR - 0.2:
        rate = rng.uniform(8, 15)
        for j in range(int(rng.integers(3, 9))):
            d = rng.uniform(0.04, 0.1)
            st = int((s + j / rate) * SR)
            m = int(d * SR)
            if st + m > n:
                break
            f0 = f_center * rng.uniform(0.85, 1.15)
            sweep = np.clip(f0 + np.linspace(0, rng.uniform(-2000, 1500), m), 1500, 7500)
            ph = _phase(sweep)
            x[st:st + m] += np.hanning(m) * (np.sin(ph) + 0.2 * np.sin(2 * ph) * (2 * sweep.max() < 7800))
        s += rng.integers(3, 9) / rate + rng.uniform(0.3, 1.0)
    return x


# class name -> (generator, caption clauses, noun phrases)
EVENT_CLASSES: dict[str, tuple[Any, tuple[str, ...], tuple[str, ...]]] = {
    "dog barking": (_ev_dog, ("a dog barks", "a dog is barking", "a dog barks several times"),
                    ("a barking dog", "a dog barking")),
    "siren": (_ev_siren, ("a siren wails", "an emergency siren sounds", "a siren is blaring"),
              ("a wailing siren", "an emergency siren")),
    "alarm beeping": (_ev_alarm, ("an alarm beeps", "an alarm is beeping repeatedly",
                                  "a beeping alarm goes off"), ("a beeping alarm", "electronic beeps")),
    "rain": (_ev_rain, ("rain falls", "rain is pouring down", "rain patters steadily"),
             ("falling rain", "heavy rain")),
    "engine": (_ev_engine, ("an engine hums", "an engine is idling", "a motor runs steadily"),
               ("a humming engine", "an idling engine")),
    "bell": (_ev_bell, ("a bell rings", "a bell is struck", "a bell chimes"),
             ("a ringing bell", "a chiming bell")),
    "clapping": (_ev_clapping, ("people clap", "someone is clapping", "hands clap"),
                 ("clapping", "applause")),
    "whistle": (_ev_whistle, ("someone whistles", "a whistle blows", "a shrill whistle sounds"),
                ("a whistle", "whistling")),
    "knocking": (_ev_knocking, ("someone knocks on a door", "there is knocking on a door",
                                "a door is knocked on"), ("knocking on a door", "loud knocks")),
    "bird chirping": (_ev_bird, ("a bird chirps", "birds are chirping", "a bird sings"),
                      ("chirping birds", "birdsong")),
}
EVENT_NAMES = tuple(EVENT_CLASSES)


def render_event(name: str, rng: np.random.Generator, seconds: float) -> np.ndarray:
    """One clean clip of sound-event class ``name`` (unit RMS, 16 kHz)."""
    if name not in EVENT_CLASSES:
        raise SalmonnError(f"unknown sound event class {name!r}; choose from {', '.join(EVENT_NAMES)}")
    n = int(round(seconds * SR))
    x = EVENT_CLASSES[name][0](rng, n)
    if _rms(x) < 1e-6:  # e.g. a clip too short for its first burst: should not happen at >= 1 s
        raise SalmonnError(f"sound event {name!r}: silent clip for {seconds:.2f} s")
    return _unit(_fit(x, n))


def _event_clause(name: str, rng: np.random.Generator) -> str:
    return str(rng.choice(EVENT_CLASSES[name][1]))


def _event_np(name: str, rng: np.random.Generator) -> str:
    return str(rng.choice(EVENT_CLASSES[name][2]))


# ----------------------------------------------------------------------------- speech


def espeak(text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
    """Synthesise ``text`` with espeak-ng (voice like 'en-gb+f3'); float mono at 16 kHz."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SalmonnError(f"espeak-ng not found; {_APT_HINT}")
    proc = subprocess.run([exe, "-v", voice, "-s", str(rate), "-p", str(pitch), "--stdout", text],
                          capture_output=True, check=False)
    if proc.returncode != 0 or len(proc.stdout) < 100:
        raise SalmonnError(f"espeak-ng failed for voice {voice!r}: {proc.stderr.decode(errors='replace').strip()}")
    x, sr = sf.read(io.BytesIO(proc.stdout), dtype="float64")
    if x.ndim > 1:
        x = x[:, 0]
    return soxr.resample(x, sr, SR) if sr != SR else x


def _speak_fitting(text: str, job: dict, max_seconds: float) -> tuple[np.ndarray, float]:
    """Speak with the job's engine, raising the rate (deterministically) until the clip fits ``max_seconds``."""
    if job.get("engine") == "kokoro":
        return _kokoro_fitting(text, job, max_seconds)
    rate = job["rate"]
    voice = f"{job['accent']}+{job['variant']}"
    for _ in range(4):
        x = espeak(text, voice, rate, job["pitch"])
        if len(x) <= max_seconds * SR:
            return x, rate
        rate = min(400, int(math.ceil(rate * len(x) / (max_seconds * SR) * 1.05)))
    raise SalmonnError(f"sentence too long to fit {max_seconds} s: {text!r}")


def _kokoro_fitting(text: str, job: dict, max_seconds: float) -> tuple[np.ndarray, float]:
    """A neural voice (salmonn.data.voices) at the job's speed, faster until it fits ``max_seconds``."""
    from salmonn.data.voices import shared_voices, speaker_named

    speaker, speed = speaker_named(job["speaker"]), job["speed"]
    question = text.endswith("?")
    for _ in range(4):
        x = shared_voices().speak(text.rstrip("?"), speaker, speed, question=question)
        if len(x) <= max_seconds * SR:
            return x, speed
        speed = round(speed * len(x) / (max_seconds * SR) * 1.05, 4)
    raise SalmonnError(f"sentence too long to fit {max_seconds} s: {text!r}")


# ----------------------------------------------------------------------------- music
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
        raise SalmonnError(f"fluidsynth not found; {_APT_HINT}")
    if not Path(soundfont).is_file():
        raise SalmonnError(f"{soundfont}: soundfont not found; {_APT_HINT}")
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
    return soxr.resample(x, sr, SR)


def _music_description(rng: np.random.Generator, tempo: str, inst: str, texture: str, mode: str) -> str:
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


# ----------------------------------------------------------------------------- augmentation


def augment(x: np.ndarray, rng: np.random.Generator, *, speed_range: tuple[float, float] = (0.9, 1.1),
            max_seconds: float = MAX_SECONDS) -> tuple[np.ndarray, dict]:
    """Seeded augmentation chain; returns the clip (peak <= 0.95) and what was applied."""
    info: dict[str, Any] = {}
    if rng.random() < 0.3:
        f = float(rng.uniform(*speed_range))
        if len(x) / f > max_seconds * SR:  # never cut content: only speed up then
            f = max(f, len(x) / (max_seconds * SR))
        x = soxr.resample(x, SR * f, SR)
        info["speed"] = round(f, 4)
    if rng.random() < 0.3:
        rt60 = float(rng.uniform(0.15, 0.7))
        m = int(rt60 * SR)
        tt = np.arange(m) / SR
        rir = rng.standard_normal(m) * np.exp(-6.9 * tt / rt60)
        rir[0] = rng.uniform(2.0, 6.0) * np.sqrt(np.sum(rir[1:] ** 2))  # direct path
        x = _conv(x, rir / np.sqrt(np.sum(rir ** 2)))
        info["reverb_rt60"] = round(rt60, 3)
    if rng.random() < 0.2:
        mid = int(rng.choice((8000, 11025, 22050)))
        n = len(x)
        x = _fit(soxr.resample(soxr.resample(x, SR, mid), mid, SR), n)
        info["resample"] = mid
    if rng.random() < 0.3:
        colour = str(rng.choice(("white", "pink", "brown")))
        slope = {"white": 0.0, "pink": 1.0, "brown": 2.0}[colour]
        snr = float(rng.uniform(10, 35))
        x = x + _band_noise(rng, len(x), 20, 8000, slope) * _rms(x) * 10 ** (-snr / 20)
        info["noise"] = colour
        info["noise_snr_db"] = round(snr, 2)
    level = float(rng.uniform(-35, -15))
    x = x * (10 ** (level / 20) / _rms(x))
    peak = float(np.max(np.abs(x)))
    if peak > 0.95:
        x = x * (0.95 / peak)
    info["level_dbfs"] = round(20 * math.log10(_rms(x)), 2)
    return x, info


def _write_wav(path: Path, x: np.ndarray) -> float:
    if len(x) < MIN_SECONDS * SR:
        x = _fit(x, int(MIN_SECONDS * SR))
    x = x[: int(MAX_SECONDS * SR)]
    pcm = np.clip(np.round(x * 32767.0), -32768, 32767).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, pcm, SR, subtype="PCM_16", format="WAV")
    return len(pcm) / SR


# ----------------------------------------------------------------------------- jobs


def _code(name: str) -> int:
    return zlib.crc32(name.encode())


def _job_rng(seed: int, split: str, kind: str, idx: int) -> np.random.Generator:
    return np.random.default_rng([seed, _code(split), _code(kind), idx])


def _speaker_phrase(gender: str, rng: np.random.Generator) -> tuple[str, str]:
    who = "a man" if gender == "male" else "a woman"
    return str(rng.choice((f"{who} speaks", f"{who} is talking", f"{who} is speaking"))), who


NO_SPEECH_TEXT = "there is no speech in this audio"
NO_QUESTION_TEXT = "there is no question in this audio"
QUIET_VARIETIES = {  # variety -> (level range in dBFS, caption)
    "silence": ((-75.0, -60.0), "silence, nothing can be heard"),
    "room tone": ((-55.0, -40.0), "a quiet room with faint background noise"),
    "hum": ((-40.0, -20.0), "a low electrical hum"),
    "white noise": ((-40.0, -15.0), "steady white noise"),
    "pink noise": ((-40.0, -15.0), "steady hissing noise"),
    "brown noise": ((-40.0, -15.0), "a steady low rumbling noise like a fan"),
}


def render_quiet(variety: str, rng: np.random.Generator, seconds: float) -> np.ndarray:
    """A clip without speech or events: near-silence, room tone, mains hum or coloured noise."""
    n = int(seconds * SR)
    if variety == "hum":
        mains = float(rng.choice((50.0, 60.0)))
        t = np.arange(n) / SR
        x = sum(rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 6.3)) for k in range(1, 6))
        x = x + 0.05 * _band_noise(rng, n, 20, 8000)
    elif variety in ("silence", "room tone"):
        x = _band_noise(rng, n, 20, 8000, slope=1.5)
    else:
        x = _band_noise(rng, n, 20, 8000, slope={"white noise": 0.0, "pink noise": 1.0, "brown noise": 2.0}[variety])
    lo, hi = QUIET_VARIETIES[variety][0]
    return _fade(x * 10 ** (float(rng.uniform(lo, hi)) / 20) / _rms(x), 0.05)


_BASE_KIND = {"voice": "speech", "voice_qa": "qa", "voice_mix": "mix"}  # neural-voice twins of espeak kinds


def _render(job: dict) -> dict:
    """Render one clip: write its wav, return its annotation entries and metadata."""
    kind, rel = job["kind"], job["path"]
    rng = _job_rng(job["seed"], job["split"], kind, job["idx"])
    path = Path(job["root"]) / rel
    meta = {k: v for k, v in job.items() if k not in ("root", "soundfont")}
    entries: list[dict] = []
    base = _BASE_KIND.get(kind, kind)
    if kind == "quiet":
        x = render_quiet(job["variety"], rng, float(rng.uniform(1.5, 6.0)))
        entries += [{"path": rel, "text": NO_SPEECH_TEXT, "task": "asr"},
                    {"path": rel, "text": QUIET_VARIETIES[job["variety"]][1], "task": "audiocaption"},
                    {"path": rel, "text": NO_QUESTION_TEXT, "task": "QA", "Q": "", "question": ""}]
    elif base == "speech":
        x, meta["rate"] = _speak_fitting(job["text"], job, MAX_SECONDS * 0.88)
        x, meta["aug"] = augment(x, rng)
        entries += [{"path": rel, "text": job["text"], "task": "asr"},
                    {"path": rel, "text": job["gender"], "task": "gender_recognition"}]
    elif base == "qa":
        x, meta["rate"] = _speak_fitting(job["question"] + "?", job, MAX_SECONDS * 0.88)
        x = np.concatenate([np.zeros(int(rng.uniform(0.05, 0.3) * SR)), x])
        x, meta["aug"] = augment(x, rng)
        entry = {"path": rel, "text": job["answer"], "task": "QA", "Q": "", "question": job["question"]}
        if kind == "voice_qa":  # the target becomes SmolLM2's text answer when the corpus is assembled
            entry.update(reference=job["answer"], family=job["family"])
        entries.append(entry)
    elif kind == "events":
        seconds = float(rng.uniform(2.0, 6.0))
        classes = job["classes"]
        x = render_event(classes[0], rng, seconds)
        if len(classes) == 2:
            rel_db = float(rng.uniform(-10, 0))
            x = x + render_event(classes[1], rng, seconds) * 10 ** (rel_db / 20)
            meta["second_rel_db"] = round(rel_db, 2)
            a, b = classes
            caption = str(rng.choice((
                f"{_event_clause(a, rng)} while {_event_clause(b, rng)}",
                f"{_event_clause(a, rng)} as {_event_clause(b, rng)} in the background",
                f"{_event_np(a, rng)} and {_event_np(b, rng)} can be heard",
                f"{_event_clause(a, rng)} and {_event_clause(b, rng)}",
            )))
        else:
            caption = str(rng.choice((
                _event_clause(classes[0], rng),
                f"{_event_np(classes[0], rng)} can be heard",
                f"the sound of {_event_np(classes[0], rng)}",
            )))
        x, meta["aug"] = augment(x, rng)
        entries.append({"path": rel, "text": caption, "task": "audiocaption"})
        if len(classes) == 1:
            entries.append({"path": rel, "text": classes[0], "task": "sound_event"})
        if job.get("no_speech"):
            entries.append({"path": rel, "text": NO_SPEECH_TEXT, "task": "asr"})
    elif kind == "music":
        inst = job["instrument"]
        lo_bpm, hi_bpm = TEMPI[job["tempo"]]
        bpm = float(rng.uniform(lo_bpm, hi_bpm))
        beat_s = 60.0 / bpm
        # 4 * bars - 2 beats: 4-7 s wanted, at most 6.4 s of notes (room for the release tail)
        max_bars = int((6.4 / beat_s + 2) // 4)
        bars = int(np.clip(round((rng.uniform(4.0, 7.0) / beat_s + 2) / 4), 2, max_bars))
        root = int(rng.integers(12))
        notes = compose(rng, instrument=inst, mode=job["mode"], texture=job["texture"], root=root, bars=bars)
        with tempfile.TemporaryDirectory(prefix="salmonn-mid-") as tmp:
            mid = Path(tmp) / "piece.mid"
            write_midi(mid, notes, tempo_bpm=bpm, program=INSTRUMENTS[inst][0])
            x = render_midi(mid, job["soundfont"])
        # drop the silent tail, keep <= 0.92 * max so that speed perturbation never cuts notes
        loud = np.nonzero(np.abs(x) > 10 ** (-50 / 20) * np.max(np.abs(x)))[0]
        x = x[: loud[-1] + 1] if len(loud) else x
        n_max = int(MAX_SECONDS * 0.92 * SR)
        if len(x) > n_max:
            x = x[:n_max]
            x[-int(0.3 * SR):] *= np.linspace(1, 0, int(0.3 * SR))
        meta.update(bpm=round(bpm, 2), bars=bars, root=root, n_notes=len(notes))
        x, meta["aug"] = augment(x, rng, speed_range=(0.95, 1.05))
        entries += [{"path": rel, "task": "music_description",
                     "text": _music_description(rng, job["tempo"], inst, job["texture"], job["mode"])},
                    {"path": rel, "text": inst, "task": "instrument"}]
        if job.get("no_speech"):
            entries.append({"path": rel, "text": NO_SPEECH_TEXT, "task": "asr"})
    elif base == "mix":
        sp, meta["rate"] = _speak_fitting(job["text"], job, MAX_SECONDS * 0.75)
        pad_a, pad_b = (int(rng.uniform(0.1, 0.5) * SR) for _ in range(2))
        n = len(sp) + pad_a + pad_b
        bg = _fit(render_event(job["event"], rng, n / SR), n)
        snr = job["snr_db"]
        sp_full = np.concatenate([np.zeros(pad_a), sp, np.zeros(pad_b)])
        x = sp_full + bg * _rms(sp) * 10 ** (-snr / 20)
        sp_clause, who = _speaker_phrase(job["gender"], rng)
        ev = job["event"]
        caption = str(rng.choice((
            f"{sp_clause} while {_event_clause(ev, rng)}",
            f"{_event_clause(ev, rng)} while {sp_clause}",
            f"{who} talks over {_event_np(ev, rng)}",
            f"{sp_clause} with {_event_np(ev, rng)} in the background",
        )))
        x, meta["aug"] = augment(x, rng)
        entries += [{"path": rel, "text": job["text"], "task": "asr"},
                    {"path": rel, "text": caption, "task": "audiocaption"}]
    else:  # pragma: no cover - plans only hold the kinds above
        raise SalmonnError(f"unknown clip kind {kind!r}")
    seconds = _write_wav(path, x)
    meta["seconds"] = round(seconds, 4)
    meta["entries"] = entries
    return meta


class _Cycle:
    """Endless iterator over a pool, reshuffled (seeded) on every pass."""

    def __init__(self, items: Sequence, rng: np.random.Generator):
        self.items, self.rng, self.buf = list(items), rng, []  # type: ignore[var-annotated]

    def __next__(self):
        if not self.buf:
            self.buf = [self.items[i] for i in self.rng.permutation(len(self.items))]
        return self.buf.pop()

    def __iter__(self) -> Iterator:
        return self


def _plan_split(split: str, counts: dict[str, int], seed: int, sentences: Sequence[str],
                root: str, soundfont: str, no_speech: bool = False) -> list[dict]:
    """Everything discrete about each clip of one split; the rest is drawn from its own rng."""
    rng = np.random.default_rng([seed, _code(split), 0])
    held = split != "train"
    variants = TEST_VARIANTS if held else TRAIN_VARIANTS
    sent = _Cycle([s for s in sentences if _held_out(s) == held], rng)
    jobs: list[dict] = []

    def voice() -> dict:
        gender = "male" if rng.random() < 0.5 else "female"
        return {"accent": str(rng.choice(ACCENTS)), "variant": str(rng.choice(variants[gender])),
                "gender": gender, "rate": int(rng.integers(RATE_WPM[0], RATE_WPM[1] + 1)),
                "pitch": int(rng.integers(PITCH[gender][0], PITCH[gender][1] + 1))}

    def add(kind: str, i: int, **kw: Any) -> None:
        jobs.append({"kind": kind, "idx": i, "split": split, "seed": seed, "root": root,
                     "soundfont": soundfont, "path": f"{split}/{kind}/{kind}_{i:05d}.wav", **kw})

    for i in range(counts.get("speech", 0)):
        add("speech", i, text=next(sent), **voice())
    if split == "sqa_test":
        families: _Cycle = _Cycle([SQA_FAMILY], rng)
        items = {SQA_FAMILY: _Cycle(QA_FAMILIES[SQA_FAMILY], rng)}
    else:
        families = _Cycle(TRAINED_QA_FAMILIES, rng)
        items = {f: _Cycle([it for it in QA_FAMILIES[f] if _held_out(it[0][0]) == held], rng)
                 for f in TRAINED_QA_FAMILIES}
    for i in range(counts.get("qa", 0)):
        fam = next(families)
        forms, answer = next(items[fam])
        add("qa", i, family=fam, question=str(rng.choice(forms)), answer=answer, **voice())
    ev_cycle = _Cycle(EVENT_NAMES, rng)
    for i in range(counts.get("events", 0)):
        first = next(ev_cycle)
        classes = [first]
        if rng.random() < 0.3:
            classes.append(str(rng.choice([c for c in EVENT_NAMES if c != first])))
        add("events", i, classes=classes)
    inst_cycle = _Cycle(INSTRUMENT_NAMES, rng)
    for i in range(counts.get("music", 0)):
        inst = next(inst_cycle)
        textures = ["melody", "arpeggios"] + (["chords", "melody with chords"] if INSTRUMENTS[inst][3] else [])
        add("music", i, instrument=inst, tempo=str(rng.choice(list(TEMPI))),
            mode=str(rng.choice(list(SCALES))), texture=str(rng.choice(textures)))
    mix_ev = _Cycle(EVENT_NAMES, rng)
    snrs = _Cycle((0, 5, 10, 20), rng)
    for i in range(counts.get("mix", 0)):
        add("mix", i, text=next(sent), event=next(mix_ev), snr_db=next(snrs), **voice())
    if no_speech:
        for j in jobs:
            if j["kind"] in ("events", "music"):
                j["no_speech"] = True
    _plan_neural(split, counts, rng, sent, add)
    return jobs


def _plan_neural(split: str, counts: dict[str, int], rng: np.random.Generator, sent: _Cycle, add) -> None:
    """Jobs of the neural-voice kinds (voice, voice_qa, voice_mix) and of speech-free clips (quiet)."""
    if not any(counts.get(k, 0) for k in ("voice", "voice_qa", "voice_mix", "quiet")):
        return
    from salmonn.data.voices import speakers_for

    held = split != "train"
    pools = {g: _Cycle([s.name for s in speakers_for(held, g)], rng) for g in ("male", "female")}

    def neural() -> dict:
        gender = "male" if rng.random() < 0.5 else "female"
        return {"engine": "kokoro", "speaker": next(pools[gender]), "gender": gender,
                "speed": round(float(rng.uniform(*NEURAL_SPEED)), 3)}

    for i in range(counts.get("voice", 0)):
        add("voice", i, text=next(sent), **neural())
    if split == "sqa_test":
        families: _Cycle = _Cycle([SQA_FAMILY], rng)
        items = {SQA_FAMILY: _Cycle(QA_FAMILIES[SQA_FAMILY], rng)}
    else:
        pool = {f: QA_FAMILIES[f] for f in TRAINED_QA_FAMILIES} | {"open": [([q], "") for q in open_questions()]}
        families = _Cycle(list(pool), rng)
        items = {f: _Cycle([it for it in v if _held_out(it[0][0]) == held], rng) for f, v in pool.items()}
    for i in range(counts.get("voice_qa", 0)):
        fam = next(families)
        forms, answer = next(items[fam])
        add("voice_qa", i, family=fam, question=str(rng.choice(forms)), answer=answer, **neural())
    mix_ev = _Cycle(EVENT_NAMES, rng)
    snrs = _Cycle((0, 5, 10, 20), rng)
    for i in range(counts.get("voice_mix", 0)):
        add("voice_mix", i, text=next(sent), event=next(mix_ev), snr_db=next(snrs), **neural())
    quiet = _Cycle(list(QUIET_VARIETIES), rng)
    for i in range(counts.get("quiet", 0)):
        add("quiet", i, variety=next(quiet))


# ----------------------------------------------------------------------------- public API
SIZES: dict[str, dict[str, Any]] = {
    "small": dict(n_speech=12, n_qa=6, n_events=20, n_music=10, n_mix=6, n_sqa=8, test_fraction=0.25),
    "full": dict(n_speech=1600, n_qa=600, n_events=1000, n_music=600, n_mix=600, n_sqa=200,
                 test_fraction=0.1),
    # more read speech (ASR + gender) to add to a full corpus: use another --seed than that corpus's
    "speech": dict(n_speech=4000, n_qa=0, n_events=0, n_music=0, n_mix=0, n_sqa=0, test_fraction=0.01),
    # mini v2 (issue 15): the full corpus + neural voices (about 18 h of Kokoro speech), spoken questions
    # answered by SmolLM2, speech-free clips; hours of CPU: generate once, in the background, resumable
    "mini-v2": dict(n_speech=1600, n_qa=600, n_events=1000, n_music=600, n_mix=600, n_sqa=200,
                    n_voice=14000, n_voice_qa=3000, n_voice_mix=2000, n_quiet=600, no_speech=True,
                    test_fraction=0.05),
    # the same kinds at demo size (a few CPU-minutes): checks the neural path end to end
    "mini-v2-sample": dict(n_speech=4, n_qa=2, n_events=4, n_music=2, n_mix=2, n_sqa=2,
                           n_voice=8, n_voice_qa=6, n_voice_mix=2, n_quiet=4, no_speech=True,
                           test_fraction=0.5),
}
CHUNK_CLIPS = 40  # clips per resumable unit (one chunks/<split>-<k>.jsonl each)
_KINDS = ("speech", "qa", "events", "music", "mix", "voice", "voice_qa", "voice_mix", "quiet")


def _chunk_name(split: str, k: int) -> str:
    return f"{split}-{k:05d}.jsonl"


def _render_chunk(task: tuple[list[dict], str]) -> int:
    """Render a chunk of clips and write its results atomically (the marker that it is done)."""
    jobs, path = task
    lines = [json.dumps(_render(j), sort_keys=True) for j in jobs]
    tmp = Path(path + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return len(jobs)


def _read_chunk(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _check_plan(out: Path, jobs: list[dict]) -> None:
    """Refuse to resume into a folder that holds clips of another plan (seed, size, code)."""
    digest = hashlib.sha1(json.dumps([{k: v for k, v in j.items() if k != "root"} for j in jobs],
                                     sort_keys=True).encode()).hexdigest()
    plan = out / "chunks" / "plan.json"
    if plan.is_file() and json.loads(plan.read_text())["sha1"] != digest:
        raise SalmonnError(f"{out}: holds a corpus of another plan (other seed, size or generator version); "
                           "write to a new folder or delete this one")
    plan.parent.mkdir(parents=True, exist_ok=True)
    plan.write_text(json.dumps({"sha1": digest, "clips": len(jobs)}) + "\n")


def _ordered_chunks(plans: dict[str, list[dict]], chunk_dir: Path) -> list[tuple[list[dict], str]]:
    """All chunks; held-out splits first, then the kinds of a split interleaved (a partial run is balanced)."""
    chunks = []
    for order, (split, plan) in enumerate(sorted(plans.items(), key=lambda kv: kv[0] == "train")):
        per_kind: dict[str, int] = {}
        for j in plan:
            per_kind[j["kind"]] = per_kind.get(j["kind"], 0) + 1
        for k in range(0, len(plan), CHUNK_CLIPS):
            first = plan[k]
            position = first["idx"] / per_kind[first["kind"]]
            chunks.append(((order, position), (plan[k:k + CHUNK_CLIPS], str(chunk_dir / _chunk_name(split, k // CHUNK_CLIPS)))))
    return [c for _, c in sorted(chunks, key=lambda c: c[0])]


def _run_chunks(chunks: list[tuple[list[dict], str]], n_total: int, workers: int, progress: bool) -> None:
    from tqdm import tqdm

    todo = [c for c in chunks if not Path(c[1]).is_file()]
    done = n_total - sum(len(c[0]) for c in todo)
    with tqdm(total=n_total, initial=done, desc="synth corpus", unit="clip", disable=not progress,
              smoothing=0.05) as bar:
        if workers == 1:
            for c in todo:
                bar.update(_render_chunk(c))
            return
        # fork where there is one: a spawned worker would re-import the package (torch, transformers)
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with ctx.Pool(workers) as pool:
            for n in pool.imap_unordered(_render_chunk, todo):
                bar.update(n)


def _llm_targets(results: list[dict], out: Path, progress: bool) -> dict[str, dict]:
    """SmolLM2's answers to every neural spoken question (cached in answers.jsonl)."""
    questions = sorted({e["question"] for r in results for e in r["entries"] if "reference" in e})
    if not questions:
        return {}
    from salmonn.data.spoken_qa import llm_answers
    return llm_answers(questions, out / "answers.jsonl", progress=progress)


def _entries(result: dict, answers: dict[str, dict]) -> list[dict]:
    """A clip's annotation entries; a neural spoken question gets SmolLM2's answer (or is dropped)."""
    entries = []
    for e in result["entries"]:
        if "reference" in e:
            record = answers.get(e["question"])
            if record is None or record["drop"]:
                continue
            e = dict(e, text=record["answer"])
        entries.append(e)
    return entries


def synth_corpus(out_dir: str | os.PathLike, *, n_speech: int = 12, n_qa: int = 6, n_events: int = 20,
                 n_music: int = 10, n_mix: int = 6, n_sqa: int = 8, n_voice: int = 0, n_voice_qa: int = 0,
                 n_voice_mix: int = 0, n_quiet: int = 0, no_speech: bool = False, test_fraction: float = 0.25,
                 seed: int = 0, splits: Sequence[str] = ("train", "test"), workers: int | None = None,
                 soundfont: str | os.PathLike = DEFAULT_SOUNDFONT,
                 fortunes_dir: str | os.PathLike = DEFAULT_FORTUNES_DIR,
                 progress: bool = True, partial: bool = False) -> dict[str, Path]:
    """Generate the corpus under ``out_dir``; return split -> annotation file.

    ``n_*`` are clip counts of the ``train`` split; every other split gets
    ``ceil(n * test_fraction)`` of each kind (from held-out sentences, voices and QA items). When
    ``n_sqa > 0`` a ``sqa_test`` split is added: spoken questions of the held-out family
    (:data:`SQA_FAMILY`) in held-out voices (also in neural voices when ``n_voice_qa > 0``).
    ``n_voice``/``n_voice_qa``/``n_voice_mix``: the speech kinds again in neural voices
    (:mod:`salmonn.data.voices`); a neural spoken question's target is SmolLM2's text answer
    (:mod:`salmonn.data.spoken_qa`, its known answer stays as ``reference``). ``n_quiet``: clips of
    silence, hum or noise whose asr/QA targets say there is no speech; ``no_speech`` adds that asr
    target to the event and music clips. ``workers``: processes (default: CPU count); the output does
    not depend on it. Clips are rendered in chunks of :data:`CHUNK_CLIPS` recorded under ``chunks/``;
    a rerun skips finished chunks. ``partial``: write the annotations of the finished chunks only,
    rendering nothing. Writes ``<split>.json``, ``<split>/...wav``, ``meta/<split>.jsonl``,
    ``prompts.json`` and ``summary.json``.
    """
    counts = dict(speech=n_speech, qa=n_qa, events=n_events, music=n_music, mix=n_mix, voice=n_voice,
                  voice_qa=n_voice_qa, voice_mix=n_voice_mix, quiet=n_quiet)
    for k, v in [*counts.items(), ("sqa", n_sqa)]:
        if not isinstance(v, int) or v < 0:
            raise SalmonnError(f"n_{k}={v!r}: must be an integer >= 0")
    if not 0 < test_fraction <= 1:
        raise SalmonnError(f"test_fraction={test_fraction!r}: must be in (0, 1]")
    splits = list(dict.fromkeys(splits))
    for s in splits:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", s) or s in ("meta", "prompts", "summary", "sqa_test", "chunks"):
            raise SalmonnError(f"split name {s!r}: use letters, digits, '_' or '-' "
                               "(not meta/prompts/summary/sqa_test/chunks)")
    need_speech = any(counts[k] for k in ("speech", "qa", "mix", "voice", "voice_qa", "voice_mix")) or n_sqa > 0
    check_tools(speech=need_speech, music=n_music > 0, soundfont=soundfont, fortunes_dir=fortunes_dir)
    if any(counts[k] for k in ("voice", "voice_qa", "voice_mix")):
        from salmonn.data.voices import check_voices
        check_voices()
    sentences = load_sentences(fortunes_dir) if need_speech else []

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = str(out.resolve())
    plans: dict[str, list[dict]] = {}
    for s in splits:
        c = counts if s == "train" else {k: math.ceil(v * test_fraction) for k, v in counts.items()}
        plans[s] = _plan_split(s, c, seed, sentences, root, str(soundfont), no_speech)
    if n_sqa > 0:
        sqa = {"qa": n_sqa, "voice_qa": n_sqa if n_voice_qa else 0}
        plans["sqa_test"] = _plan_split("sqa_test", sqa, seed, sentences, root, str(soundfont))

    jobs = [j for p in plans.values() for j in p]
    _check_plan(out, jobs)
    chunks = _ordered_chunks(plans, out / "chunks")
    if not partial:
        n_workers = max(1, min(workers or os.cpu_count() or 1, len(chunks) or 1))
        _run_chunks(chunks, len(jobs), n_workers, progress)
    results: dict[str, list[dict]] = {s: [] for s in plans}
    for split, plan in plans.items():
        for k in range(0, len(plan), CHUNK_CLIPS):
            chunk = out / "chunks" / _chunk_name(split, k // CHUNK_CLIPS)
            if chunk.is_file():
                results[split] += _read_chunk(chunk)
    answers = _llm_targets([r for res in results.values() for r in res], out, progress)
    return _write_corpus(out, plans, results, answers, dict(counts, sqa=n_sqa, test_fraction=test_fraction,
                                                              no_speech=no_speech), seed)


def _write_corpus(out: Path, plans: dict[str, list[dict]], results: dict[str, list[dict]],
                  answers: dict[str, dict], counts: dict[str, Any], seed: int) -> dict[str, Path]:
    """Annotation files, per-clip metadata, prompts and the summary from the rendered clips."""
    paths: dict[str, Path] = {}
    summary: dict[str, Any] = {"seed": seed, "sample_rate": SR, "counts": counts, "sqa_family": SQA_FAMILY,
                               "complete": all(len(results[s]) == len(p) for s, p in plans.items()), "splits": {}}
    if answers:
        reasons = [r["drop"] for r in answers.values()]
        summary["llm_answers"] = {"questions": len(reasons), "kept": reasons.count(None),
                                  **{f"dropped_{why}": reasons.count(why) for why in ("empty", "refusal", "echo")}}
    (out / "meta").mkdir(exist_ok=True)
    for s, res in results.items():
        ann = [e for r in res for e in _entries(r, answers)]
        p = out / f"{s}.json"
        p.write_text(json.dumps({"annotation": ann}, indent=1, ensure_ascii=True) + "\n")
        paths[s] = p
        with open(out / "meta" / f"{s}.jsonl", "w") as f:
            for r in res:
                f.write(json.dumps({kk: v for kk, v in r.items() if kk != "entries"}, sort_keys=True) + "\n")
        tasks: dict[str, int] = {}
        for e in ann:
            tasks[e["task"]] = tasks.get(e["task"], 0) + 1
        kinds: dict[str, dict[str, float]] = {}
        for r in res:
            d = kinds.setdefault(r["kind"], {"clips": 0, "hours": 0.0})
            d["clips"] += 1
            d["hours"] += r["seconds"] / 3600
        for d in kinds.values():
            d["hours"] = round(d["hours"], 4)
        genders: dict[str, int] = {}
        for r in res:
            if "gender" in r:
                key = f"{r.get('engine', 'espeak')} {r['gender']}"
                genders[key] = genders.get(key, 0) + 1
        summary["splits"][s] = {
            "annotation": p.name, "clips": len(res), "planned_clips": len(plans[s]), "entries": len(ann),
            "hours": round(sum(r["seconds"] for r in res) / 3600, 4),
            "tasks": dict(sorted(tasks.items())), "kinds": kinds, "speakers": dict(sorted(genders.items())),
        }
    summary["total_clips"] = sum(v["clips"] for v in summary["splits"].values())
    summary["total_hours"] = round(sum(v["hours"] for v in summary["splits"].values()), 4)
    (out / "prompts.json").write_text(json.dumps(mini_prompts(), indent=1) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return paths


def synth(out_dir: str, /, seed: int = 0, size: str = "small", workers: int | None = None,
          partial: bool = False) -> None:
    """Generate the seeded synthetic SALMONN-mini corpus into OUT_DIR (resumable: a rerun skips finished clips).

    Speech (espeak-ng voices reading fortune sentences: asr, gender_recognition), spoken
    questions (QA), procedural sound events (audiocaption, sound_event), General-MIDI music
    rendered by fluidsynth (music_description, instrument) and speech-over-event mixtures (asr,
    audiocaption), all 16 kHz mono wav of 1-8 s with seeded augmentation. Writes train.json,
    test.json, sqa_test.json (held-out spoken-question family, for untrained-instruction
    evaluation), prompts.json, summary.json and meta/. The same seed gives byte-identical files.
    --size small: 77 clips (5 min of audio, 10 MB, about 10 CPU-seconds), for demos and tests;
    --size full: 5,040 clips (4.9 h of audio, 550 MB, about 6.5 CPU-minutes) for training;
    --size speech: 4,040 more speech clips (asr, gender) to add to a full corpus of another --seed;
    --size mini-v2: full + 19,600 clips in neural voices (Kokoro; spoken questions answered by SmolLM2)
    + 600 speech-free clips: many CPU-hours, run it in the background (nohup nice ...) and rerun to resume;
    --size mini-v2-sample: the same kinds at demo size.
    Needs: apt-get install espeak-ng fluidsynth fluid-soundfont-gm fortunes fortunes-min; the neural
    voices need pip install 'salmonn[voices]' (scripts/setup.sh --test installs both).

    Options:
      seed: the corpus seed (the held-out sentences, voices and questions do not depend on it)
      size: small, full, speech, mini-v2 or mini-v2-sample
      workers: processes (default: CPU count); the output does not depend on it
      partial: write the annotations of the clips finished so far and render nothing
    """
    if size not in SIZES:
        raise SalmonnError(f"--size {size!r}: choose one of {', '.join(SIZES)}")
    paths = synth_corpus(out_dir, seed=seed, workers=workers, partial=partial, **SIZES[size])
    summary = json.loads((Path(out_dir) / "summary.json").read_text())
    for split, p in paths.items():
        s = summary["splits"][split]
        print(f"{split}: {s['clips']} of {s['planned_clips']} clips, {s['entries']} entries, "
              f"{s['hours']:.2f} h -> {p}")
    print(f"prompts: {Path(out_dir) / 'prompts.json'}; summary: {Path(out_dir) / 'summary.json'}")
