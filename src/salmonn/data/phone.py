"""Telephone-band copies of a corpus's speech (issue 33): real prompts and phone calls reach mini at 8 kHz.

The Asterisk prompts (the real-speech test set) are wideband recordings stored at 8 kHz: nothing above 4 kHz,
the low band intact (measured on 200 prompts: 100-300 Hz within 10 dB of the peak band). mini-v2 and voices-v3
band-limit about 1 clip in 15 (data/sounds.py's resampling round trip), and on voices-v3's dev split this corpus's
copies cost mini-v8b 6 WER points in the neural voices and 18 in espeak-ng. A phone corpus holds every speech
clip of a split once more, band-limited to 8 kHz and, with probability :data:`P_MULAW`, through G.711 mu-law
(8-bit companding, what a phone line or a voicemail stores); the records (transcript, gender, question) are the
source's. Nothing else changes: the rooms, voices and levels are the source corpus's.

    salmonn data phone ~/.cache/salmonn/data/voices-v3 ~/.cache/salmonn/data/phone-v3
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from salmonn.data.derived import SPLITS, derived_splits, finish_derived
from salmonn.data.sounds import fit
from salmonn.errors import SalmonnError
from salmonn.frames import SAMPLE_RATE
from salmonn.manifest import write_annotation

PHONE_RATE = 8000  # the Asterisk prompts' and a phone line's sample rate
P_MULAW = 0.5  # chance of G.711 mu-law companding after the band limit
MU = 255  # G.711's mu
SPEECH_TASKS = ("asr", "QA")  # a clip with one of these holds speech and gets a phone copy


def mulaw(x: np.ndarray) -> np.ndarray:
    """8-bit G.711 mu-law round trip of a clip in [-1, 1]."""
    y = np.sign(x) * np.log1p(MU * np.abs(np.clip(x, -1, 1))) / np.log1p(MU)
    y = np.round(y * 127) / 127  # 8 bits: sign + 7
    return np.sign(y) * np.expm1(np.abs(y) * np.log1p(MU)) / MU


def telephone(x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A clip at SAMPLE_RATE as a phone line passes it: through PHONE_RATE, sometimes mu-law; what was done."""
    y = soxr.resample(x, SAMPLE_RATE, PHONE_RATE)
    info: dict = {"phone_rate": PHONE_RATE}
    if rng.random() < P_MULAW:
        y = mulaw(y)
        info["mulaw"] = True
    return fit(soxr.resample(y, PHONE_RATE, SAMPLE_RATE), len(x)), info


def phone_split(src: Path, out: Path, split: str) -> list[dict]:
    """Phone copies of the speech clips of src/<split>.json under out/<split>/; their records (paths relative to
    out). Seeded by the clip's path: a rerun writes the same files."""
    annotation = src / f"{split}.json"
    try:
        records = json.loads(annotation.read_text())["annotation"]
    except (OSError, ValueError, KeyError) as e:
        raise SalmonnError(f"{annotation}: not a corpus annotation ({e}); give a folder that `salmonn data synth` "
                           f"wrote") from e
    by_path: dict[str, list[dict]] = {}
    for r in records:
        by_path.setdefault(r["path"], []).append(r)
    speech = {r["path"] for r in records if r["task"] in SPEECH_TASKS}
    copied: list[dict] = []
    for rel in sorted(speech):
        try:
            x, sr = sf.read(src / rel, dtype="float64")
        except (OSError, RuntimeError) as e:
            raise SalmonnError(f"{src / rel}: cannot read it ({e}); re-render the corpus") from e
        if sr != SAMPLE_RATE or x.ndim != 1:
            channels = x.shape[1] if x.ndim > 1 else 1
            raise SalmonnError(f"{src / rel}: {sr} Hz, {channels} channel(s); corpora are {SAMPLE_RATE} Hz mono")
        y, info = telephone(x, np.random.default_rng(zlib.crc32(rel.encode())))
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(out / rel, y, SAMPLE_RATE, subtype="PCM_16")
        copied += [{**r, "aug": {**r.get("aug", {}), **info}, "copy_of": str(src / rel)} for r in by_path[rel]]
    return copied


def phone(src_dir: str, out_dir: str, /, splits: str = ",".join(SPLITS)) -> None:
    """Write OUT_DIR/<split>.json: every speech clip of SRC_DIR's splits again, as a phone line passes it.

    Each clip with a transcript or a spoken question is band-limited to 8 kHz (the Asterisk prompts' rate) and,
    half the time, mu-law companded (G.711); its records are copied with the new path. Train with
    `make_manifests.py --add OUT_DIR`; choose with `dev_score.py --data OUT_DIR` (its dev split).

    Options:
      splits: comma-separated splits to copy (test splits are refused: they stay as the source holds them)
    """
    src, out = Path(src_dir).expanduser().resolve(), Path(out_dir).expanduser().resolve()
    names = derived_splits(splits, "copied")
    if src == out:
        raise SalmonnError(f"{out}: the output folder is the source; give a new folder")
    out.mkdir(parents=True, exist_ok=True)
    summary = {"source": str(src), "phone_rate": PHONE_RATE, "p_mulaw": P_MULAW, "splits": {}}
    for split in names:
        records = phone_split(src, out, split)
        write_annotation(out / f"{split}.json", records)
        clips = len({r["path"] for r in records})
        summary["splits"][split] = {"clips": clips, "records": len(records)}
        print(f"{out / split}.json: {clips} phone clips, {len(records)} records")
    finish_derived(src, out, summary)

