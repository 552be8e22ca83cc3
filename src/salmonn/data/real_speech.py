"""Real recorded English speech from packages that ship it, to train and choose on (issue 33).

Every voice mini trains on is synthetic; real recordings are read much worse (the Asterisk prompts, the real-speech
test set that is never trained on). These packages hold short English lines that people recorded:

* Debian ``hedgewars-data``: the game's ten English voice packs, each a recorded voice (GFDL-1.3, debian/copyright).
* Debian ``warzone2100-data``: the commander's and the units' radio messages in ``base.wz`` (GPL-2+).
* Debian ``klettres-data``: letters and short words read in American and British English (GPL-2+).
* Debian ``tuxpaint-stamps-default``: English descriptions of stamps (``<stamp>_desc.ogg``) and British English
  letters and digits (``<stamp>_en_GB.ogg``; GPL-2+).

Transcripts: where the package says the words (Tux Paint's ``<stamp>.txt``, KLettres' file names) a clip is kept
when Whisper base hears exactly them (a leading article of a caption may be unsaid); elsewhere the transcript is
Whisper base's own greedy reading (its full model, encoder and decoder: 9.3 % WER on the Asterisk prompts), kept
only when the decoder is sure of it (mean token log-probability at least :data:`MIN_LOGPROB`) and it is a plausible
length for the clip. Transcripts are written as every other training transcript is (lower case, words only, numbers
in words: :func:`corpus_text`); each kept clip records the labelling (``words``: "package" or "whisper") and
Whisper's reading.

Splits go by voice, never by clip: the voices of :data:`DEV_VOICES` are the dev split, the rest train; there is no
test split (real speech is scored on the Asterisk prompts). ``--copies N`` adds N variants of every train clip
through the real-room chain (speed, a training room, noise, level), and ``salmonn data phone`` makes phone-band
copies of the result.

    salmonn data real-speech ~/.cache/salmonn/data/real-speech --copies 2
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from salmonn.audio import load_audio
from salmonn.data.normalize import normalize_english
from salmonn.data.real_sounds import DEFAULT_CACHE, PEAK, Package, check_copies, fetch
from salmonn.data.texts import number_words
from salmonn.errors import AudioError, SalmonnError
from salmonn.frames import SAMPLE_RATE
from salmonn.manifest import write_annotation

PACKAGES = {p.name: p for p in (Package("hedgewars-data", "debian"), Package("warzone2100-data", "debian"),
                                  Package("klettres-data", "debian"), Package("tuxpaint-stamps-default", "debian"))}
LICENSES = {"hedgewars-data": "GFDL-1.3 (hedgewars debian/copyright, Data/Sounds/*)",
            "warzone2100-data": "GPL-2+ (warzone2100 debian/copyright)",
            "klettres-data": "GPL-2+ (klettres-data debian/copyright)",
            "tuxpaint-stamps-default": "GPL-2+ (tuxpaint-stamps debian/copyright)"}
HEDGEWARS_VOICES = ("British", "Classic", "Default", "HillBilly", "Mobster", "Pirate", "Robot", "Russian", "Singer",
                    "Surfer")  # the English packs (Default_es, _pl, _ru, _uk and Russian_pl speak other languages)
DEV_VOICES = ("hedgewars/Surfer", "hedgewars/Mobster", "klettres/en_GB", "tuxpaint/en_GB")  # held-out voices
MIN_LOGPROB = -0.35  # Whisper's mean token log-probability from which its own reading is kept
MAX_WORDS_PER_SECOND = 5.0  # a reading faster than this is a hallucination on a short clip
MIN_SECONDS, MAX_SECONDS = 0.3, 8.0  # clip lengths kept (the corpus's at most 8 s)
NOT_WORDS = ("aw", "ch", "th")  # KLettres' sounds that are not words
MAX_WORD_LETTERS = 20  # a longer "word" in a reading is a drawn-out cry


@dataclass(frozen=True)
class Recording:
    """One source file: its voice ("package-short/voice"), path in the package, the words it gives (or None)."""
    package: str
    voice: str
    path: str
    given: str | None
    data: bytes


def _hedgewars(root: Path) -> Iterator[Recording]:
    for voice in HEDGEWARS_VOICES:
        for f in sorted((root / "usr/share/games/hedgewars/Data/Sounds/voices" / voice).glob("*.ogg")):
            yield Recording("hedgewars-data", f"hedgewars/{voice}", str(f.relative_to(root)), None, f.read_bytes())


def _warzone(root: Path) -> Iterator[Recording]:
    path = root / "usr/share/games/warzone2100/base.wz"
    if not path.is_file():
        return
    with zipfile.ZipFile(path) as z:
        for name in sorted(z.namelist()):
            if name.startswith("audio/memressp/") and name.endswith(".ogg"):
                yield Recording("warzone2100-data", "warzone/commander", f"{path.relative_to(root)}:{name}", None,
                                z.read(name))


def _klettres(root: Path) -> Iterator[Recording]:
    for lang in ("en", "en_GB"):
        for f in sorted((root / "usr/share/klettres" / lang).glob("*/*.ogg")):
            if f.stem.lower() not in NOT_WORDS:
                yield Recording("klettres-data", f"klettres/{lang}", str(f.relative_to(root)), f.stem, f.read_bytes())


def _tux_text(txt: Path, locale: str | None) -> str | None:
    if not txt.is_file():
        return None
    lines = txt.read_text(encoding="utf-8", errors="replace").splitlines()
    if locale is None:
        return lines[0].strip() if lines else None
    prefix = f"{locale}.utf8="
    return next((line[len(prefix):].strip() for line in lines if line.startswith(prefix)), None)


def _tuxpaint(root: Path) -> Iterator[Recording]:
    stamps = root / "usr/share/tuxpaint/stamps"
    for f in sorted(stamps.rglob("*_desc.ogg")):
        text = _tux_text(f.with_name(f.name[: -len("_desc.ogg")] + ".txt"), None)
        yield Recording("tuxpaint-stamps-default", "tuxpaint/desc", str(f.relative_to(root)), text, f.read_bytes())
    for f in sorted(stamps.rglob("*_en_GB.ogg")):
        text = _tux_text(f.with_name(f.name[: -len("_en_GB.ogg")] + ".txt"), "en_GB")
        yield Recording("tuxpaint-stamps-default", "tuxpaint/en_GB", str(f.relative_to(root)), text, f.read_bytes())


READERS: dict[str, Callable[[Path], Iterator[Recording]]] = {
    "hedgewars-data": _hedgewars, "warzone2100-data": _warzone, "klettres-data": _klettres,
    "tuxpaint-stamps-default": _tuxpaint}


# ------------------------------------------------------------------ transcripts


def _words(text: str) -> list[str]:
    return normalize_english(text).split()


def corpus_text(reading: str) -> str | None:
    """A transcript in the style of every other training transcript: lower case, words only (apostrophes inside
    them kept), numbers in words; None when a number is beyond 99."""
    words = []
    for token in re.sub(r"[^a-z0-9' ]", " ", reading.lower().replace("-", " ")).split():
        token = token.strip("'")
        if token.isdigit():
            if int(token) > 99:
                return None
            token = number_words(int(token))
        if token:
            words.append(token)
    return " ".join(words) or None


def accept_given(given: str, reading: str) -> str | None:
    """The transcript of a clip whose package gives its words: Whisper's reading (corpus_text) when it says those
    words (a leading "a", "an", "the" or "the letter" of Tux Paint's captions may be unsaid); None when not."""
    heard, said = _words(reading), _words(given)
    for drop in (0, *(len(p) for p in (["a"], ["an"], ["the"], ["the", "letter"]) if said[:len(p)] == p)):
        if heard and heard == said[drop:]:
            return corpus_text(reading)
    return None


def accept_reading(reading: str, logprob: float, seconds: float) -> str | None:
    """Whisper's reading as a transcript (corpus_text) when the decoder is sure of it and it fits the clip."""
    words = _words(reading)
    if not words or logprob < MIN_LOGPROB or len(words) > MAX_WORDS_PER_SECOND * max(seconds, 1.0):
        return None
    if any(len(w) > MAX_WORD_LETTERS or re.search(r"(.)\1\1\1", w) for w in words):
        return None  # a drawn-out cry ("nooooo"), not a word
    return corpus_text(reading)


class WhisperReader:
    """Whisper base's greedy English reading of a clip and its mean token log-probability, cached by the clip's
    bytes in ``cache`` (a JSON file) so that a rebuild does not read them again."""

    def __init__(self, cache: Path):
        self.cache, self.model = cache, None
        self.readings = json.loads(cache.read_text()) if cache.is_file() else {}

    def __call__(self, key: str, wav: np.ndarray) -> tuple[str, float]:
        if key not in self.readings:
            self.readings[key] = self._read(wav)
        return tuple(self.readings[key])  # type: ignore[return-value]

    def _read(self, wav: np.ndarray) -> list:
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        from salmonn.backbones import ensure_backbones

        if self.model is None:
            path = ensure_backbones()["whisper"]
            self.processor = WhisperProcessor.from_pretrained(path)
            self.model = WhisperForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()
        features = self.processor(wav, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        with torch.inference_mode():
            out = self.model.generate(features, language="en", task="transcribe", max_new_tokens=96,
                                      return_dict_in_generate=True, output_scores=True)
            scores = self.model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)[0]
        text = self.processor.batch_decode(out.sequences, skip_special_tokens=True)[0].strip()
        return [text, round(float(scores.mean()), 4)]

    def save(self) -> None:
        self.cache.parent.mkdir(parents=True, exist_ok=True)
        self.cache.write_text(json.dumps(self.readings, indent=0, sort_keys=True) + "\n")


# ------------------------------------------------------------------ building


def _peak(x: np.ndarray) -> np.ndarray:
    top = float(np.max(np.abs(x))) if x.size else 0.0
    return x * (PEAK / top) if top > 0 else x


def labelled_clips(recordings: list[Recording], read: Callable[[str, np.ndarray], tuple[str, float]]
                   ) -> tuple[list[dict], dict[str, int]]:
    """Decode every recording and keep those with a trusted transcript: (clip rows with their waveform, dropped
    counts by reason)."""
    rows, dropped = [], {"length": 0, "unsure": 0, "not the given words": 0, "not audio": 0}
    for r in recordings:
        key = hashlib.sha256(r.data).hexdigest()
        try:
            wav = load_audio(r.data, channel="mean", name=f"{r.package}/{r.path}")
        except AudioError:
            dropped["not audio"] += 1
            continue
        seconds = len(wav) / SAMPLE_RATE
        if not MIN_SECONDS <= seconds <= MAX_SECONDS:
            dropped["length"] += 1
            continue
        reading, logprob = read(key, wav)
        text = accept_given(r.given, reading) if r.given is not None else accept_reading(reading, logprob, seconds)
        if text is None:
            dropped["not the given words" if r.given is not None else "unsure"] += 1
            continue
        rows.append({"recording": r, "wav": _peak(wav), "text": text, "whisper": reading, "logprob": logprob,
                     "words": "package" if r.given is not None else "whisper", "seconds": round(seconds, 3)})
    return rows, dropped


def _write_split(out: Path, split: str, rows: list[dict], versions: dict[str, str], copies: int) -> list[dict]:
    """Write a split's clips (and, for train, `copies` room variants of each) and return their asr records."""
    from salmonn.data.rooms import room_copy

    (out / split / "real").mkdir(parents=True, exist_ok=True)
    records = []
    for n, row in enumerate(rows):
        r: Recording = row["recording"]
        rel = f"{split}/real/speech_{n:05d}.wav"
        sf.write(out / rel, row["wav"], SAMPLE_RATE, subtype="PCM_16")
        meta = {"split": split, "voice": r.voice, "package": r.package, "version": versions[r.package],
                "source": r.path, "license": LICENSES[r.package], "words": row["words"], "whisper": row["whisper"],
                "logprob": row["logprob"], "seconds": row["seconds"]}
        records.append({"path": rel, "text": row["text"], "task": "asr", **meta})
        for copy in range(copies if split == "train" else 0):
            x, aug = room_copy(row["wav"], rel, copy, MAX_SECONDS)
            aug_rel = f"{split}/real_aug/speech_{n:05d}_{copy}.wav"
            (out / aug_rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(out / aug_rel, x, SAMPLE_RATE, subtype="PCM_16")
            records.append({"path": aug_rel, "text": row["text"], "task": "asr", **meta, "copy_of": rel, "aug": aug})
    return records


def build_real_speech(out_dir: str | os.PathLike, cache: str | os.PathLike = DEFAULT_CACHE, copies: int = 0,
                      packages: dict[str, Package] | None = None,
                      read: Callable[[str, np.ndarray], tuple[str, float]] | None = None) -> dict:
    """Fetch the packages, keep the clips with trusted transcripts, split by voice and write the corpus under
    out_dir; return the summary. ``read``: a reader (key, waveform) -> (reading, log-probability); Whisper base's
    by default, cached under ``cache``."""
    from salmonn.data.texts import mini_prompts

    out, cache, packages = Path(out_dir), Path(cache), packages or PACKAGES
    roots = {name: fetch(p, cache) for name, p in packages.items()}
    recordings = []
    for name, (root, version) in roots.items():
        found = list(READERS[name](root))
        if not found:
            raise SalmonnError(f"{root}: {name} {version} holds no English voice lines where "
                               "salmonn.data.real_speech.READERS looks; the package changed: review its reader")
        recordings += found
    reader = read or WhisperReader(cache / "real-speech-readings.json")
    try:
        rows, dropped = labelled_clips(recordings, reader)
    finally:
        if isinstance(reader, WhisperReader):
            reader.save()
    versions = {name: version for name, (_, version) in roots.items()}
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"packages": versions, "recordings": len(recordings), "dropped": dropped,
                     "min_logprob": MIN_LOGPROB, "augmented_copies": copies, "splits": {}}
    for split in ("train", "dev"):
        chosen = [row for row in rows if (row["recording"].voice in DEV_VOICES) == (split == "dev")]
        records = _write_split(out, split, chosen, versions, copies)
        write_annotation(out / f"{split}.json", records)
        summary["splits"][split] = {
            "clips": len(chosen), "records": len(records),
            "minutes": round(sum(row["seconds"] for row in chosen) / 60, 2),
            "voices": dict(sorted(Counter(row["recording"].voice for row in chosen).items())),
            "words": dict(Counter(row["words"] for row in chosen))}
    (out / "prompts.json").write_text(json.dumps(mini_prompts(), indent=1) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def real_speech(out_dir: str, /, cache: str = str(DEFAULT_CACHE), copies: int = 0) -> None:
    """Write OUT_DIR/train.json and dev.json: real recorded English speech with transcripts, split by voice.

    Fetches hedgewars-data, warzone2100-data, klettres-data and tuxpaint-stamps-default (Debian, apt-get
    download; nothing is installed) into the cache once, reads every English voice line with Whisper base (about
    1 s a clip on 2 cores, once: the readings are cached) and keeps a clip when its words are trusted: the
    package's own words that Whisper hears too, or else Whisper's reading when its decoder is sure. Train with
    `make_manifests.py --add OUT_DIR`; choose with `dev_score.py --data OUT_DIR`; phone-band copies with
    `salmonn data phone OUT_DIR OUT_DIR-phone`.

    Options:
      cache: where the packages are downloaded and unpacked (once), and Whisper's readings kept
      copies: also N variants of every train clip through the real-room chain (speed, a room, noise, level)
    """
    check_copies(copies)
    summary = build_real_speech(out_dir, cache, copies=copies)
    for name, s in summary["splits"].items():
        print(f"{Path(out_dir) / name}.json: {s['clips']} clips ({s['records']} records), {s['minutes']} min, "
              f"voices {s['voices']}")
    print(f"of {summary['recordings']} recordings, dropped: {summary['dropped']}")
