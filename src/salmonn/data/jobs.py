"""One clip of the SALMONN-mini corpus: the voices, the plan of a split (which clip of which kind with which
voice, sentence, sound and augmentation) and the rendering of one planned clip (a pure function of its job)."""

from __future__ import annotations

import io
import math
import shutil
import subprocess
import tempfile
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import soundfile as sf
import soxr

from salmonn.data.music import (INSTRUMENT_NAMES, INSTRUMENTS, SCALES, TEMPI, compose, music_description, render_midi,
                                 write_midi)
from salmonn.data.sounds import (EVENT_NAMES, augment, band_noise, event_clause, event_np, fade, fit, render_event,
                                  rms)
from salmonn.data.texts import QA_FAMILIES, SQA_FAMILY, TRAINED_QA_FAMILIES, held_out, open_questions
from salmonn.errors import SalmonnError
from salmonn.frames import SAMPLE_RATE


MIN_SECONDS = 1.0  # shortest clip
MAX_SECONDS = 8.0  # longest clip
ESPEAK_HINT = "install it with: apt-get install espeak-ng"


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



def espeak(text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
    """Synthesise ``text`` with espeak-ng (voice like 'en-gb+f3'); float mono at 16 kHz."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SalmonnError(f"espeak-ng not found; {ESPEAK_HINT}")
    proc = subprocess.run([exe, "-v", voice, "-s", str(rate), "-p", str(pitch), "--stdout", text],
                          capture_output=True, check=False)
    if proc.returncode != 0 or len(proc.stdout) < 100:
        raise SalmonnError(f"espeak-ng failed for voice {voice!r}: {proc.stderr.decode(errors='replace').strip()}")
    x, sr = sf.read(io.BytesIO(proc.stdout), dtype="float64")
    if x.ndim > 1:
        x = x[:, 0]
    return soxr.resample(x, sr, SAMPLE_RATE) if sr != SAMPLE_RATE else x


def _speak_fitting(text: str, job: dict, max_seconds: float) -> tuple[np.ndarray, float]:
    """Speak with the job's engine, raising the rate (deterministically) until the clip fits ``max_seconds``."""
    if job.get("engine") == "kokoro":
        return _kokoro_fitting(text, job, max_seconds)
    if job.get("engine") in ("festival", "piper"):
        from salmonn.data.engines import speak

        return _fit_speed(lambda t, speed: speak(job["speaker"], t, speed), text, job["speed"], max_seconds)
    rate = job["rate"]
    voice = f"{job['accent']}+{job['variant']}"
    for _ in range(4):
        x = espeak(text, voice, rate, job["pitch"])
        if len(x) <= max_seconds * SAMPLE_RATE:
            return x, rate
        rate = min(400, int(math.ceil(rate * len(x) / (max_seconds * SAMPLE_RATE) * 1.05)))
    raise SalmonnError(f"sentence too long to fit {max_seconds} s: {text!r}")


def _kokoro_fitting(text: str, job: dict, max_seconds: float) -> tuple[np.ndarray, float]:
    """A Kokoro voice (salmonn.data.voices) at the job's speed, faster until it fits ``max_seconds``."""
    from salmonn.data.voices import shared_voices, speaker_named

    speaker = speaker_named(job["speaker"])
    return _fit_speed(lambda t, speed: shared_voices().speak(t.rstrip("?"), speaker, speed, question=t.endswith("?")),
                      text, job["speed"], max_seconds)


def _fit_speed(say, text: str, speed: float, max_seconds: float) -> tuple[np.ndarray, float]:
    """``say(text, speed)`` at the job's speed, faster until it fits ``max_seconds``."""
    for _ in range(4):
        x = say(text, speed)
        if len(x) <= max_seconds * SAMPLE_RATE:
            return x, speed
        speed = round(speed * len(x) / (max_seconds * SAMPLE_RATE) * 1.05, 4)
    raise SalmonnError(f"sentence too long to fit {max_seconds} s: {text!r}")


def _write_wav(path: Path, x: np.ndarray) -> float:
    if len(x) < MIN_SECONDS * SAMPLE_RATE:
        x = fit(x, int(MIN_SECONDS * SAMPLE_RATE))
    x = x[: int(MAX_SECONDS * SAMPLE_RATE)]
    pcm = np.clip(np.round(x * 32767.0), -32768, 32767).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, pcm, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return len(pcm) / SAMPLE_RATE




def _code(name: str) -> int:
    return zlib.crc32(name.encode())


def _job_rng(seed: int, split: str, kind: str, idx: int, corpus: str | None = None) -> np.random.Generator:
    """A clip's random stream; an add-on corpus (a job's ``corpus``) gets streams of its own."""
    return np.random.default_rng([seed, _code(split), _code(kind), idx] + ([_code(corpus)] if corpus else []))


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
    n = int(seconds * SAMPLE_RATE)
    if variety == "hum":
        mains = float(rng.choice((50.0, 60.0)))
        t = np.arange(n) / SAMPLE_RATE
        x = sum(rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 6.3)) for k in range(1, 6))
        x = x + 0.05 * band_noise(rng, n, 20, 8000)
    elif variety in ("silence", "room tone"):
        x = band_noise(rng, n, 20, 8000, slope=1.5)
    else:
        x = band_noise(rng, n, 20, 8000, slope={"white noise": 0.0, "pink noise": 1.0, "brown noise": 2.0}[variety])
    lo, hi = QUIET_VARIETIES[variety][0]
    return fade(x * 10 ** (float(rng.uniform(lo, hi)) / 20) / rms(x), 0.05)


_BASE_KIND = {"voice": "speech", "voice_qa": "qa", "voice_mix": "mix"}  # neural-voice twins of espeak kinds


def _render_quiet_clip(job: dict, rng: np.random.Generator, meta: dict) -> tuple[np.ndarray, list[dict]]:
    """Silence, hum or noise: no speech, no question."""
    rel = job["path"]
    entries: list[dict] = []
    x = render_quiet(job["variety"], rng, float(rng.uniform(1.5, 6.0)))
    entries += [{"path": rel, "text": NO_SPEECH_TEXT, "task": "asr"},
                {"path": rel, "text": QUIET_VARIETIES[job["variety"]][1], "task": "audiocaption"},
                {"path": rel, "text": NO_QUESTION_TEXT, "task": "QA", "Q": "", "question": ""}]
    return x, entries


def _augment_speech(job: dict, x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A speech clip's augmentation: the corpus's chain, or real rooms (``chain: rooms``, data/rooms.py)."""
    if job.get("chain") != "rooms":
        return augment(x, rng)
    from salmonn.data.rooms import augment_rooms

    return augment_rooms(x, rng, gender=job["gender"], held_out=job["split"] != "train",
                         max_seconds=MAX_SECONDS * 0.9)


def _render_speech(job: dict, rng: np.random.Generator, meta: dict) -> tuple[np.ndarray, list[dict]]:
    """A spoken sentence (espeak-ng or a neural voice): ASR and gender."""
    rel = job["path"]
    entries: list[dict] = []
    x, meta["rate"] = _speak_fitting(job["text"], job, MAX_SECONDS * 0.88)
    x, meta["aug"] = _augment_speech(job, x, rng)
    entries += [{"path": rel, "text": job["text"], "task": "asr"},
                {"path": rel, "text": job["gender"], "task": "gender_recognition"}]
    return x, entries


def _render_qa(job: dict, rng: np.random.Generator, meta: dict) -> tuple[np.ndarray, list[dict]]:
    """A spoken question; its target is the known answer (or, for neural voices, the LLM's)."""
    rel = job["path"]
    entries: list[dict] = []
    x, meta["rate"] = _speak_fitting(job["question"] + "?", job, MAX_SECONDS * 0.88)
    x = np.concatenate([np.zeros(int(rng.uniform(0.05, 0.3) * SAMPLE_RATE)), x])
    x, meta["aug"] = _augment_speech(job, x, rng)
    entry = {"path": rel, "text": job["answer"], "task": "QA", "Q": "", "question": job["question"]}
    if job["kind"] == "voice_qa":  # the target becomes SmolLM2's text answer when the corpus is assembled
        entry.update(reference=job["answer"], family=job["family"])
    entries.append(entry)
    return x, entries


def _render_events(job: dict, rng: np.random.Generator, meta: dict) -> tuple[np.ndarray, list[dict]]:
    """One or two sound events with a caption (and the class when alone)."""
    rel = job["path"]
    entries: list[dict] = []
    seconds = float(rng.uniform(2.0, 6.0))
    classes = job["classes"]
    x = render_event(classes[0], rng, seconds)
    if len(classes) == 2:
        rel_db = float(rng.uniform(-10, 0))
        x = x + render_event(classes[1], rng, seconds) * 10 ** (rel_db / 20)
        meta["second_rel_db"] = round(rel_db, 2)
        a, b = classes
        caption = str(rng.choice((
            f"{event_clause(a, rng)} while {event_clause(b, rng)}",
            f"{event_clause(a, rng)} as {event_clause(b, rng)} in the background",
            f"{event_np(a, rng)} and {event_np(b, rng)} can be heard",
            f"{event_clause(a, rng)} and {event_clause(b, rng)}",
        )))
    else:
        caption = str(rng.choice((
            event_clause(classes[0], rng),
            f"{event_np(classes[0], rng)} can be heard",
            f"the sound of {event_np(classes[0], rng)}",
        )))
    x, meta["aug"] = augment(x, rng)
    entries.append({"path": rel, "text": caption, "task": "audiocaption"})
    if len(classes) == 1:
        entries.append({"path": rel, "text": classes[0], "task": "sound_event"})
    return x, entries


def _render_music(job: dict, rng: np.random.Generator, meta: dict) -> tuple[np.ndarray, list[dict]]:
    """A composed piece rendered by fluidsynth: description and instrument."""
    rel = job["path"]
    entries: list[dict] = []
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
    n_max = int(MAX_SECONDS * 0.92 * SAMPLE_RATE)
    if len(x) > n_max:
        x = x[:n_max]
        x[-int(0.3 * SAMPLE_RATE):] *= np.linspace(1, 0, int(0.3 * SAMPLE_RATE))
    meta.update(bpm=round(bpm, 2), bars=bars, root=root, n_notes=len(notes))
    x, meta["aug"] = augment(x, rng, speed_range=(0.95, 1.05))
    entries += [{"path": rel, "task": "music_description",
                 "text": music_description(rng, job["tempo"], inst, job["texture"], job["mode"])},
                {"path": rel, "text": inst, "task": "instrument"}]
    return x, entries


def _render_mix(job: dict, rng: np.random.Generator, meta: dict) -> tuple[np.ndarray, list[dict]]:
    """Speech over a sound event at a given SNR: ASR and a caption."""
    rel = job["path"]
    entries: list[dict] = []
    sp, meta["rate"] = _speak_fitting(job["text"], job, MAX_SECONDS * 0.75)
    pad_a, pad_b = (int(rng.uniform(0.1, 0.5) * SAMPLE_RATE) for _ in range(2))
    n = len(sp) + pad_a + pad_b
    bg = fit(render_event(job["event"], rng, n / SAMPLE_RATE), n)
    snr = job["snr_db"]
    sp_full = np.concatenate([np.zeros(pad_a), sp, np.zeros(pad_b)])
    x = sp_full + bg * rms(sp) * 10 ** (-snr / 20)
    sp_clause, who = _speaker_phrase(job["gender"], rng)
    ev = job["event"]
    caption = str(rng.choice((
        f"{sp_clause} while {event_clause(ev, rng)}",
        f"{event_clause(ev, rng)} while {sp_clause}",
        f"{who} talks over {event_np(ev, rng)}",
        f"{sp_clause} with {event_np(ev, rng)} in the background",
    )))
    x, meta["aug"] = _augment_speech(job, x, rng)
    entries += [{"path": rel, "text": job["text"], "task": "asr"},
                {"path": rel, "text": caption, "task": "audiocaption"}]
    return x, entries


_RENDERERS = {"quiet": _render_quiet_clip, "speech": _render_speech, "qa": _render_qa, "events": _render_events,
              "music": _render_music, "mix": _render_mix}  # base kind -> renderer


def render_clip(job: dict) -> dict:
    """Render one clip: write its wav, return its annotation entries and metadata."""
    kind = job["kind"]
    rng = _job_rng(job["seed"], job["split"], kind, job["idx"], job.get("corpus"))
    meta = {k: v for k, v in job.items() if k not in ("root", "soundfont")}
    renderer = _RENDERERS.get(_BASE_KIND.get(kind, kind))
    if renderer is None:  # pragma: no cover - plans only hold the kinds above
        raise SalmonnError(f"unknown clip kind {kind!r}")
    x, entries = renderer(job, rng, meta)
    if job.get("no_speech"):  # plan_split marks event and music clips: their transcript says so
        entries.append({"path": job["path"], "text": NO_SPEECH_TEXT, "task": "asr"})
    meta["seconds"] = round(_write_wav(Path(job["root"]) / job["path"], x), 4)
    meta["entries"] = entries
    return meta


class Cycle:
    """Endless iterator over a pool, reshuffled (seeded) on every pass."""

    def __init__(self, items: Sequence, rng: np.random.Generator):
        self.items, self.rng, self.buf = list(items), rng, []  # type: ignore[var-annotated]

    def __next__(self):
        if not self.buf:
            self.buf = [self.items[i] for i in self.rng.permutation(len(self.items))]
        return self.buf.pop()

    def __iter__(self) -> Iterator:
        return self


def plan_split(split: str, counts: dict[str, int], seed: int, sentences: Sequence[str],
                root: str, soundfont: str, no_speech: bool = False) -> list[dict]:
    """Everything discrete about each clip of one split; the rest is drawn from its own rng."""
    rng = np.random.default_rng([seed, _code(split), 0])
    held = split != "train"
    variants = TEST_VARIANTS if held else TRAIN_VARIANTS
    sent = Cycle([s for s in sentences if held_out(s) == held], rng)
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
    plan_questions("qa", counts.get("qa", 0), split, rng, add, voice)
    ev_cycle = Cycle(EVENT_NAMES, rng)
    for i in range(counts.get("events", 0)):
        first = next(ev_cycle)
        classes = [first]
        if rng.random() < 0.3:
            classes.append(str(rng.choice([c for c in EVENT_NAMES if c != first])))
        add("events", i, classes=classes)
    inst_cycle = Cycle(INSTRUMENT_NAMES, rng)
    for i in range(counts.get("music", 0)):
        inst = next(inst_cycle)
        textures = ["melody", "arpeggios"] + (["chords", "melody with chords"] if INSTRUMENTS[inst][3] else [])
        add("music", i, instrument=inst, tempo=str(rng.choice(list(TEMPI))),
            mode=str(rng.choice(list(SCALES))), texture=str(rng.choice(textures)))
    plan_mixes("mix", counts.get("mix", 0), rng, sent, add, voice)
    if no_speech:
        for j in jobs:
            if j["kind"] in ("events", "music"):
                j["no_speech"] = True
    _plan_neural(split, counts, rng, sent, add)
    return jobs


def _plan_neural(split: str, counts: dict[str, int], rng: np.random.Generator, sent: Cycle, add) -> None:
    """Jobs of the neural-voice kinds (voice, voice_qa, voice_mix) and of speech-free clips (quiet)."""
    if not any(counts.get(k, 0) for k in ("voice", "voice_qa", "voice_mix", "quiet")):
        return
    from salmonn.data.voices import speakers_for

    held = split != "train"
    pools = {g: Cycle([s.name for s in speakers_for(held, g)], rng) for g in ("male", "female")}

    def neural() -> dict:
        gender = "male" if rng.random() < 0.5 else "female"
        return {"engine": "kokoro", "speaker": next(pools[gender]), "gender": gender,
                "speed": round(float(rng.uniform(*NEURAL_SPEED)), 3)}

    for i in range(counts.get("voice", 0)):
        add("voice", i, text=next(sent), **neural())
    plan_questions("voice_qa", counts.get("voice_qa", 0), split, rng, add, neural, with_open=True)
    plan_mixes("voice_mix", counts.get("voice_mix", 0), rng, sent, add, neural)
    quiet = Cycle(list(QUIET_VARIETIES), rng)
    for i in range(counts.get("quiet", 0)):
        add("quiet", i, variety=next(quiet))


def plan_questions(kind: str, count: int, split: str, rng: np.random.Generator, add, speaker,
                   with_open: bool = False, keep: Callable[[Sequence[str]], bool] | None = None) -> None:
    """`count` spoken-question jobs of `kind` (qa, voice_qa), each read by `speaker()`: the families in turn, a
    question form and answer of each (held-out questions outside train; sqa_test: its one family). Neural voices
    also ask the open questions (answered by the LLM, salmonn.data.spoken_qa). ``keep(forms)``: which items the
    split may ask (default: the held-out ones outside train, the others in train); a family left empty is skipped."""
    held = split != "train"
    if keep is None:
        def keep(forms: Sequence[str]) -> bool:
            return held_out(forms[0]) == held
    if split == "sqa_test":
        pool = {SQA_FAMILY: QA_FAMILIES[SQA_FAMILY]}
    else:
        pool = {f: QA_FAMILIES[f] for f in TRAINED_QA_FAMILIES}
        if with_open:
            pool["open"] = [([q], "") for q in open_questions()]
    if split != "sqa_test":
        pool = {f: v for f, v in pool.items() if any(keep(it[0]) for it in v)}
    families = Cycle(list(pool), rng)
    if split == "sqa_test":
        items = {SQA_FAMILY: Cycle(pool[SQA_FAMILY], rng)}  # the whole family: it is never trained
    else:
        items = {f: Cycle([it for it in v if keep(it[0])], rng) for f, v in pool.items()}
    for i in range(count):
        family = next(families)
        forms, answer = next(items[family])
        add(kind, i, family=family, question=str(rng.choice(forms)), answer=answer, **speaker())


def plan_mixes(kind: str, count: int, rng: np.random.Generator, sent: Cycle, add, speaker) -> None:
    """`count` speech-over-event jobs of `kind` (mix, voice_mix): a sentence read by `speaker()` over an event at
    an SNR, both in turn."""
    events = Cycle(EVENT_NAMES, rng)
    snrs = Cycle((0, 5, 10, 20), rng)
    for i in range(count):
        add(kind, i, text=next(sent), event=next(events), snr_db=next(snrs), **speaker())
