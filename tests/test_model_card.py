"""The SALMONN-mini model card describes the shipped weights: every file it cites exists, every stored output under
scripts/mini/results/ is named by the card, its history page or a script, the stored outputs measured the shipped
weights (their sha256), and the card's numbers are what those outputs say."""

import hashlib
import json
import re
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MINI = ROOT / "src" / "salmonn" / "assets" / "mini"
CARD = MINI / "README.md"
HISTORY = ROOT / "docs" / "mini" / "history.md"
RESULTS = ROOT / "scripts" / "mini" / "results"
CITED = re.compile(r"`([^`\s/~][^`\s]*(?:\.json|\.py|\.sh|/))`")  # a backticked repo file or folder, not a command
SEARCHED = ("scripts/mini", "src/salmonn", "docs", "tests")  # where a bare name may live
SHIPPED_OUTPUTS = ("card_numbers.json", "long_form_all.json", "long_form_first40.json",
                   "long_form_all_ctc_rescore.json", "ctc_rescore.json", "clip_long_form.json",
                   "real_events_probe.json", "ctc_rescore_greedy.json", "clip_long_form_transcribe.json")


def resolves(name: str) -> bool:
    pattern = name.rstrip("/")
    return any(ROOT.glob(pattern)) or any(any((ROOT / folder).glob(f"**/{pattern}")) for folder in SEARCHED)


def test_every_cited_file_exists():
    for page in (CARD, HISTORY):
        cited = sorted(set(CITED.findall(page.read_text())))
        assert len(cited) > 10, f"{page.name} cites its scripts and outputs in backticks"
        assert [name for name in cited if not resolves(name)] == [], page


def test_a_missing_file_is_caught():
    assert not resolves("stage0_ctc_wer_never_written.json")
    assert not resolves("scripts/mini/no_such_script.py")


# ------------------------------------------------------------------------------------------------ stored outputs
def naming_text() -> str:
    """What may name a stored output: the card, the docs (the card's history among them), every script."""
    pages = [CARD, ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "configs").rglob("*.md")]
    scripts = [p for p in (ROOT / "scripts").rglob("*") if p.suffix in (".py", ".sh") and RESULTS not in p.parents]
    scripts += list((ROOT / "benchmarks").glob("*.py"))
    return "\n".join(p.read_text() for p in pages + scripts)


def is_named(relative: str, text: str) -> bool:
    """A stored file is named by its path under results/, by its own name when it lies at the top, or (in a
    folder such as candidate_v7/) by its folder."""
    parts = relative.split("/")
    if len(parts) > 1:
        return relative in text or re.search(rf"(?<![\w-]){re.escape(parts[0])}/", text) is not None
    return re.search(rf"(?<![\w/-]){re.escape(relative)}", text) is not None or f"results/{relative}" in text


def test_every_stored_output_is_named_by_the_card_or_a_script():
    text = naming_text()
    stored = sorted(str(p.relative_to(RESULTS)) for p in RESULTS.rglob("*") if p.is_file())
    assert [name for name in stored if not is_named(name, text)] == []


def test_an_unnamed_output_is_caught():
    assert not is_named("card_numbers_v0.json", "`card_numbers.json`, `candidate_v0/card_numbers_v0.json`x")
    assert is_named("candidate_v0/train.json", "see `scripts/mini/results/candidate_v0/`")


def _stored(name: str):
    return json.loads((RESULTS / name).read_text())


def shipped_sha256() -> str:
    return hashlib.sha256((MINI / "trainable.safetensors").read_bytes()).hexdigest()


def test_the_shipped_outputs_measured_the_shipped_weights():
    sha = shipped_sha256()
    assert sha in CARD.read_text()
    assert {name: _stored(name)["weights_sha256"] for name in SHIPPED_OUTPUTS} == dict.fromkeys(SHIPPED_OUTPUTS, sha)


# ------------------------------------------------------------------------------------------------ the card's numbers
def _metric(tasks: dict, task: str, metric: str, scaling: float = 4.0) -> float:
    (run,) = [r for r in tasks[task]["runs"] if r["lora_scaling"] == scaling]
    return run["metrics"][metric]


def _same(tasks: dict, task: str, scaling: float = 4.0) -> str:
    (run,) = [r for r in tasks[task]["runs"] if r["lora_scaling"] == scaling]
    return f"{run['spoken_qa']['same']} / {run['spoken_qa']['kept']}"


def one_place(x: float) -> str:
    """A stored number to 1 decimal place as the card writes it, halves rounded up (31.65: 31.7)."""
    return str(Decimal(str(x)).quantize(Decimal("0.1"), ROUND_HALF_UP))


def pct(fraction: float) -> str:
    """A fraction as long_form.py stores it (0.5085) as the card's percentage (50.9 %)."""
    return f"{one_place(Decimal(str(fraction)) * 100)} %"


def than(points: float) -> str:
    """A gap in WER points (long form minus clip by clip) as the card words it."""
    return f"{abs(points):.1f} points {'better' if points < 0 else 'worse'} than"


def with_interval(*tasks: str) -> str:
    """Accuracies and their Wilson 95 % intervals (card_numbers.json's `intervals`) as the card writes them."""
    found = [_stored("card_numbers.json")["intervals"][task] for task in tasks]
    values = " / ".join(f"{f['accuracy']:.2f}" for f in found)
    ranges = " / ".join(f"{f['wilson95'][0]:.2f}–{f['wilson95'][1]:.2f}" for f in found)
    return f"**{values}** (95 % CI {ranges})"


def results_rows() -> dict[str, str]:
    """The Results table's row label (its start) -> the value cell, formatted from the stored outputs."""
    t = _stored("card_numbers.json")["tasks"]
    every = _stored("long_form_all.json")
    rescored = _stored("ctc_rescore.json")["sets"]
    chunked = _stored("clip_long_form.json")
    transcribed = _stored("clip_long_form_transcribe.json")
    long_rescored = _stored("long_form_all_ctc_rescore.json")
    mini = json.loads((ROOT / "benchmarks" / "mini.json").read_text())
    measured = mini["info"].get("clip_weights_sha256") or mini["info"].get("weights_sha256")
    assert measured in (None, shipped_sha256()), "benchmarks/mini.json's clip run measured other weights"  # None: v6's
    clip = mini["clip"]
    short = every["short_clips"]
    return {
        "ASR, espeak-ng voices": f"**{_metric(t, 'asr', 'wer'):.1f} %**",
        "ASR, neural voices": f"**{_metric(t, 'asr@voice', 'wer'):.1f} %**",
        "real speech, Asterisk prompts, clip by clip": f"**{pct(every['clip_level_wer'])}** / "
                                                       f"**{pct(short['clip_level_wer'])}** (64 new tokens for "
                                                       f"every clip: {pct(every['clip_level_wer_64'])})",
        "same, each clip answered as `salmonn infer --long-form`": f"**{pct(chunked['wer'])}** (whole clips: "
                                                                  f"{pct(chunked['whole_clip_wer'])})",
        "same three with **CTC rescoring**": "**" + " / ".join(f"{one_place(rescored[k]['rescored'])} %" for k in
                                                              ("espeak", "neural", "asterisk")) + "**",
        "Asterisk prompts each as `--long-form` answers them, with `--preset transcribe`":
            f"**{pct(transcribed['wer'])}** (greedy: {pct(chunked['wer'])})",
        "long form: all 542 joined": f"**{pct(every['modes'][0]['wer'])}** ({than(every['default_gap_points'])} clip "
                                     f"by clip) / **{pct(short['modes'][0]['wer'])}** "
                                     f"({than(short['modes'][0]['gap_points'])} its clip by clip)",
        "same, all 542, with CTC rescoring": f"**{pct(long_rescored['modes'][0]['wer'])}** "
                                             f"({than(long_rescored['default_gap_points'])} its clip by clip with 64 "
                                             f"new tokens per clip, {pct(long_rescored['clip_level_wer'])})",
        "gender, espeak / neural": with_interval("gender_recognition", "gender_recognition@voice"),
        "sound event": with_interval("sound_event"),
        "instrument": with_interval("instrument"),
        "audio without speech": f"**{_metric(t, 'asr@quiet', 'wer'):.0f} % / {_metric(t, 'asr@events', 'wer'):.0f} %**",
        "spoken factual QA, espeak / neural questions, LoRA 1x": f"**{_same(t, 'QA')}, {_same(t, 'QA@voice_qa')}**",
        "same, LoRA 0.5x": f"**{_same(t, 'QA', 2.0)}, {_same(t, 'QA@voice_qa', 2.0)}**",
        "spoken questions: echo rate": f"**{_metric(t, 'QA', 'echo_rate'):.2f} / "
                                       f"{_metric(t, 'QA@voice_qa', 'echo_rate'):.2f}**",
        "untrained spoken question": f"**{_metric(t, 'QA', 'following_rate'):.2f} / "
                                    f"{_metric(t, 'QA@voice_qa', 'following_rate'):.2f}**",
        "audio caption": f"**{_metric(t, 'audiocaption', 'cider_d'):.0f}**",
        "music description": f"**{_metric(t, 'music_description', 'cider_d'):.0f}**",
        "speed: 10 s clip + 32 tokens": f"{clip['LoRA merged + greedy loop + compiled step']['median_s']:.2f} fp32 / "
                                        f"{clip['bf16 weights + greedy loop + compiled step']['median_s']:.2f} bf16 "
                                        f"with the compiled step, "
                                        f"{clip['defaults: LoRA merged + greedy loop']['median_s']:.2f} by default "
                                        f"(`benchmarks/mini.json`)",
    }


def table_cells(text: str, heading: str) -> list[list[str]]:
    """The rows (cells) of the first Markdown table after a heading line that starts with `heading`."""
    section = text[text.index(heading):]
    rows = re.search(r"\n(\|.*\|\n)+", section).group(0).strip().splitlines()
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows[2:]]


def test_results_table_is_the_stored_outputs():
    rows = table_cells(CARD.read_text(), "## Results")
    expected = results_rows()
    found = {label: row[2] for row in rows for label in expected if row[0].startswith(label)}
    assert found.keys() == expected.keys(), "every row the test knows is in the table"
    assert {k: (v, expected[k]) for k, v in found.items() if v != expected[k]} == {}


def test_a_wrong_number_in_the_card_is_caught():
    right = results_rows()["ASR, espeak-ng voices"]
    text = CARD.read_text().replace(f"| {right} |", "| **61.0 %** |", 1)
    assert text != CARD.read_text()
    rows = table_cells(text, "## Results")
    assert any(row[0] == "ASR, espeak-ng voices" and row[2] != right for row in rows)


def test_history_table_is_the_stored_outputs():
    """Each shipped version's row: its ASR and gender numbers from that version's card_numbers file."""
    rows = {row[0].split(" (")[0].strip("*"): row for row in table_cells(HISTORY.read_text(), "## Shipped versions")}
    files = {"v1": "history/card_numbers_v1", "v2c": "history/card_numbers_v2c", "v4": "history/card_numbers_v4",
             "v5": "history/card_numbers_v5", "v6": "history/card_numbers_v6", "v8b": "history/card_numbers_v8b",
             "v9": "card_numbers"}
    assert rows.keys() == files.keys()
    for version, stem in files.items():
        t = _stored(f"{stem}.json")["tasks"]
        assert rows[version][2] == f"{_metric(t, 'asr', 'wer'):.1f} % / {_metric(t, 'asr@voice', 'wer'):.1f} %", version
        assert rows[version][4] == (f"{_metric(t, 'gender_recognition', 'accuracy'):.2f} / "
                                    f"{_metric(t, 'gender_recognition@voice', 'accuracy'):.2f}"), version
        assert f"weights sha256 `{_stored(f'{stem}.json')['weights_sha256'][:12]}…`" in rows[version][7]
        assert rows[version][5] == f"{_metric(t, 'instrument', 'accuracy'):.2f}", version
        assert rows[version][6] == f"{_metric(t, 'audiocaption', 'cider_d'):.0f}", version
        if version != "v1":
            long = _stored(stem.replace("card_numbers", "long_form_all") + ".json")
            clip = long.get("clip_level_wer_64", long["clip_level_wer"])  # 64 new tokens per clip, as before issue 33
            assert rows[version][3] == f"{pct(clip)} / {pct(long['modes'][0]['wer'])}", version


def greedy_wer() -> dict[str, float]:
    """Greedy WER (%) of the shipped config (64 new tokens) on the three sets ctc_rescore.py scores."""
    t = _stored("card_numbers.json")["tasks"]
    return {"espeak": _metric(t, "asr", "wer"), "neural": _metric(t, "asr@voice", "wer"),
            "asterisk": 100 * _stored("long_form_all.json")["clip_level_wer_64"]}


def test_rescoring_is_no_worse_than_greedy_where_the_card_says_it_helps():
    """The card says CTC rescoring moves ASR most on all three sets: the stored rescored WER must not exceed greedy's
    (the Asterisk prompts also against greedy with a token budget proportional to each clip's length)."""
    sets, greedy = _stored("ctc_rescore.json")["sets"], greedy_wer()
    assert "CTC rescoring moves it most" in " ".join(CARD.read_text().split())
    assert {k: (sets[k]["rescored"], greedy[k]) for k in greedy if sets[k]["rescored"] > greedy[k]} == {}
    assert sets["asterisk"]["rescored"] <= 100 * _stored("long_form_all.json")["clip_level_wer"]


def test_transcribe_preset_numbers_are_its_stored_outputs_and_beat_greedy():
    """`--preset transcribe` (greedy's answer or the CTC best path, rescored): the card's paragraph quotes
    ctc_rescore_greedy.json and clip_long_form_transcribe.json, which were run with the preset's own settings, and
    each is no worse than greedy on the same clips."""
    from salmonn.decoding import PRESETS
    stored, chunked = _stored("ctc_rescore_greedy.json"), _stored("clip_long_form_transcribe.json")
    preset = PRESETS["transcribe"]
    assert (stored["beams"], stored["ctc_weight"], stored["ctc_length_bonus"]) == (
        preset["num_beams"], preset["ctc_weight"], preset["ctc_length_bonus"])
    assert chunked["overrides"] == [f"generate.ctc_weight={preset['ctc_weight']:g}",
                                    f"generate.ctc_length_bonus={preset['ctc_length_bonus']:g}"]
    sets, greedy = stored["sets"], greedy_wer()
    card = " ".join(CARD.read_text().split())
    assert (f"64 espeak-ng clips {one_place(greedy['espeak'])} % → **{one_place(sets['espeak']['rescored'])} %**, the "
            f"542 Asterisk prompts clip by clip with 64 new tokens {one_place(greedy['asterisk'])} % → "
            f"**{one_place(sets['asterisk']['rescored'])} %**") in card
    assert (f"`--long-form` answers it {pct(_stored('clip_long_form.json')['wer'])} → **{pct(chunked['wer'])}**"
            in card)
    assert all(sets[k]["rescored"] <= greedy[k] for k in sets)
    assert {k: round(sets[k]["beam_search"], 1) for k in sets} == {k: round(greedy[k], 1) for k in sets}  # greedy's
    assert chunked["wer"] <= _stored("clip_long_form.json")["wer"]


def test_intervals_are_the_scored_accuracies():
    """card_numbers.json's Wilson intervals belong to the accuracies it stores and contain them."""
    stored = _stored("card_numbers.json")
    assert {"gender_recognition", "gender_recognition@voice", "sound_event", "instrument"} <= stored["intervals"].keys()
    for task, found in stored["intervals"].items():
        assert found["accuracy"] == _metric(stored["tasks"], task, "accuracy") == found["correct"] / found["clips"]
        assert found["wilson95"][0] <= found["accuracy"] <= found["wilson95"][1], task
        assert found["clips"] == stored["tasks"][task]["clips"], task


def test_synthetic_rows_say_so():
    """Rows measured on clips of the training data's own generators are labelled synthetic."""
    rows = table_cells(CARD.read_text(), "## Results")
    for label in ("gender, espeak / neural", "sound event", "instrument"):
        (row,) = [r for r in rows if r[0].startswith(label)]
        assert "synthetic, same generator" in row[0], row[0]


def test_rescoring_table_and_prose_numbers_are_the_stored_outputs():
    """The CTC-rescoring table, the frozen encoder's ceiling and the gender probe, from their stored outputs."""
    t = _stored("card_numbers.json")["tasks"]
    greedy = greedy_wer()
    sets = _stored("ctc_rescore.json")["sets"]
    rows = {row[0]: row[1:] for row in table_cells(CARD.read_text(), "**Transcribing with CTC rescoring**")}
    for label, key in (("64 espeak-ng", "espeak"), ("64 neural voices", "neural"),
                       ("542 Asterisk prompts, clip by clip", "asterisk")):
        s = sets[key]
        assert rows[label] == [f"{one_place(greedy[key])} %", f"{one_place(s['beam_search'])} %",
                               f"{one_place(s['ctc_best_path'])} %", f"**{one_place(s['rescored'])} %**",
                               f"{one_place(s['oracle'])} %"], label
    card = " ".join(CARD.read_text().split())
    ceiling = _stored("whisper_ceiling.json")
    assert (f"**{one_place(ceiling['espeak']['wer'])} %** WER on the 64 espeak-ng clips, "
            f"**{one_place(ceiling['neural']['wer'])} %** on the 64 neural-voice clips and "
            f"**{one_place(ceiling['asterisk']['wer'])} %** on all 542 Asterisk prompts") in card
    real = _stored("real_voice_gender.json")
    voice = real["voices"]["asterisk (one female speaker)"]
    assert real["weights_sha256"] == shipped_sha256()
    assert (f"is called female in {voice['correct']} of {voice['clips']} prompts, **{voice['accuracy']:.2f}** (95 % "
            f"CI {voice['wilson95'][0]:.2f}–{voice['wilson95'][1]:.2f})") in card
    probe = _stored("gender_probe.json")["accuracy"]
    assert (f"Whisper's frames {probe['whisper']:.2f}, the audio tokens {probe['tokens']:.2f} (query 0: "
            f"{probe['query 0']:.2f}, query 1: {probe['query 1']:.2f}") in card


# ------------------------------------------------------------------------------------------------ README's claims
def test_readme_mini_claims_are_what_was_measured():
    """README's summary of mini (issue 33): the training time is the logs' (v6's stages, then v8's stage 1 and v9's
    stages 1 and 2), the sound events and instruments are named with the card's class counts and the word synthetic, no
    rounded hour figure."""
    readme = " ".join((ROOT / "README.md").read_text().split())
    minutes = sum(stage["minutes"] for stage in _stored("train_v6.json")["stages"].values())
    minutes += _stored("history/candidate_v8/train.json")["stages"]["stage1"]["minutes"]
    minutes += sum(stage["minutes"] for stage in _stored("history/candidate_v9/train_v9.json")["stages"].values())
    assert f"on a 2-core CPU in {minutes:.0f} minutes" in readme
    rows = table_cells(CARD.read_text(), "## Results")
    counts = {label: re.search(r"\((\d+) synthetic classes", row[0]).group(1)
              for row in rows for label in ("sound event", "instrument") if row[0].startswith(label)}
    assert (f"names sound events of {counts['sound event']} synthetic classes and instruments of "
            f"{counts['instrument']} synthetic classes") in readme
    assert not re.search(r"\b(about|in) [\w.]+ hours\b", readme), "a training time that no stored output gives"
    voice = _stored("real_voice_gender.json")["voices"]["asterisk (one female speaker)"]
    assert f"{voice['accuracy']:.2f} on one real woman's voice" in readme
    real = _stored("real_events.json")
    assert real["weights_sha256"] == shipped_sha256()
    assert f"recorded real sounds it mostly misnames ({real['test']['correct']} of {real['test']['clips']} test clips" in readme


# ------------------------------------------------------------------------------------------------ --long-form per clip
def test_long_form_per_clip_changes_only_the_long_clips_and_helps():
    """clip_long_form.py answers each Asterisk prompt as `salmonn infer --long-form` does: a clip of at most 8 s is
    one chunk, so its answer is long_form.py's whole-clip answer; the card says chunking the longer ones helps."""
    chunked, whole = _stored("clip_long_form.json"), _stored("long_form_all.json")
    assert chunked["whole_clip_wer"] == whole["clip_level_wer"]
    short = [(a["text"], b["text"]) for a, b in zip(chunked["answers"], whole["clip_answers"]) if a["seconds"] <= 8]
    assert len(short) == whole["short_clips"]["clips"] and all(a == b for a, b in short)
    assert chunked["wer"] < chunked["whole_clip_wer"]


def test_real_events_probe_numbers_are_the_stored_ones():
    probe = _stored("real_events_probe.json")
    card = " ".join(CARD.read_text().split())
    assert probe["test_clips"] == _stored("real_events.json")["test"]["labels_in_real_train"]["clips"]
    assert (f"names {probe['probes']['whisper']['correct']} of those {probe['test_clips']} from Whisper's frames and "
            f"{probe['probes']['tokens']['correct']} from mini's audio tokens") in card
