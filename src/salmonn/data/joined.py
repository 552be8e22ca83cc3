"""Long speech from a corpus's short clips (issue 33): one speaker's clips joined into long transcripts.

mini's corpora hold clips of at most 8 s, and on the Asterisk prompts mini-v8b transcribes the 23 prompts of 8-73 s
(a third of the words) at 80-95 % WER against 31-42 % for those of 1.5-8 s: it never heard a long clip. A joined
corpus holds ASR records that join 2 or more clips of one speaker of a split with the reference's ``expand_wav``
(0.1 s of silence between clips, as training and evaluation read it), their transcripts joined with spaces. No
audio is written: the records point at the source corpus's files, or at a copy of it that holds the same clips at the
same paths (``--audio``: `salmonn data phone`'s phone-band copies, for long phone prompts). Each clip is used once
per copy (``--copies``: each a new shuffle); the speaker comes from the source's ``meta/<split>.jsonl``
(``speaker`` for the neural and Festival voices, ``variant`` for espeak-ng).

    salmonn data joined ~/.cache/salmonn/data/voices-v3 ~/.cache/salmonn/data/joined-v3
    salmonn data joined ~/.cache/salmonn/data/voices-v3 ~/.cache/salmonn/data/joined-phone-v3 \
        --audio ~/.cache/salmonn/data/phone-v3 --seconds 8,29.5
"""

from __future__ import annotations

import random
from pathlib import Path

from salmonn.data.derived import SPLITS, derived_splits, finish_derived
from salmonn.errors import SalmonnError
from salmonn.frames import SEGMENT_SECONDS
from salmonn.jsonl import read_jsonl
from salmonn.manifest import write_annotation

KINDS = ("speech", "voice")  # one speaker per clip: espeak-ng and the neural / Festival voices (not mixes, questions)
MIN_SECONDS, MAX_SECONDS = 8.0, 25.0  # default lengths: longer than any source clip; short of a 30 s window
MAX_WORDS = 80  # about 110 SmolLM2 tokens: within the stages' max_txt_len 128
GAP_SECONDS = 0.1  # the expand_wav silence between clips (salmonn.train.data.EXPAND_GAP_SAMPLES)


def speech_clips(src: Path, split: str) -> dict[str, list[dict]]:
    """Speaker -> the split's single-speaker ASR clips (path relative to src, text, seconds), in path order."""
    meta_path = src / "meta" / f"{split}.jsonl"
    try:
        meta = read_jsonl(meta_path, strict=True)
    except (OSError, ValueError) as e:
        raise SalmonnError(f"{meta_path}: cannot read the clips' metadata ({e}); give a folder that "
                           f"`salmonn data synth` wrote") from e
    speakers: dict[str, list[dict]] = {}
    for m in meta:
        speaker = m.get("speaker") or m.get("variant")
        if m.get("kind") in KINDS and speaker and m.get("text"):
            speakers.setdefault(f"{m.get('gender')}:{speaker}", []).append(m)
    return {k: sorted(v, key=lambda m: m["path"]) for k, v in sorted(speakers.items())}


def join_speaker(clips: list[dict], rng: random.Random,
                 lengths: tuple[float, float] = (MIN_SECONDS, MAX_SECONDS)) -> list[list[dict]]:
    """The clips (shuffled) packed into groups of >= 2 whose length reaches a target drawn from `lengths`."""
    low, high = lengths
    clips = clips[:]
    rng.shuffle(clips)
    groups, group, seconds, target = [], [], 0.0, rng.uniform(low, high)
    for clip in clips:
        words = sum(len(c["text"].split()) for c in group) + len(clip["text"].split())
        if group and (seconds + GAP_SECONDS + clip["seconds"] > high or words > MAX_WORDS):
            if len(group) >= 2 and seconds >= low:  # short of its target but long enough: keep it
                groups.append(group)
                target = rng.uniform(low, high)
            group, seconds = [], 0.0
        group.append(clip)
        seconds += clip["seconds"] + (GAP_SECONDS if len(group) > 1 else 0.0)
        if seconds >= target and len(group) >= 2:
            groups.append(group)
            group, seconds, target = [], 0.0, rng.uniform(low, high)
    return groups


def joined_split(src: Path, split: str, seed: int, lengths: tuple[float, float] = (MIN_SECONDS, MAX_SECONDS),
                 copies: int = 1, audio: Path | None = None) -> list[dict]:
    """ASR records (absolute paths, into `audio` where given: clips it holds no copy of are left out) of the split's
    joined clips, each clip once per copy."""
    root = audio or src
    records = []
    for speaker, clips in speech_clips(src, split).items():
        clips = [c for c in clips if (root / c["path"]).is_file()] if audio else clips
        for copy in range(copies):
            rng = random.Random(f"{seed}:{split}:{speaker}" + (f":{copy}" if copy else ""))
            for group in join_speaker(clips, rng, lengths):
                records.append({"path": str(root / group[0]["path"]),
                                "expand_wav": [str(root / c["path"]) for c in group[1:]],
                                "task": "asr", "text": " ".join(c["text"] for c in group), "speaker": speaker,
                                "seconds": round(sum(c["seconds"] for c in group)
                                                 + GAP_SECONDS * (len(group) - 1), 3)})
    return records


def parse_lengths(seconds: str) -> tuple[float, float]:
    """'LOW,HIGH' -> (LOW, HIGH) seconds, checked: 0 < LOW < HIGH <= one Whisper window."""
    try:
        low, high = (float(x) for x in seconds.split(","))
    except ValueError:
        raise SalmonnError(f"--seconds {seconds!r}: give LOW,HIGH in seconds, e.g. 8,25") from None
    if not 0 < low < high <= SEGMENT_SECONDS:
        raise SalmonnError(f"--seconds {seconds!r}: need 0 < LOW < HIGH <= {SEGMENT_SECONDS} (one Whisper window)")
    return low, high


def joined(src_dir: str, out_dir: str, /, splits: str = ",".join(SPLITS), seed: int = 0,
           seconds: str = f"{MIN_SECONDS:g},{MAX_SECONDS:g}", copies: int = 1, audio: str = "") -> None:
    """Write OUT_DIR/<split>.json: long ASR records, each 2 or more clips of one speaker of SRC_DIR joined.

    The records join the source's own files with expand_wav (0.1 s of silence between clips, as the reference
    reads it) and their transcripts with spaces; each clip once per copy, no audio written. Train with
    `make_manifests.py --add OUT_DIR`; choose with `dev_score.py --data OUT_DIR` (its dev split).

    Options:
      splits: comma-separated splits to join (test splits are refused: they stay as the source holds them)
      seed: the shuffle of each speaker's clips
      seconds: LOW,HIGH: each record's length is drawn from this range (at most one 30 s Whisper window)
      copies: join each speaker's clips this many times, each time in a new order
      audio: a corpus holding copies of SRC_DIR's clips at the same paths (`salmonn data phone` wrote it): the
        records point at its files; clips it has no copy of are left out
    """
    src, out = Path(src_dir).expanduser().resolve(), Path(out_dir).expanduser().resolve()
    names = derived_splits(splits, "joined")
    lengths = parse_lengths(seconds)
    if copies < 1:
        raise SalmonnError(f"--copies {copies}: give 1 or more")
    root = Path(audio).expanduser().resolve() if audio else None
    if root is not None and not root.is_dir():
        raise SalmonnError(f"--audio {audio}: no such folder; give the copy's corpus folder (salmonn data phone)")
    out.mkdir(parents=True, exist_ok=True)
    summary = {"source": str(src), "audio": str(root or src), "seconds": list(lengths), "copies": copies,
               "seed": seed, "splits": {}}
    for split in names:
        records = joined_split(src, split, seed, lengths, copies, root)
        write_annotation(out / f"{split}.json", records)
        minutes = round(sum(r["seconds"] for r in records) / 60, 1)
        summary["splits"][split] = {"records": len(records), "minutes": minutes,
                                    "clips": sum(1 + len(r["expand_wav"]) for r in records)}
        print(f"{out / split}.json: {len(records)} joined transcripts, {minutes} min")
    finish_derived(src, out, summary)
