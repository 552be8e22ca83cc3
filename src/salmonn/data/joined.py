"""Long speech from a corpus's short clips (issue 33): one speaker's clips joined into 8-25 s transcripts.

mini's corpora hold clips of at most 8 s, and on the Asterisk prompts mini-v8b transcribes the 23 prompts of 8-73 s
(a third of the words) at 80-95 % WER against 31-42 % for those of 1.5-8 s: it never heard a long clip. A joined
corpus holds ASR records that join 2 or more clips of one speaker of a split with the reference's ``expand_wav``
(0.1 s of silence between clips, as training and evaluation read it), their transcripts joined with spaces. No
audio is written: the records point at the source corpus's files. Each clip is used once; the speaker comes from
the source's ``meta/<split>.jsonl`` (``speaker`` for the neural and Festival voices, ``variant`` for espeak-ng).

    salmonn data joined ~/.cache/salmonn/data/voices-v3 ~/.cache/salmonn/data/joined-v3
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from salmonn.errors import SalmonnError
from salmonn.jsonl import read_jsonl

KINDS = ("speech", "voice")  # one speaker per clip: espeak-ng and the neural / Festival voices (not mixes, questions)
MIN_SECONDS, MAX_SECONDS = 8.0, 25.0  # longer than any source clip; short of a 30 s window
MAX_WORDS = 80  # about 110 SmolLM2 tokens: within the stages' max_txt_len 128
GAP_SECONDS = 0.1  # the expand_wav silence between clips (salmonn.train.data.EXPAND_GAP_SAMPLES)
SPLITS = ("train", "dev")


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


def join_speaker(clips: list[dict], rng: random.Random) -> list[list[dict]]:
    """The clips (shuffled) packed into groups of >= 2 whose length reaches a drawn MIN-MAX_SECONDS target."""
    clips = clips[:]
    rng.shuffle(clips)
    groups, group, seconds, target = [], [], 0.0, rng.uniform(MIN_SECONDS, MAX_SECONDS)
    for clip in clips:
        words = sum(len(c["text"].split()) for c in group) + len(clip["text"].split())
        if group and (seconds + GAP_SECONDS + clip["seconds"] > MAX_SECONDS or words > MAX_WORDS):
            if len(group) >= 2 and seconds >= MIN_SECONDS:  # short of its target but long enough: keep it
                groups.append(group)
                target = rng.uniform(MIN_SECONDS, MAX_SECONDS)
            group, seconds = [], 0.0
        group.append(clip)
        seconds += clip["seconds"] + (GAP_SECONDS if len(group) > 1 else 0.0)
        if seconds >= target and len(group) >= 2:
            groups.append(group)
            group, seconds, target = [], 0.0, rng.uniform(MIN_SECONDS, MAX_SECONDS)
    return groups


def joined_split(src: Path, split: str, seed: int) -> list[dict]:
    """ASR records (absolute paths) of the split's joined clips."""
    records = []
    for speaker, clips in speech_clips(src, split).items():
        for group in join_speaker(clips, random.Random(f"{seed}:{split}:{speaker}")):
            records.append({"path": str(src / group[0]["path"]),
                            "expand_wav": [str(src / c["path"]) for c in group[1:]],
                            "task": "asr", "text": " ".join(c["text"] for c in group), "speaker": speaker,
                            "seconds": round(sum(c["seconds"] for c in group) + GAP_SECONDS * (len(group) - 1), 3)})
    return records


def joined(src_dir: str, out_dir: str, /, splits: str = ",".join(SPLITS), seed: int = 0) -> None:
    """Write OUT_DIR/<split>.json: ASR records of 8-25 s, each 2 or more clips of one speaker of SRC_DIR joined.

    The records join the source's own files with expand_wav (0.1 s of silence between clips, as the reference
    reads it) and their transcripts with spaces; each clip is used once, no audio is written. Train with
    `make_manifests.py --add OUT_DIR`; choose with `dev_score.py --data OUT_DIR` (its dev split).

    Options:
      splits: comma-separated splits to join (test splits are refused: they stay as the source holds them)
      seed: the shuffle of each speaker's clips
    """
    src, out = Path(src_dir).expanduser().resolve(), Path(out_dir).expanduser().resolve()
    names = [s for s in splits.split(",") if s]
    if not names or "test" in names:
        raise SalmonnError(f"--splits {splits!r}: give train and/or dev; test splits are never joined")
    out.mkdir(parents=True, exist_ok=True)
    summary = {"source": str(src), "seconds": [MIN_SECONDS, MAX_SECONDS], "seed": seed, "splits": {}}
    for split in names:
        records = joined_split(src, split, seed)
        (out / f"{split}.json").write_text(json.dumps({"annotation": records}, indent=1) + "\n")
        minutes = round(sum(r["seconds"] for r in records) / 60, 1)
        summary["splits"][split] = {"records": len(records), "minutes": minutes,
                                    "clips": sum(1 + len(r["expand_wav"]) for r in records)}
        print(f"{out / split}.json: {len(records)} joined transcripts, {minutes} min")
    if (src / "prompts.json").is_file():
        (out / "prompts.json").write_text((src / "prompts.json").read_text())
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
