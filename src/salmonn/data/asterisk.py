"""Real recorded speech for testing only: the Asterisk core prompts (Debian, CC-BY-SA; one female speaker, 8 kHz).

``asterisk-core-sounds-en-wav`` holds the recordings (``/usr/share/asterisk/sounds/en/<name>.wav``) and
``asterisk-core-sounds-en`` their transcripts (``core-sounds-en.txt``: ``name: transcript`` per line). Entries
whose transcript is bracketed or parenthesised ("[this is a simple beep tone]", "(6 seconds of silence)") are
tones or silence and are skipped, as are those with a bracketed note inside the text.

This is a test set: **never train on it** (:func:`is_asterisk_audio` lets training-manifest builders refuse
it). ``salmonn data asterisk OUT.json`` writes an ASR manifest for ``salmonn eval --task asr``.
"""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

import soundfile as sf

from salmonn.errors import SalmonnError
from salmonn.manifest import write_annotation

SOUNDS_DIR = Path("/usr/share/asterisk/sounds/en")
TRANSCRIPTS = (Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"),
               Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt"),
               Path("/usr/share/asterisk/sounds/en/core-sounds-en.txt"))
APT_HINT = "install them with: apt-get install asterisk-core-sounds-en-wav asterisk-core-sounds-en"
_LINE = re.compile(r"^([\w./+-]+):\s*(.*)$")
_NOTE = re.compile(r"[\[\]()]")


def find_transcripts() -> Path:
    """The installed core-sounds-en.txt (plain or gzipped)."""
    for path in TRANSCRIPTS:
        if path.is_file():
            return path
    raise SalmonnError(f"{TRANSCRIPTS[0]}: Asterisk transcripts not found; {APT_HINT}")


def read_transcripts(path: str | os.PathLike) -> dict[str, str]:
    """name -> transcript for every ``name: transcript`` line (``;`` starts a comment line)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise SalmonnError(f"{path}: cannot read the Asterisk transcripts ({e}); {APT_HINT}") from e
    found = {}
    for line in lines:
        match = _LINE.match(line.strip())
        if match and not line.startswith(";") and match.group(2).strip():
            found[match.group(1)] = " ".join(match.group(2).split())
    if not found:
        raise SalmonnError(f"{path}: no 'name: transcript' lines; is it core-sounds-en.txt? {APT_HINT}")
    return found


def spoken_form(transcript: str) -> str:
    """The transcript as said: the keypad symbols are read "star" and "pound"."""
    return " ".join(transcript.replace("*", " star ").replace("#", " pound ").split())


def is_speech(transcript: str) -> bool:
    """False for tones, silence and entries with a bracketed note: their text is not what is said."""
    return not _NOTE.search(transcript)


def asterisk_records(sounds_dir: str | os.PathLike = SOUNDS_DIR,
                     transcripts: str | os.PathLike | None = None) -> tuple[list[dict], dict[str, int]]:
    """ASR records ``{"id", "path", "text", "task", "seconds"}`` of the spoken prompts, and skip counts."""
    sounds = Path(sounds_dir)
    if not sounds.is_dir():
        raise SalmonnError(f"{sounds}: Asterisk recordings not found; {APT_HINT}")
    table = read_transcripts(transcripts if transcripts is not None else find_transcripts())
    records, skipped = [], {"not_speech": 0, "no_wav": 0}
    for name, text in sorted(table.items()):
        if not is_speech(text):
            skipped["not_speech"] += 1
            continue
        wav = sounds / f"{name}.wav"
        if not wav.is_file():
            skipped["no_wav"] += 1
            continue
        seconds = sf.info(str(wav)).duration
        records.append({"id": f"asterisk/{name}", "path": str(wav.resolve()), "text": spoken_form(text), "task": "asr",
                        "seconds": round(seconds, 3)})
    if not records:
        raise SalmonnError(f"{sounds}: no recording matches a transcript; {APT_HINT}")
    return records, skipped


def is_asterisk_audio(path: str | os.PathLike) -> bool:
    """True for a file of the Asterisk test set (training manifests must not contain one)."""
    resolved = Path(path).resolve()
    return any(str(resolved).startswith(str(root.resolve()) + os.sep)
               for root in (SOUNDS_DIR, SOUNDS_DIR.parent))


def write_asterisk_manifest(out: str | os.PathLike, sounds_dir: str | os.PathLike = SOUNDS_DIR,
                            transcripts: str | os.PathLike | None = None) -> dict:
    """Write the ASR test manifest (reference annotation layout) and return its summary."""
    records, skipped = asterisk_records(sounds_dir, transcripts)
    out = Path(out)
    if out.suffix != ".json":
        raise SalmonnError(f"{out}: the manifest is written as JSON; give a path ending in .json")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_annotation(out, records)
    return {"clips": len(records), "minutes": round(sum(r["seconds"] for r in records) / 60, 2),
            "words": sum(len(r["text"].split()) for r in records), **{f"skipped_{k}": v for k, v in skipped.items()}}


def asterisk(out: str, /, sounds: str = str(SOUNDS_DIR), transcripts: str | None = None) -> None:
    """Write OUT.json: an ASR test manifest of the Asterisk recorded prompts (real speech; never train on it).

    Reads the Debian packages asterisk-core-sounds-en-wav (recordings) and asterisk-core-sounds-en
    (transcripts; tones, silence and bracketed entries are skipped). Score a model with:
    salmonn eval --manifest OUT.json --task asr.

    Options:
      sounds: the folder of the recordings (<name>.wav)
      transcripts: core-sounds-en.txt or .txt.gz (default: where the Debian package puts it)
    """
    summary = write_asterisk_manifest(out, sounds, transcripts)
    print(f"{out}: {summary['clips']} clips, {summary['minutes']} min, {summary['words']} words "
          f"(skipped: {summary['skipped_not_speech']} tones/silence, {summary['skipped_no_wav']} without a wav)")
