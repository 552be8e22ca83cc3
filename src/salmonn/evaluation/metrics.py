"""Metrics behind ``salmonn eval``: one entry, ``compute_metrics``, and a task -> scorer registry.

Units (``METRIC_UNITS``) follow the paper's results table: error rates in %, BLEU 0-100,
caption metrics x100 (coco-caption value times 100, e.g. SPIDEr 0.403 -> 40.3), accuracy and
rates as fractions 0-1, diversity in %.

Corpus error rates are total edits / total reference tokens (not a mean of utterance rates).
Caption text is tokenised with ``normalize.ptb_tokenize`` (coco-caption's PTB style) before
CIDEr-D and METEOR. METEOR and SPICE run the Java jars shipped in ``pycocoevalcap``; when Java,
a jar or SPICE's Stanford CoreNLP 3.6.0 jars are missing they are reported in ``not_computed``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jiwer
import numpy as np

from salmonn.data.normalize import (normalize_basic, normalize_chinese, normalize_english, normalize_label,
                                    ptb_tokenize)
from salmonn.errors import SalmonnError
from salmonn.evaluation import following

Ref = str | list[str]
MetricValues = dict[str, Any]  # a task's metrics: name -> value (and "details")
Options = dict[str, Any]
Scorer = Callable[[Sequence[str], Sequence[Ref], Sequence[dict], Options], MetricValues]
UNKNOWN = "<unknown>"

METRIC_UNITS: dict[str, str] = {
    "wer": "%", "cer": "%", "per": "%", "bleu": "BLEU 0-100",
    "cider_d": "x100", "meteor": "x100", "spice": "x100", "spider": "x100",
    "accuracy": "fraction", "following_rate": "fraction", "repeat_rate": "fraction",
    "same_answer_rate": "fraction", "echo_rate": "fraction",
    "diversity": "%", "distinct_1": "%", "distinct_2": "%",
}

LABEL_SYNONYMS: dict[str, dict[str, tuple[str, ...]]] = {
    "gender_recognition": {
        "male": ("man", "men", "boy", "masculine", "gentleman", "male speaker", "male voice"),
        "female": ("woman", "women", "girl", "feminine", "lady", "female speaker", "female voice"),
    },
    "emotion_recognition": {
        "neutral": ("calm", "no emotion", "neutrality"),
        "happy": ("happiness", "joy", "joyful", "excited", "excitement", "glad", "cheerful"),
        "sad": ("sadness", "unhappy", "sorrow", "sorrowful"),
        "angry": ("anger", "mad", "furious", "annoyed"),
        "frustrated": ("frustration",),
        "surprised": ("surprise",),
        "fearful": ("fear", "afraid", "scared"),
        "disgusted": ("disgust",),
    },
    "speaker_verification": {
        "yes": ("yeah", "yep", "same", "same speaker", "same person", "identical"),
        "no": ("nope", "different", "not same", "not same speaker", "different speakers",
               "different people", "different persons"),
    },
}


class NotAvailable(Exception):
    """A metric that cannot be computed on this machine; the message says why."""


# ---------------------------------------------------------------- error rates


def error_rate(hyps: Sequence[str], refs: Sequence[str], tokenize: Callable[[str], list[str]]
               ) -> tuple[float, list[dict[str, Any]]]:
    """Corpus error rate in % (total edits / total ref tokens) and per-utterance counts."""
    per, edits, total = [], 0, 0
    for hyp, ref in zip(hyps, refs, strict=True):
        h, r = tokenize(hyp), tokenize(ref)
        out = jiwer.process_words(" ".join(r), " ".join(h)) if r or h else None
        e = out.substitutions + out.deletions + out.insertions if out else 0
        per.append({"errors": e, "ref_len": len(r), "rate": 100.0 * e / len(r) if r else None,
                    "hyp_norm": " ".join(h), "ref_norm": " ".join(r)})
        edits, total = edits + e, total + len(r)
    if total == 0:
        raise SalmonnError("every reference is empty after normalisation; cannot compute an error rate")
    return 100.0 * edits / total, per


def english_words(spelling_json: str | None = None) -> Callable[[str], list[str]]:
    """Tokeniser: Whisper English normalisation, then whitespace split."""
    return lambda text: normalize_english(text, spelling_json).split()


def basic_words(text: str) -> list[str]:
    """Tokeniser: Whisper basic normalisation, then whitespace split."""
    return normalize_basic(text).split()


def chinese_chars(text: str) -> list[str]:
    """Tokeniser: characters after removing spaces, punctuation and symbols."""
    return list(normalize_chinese(text))


def phone_tokens(text: str) -> list[str]:
    """Tokeniser: space-separated phones, as they are."""
    return text.split()


# ---------------------------------------------------------------- BLEU


def bleu_tokenizer(lang: str) -> str:
    """sacrebleu tokenizer for a target language: zh -> 'zh', ja -> 'ja-mecab' if usable, else '13a'."""
    if lang == "zh":
        return "zh"
    if lang == "ja":
        try:
            from sacrebleu.tokenizers.tokenizer_ja_mecab import TokenizerJaMecab
            TokenizerJaMecab()
            return "ja-mecab"
        except Exception:  # MeCab or its dictionary missing
            return "13a"
    return "13a"


def _ref_streams(refs: Sequence[Ref]) -> list[list[str | None]]:
    """Transpose per-sample reference lists into sacrebleu's reference streams (None pads)."""
    lists = [[r] if isinstance(r, str) else list(r) for r in refs]
    width = max((len(r) for r in lists), default=1)
    return [[r[i] if i < len(r) else None for r in lists] for i in range(width)]


def bleu(hyps: Sequence[str], refs: Sequence[Ref], lang: str) -> tuple[float, list[float], str]:
    """Corpus BLEU (sacrebleu), sentence BLEU per sample, and the tokenizer used."""
    import sacrebleu

    tok = bleu_tokenizer(lang)
    corpus = sacrebleu.corpus_bleu(list(hyps), _ref_streams(refs), tokenize=tok).score
    per = [sacrebleu.sentence_bleu(h, [r] if isinstance(r, str) else list(r), tokenize=tok).score
           for h, r in zip(hyps, refs, strict=True)]
    return corpus, per, tok


# ---------------------------------------------------------------- CIDEr-D


def _ngram_counts(tokens: Sequence[str], n_max: int) -> Counter:
    """Counts of all 1..n_max-grams of a token list."""
    return Counter(tuple(tokens[i:i + n]) for n in range(1, n_max + 1) for i in range(len(tokens) - n + 1))


def _tfidf(counts: Counter, df: Counter, log_n: float, n_max: int) -> tuple[list[dict], list[float], int]:
    """TF-IDF vectors per order, their norms, and coco's length (number of bigrams)."""
    vec: list[dict] = [{} for _ in range(n_max)]
    for gram, tf in counts.items():
        vec[len(gram) - 1][gram] = tf * (log_n - math.log(max(1.0, df[gram])))
    norms = [math.sqrt(sum(w * w for w in v.values())) for v in vec]
    return vec, norms, sum(tf for g, tf in counts.items() if len(g) == 2)


def _cider_sim(hyp: tuple, ref: tuple, sigma: float) -> float:
    """Mean over n of the clipped cosine similarity times the Gaussian length penalty."""
    (hv, hn, hl), (rv, rn, rl) = hyp, ref
    penalty = math.exp(-((hl - rl) ** 2) / (2 * sigma ** 2))
    total = 0.0
    for n in range(len(hv)):
        dot = sum(min(w, rv[n].get(g, 0.0)) * rv[n].get(g, 0.0) for g, w in hv[n].items())
        total += (dot / (hn[n] * rn[n]) if hn[n] and rn[n] else dot) * penalty
    return total / len(hv)


def cider_d(hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[Sequence[str]]],
            n_max: int = 4, sigma: float = 6.0) -> tuple[float, list[float]]:
    """CIDEr-D (coco-caption) over tokenised captions: corpus mean and per-clip scores."""
    if any(len(r) == 0 for r in refs):
        raise SalmonnError("CIDEr-D: every clip needs at least one reference caption")
    ref_counts = [[_ngram_counts(r, n_max) for r in clip] for clip in refs]
    df = Counter(g for clip in ref_counts for g in set().union(*clip))
    log_n = math.log(len(refs)) if refs else 0.0
    per = []
    for hyp, clip in zip(hyps, ref_counts, strict=True):
        hvec = _tfidf(_ngram_counts(hyp, n_max), df, log_n, n_max)
        sims = [_cider_sim(hvec, _tfidf(c, df, log_n, n_max), sigma) for c in clip]
        per.append(10.0 * sum(sims) / len(sims))
    return (sum(per) / len(per) if per else 0.0), per


# ---------------------------------------------------------------- Java metrics (METEOR, SPICE)


def _java() -> str:
    """Path of the java executable, or NotAvailable."""
    java = shutil.which("java")
    if java is None:
        raise NotAvailable("no 'java' on PATH (METEOR/SPICE run Java jars; install a JRE)")
    return java


def _cocoeval_dir() -> Path:
    """Folder of the installed pycocoevalcap package, or NotAvailable."""
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        raise NotAvailable("pycocoevalcap is not installed (it ships the METEOR/SPICE jars)")
    return Path(next(iter(spec.submodule_search_locations)))


def meteor_jar() -> Path:
    """The METEOR 1.5 jar shipped with pycocoevalcap (with its paraphrase table), or NotAvailable."""
    jar = _cocoeval_dir() / "meteor" / "meteor-1.5.jar"
    if not jar.is_file() or not (jar.parent / "data" / "paraphrase-en.gz").is_file():
        raise NotAvailable(f"{jar} or its data/paraphrase-en.gz is missing")
    return jar


def spice_jar() -> Path:
    """The SPICE 1.0 jar, if the Stanford CoreNLP 3.6.0 jars it needs are in its lib/, else NotAvailable."""
    jar = _cocoeval_dir() / "spice" / "spice-1.0.jar"
    needed = [jar, *(jar.parent / "lib" / f"stanford-corenlp-3.6.0{s}.jar" for s in ("", "-models"))]
    missing = [p.name for p in needed if not p.is_file()]
    if missing:
        raise NotAvailable(f"SPICE needs {', '.join(missing)} in {jar.parent / 'lib'} (Stanford CoreNLP 3.6.0, "
                           "not shipped by pycocoevalcap or Debian; pycocoevalcap downloads it from Stanford "
                           "on first use, which needs internet)")
    return jar


def _meteor_line(proc: subprocess.Popen, line: str) -> str:
    """Send one line to the METEOR process and read one answer line."""
    proc.stdin.write((line + "\n").encode("utf-8"))
    proc.stdin.flush()
    answer = proc.stdout.readline().decode("utf-8").strip()
    if not answer:
        raise NotAvailable("the METEOR process stopped without answering")
    return answer


def meteor(hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[Sequence[str]]]) -> tuple[float, list[float]]:
    """METEOR 1.5 (coco-caption settings: -l en -norm) on tokenised captions: corpus and per clip."""
    java, jar = _java(), meteor_jar()
    cmd = [java, "-Xmx2G", "-Dfile.encoding=UTF-8", "-jar", str(jar), "-", "-", "-stdio", "-l", "en", "-norm"]
    clean = lambda toks: " ".join(toks).replace("|||", " ")  # noqa: E731
    with tempfile.TemporaryFile() as err, subprocess.Popen(
            cmd, cwd=jar.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err) as proc:
        try:
            stats = [_meteor_line(proc, " ||| ".join(["SCORE", *map(clean, r), clean(h)]))
                     for h, r in zip(hyps, refs, strict=True)]
            scores = [float(_meteor_line(proc, " ||| ".join(["EVAL", *stats])))]
            scores += [float(proc.stdout.readline()) for _ in range(len(stats))]
        except (NotAvailable, ValueError, BrokenPipeError) as exc:
            err.seek(0)
            raise NotAvailable(f"METEOR failed: {exc}; {err.read().decode(errors='replace')[-300:]}") from exc
        finally:
            proc.kill()
    return scores[-1], scores[:-1]


def spice(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> tuple[float, list[float]]:
    """SPICE 1.0 F-score: mean over clips and per clip (needs Java and CoreNLP 3.6.0 jars)."""
    java, jar = _java(), spice_jar()
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in.json", Path(tmp) / "out.json"
        src.write_text(json.dumps([{"image_id": i, "test": h, "refs": list(r)}
                                   for i, (h, r) in enumerate(zip(hyps, refs, strict=True))]))
        run = subprocess.run([java, "-Xmx8G", "-jar", str(jar), str(src), "-out", str(out), "-subset", "-silent"],
                             cwd=jar.parent, capture_output=True, text=True)
        if run.returncode != 0 or not out.is_file():
            raise NotAvailable(f"SPICE exited with {run.returncode}: {run.stderr[-300:]}")
        items = {int(x["image_id"]): float(x["scores"]["All"]["f"]) for x in json.loads(out.read_text())}
    per = [items[i] for i in range(len(hyps))]
    return float(np.mean(per)), per


# ---------------------------------------------------------------- classification


def parse_label(answer: str, synonyms: Mapping[str, Iterable[str]]) -> str:
    """The one canonical label the answer names (longest phrases win overlaps), else UNKNOWN."""
    text = normalize_label(answer)
    variants = sorted(((normalize_label(v), lab) for lab, vs in synonyms.items() for v in (lab, *vs)),
                      key=lambda x: -len(x[0]))
    taken, found = [False] * len(text), set()
    for variant, label in variants:
        for m in re.finditer(rf"(?<!\S){re.escape(variant)}(?!\S)", text) if variant else ():
            if not any(taken[m.start():m.end()]):
                taken[m.start():m.end()] = [True] * (m.end() - m.start())
                found.add(label)
    return found.pop() if len(found) == 1 else UNKNOWN


def _ref_label(ref: str, synonyms: Mapping[str, Iterable[str]], closed: bool) -> str:
    """Canonical label of one reference: exact label/variant, else (closed sets) parsed, else itself."""
    norm = normalize_label(ref)
    for label, variants in synonyms.items():
        if norm == label or norm in {normalize_label(v) for v in variants}:
            return label
    parsed = parse_label(ref, synonyms) if closed else UNKNOWN
    return norm if parsed == UNKNOWN else parsed


def canonical_refs(task: str, refs: Sequence[Ref]) -> tuple[list[list[str]], dict[str, tuple[str, ...]]]:
    """Canonical label lists per sample and the label set (task synonyms + unseen reference labels)."""
    synonyms = dict(LABEL_SYNONYMS.get(task, {}))
    out = []
    for ref in refs:
        labels = [_ref_label(r, synonyms, task in LABEL_SYNONYMS) for r in ([ref] if isinstance(ref, str) else ref)]
        for label in labels:
            synonyms.setdefault(label, ())
        out.append(labels)
    return out, synonyms


def confusion_matrix(true: Sequence[str], pred: Sequence[str], labels: Sequence[str] | None = None
                     ) -> tuple[list[str], np.ndarray]:
    """Labels and counts matrix (rows = reference, columns = prediction)."""
    labels = list(labels) if labels is not None else sorted(set(true)) + sorted(set(pred) - set(true))
    index = {lab: i for i, lab in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(true, pred, strict=True):
        matrix[index[t], index[p]] += 1
    return labels, matrix


def plot_confusion(matrix: np.ndarray, labels: Sequence[str], path: str | Path) -> Path:
    """Write the confusion matrix as a PNG heat map with counts (matplotlib, Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matrix = np.asarray(matrix)
    size = 1.5 + 0.6 * len(labels)
    fig = Figure(figsize=(size, size))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(matrix, cmap="Blues")
    ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xlabel="prediction", ylabel="reference")
    ax.set_xticklabels(labels, rotation=45, ha="right")
    ax.set_yticklabels(labels)
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", color="black")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return Path(path)


def classification(task: str, hyps: Sequence[str], refs: Sequence[Ref]) -> MetricValues:
    """Accuracy after label normalisation, per-sample predictions and the confusion matrix."""
    ref_labels, synonyms = canonical_refs(task, refs)
    preds = [parse_label(h, synonyms) for h in hyps]
    correct = [p in r for p, r in zip(preds, ref_labels)]
    true = [p if ok else r[0] for p, r, ok in zip(preds, ref_labels, correct)]
    labels, matrix = confusion_matrix(true, preds)
    per = [{"pred": p, "ref": r, "correct": ok} for p, r, ok in zip(preds, ref_labels, correct)]
    return _result({"accuracy": sum(correct) / len(correct)}, per,
                   details={"confusion": {"labels": labels, "matrix": matrix.tolist()}})


# ---------------------------------------------------------------- task scorers


def _result(metrics: dict[str, float], per: list[dict], not_computed: dict[str, str] | None = None,
            details: dict[str, Any] | None = None) -> MetricValues:
    """Assemble one scorer's result dict."""
    return {"metrics": metrics, "not_computed": not_computed or {}, "per_sample": per, "details": details or {}}


def _error_rate_scorer(name: str, tokenize: Callable[[Options], Callable[[str], list[str]]]) -> Scorer:
    """Scorer for a WER-like metric with the tokeniser built from the options."""

    def score(hyps: Sequence[str], refs: Sequence[Ref], samples: Sequence[dict], opts: Options) -> MetricValues:
        firsts = [r if isinstance(r, str) else r[0] for r in refs]
        corpus, per = error_rate(hyps, firsts, tokenize(opts))
        return _result({name: corpus}, [{name: p.pop("rate"), **p} for p in per])

    return score


def _bleu_scorer(lang: str) -> Scorer:
    """Scorer for corpus BLEU into ``lang``."""

    def score(hyps: Sequence[str], refs: Sequence[Ref], samples: Sequence[dict], opts: Options) -> MetricValues:
        corpus, per, tok = bleu(hyps, refs, lang)
        nc = {} if tok != "13a" or lang != "ja" else {"bleu_ja_mecab": "MeCab/ipadic not usable; BLEU used '13a'"}
        return _result({"bleu": corpus}, [{"bleu": p} for p in per], nc, {"bleu_tokenizer": tok})

    return score


def _caption_scorer(hyps: Sequence[str], refs: Sequence[Ref], samples: Sequence[dict], opts: Options) -> MetricValues:
    """CIDEr-D, METEOR, SPICE and SPIDEr on PTB-tokenised captions (x100)."""
    h_tok = [ptb_tokenize(h) for h in hyps]
    r_tok = [[ptb_tokenize(r) for r in ([ref] if isinstance(ref, str) else ref)] for ref in refs]
    corpus, per_c = cider_d(h_tok, r_tok)
    metrics, per = {"cider_d": 100 * corpus}, [{"cider_d": 100 * c} for c in per_c]
    nc: dict[str, str] = {}
    runs = {"meteor": lambda: meteor(h_tok, r_tok),
            "spice": lambda: spice([" ".join(t) for t in h_tok], [[" ".join(t) for t in r] for r in r_tok])}
    for name, run in runs.items():
        try:
            if not opts.get("use_java", True):
                raise NotAvailable("Java metrics switched off (use_java=False)")
            total, values = run()
        except NotAvailable as exc:
            nc[name] = f"not computed: {exc}"
            continue
        metrics[name] = 100 * total
        for row, v in zip(per, values):
            row[name] = 100 * v
    if "spice" in metrics:
        metrics["spider"] = (metrics["cider_d"] + metrics["spice"]) / 2
    else:
        nc["spider"] = "not computed: SPIDEr = mean(CIDEr-D, SPICE) and SPICE is missing"
    return _result(metrics, per, nc)


def _classification_scorer(hyps: Sequence[str], refs: Sequence[Ref], samples: Sequence[dict],
                           opts: Options) -> MetricValues:
    """Scorer wrapper for ``classification`` with the task from the options."""
    return classification(opts["task"], hyps, refs)


def _following_scorer(hyps: Sequence[str], refs: Sequence[Ref], samples: Sequence[dict], opts: Options) -> MetricValues:
    """Following rate of the task's rule."""
    flags = following.following_flags(opts["task"], hyps, samples)
    return _result({"following_rate": sum(flags) / len(flags)}, [{"follows": f} for f in flags])


def _story_scorer(hyps: Sequence[str], refs: Sequence[Ref], samples: Sequence[dict], opts: Options) -> MetricValues:
    """Story diversity (distinct-2 %), distinct-1 and repeat rate."""
    d2 = following.distinct_n(hyps, 2)
    metrics = {"diversity": d2, "distinct_1": following.distinct_n(hyps, 1), "distinct_2": d2,
               "repeat_rate": following.repeat_rate(hyps)}
    return _result(metrics, [{"repeated": f} for f in following.repeat_flags(hyps)])


def _spoken_facts_scorer(hyps: Sequence[str], refs: Sequence[Ref], samples: Sequence[dict], opts: Options
                         ) -> MetricValues:
    """Spoken factual QA: same answer as the LLM's text answer, and echo rate (``spoken_facts.score``)."""
    from salmonn.evaluation import spoken_facts

    return spoken_facts.score(hyps, samples, opts.get("text_answers"))


def _judge_missing(hyps: Sequence[str], refs: Sequence[Ref], samples: Sequence[dict], opts: Options) -> MetricValues:
    """Marks answer accuracy as not computed (it needs a judge, not a string metric)."""
    return _result({}, [{} for _ in hyps], {"accuracy": "not computed: judging free-form answers needs a "
                                                        "human or LLM judge; only the following rate is scored"})


def _judge_missing_spoken(hyps: Sequence[str], refs: Sequence[Ref], samples: Sequence[dict], opts: Options
                          ) -> MetricValues:
    """As ``_judge_missing``, naming what spoken questions are scored by instead."""
    return _result({}, [{} for _ in hyps], {"accuracy": "not computed: judging free-form answers needs a human or "
                                                        "LLM judge; scored instead: the following rate and, for "
                                                        "spoken questions, same_answer_rate and echo_rate"})


_WER_EN = _error_rate_scorer("wer", lambda o: english_words(o.get("spelling_json")))
_CAPTION = (_caption_scorer,)
_CLASSIFY = (_classification_scorer,)
_FOLLOW_QA = (_following_scorer, _judge_missing)
_SPOKEN_QA = (_following_scorer, _spoken_facts_scorer, _judge_missing_spoken)

TASK_METRICS: dict[str, tuple[Scorer, ...]] = {
    "asr": (_WER_EN,),
    "speech_separation": (_WER_EN,),
    "asr_de": (_error_rate_scorer("wer", lambda o: basic_words),),
    "asr_zh": (_error_rate_scorer("cer", lambda o: chinese_chars),),
    "phone_recognition": (_error_rate_scorer("per", lambda o: phone_tokens),),
    "translation_ec": (_bleu_scorer("zh"),),
    "translation_ed": (_bleu_scorer("de"), _following_scorer),
    "translation_ej": (_bleu_scorer("ja"), _following_scorer),
    "audiocaption": _CAPTION, "audiocaption_v2": _CAPTION, "music_description": _CAPTION,
    "emotion_recognition": _CLASSIFY, "gender_recognition": _CLASSIFY, "speaker_verification": _CLASSIFY,
    "sound_event": _CLASSIFY, "instrument": _CLASSIFY,
    "QA": _SPOKEN_QA, "sqqa": _SPOKEN_QA, "inference_QA": _FOLLOW_QA,
    "keyword_extraction": _FOLLOW_QA, "slot_filling": _FOLLOW_QA, "speech_audio_coreasoning": _FOLLOW_QA,
    "audio_story_telling": (_following_scorer, _story_scorer),
    "story": (_following_scorer, _story_scorer),  # the paper's name; FOLLOWING_RULES has both
}

_REFLESS = {_following_scorer, _judge_missing, _judge_missing_spoken, _story_scorer, _spoken_facts_scorer}
NEEDS_REFERENCES = {task for task, scorers in TASK_METRICS.items() if not set(scorers) <= _REFLESS}


def _check_inputs(task: str, hyps: Sequence[str], refs: Sequence[Ref] | None,
                  samples: Sequence[dict] | None) -> tuple[list[Ref], list[dict]]:
    """Validate lengths and fill in missing refs/samples."""
    if task not in TASK_METRICS:
        raise SalmonnError(f"task {task!r} has no metric; known tasks: {', '.join(sorted(TASK_METRICS))}")
    if not hyps:
        raise SalmonnError(f"task {task!r}: no hypotheses to score")
    refs = list(refs or [])
    if task in NEEDS_REFERENCES and len(refs) != len(hyps):
        raise SalmonnError(f"task {task!r}: {len(hyps)} hypotheses but {len(refs)} references")
    if samples is not None and len(samples) != len(hyps):
        raise SalmonnError(f"task {task!r}: {len(hyps)} hypotheses but {len(samples)} samples")
    return refs or [""] * len(hyps), list(samples) if samples is not None else [{} for _ in hyps]


def compute_metrics(task: str, hyps: list[str], refs: list[Ref] | None, samples: list[dict] | None = None,
                    *, spelling_json: str | None = None, use_java: bool = True,
                    text_answers: Mapping[str, str] | None = None) -> MetricValues:
    """Score one task: {"metrics", "not_computed", "per_sample", "details"} (units in METRIC_UNITS).

    ``text_answers`` (spoken QA): typed question -> the LLM's own text answer (``spoken_facts``); without it
    ``same_answer_rate`` is not computed."""
    refs, samples = _check_inputs(task, hyps, refs, samples)
    opts = {"task": task, "spelling_json": spelling_json, "use_java": use_java, "text_answers": text_answers}
    out = _result({}, [{} for _ in hyps])
    for scorer in TASK_METRICS[task]:
        part = scorer(hyps, refs, samples, opts)
        out["metrics"].update(part["metrics"])
        out["not_computed"].update(part["not_computed"])
        out["details"].update(part["details"])
        for row, extra in zip(out["per_sample"], part["per_sample"]):
            row.update(extra)
    return out
