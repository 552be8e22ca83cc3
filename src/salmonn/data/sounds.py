"""Synthetic sounds for the SALMONN-mini corpus: small DSP helpers, ten sound-event classes rendered from noise,
impulses and oscillators (each with caption clauses), and the augmentation applied to every clip."""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np
import soxr

from salmonn.errors import SalmonnError
from salmonn.frames import SAMPLE_RATE

MAX_CLIP_SECONDS = 8.0  # the corpus's longest clip


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)) + 1e-20))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / rms(x)


def fit(x: np.ndarray, n: int) -> np.ndarray:
    """Pad with zeros or cut to exactly n samples."""
    if len(x) >= n:
        return x[:n]
    return np.concatenate([x, np.zeros(n - len(x))])


def band_noise(rng: np.random.Generator, n: int, lo: float, hi: float,
                slope: float = 0.0) -> np.ndarray:
    """Unit-RMS noise limited to [lo, hi] Hz with a spectral tilt f**-slope (1.0 = pink power)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
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
    return 2 * np.pi * np.cumsum(freq) / SAMPLE_RATE


def fade(x: np.ndarray, seconds: float = 0.02) -> np.ndarray:
    m = min(int(seconds * SAMPLE_RATE), len(x) // 2)
    if m > 0:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, m))
        x = x.copy()
        x[:m] *= ramp
        x[-m:] *= ramp[::-1]
    return x


def _impulses(n: int, times: Iterable[float], amps: Iterable[float]) -> np.ndarray:
    out = np.zeros(n)
    for t, a in zip(times, amps):
        i = int(t * SAMPLE_RATE)
        if 0 <= i < n:
            out[i] += a
    return out




def _ev_dog(rng: np.random.Generator, n: int) -> np.ndarray:
    out = np.zeros(n)
    t0 = rng.uniform(0.05, 0.4)
    f_base = rng.uniform(450, 850)
    rough_hz = rng.uniform(30, 60)
    while True:
        d = rng.uniform(0.12, 0.28)
        m, s = int(d * SAMPLE_RATE), int(t0 * SAMPLE_RATE)
        if s + m > n:
            break
        tt = np.arange(m) / SAMPLE_RATE
        f = f_base * rng.uniform(0.9, 1.1) * (1 + 0.3 * np.exp(-tt / 0.03)) * (1 - 0.35 * tt / d)
        ph = _phase(f)
        harm = sum(np.sin(k * ph) / k for k in range(1, 8) if k * f.max() < 7500)
        noise = 0.3 * band_noise(rng, m, 700, 4000)
        env = (1 - np.exp(-tt / 0.006)) * np.exp(-tt / (0.35 * d))
        out[s:s + m] += (harm + noise) * env * (1 + 0.4 * np.sin(2 * np.pi * rough_hz * tt))
        t0 += d + rng.uniform(0.15, 0.6)
    return out


def _ev_siren(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE
    lo = rng.uniform(550, 850)
    hi = lo * rng.uniform(1.6, 2.2)
    if rng.random() < 0.6:  # wail
        lfo = 0.5 - 0.5 * np.cos(2 * np.pi * rng.uniform(0.15, 0.45) * t + rng.uniform(0, 2 * np.pi))
    else:  # yelp
        lfo = np.mod(rng.uniform(2.5, 5.0) * t + rng.random(), 1.0)
    ph = _phase(lo + (hi - lo) * lfo)
    return fade(np.sin(ph) + 0.35 * np.sin(2 * ph) + 0.15 * np.sin(3 * ph), 0.05)


def _ev_alarm(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE
    f1 = rng.uniform(1800, 3200)
    period, duty = rng.uniform(0.2, 0.6), rng.uniform(0.35, 0.6)
    cyc = t / period + rng.random()
    gate = (np.mod(cyc, 1.0) < duty).astype(float)
    gate = _conv(gate, np.hanning(int(0.004 * SAMPLE_RATE)) / (0.002 * SAMPLE_RATE))
    f = np.full(n, f1)
    if rng.random() < 0.35:  # two-tone alarm
        f = np.where(np.mod(np.floor(cyc), 2) == 0, f1, f1 * rng.uniform(0.72, 0.85))
    ph = _phase(f)
    return gate * (np.sin(ph) + 0.25 * np.sin(2 * ph) * (2 * f1 < 7800))


def _ev_rain(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE
    base = band_noise(rng, n, 300, 7800, slope=rng.uniform(0.3, 1.0))
    base *= 1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t + rng.uniform(0, 6.3))
    drops = np.zeros(n)
    for _ in range(3):
        k = int(rng.uniform(15, 50) * n / SAMPLE_RATE)
        imp = _impulses(n, rng.uniform(0, n / SAMPLE_RATE, k), rng.lognormal(0, 0.5, k))
        kt = np.arange(int(0.012 * SAMPLE_RATE)) / SAMPLE_RATE
        kern = np.sin(2 * np.pi * rng.uniform(2000, 6000) * kt) * np.exp(-kt / rng.uniform(0.002, 0.004))
        drops += _conv(imp, kern)
    return fade(0.6 * base + rng.uniform(0.5, 1.2) * _unit(drops), 0.1)


def _ev_engine(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE
    f0 = rng.uniform(25, 60) * (1 + rng.uniform(-0.12, 0.12) * t / t[-1])
    f0 = f0 * (1 + 0.03 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t))
    ph = _phase(f0)
    x = np.zeros(n)
    for k in range(1, 41):
        if k * f0.max() > 3500:
            break
        x += rng.uniform(0.5, 1.0) * k ** -0.8 * np.sin(k * ph + rng.uniform(0, 6.3))
    rumble = band_noise(rng, n, 20, 700) * (1 + 0.6 * np.sin(ph))
    return fade(_unit(x) + 0.5 * rumble, 0.1)


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
    tt = np.arange(m) / SAMPLE_RATE
    strike = np.zeros(m)
    for f, a, tau in zip(freqs, amps, taus):
        strike += a * np.sin(2 * np.pi * f * tt + rng.uniform(0, 6.3)) * np.exp(-tt / tau)
    strike[: int(0.005 * SAMPLE_RATE)] += 0.5 * rng.standard_normal(int(0.005 * SAMPLE_RATE))
    times = [rng.uniform(0.02, 0.3)]
    while len(times) < 3 and rng.random() < 0.6:
        times.append(times[-1] + rng.uniform(0.8, 2.0))
    return _conv(_impulses(n, times, rng.uniform(0.6, 1.0, len(times))), strike)


def _ev_clapping(rng: np.random.Generator, n: int) -> np.ndarray:
    dur = n / SAMPLE_RATE
    if rng.random() < 0.5:  # one person clapping
        period = 1 / rng.uniform(2, 5)
        times = np.arange(rng.uniform(0.05, 0.3), dur - 0.05, period)
        times = times + rng.normal(0, 0.05 * period, len(times))
    else:  # applause
        times = np.sort(rng.uniform(0, dur, int(rng.uniform(15, 50) * dur)))
    x = np.zeros(n)
    kl = int(0.03 * SAMPLE_RATE)
    kt = np.arange(kl) / SAMPLE_RATE
    groups = rng.integers(0, 4, len(times))
    for g in range(4):
        sel = groups == g
        kern = band_noise(rng, kl, rng.uniform(700, 1200), rng.uniform(2500, 4000))
        kern *= np.exp(-kt / rng.uniform(0.004, 0.012))
        x += _conv(_impulses(n, times[sel], rng.uniform(0.5, 1.0, sel.sum())), kern)
    return x


def _ev_whistle(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE
    if rng.random() < 0.35:  # referee whistle: trilled blasts
        f = rng.uniform(2000, 3200) * (1 + 0.03 * np.sin(2 * np.pi * rng.uniform(20, 30) * t))
        gate = np.zeros(n)
        s = rng.uniform(0.05, 0.3)
        while s < n / SAMPLE_RATE - 0.3:
            e = min(s + rng.uniform(0.3, 1.0), n / SAMPLE_RATE)
            gate[int(s * SAMPLE_RATE):int(e * SAMPLE_RATE)] = 1
            s = e + rng.uniform(0.2, 0.6)
    else:  # a person whistling a few gliding notes
        f = np.zeros(n)
        gate = np.zeros(n)
        s = rng.uniform(0.05, 0.3)
        note = rng.uniform(1000, 2600)
        f[:] = note
        while s < n / SAMPLE_RATE - 0.2:
            e = min(s + rng.uniform(0.2, 0.8), n / SAMPLE_RATE)
            f[int(s * SAMPLE_RATE):] = note
            gate[int(s * SAMPLE_RATE):int(e * SAMPLE_RATE)] = 1
            note = float(np.clip(note * 2 ** (rng.integers(-5, 6) / 12), 1000, 2800))
            s = e + rng.uniform(0.02, 0.2)
        f = _conv(f - f[0], np.ones(int(0.04 * SAMPLE_RATE)) / (0.04 * SAMPLE_RATE)) + f[0]
        f = f * (1 + 0.01 * np.sin(2 * np.pi * rng.uniform(5, 7) * t))
    gate = _conv(gate, np.hanning(int(0.02 * SAMPLE_RATE)) / (0.01 * SAMPLE_RATE))
    ph = _phase(f)
    breath = band_noise(rng, n, 800, 4500)
    return gate * (np.sin(ph) + 0.04 * breath)


def _ev_knocking(rng: np.random.Generator, n: int) -> np.ndarray:
    kl = int(0.15 * SAMPLE_RATE)
    kt = np.arange(kl) / SAMPLE_RATE
    kern = (np.sin(2 * np.pi * rng.uniform(120, 250) * kt) * np.exp(-kt / rng.uniform(0.015, 0.035))
            + 0.6 * np.sin(2 * np.pi * rng.uniform(400, 800) * kt) * np.exp(-kt / 0.012)
            + 0.3 * np.sin(2 * np.pi * rng.uniform(1200, 2000) * kt) * np.exp(-kt / 0.005))
    kern[: int(0.002 * SAMPLE_RATE)] += 0.5 * rng.standard_normal(int(0.002 * SAMPLE_RATE))
    times: list[float] = []
    s = rng.uniform(0.05, 0.5)
    while s < n / SAMPLE_RATE - 0.5:
        gap = rng.uniform(0.12, 0.2)
        for j in range(int(rng.integers(2, 5))):
            times.append(s + j * gap + rng.normal(0, 0.005))
        s = times[-1] + rng.uniform(0.6, 1.5)
    return _conv(_impulses(n, times, rng.uniform(0.6, 1.0, len(times))), kern)


def _ev_bird(rng: np.random.Generator, n: int) -> np.ndarray:
    x = np.zeros(n)
    s = rng.uniform(0.05, 0.4)
    f_center = rng.uniform(3000, 5500)
    while s < n / SAMPLE_RATE - 0.2:
        rate = rng.uniform(8, 15)
        for j in range(int(rng.integers(3, 9))):
            d = rng.uniform(0.04, 0.1)
            st = int((s + j / rate) * SAMPLE_RATE)
            m = int(d * SAMPLE_RATE)
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
    n = int(round(seconds * SAMPLE_RATE))
    x = EVENT_CLASSES[name][0](rng, n)
    if rms(x) < 1e-6:  # e.g. a clip too short for its first burst: should not happen at >= 1 s
        raise SalmonnError(f"sound event {name!r}: silent clip for {seconds:.2f} s")
    return _unit(fit(x, n))


def event_clause(name: str, rng: np.random.Generator) -> str:
    return str(rng.choice(EVENT_CLASSES[name][1]))


def event_np(name: str, rng: np.random.Generator) -> str:
    return str(rng.choice(EVENT_CLASSES[name][2]))




def augment(x: np.ndarray, rng: np.random.Generator, *, speed_range: tuple[float, float] = (0.9, 1.1),
            max_seconds: float = MAX_CLIP_SECONDS) -> tuple[np.ndarray, dict]:
    """Seeded augmentation chain; returns the clip (peak <= 0.95) and what was applied."""
    info: dict[str, Any] = {}
    if rng.random() < 0.3:
        f = float(rng.uniform(*speed_range))
        if len(x) / f > max_seconds * SAMPLE_RATE:  # never cut content: only speed up then
            f = max(f, len(x) / (max_seconds * SAMPLE_RATE))
        x = soxr.resample(x, SAMPLE_RATE * f, SAMPLE_RATE)
        info["speed"] = round(f, 4)
    if rng.random() < 0.3:
        rt60 = float(rng.uniform(0.15, 0.7))
        m = int(rt60 * SAMPLE_RATE)
        tt = np.arange(m) / SAMPLE_RATE
        rir = rng.standard_normal(m) * np.exp(-6.9 * tt / rt60)
        rir[0] = rng.uniform(2.0, 6.0) * np.sqrt(np.sum(rir[1:] ** 2))  # direct path
        x = _conv(x, rir / np.sqrt(np.sum(rir ** 2)))
        info["reverb_rt60"] = round(rt60, 3)
    return degrade(x, rng, info)


def degrade(x: np.ndarray, rng: np.random.Generator, info: dict[str, Any]) -> tuple[np.ndarray, dict]:
    """The chain's last steps (a resampling round trip, additive noise, the level), recorded in ``info``."""
    if rng.random() < 0.2:
        mid = int(rng.choice((8000, 11025, 22050)))
        n = len(x)
        x = fit(soxr.resample(soxr.resample(x, SAMPLE_RATE, mid), mid, SAMPLE_RATE), n)
        info["resample"] = mid
    if rng.random() < 0.3:
        colour = str(rng.choice(("white", "pink", "brown")))
        slope = {"white": 0.0, "pink": 1.0, "brown": 2.0}[colour]
        snr = float(rng.uniform(10, 35))
        x = x + band_noise(rng, len(x), 20, 8000, slope) * rms(x) * 10 ** (-snr / 20)
        info["noise"] = colour
        info["noise_snr_db"] = round(snr, 2)
    level = float(rng.uniform(-35, -15))
    x = x * (10 ** (level / 20) / rms(x))
    peak = float(np.max(np.abs(x)))
    if peak > 0.95:
        x = x * (0.95 / peak)
    info["level_dbfs"] = round(20 * math.log10(rms(x)), 2)
    return x, info
