"""The plan of the voices-v3 corpus (issue 33, `salmonn data synth --size voices-v3`): an add-on to mini-v2 with
more distinct voices, real rooms and a dev split. It leaves mini-v2's plan as it is and never reads mini-v2's
test sentences, questions or speakers outside its own test split.

Voices (data/engines.py, data/voices.py; genders from each voice's own description):

| split | new engines | Kokoro (never in mini-v2) | espeak-ng variants (never in mini-v2) |
| --- | --- | --- | --- |
| train | Festival ``kal_diphone`` (m), Piper ``joe`` (m) | 6 three-table female blends, 6 male ``kumo`` + two tables | 13 male (Gene ... robert), mini-v2's train female variants |
| dev | Festival ``ked_diphone`` (m) | 3 female, 3 male with ``jf_tebukuro`` at weights/shifts mini-v2's test never uses | Andy, Lee, john, pedro (m), shelby (f) |
| test | Festival ``cmu_us_slt_arctic_hts`` (f) | | |

Piper's joe is in train only: the issue's gap is that every male neural voice is one Kokoro table, and joe is
the only other neural male voice that ships. Test is one voice of an engine training never hears (and a gender
that the new engines give training no female of), dev one unseen speaker of a known engine plus unseen Kokoro
and espeak-ng speakers: the dev split of the existing kinds, so that choices are made off mini-v2's test.

Words: train reads the training pool (``held_out`` false), as mini-v2's train does. The held-out pool is split
by mini-v2's test plan (seed :data:`MINI_V2_SEED`, the rendered corpus): test reads the sentences and asks the
questions that mini-v2's test does; dev reads the held-out sentences and asks the held-out questions that
mini-v2's test never does (624 of 1534 sentences; 47 of 117 question items: 26 open, 21 arithmetic).

Every clip of train and every clip in a new voice goes through the real-room chain (data/rooms.py: speed
0.9/1.0/1.1, pitch, a real room: three rooms in train, the other two in dev and test, then noise and level); the
Kokoro and espeak-ng clips of dev go through mini-v2's own chain, as its test clips do, and dev also holds
sound events, music and speech-free clips planned as mini-v2 plans them: dev is a stand-in for mini-v2's test
as well as for this corpus's. Each clip's ``aug`` metadata says what was done.
Spoken questions in the new and Kokoro voices (``voice_qa``) get SmolLM2's text answer as target, as in
mini-v2; espeak-ng's (``qa``) the known answer.
"""

from __future__ import annotations

import zlib
from typing import Any, Sequence

import numpy as np

from salmonn.data.jobs import (NEURAL_SPEED, PITCH, RATE_WPM, TRAIN_VARIANTS, Cycle, _code, plan_mixes,
                               plan_questions, plan_split)
from salmonn.data.texts import held_out
from salmonn.errors import SalmonnError

CORPUS = "voices-v3"  # the jobs' ``corpus``: their clips' random streams differ from mini-v2's
MINI_V2_SEED = 0  # the seed of the rendered mini-v2 corpus, whose test split this one keeps apart from dev
SPLITS = ("train", "dev", "test")
# (voice, weight): a split's voice kinds draw a weighted cycle of these; "kokoro" is the split's Kokoro pool
ENGINE_VOICES: dict[str, tuple[tuple[str, int], ...]] = {
    "train": (("festival:kal_diphone", 3), ("piper:joe", 4), ("kokoro", 3)),
    "dev": (("festival:ked_diphone", 1), ("kokoro", 1)),
    "test": (("festival:cmu_us_slt_arctic_hts", 1),),
}
ESPEAK_VARIANTS: dict[str, dict[str, tuple[str, ...]]] = {
    "train": {"male": ("Gene", "Jacky", "Mario", "Michael", "david", "gustave", "iven", "marcelo", "norbert",
                       "pablo", "paul", "quincy", "robert"),
              "female": TRAIN_VARIANTS["female"]},
    "dev": {"male": ("Andy", "Lee", "john", "pedro"), "female": ("shelby",)},
    "test": {"male": (), "female": ()},
}
ESPEAK_ACCENTS = ("en-us", "en-gb", "en-gb-x-rp", "en-us-nyc", "en-gb-scotland", "en-029")
KINDS = ("speech", "qa", "voice", "voice_qa", "voice_mix")  # speech/qa: espeak-ng; the voice kinds: the rest
SOUND_KINDS = ("events", "music", "quiet")  # mini-v2's speech-free kinds, planned as mini-v2 plans them
NEW_ENGINES = ("festival", "piper")
PHRASE_WORDS = 3  # the words-v3 corpus: transcripts of 1-3 words (isolated words, a number, a short command)


def held_out_pools(sentences: Sequence[str], reserved: Sequence[dict]) -> dict[str, Any]:
    """Which sentences and question items each split may use; ``reserved``: mini-v2's test jobs."""
    taken = {j["text"] for j in reserved if "text" in j}
    asked = {j["question"] for j in reserved if "question" in j}
    return {
        "sentences": {"train": [s for s in sentences if not held_out(s)],
                      "dev": [s for s in sentences if held_out(s) and s not in taken],
                      "test": [s for s in sentences if held_out(s) and s in taken]},
        "questions": {"train": lambda forms: not held_out(forms[0]),
                      "dev": lambda forms: held_out(forms[0]) and not asked.intersection(forms),
                      "test": lambda forms: held_out(forms[0]) and bool(asked.intersection(forms))},
    }


def short_phrases(sentences: Sequence[str]) -> list[str]:
    """1 to :data:`PHRASE_WORDS` consecutive words of each sentence (first and last of 3 letters or more, a lone
    word of 4, where the sentence has such), drawn from a stream seeded by the sentence: the words-v3 corpus's
    transcripts (every transcript of mini-v2 and voices-v3 has 4 or more words)."""
    phrases = []
    for sentence in sentences:
        words = sentence.split()
        rng = np.random.default_rng(zlib.crc32(sentence.encode()))
        n = int(rng.integers(1, PHRASE_WORDS + 1))
        shortest = 4 if n == 1 else 3
        starts = [i for i in range(len(words) - n + 1) if min(len(words[i]), len(words[i + n - 1])) >= shortest]
        start = int(rng.choice(starts)) if starts else int(rng.integers(0, len(words) - n + 1))  # no lone "a"
        phrases.append(" ".join(words[start:start + n]))
    return phrases


def plan_voices_v3(split: str, counts: dict[str, int], seed: int, pools: dict[str, Any], root: str,
                   soundfont: str) -> list[dict]:
    """The jobs of one split (``counts``: kind -> clips, kinds of :data:`KINDS` and :data:`SOUND_KINDS`)."""
    from salmonn.data.voices import addon_speakers

    if split not in SPLITS:
        raise SalmonnError(f"voices-v3: split {split!r} is not one of {', '.join(SPLITS)}")
    unknown = set(counts) - set(KINDS) - set(SOUND_KINDS)
    if unknown:
        raise SalmonnError(f"voices-v3: kinds {sorted(unknown)} are not among {', '.join(KINDS + SOUND_KINDS)}")
    rng = np.random.default_rng([seed, _code(split), _code(CORPUS)])
    sent = Cycle(pools["sentences"][split], rng)
    jobs: list[dict] = []
    kokoro_pool = Cycle([s.name for s in addon_speakers(split)], rng) if split != "test" else None
    voices = Cycle([v for v, w in ENGINE_VOICES[split] for _ in range(w)], rng)
    variants = ESPEAK_VARIANTS[split]

    def espeak() -> dict:
        genders = [g for g in ("male", "female") if variants[g]]
        gender = str(rng.choice(genders))
        return {"accent": str(rng.choice(ESPEAK_ACCENTS)), "variant": str(rng.choice(variants[gender])),
                "gender": gender, "rate": int(rng.integers(RATE_WPM[0], RATE_WPM[1] + 1)),
                "pitch": int(rng.integers(PITCH[gender][0], PITCH[gender][1] + 1))}

    def neural() -> dict:
        from salmonn.data.engines import engine_voice
        from salmonn.data.voices import speaker_named

        name = next(voices)
        if name == "kokoro":
            name, engine = next(kokoro_pool), "kokoro"
            gender = speaker_named(name).gender
        else:
            engine, gender = name.split(":")[0], engine_voice(name).gender
        return {"engine": engine, "speaker": name, "gender": gender,
                "speed": round(float(rng.uniform(*NEURAL_SPEED)), 3)}

    def add(kind: str, i: int, **kw: Any) -> None:
        # the new voices and all of train: the real rooms; mini-v2's voices in dev and test: mini-v2's own chain
        rooms = split == "train" or kw.get("engine") in NEW_ENGINES
        jobs.append({"kind": kind, "idx": i, "split": split, "seed": seed, "root": root, "soundfont": soundfont,
                     "corpus": CORPUS, **({"chain": "rooms"} if rooms else {}),
                     "path": f"{split}/{kind}/{kind}_{i:05d}.wav", **kw})

    keep = pools["questions"][split]
    for i in range(counts.get("speech", 0)):
        add("speech", i, text=next(sent), **espeak())
    plan_questions("qa", counts.get("qa", 0), split, rng, add, espeak, keep=keep)
    for i in range(counts.get("voice", 0)):
        add("voice", i, text=next(sent), **neural())
    plan_questions("voice_qa", counts.get("voice_qa", 0), split, rng, add, neural, with_open=True, keep=keep)
    plan_mixes("voice_mix", counts.get("voice_mix", 0), rng, sent, add, neural)
    sounds = {k: counts[k] for k in SOUND_KINDS if counts.get(k)}
    if sounds:  # no sentences or speakers: the generators' own draws, in a split mini-v2 does not have
        jobs += [dict(j, corpus=CORPUS) for j in plan_split(split, sounds, seed, [], root, soundfont, no_speech=True)]
    return jobs
