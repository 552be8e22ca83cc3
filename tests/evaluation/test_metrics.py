"""Metric tests: hand-computed small cases and cross-checks against jiwer/sacrebleu/pycocoevalcap."""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import sys
from collections import Counter
from pathlib import Path

import jiwer
import numpy as np
import pytest
import sacrebleu

from salmonn.errors import SalmonnError
from salmonn.evaluation import compute_metrics, confusion_matrix, plot_confusion
from salmonn.evaluation import metrics as M
from salmonn.data.normalize import normalize_chinese, normalize_english, normalize_label, ptb_tokenize


def slow_tests_enabled() -> bool:
    """SALMONN_SLOW_TESTS=1 runs the slow tests; unset, empty, 0, false or no skips them (scripts/test.sh)."""
    return os.environ.get("SALMONN_SLOW_TESTS", "").strip().lower() not in ("", "0", "false", "no")


slow = pytest.mark.skipif(not slow_tests_enabled(), reason="starts Java METEOR (10-40 s); set SALMONN_SLOW_TESTS=1")


# ------------------------------------------------------------------ ASR / CER / PER


def test_wer_hand_case_and_jiwer():
    refs = ["Hello, World! This is a test.", "The cat sat (noise)"]
    hyps = ["hello world this is test", "the cat sat down"]
    out = compute_metrics("asr", hyps, refs)
    # ref1 -> "hello world this is a test" (6 words), hyp1 drops "a": 1 deletion
    # ref2 -> "the cat sat" (3 words; "(noise)" removed), hyp2 adds "down": 1 insertion
    # corpus WER = 2 / 9 = 22.22 %, per utterance 1/6 and 1/3
    assert out["metrics"]["wer"] == pytest.approx(200 / 9)
    assert [p["wer"] for p in out["per_sample"]] == pytest.approx([100 / 6, 100 / 3])
    assert out["per_sample"][1]["ref_norm"] == "the cat sat"
    norm_r, norm_h = [normalize_english(r) for r in refs], [normalize_english(h) for h in hyps]
    assert out["metrics"]["wer"] == pytest.approx(100 * jiwer.wer(norm_r, norm_h))


def test_wer_is_corpus_level_not_mean_of_utterances():
    # 1 error in a 1-word ref and 0 errors in a 9-word ref: corpus 1/10 = 10 %, mean of rates would be 50 %
    out = compute_metrics("asr", ["dog", "we walked along the river and saw many boats"],
                          ["cat", "we walked along the river and saw many boats"])
    assert out["metrics"]["wer"] == pytest.approx(10.0)


def test_wer_normaliser_numbers_contractions_and_fillers():
    out = compute_metrics("asr", ["i am gonna pay 25 dollars"], ["Um, I'm going to pay twenty-five dollars."])
    assert out["metrics"]["wer"] == 0.0


def test_wer_spelling_map_from_json(tmp_path: Path):
    empty, mapping = tmp_path / "empty.json", tmp_path / "normalizer.json"
    empty.write_text("{}")
    mapping.write_text(json.dumps({"colour": "color"}))
    assert compute_metrics("asr", ["the colour"], ["the color"], spelling_json=str(empty))["metrics"]["wer"] == 50.0
    assert compute_metrics("asr", ["the colour"], ["the color"], spelling_json=str(mapping))["metrics"]["wer"] == 0.0
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(SalmonnError, match="bad.json"):
        compute_metrics("asr", ["a"], ["a"], spelling_json=str(bad))


def test_wer_empty_reference_counts_insertions():
    out = compute_metrics("asr", ["hello there", "a b"], ["", "a b"])
    # 2 insertions against 0 + 2 reference words -> 100 %
    assert out["metrics"]["wer"] == 100.0
    assert out["per_sample"][0]["wer"] is None and out["per_sample"][0]["errors"] == 2


def test_cer_chinese_hand_case_and_jiwer():
    refs, hyps = ["今天 天气，很好。"], ["今天天汽很好!"]
    # normalised ref "今天天气很好" (6 chars), hyp "今天天汽很好": 1 substitution -> 16.67 %
    out = compute_metrics("asr_zh", hyps, refs)
    assert out["metrics"]["cer"] == pytest.approx(100 / 6)
    assert normalize_chinese("ＡＢＣ，１２３ 你好！") == "abc123你好"
    lib = jiwer.cer(normalize_chinese(refs[0]), normalize_chinese(hyps[0]))
    assert out["metrics"]["cer"] == pytest.approx(100 * lib)


def test_per_phone_tokens():
    # ref 4 phones; hyp: AH0->AH substitution + W insertion = 2 errors -> 50 %
    out = compute_metrics("phone_recognition", ["HH AH L OW1 W"], ["HH AH0 L OW1"])
    assert out["metrics"]["per"] == 50.0
    assert out["metrics"]["per"] == pytest.approx(100 * jiwer.wer("HH AH0 L OW1", "HH AH L OW1 W"))


# ------------------------------------------------------------------ BLEU


def test_bleu_hand_case_13a():
    # hyp "the cat sat on the mat" vs ref "the cat sat on a mat", equal lengths -> BP 1
    # p1 = 5/6, p2 = 3/5 (the cat, cat sat, sat on), p3 = 2/4, p4 = 1/3
    # BLEU = (5/6 * 3/5 * 2/4 * 1/3) ** (1/4) = (1/12) ** 0.25 = 53.73
    out = compute_metrics("translation_ed", ["the cat sat on the mat"], ["the cat sat on a mat"])
    assert out["metrics"]["bleu"] == pytest.approx(100 * (1 / 12) ** 0.25)
    assert out["details"]["bleu_tokenizer"] == "13a"


def test_bleu_zh_matches_sacrebleu_with_multiple_refs():
    hyps = ["今天天气很好", "我喜欢猫"]
    refs = [["今天天气不错", "今天的天气很好"], "我喜欢小猫"]
    out = compute_metrics("translation_ec", hyps, refs)
    lib = sacrebleu.corpus_bleu(hyps, [["今天天气不错", "我喜欢小猫"], ["今天的天气很好", None]], tokenize="zh")
    assert out["metrics"]["bleu"] == pytest.approx(lib.score)
    sent = sacrebleu.sentence_bleu(hyps[1], [refs[1]], tokenize="zh").score
    assert out["per_sample"][1]["bleu"] == pytest.approx(sent)
    assert out["details"]["bleu_tokenizer"] == "zh"


def test_bleu_de_corpus_and_sentences_match_sacrebleu():
    hyps = ["Das Wetter ist heute schön.", "Ich habe einen Hund.", "Guten Morgen"]
    refs = [["Das Wetter ist heute schön.", "Heute ist das Wetter schön."], "Ich habe eine Katze.",
            "Guten Morgen!"]
    out = compute_metrics("translation_ed", hyps, refs)
    lib = sacrebleu.corpus_bleu(hyps, [[refs[0][0], refs[1], refs[2]], [refs[0][1], None, None]])
    assert out["metrics"]["bleu"] == pytest.approx(lib.score)
    assert [p["bleu"] for p in out["per_sample"]] == pytest.approx(
        [sacrebleu.sentence_bleu(h, [r] if isinstance(r, str) else r).score for h, r in zip(hyps, refs)])
    assert out["per_sample"][0]["bleu"] == pytest.approx(100.0)  # identical to one of its references


def test_bleu_ja_uses_mecab_when_available():
    tok = M.bleu_tokenizer("ja")
    try:
        import MeCab  # noqa: F401
        import ipadic  # noqa: F401
    except ImportError:
        assert tok == "13a"
        return
    assert tok == "ja-mecab"
    out = compute_metrics("translation_ej", ["今日は良い天気です"], ["今日は良い天気です"])
    assert out["metrics"]["bleu"] == pytest.approx(100.0)
    assert out["metrics"]["following_rate"] == 1.0


# ------------------------------------------------------------------ captions


def test_ptb_tokenize():
    assert ptb_tokenize('A dog\'s bark, then "silence" (quiet).') == \
        ["a", "dog", "'s", "bark", "then", "silence", "quiet"]
    assert ptb_tokenize("People don't talk -- a well-known 3.5 kg!") == \
        ["people", "do", "n't", "talk", "a", "well-known", "3.5", "kg"]


TOY_HYPS = ["a dog barks", "a cat meows loudly", "a bird sings"]
TOY_REFS = [["a dog barks"], ["a cat meows"], ["a bird sings", "birds chirp"]]


def _independent_cider_d(hyps: list[str], refs: list[list[str]]) -> list[float]:
    """Straightforward CIDEr-D written from the paper's formula, independent of the library code."""
    grams = lambda ws, n: Counter(tuple(ws[i:i + n]) for i in range(len(ws) - n + 1))  # noqa: E731
    docs = [set().union(*(grams(r.split(), n).keys() for r in rs for n in range(1, 5))) for rs in refs]
    idf = lambda g: math.log(len(refs)) - math.log(max(1, sum(g in d for d in docs)))  # noqa: E731
    scores = []
    for h, rs in zip(hyps, refs):
        total = 0.0
        for r in rs:
            pen = math.exp(-((len(h.split()) - len(r.split())) ** 2) / 72)
            for n in range(1, 5):
                gh = {g: c * idf(g) for g, c in grams(h.split(), n).items()}
                gr = {g: c * idf(g) for g, c in grams(r.split(), n).items()}
                nh, nr = math.hypot(*gh.values()), math.hypot(*gr.values())
                dot = sum(min(v, gr.get(g, 0)) * gr.get(g, 0) for g, v in gh.items())
                total += pen * (dot / (nh * nr) if nh and nr else 0.0) / 4
        scores.append(10 * total / len(rs))
    return scores


def test_cider_d_toy_corpus_by_hand():
    # N = 3 clips, idf(g) = log 3 - log df(g); "a" is in every clip's references -> idf 0.
    # clip 1: hyp == ref; orders 1-3 have cosine 1, no 4-grams -> 10 * 3/4 = 7.5
    # clip 2: hyp adds "loudly" (df 0 -> idf log 3): cos1 = 2/sqrt(6), cos2 = 2/sqrt(6), cos3 = 1/sqrt(2),
    #         cos4 = 0 (ref has no 4-gram); length diff 1 -> penalty exp(-1/72)
    # clip 3: ref 1 identical (3/4), ref 2 shares nothing (0) -> 10 * (0.75 + 0) / 2 = 3.75
    clip2 = 10 * math.exp(-1 / 72) * (4 / math.sqrt(6) + 1 / math.sqrt(2)) / 4
    corpus, per = M.cider_d([h.split() for h in TOY_HYPS], [[r.split() for r in rs] for rs in TOY_REFS])
    assert per == pytest.approx([7.5, clip2, 3.75])
    assert corpus == pytest.approx((7.5 + clip2 + 3.75) / 3)
    assert per == pytest.approx(_independent_cider_d(TOY_HYPS, TOY_REFS))


def test_cider_d_matches_pycocoevalcap():
    cider = pytest.importorskip("pycocoevalcap.cider.cider")
    hyps = ["a man is speaking while birds chirp", "rain rain rain falls on a tin roof",  # clipping matters
            "music plays", "a dog barks twice"]
    refs = [["a man speaks and birds are chirping", "birds chirp as a man talks"],
            ["heavy rain on a metal roof", "rain is falling on a roof", "rain"],
            ["a piano is playing a melody"], ["a dog barks", "dogs bark twice in the distance"]]
    gts, res = dict(enumerate(refs)), {i: [h] for i, h in enumerate(hyps)}
    score, scores = cider.Cider().compute_score(gts, res)
    ours, per = M.cider_d([h.split() for h in hyps], [[r.split() for r in rs] for rs in refs])
    assert ours == pytest.approx(score) and per == pytest.approx(list(scores))


def test_caption_without_java_reports_not_computed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no java on PATH
    out = compute_metrics("audiocaption", TOY_HYPS, TOY_REFS)
    assert out["metrics"]["cider_d"] == pytest.approx(100 * M.cider_d(
        [h.split() for h in TOY_HYPS], [[r.split() for r in rs] for rs in TOY_REFS])[0])
    assert set(out["not_computed"]) == {"meteor", "spice", "spider"}
    assert all(v.startswith("not computed:") for v in out["not_computed"].values())
    assert "java" in out["not_computed"]["meteor"]
    assert "meteor" not in out["metrics"] and "spider" not in out["metrics"]


def test_spice_reports_missing_corenlp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    (tmp_path / "spice" / "lib").mkdir(parents=True)
    (tmp_path / "spice" / "spice-1.0.jar").write_bytes(b"")
    monkeypatch.setattr(M, "_cocoeval_dir", lambda: tmp_path)
    with pytest.raises(M.NotAvailable, match="stanford-corenlp-3.6.0.jar"):
        M.spice_jar()
    monkeypatch.setattr(M, "_java", lambda: "java")
    monkeypatch.setattr(M, "meteor", lambda h, r: (_ for _ in ()).throw(M.NotAvailable("skipped here")))
    out = compute_metrics("music_description", ["a piano plays"], [["a piano is playing"]])
    assert "stanford-corenlp-3.6.0-models.jar" in out["not_computed"]["spice"]
    assert out["not_computed"]["meteor"] == "not computed: skipped here"
    assert "SPICE is missing" in out["not_computed"]["spider"]


FAKE_JAVA = """#!{python}
import json, sys
args = sys.argv[1:]
if "-stdio" in args:  # METEOR protocol: one stats line per SCORE, then per-segment scores and the total
    log = open({log!r}, "a")
    for line in sys.stdin:
        log.write(line); log.flush()
        if line.startswith("SCORE"):
            print("1 2 3", flush=True)
        elif line.startswith("EVAL"):
            for i in range(line.count("|||")):
                print(0.5 / (i + 1), flush=True)
            print(0.4, flush=True)
else:  # SPICE: java -jar spice.jar IN -out OUT ...
    items = json.load(open(args[3]))
    json.dump([{{"image_id": x["image_id"], "scores": {{"All": {{"f": 0.2 * (x["image_id"] + 1)}}}}}}
               for x in items], open(args[args.index("-out") + 1], "w"))
"""


def test_meteor_and_spice_protocol_with_fake_java(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    log = tmp_path / "meteor.log"
    java = tmp_path / "java"
    java.write_text(FAKE_JAVA.format(python=sys.executable, log=str(log)))
    java.chmod(java.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(M, "meteor_jar", lambda: tmp_path / "meteor-1.5.jar")
    monkeypatch.setattr(M, "spice_jar", lambda: tmp_path / "spice-1.0.jar")
    out = compute_metrics("audiocaption", ["A dog barks.", "Rain|||falls"],
                          [["a dog is barking", "dog barks"], "rain"])
    assert log.read_text().splitlines()[:2] == ["SCORE ||| a dog is barking ||| dog barks ||| a dog barks",
                                                "SCORE ||| rain ||| rain falls"]
    assert out["metrics"]["meteor"] == pytest.approx(40.0)
    assert [p["meteor"] for p in out["per_sample"]] == pytest.approx([50.0, 25.0])
    assert out["metrics"]["spice"] == pytest.approx(30.0)  # mean(0.2, 0.4) x 100
    assert out["metrics"]["spider"] == pytest.approx((out["metrics"]["cider_d"] + 30.0) / 2)
    assert out["not_computed"] == {}
    off = compute_metrics("audiocaption", ["a dog"], ["a dog"], use_java=False)
    assert "use_java=False" in off["not_computed"]["meteor"]


@slow
def test_meteor_real_jar_matches_pycocoevalcap():
    from pycocoevalcap.meteor.meteor import Meteor

    hyps = ["a dog barks loudly", "rain falls on a roof"]
    refs = [["a dog is barking", "dog barks"], ["heavy rain on a roof"]]
    ours = compute_metrics("audiocaption", hyps, refs)["metrics"]["meteor"]
    lib, _ = Meteor().compute_score({i: r for i, r in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)})
    assert ours == pytest.approx(100 * lib)


@slow
def test_meteor_real_jar_hand_case():
    # METEOR 1.5 (en: alpha .85, beta .2, gamma .6): score = Fmean * (1 - gamma * (chunks / matches) ** beta).
    # An exact match counts no chunk (no penalty) -> 1.0. "rain falls" vs "falls rain": 2 matches in 2 chunks
    # -> 1 - 0.6 * 1 = 0.4. Corpus: stats are summed, 6 matches, 0 + 2 chunks -> 1 - 0.6 * (1/3) ** 0.2.
    corpus, per = M.meteor([["a", "dog", "barks", "loudly"], ["rain", "falls"]],
                           [[["a", "dog", "barks", "loudly"]], [["falls", "rain"]]])
    assert per == pytest.approx([1.0, 0.4], abs=1e-6)
    assert corpus == pytest.approx(1 - 0.6 * (1 / 3) ** 0.2, abs=1e-6)


# ------------------------------------------------------------------ classification


def test_gender_accuracy_and_confusion(tmp_path: Path):
    hyps = ["The speaker is a man.", "female", "It is a boy or a girl", "MALE!"]
    refs = ["male", "Female", "female", "woman"]
    # preds: male, female, <unknown> (two labels named), male -> correct T, T, F, F -> 0.5
    out = compute_metrics("gender_recognition", hyps, refs)
    assert out["metrics"]["accuracy"] == 0.5
    assert [p["pred"] for p in out["per_sample"]] == ["male", "female", M.UNKNOWN, "male"]
    conf = out["details"]["confusion"]
    assert conf["labels"] == ["female", "male", M.UNKNOWN]
    # rows = reference: female -> (female 1, male 1, unknown 1); male -> (male 1)
    assert conf["matrix"] == [[1, 1, 1], [0, 1, 0], [0, 0, 0]]
    png = plot_confusion(np.array(conf["matrix"]), conf["labels"], tmp_path / "cm.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_speaker_verification_and_emotion_labels():
    sv = compute_metrics("speaker_verification",
                         ["No, they are not the same speaker.", "Yes, same person.", "They are different",
                          "No, the same"],
                         ["no", "yes", "no", "no"])
    assert [p["pred"] for p in sv["per_sample"]] == ["no", "yes", "no", M.UNKNOWN]
    assert sv["metrics"]["accuracy"] == 0.75
    er = compute_metrics("emotion_recognition", ["The speaker sounds unhappy.", "Excited!", "neutral"],
                         ["sad", "happy", "angry"])
    assert [p["pred"] for p in er["per_sample"]] == ["sad", "happy", "neutral"]
    assert er["metrics"]["accuracy"] == pytest.approx(2 / 3)


def test_open_label_set_from_references():
    out = compute_metrics("sound_event", ["I hear a dog bark.", "rain and dog bark", "Synth Lead"],
                          ["Dog bark", "rain", ["synth_lead", "keyboard"]])
    assert [p["pred"] for p in out["per_sample"]] == ["dog bark", M.UNKNOWN, "synth lead"]
    assert out["metrics"]["accuracy"] == pytest.approx(2 / 3)
    assert normalize_label("The Synth_Lead!") == "synth lead"
    # a reference that contains another label stays its own label; the longer phrase wins in answers
    nested = compute_metrics("sound_event", ["a dog", "the dog bark is loud"], ["dog", "dog bark"])
    assert [p["ref"] for p in nested["per_sample"]] == [["dog"], ["dog bark"]]
    assert nested["metrics"]["accuracy"] == 1.0


def test_confusion_matrix_function():
    labels, matrix = confusion_matrix(["a", "b", "b"], ["a", "a", "c"])
    assert labels == ["a", "b", "c"]
    assert matrix.tolist() == [[1, 0, 0], [1, 0, 1], [0, 0, 0]]


# ------------------------------------------------------------------ entry point


def test_compute_metrics_errors():
    with pytest.raises(SalmonnError, match="no metric"):
        compute_metrics("nonsense", ["a"], ["a"])
    with pytest.raises(SalmonnError, match="2 hypotheses but 1 references"):
        compute_metrics("asr", ["a", "b"], ["a"])
    with pytest.raises(SalmonnError, match="samples"):
        compute_metrics("QA", ["a"], None, [{}, {}])


def test_result_shape_for_every_task():
    for task in M.TASK_METRICS:
        if task in {"audiocaption", "audiocaption_v2", "music_description"}:
            out = compute_metrics(task, ["a dog barks"], [["a dog barks"]], use_java=False)
        else:
            out = compute_metrics(task, ["yes it is male"], ["yes"], [{}])
        assert set(out) == {"metrics", "not_computed", "per_sample", "details"}
        assert len(out["per_sample"]) == 1 and out["metrics"]
        assert set(out["metrics"]) <= set(M.METRIC_UNITS), task


@pytest.mark.parametrize("value", ["0", "false", ""])
def test_slow_tests_switched_off_are_skipped(value):
    """scripts/test.sh promises that SALMONN_SLOW_TESTS=0 skips the Java tests."""
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "meteor_real_jar",
                             __file__], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "SALMONN_SLOW_TESTS": value, "PYTHONWARNINGS": "ignore"})
    assert "2 skipped" in result.stdout and "passed" not in result.stdout, result.stdout[-2000:]
