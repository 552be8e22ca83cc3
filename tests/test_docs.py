"""The documentation says what the code and the stored outputs say: docs/layout.md names every module of
src/salmonn (and no stale one), links resolve, and the figures the README and docs/ quote are the stored outputs'."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "salmonn"
DOCS = ROOT / "docs"
BENCH = ROOT / "benchmarks"
MINI_RESULTS = ROOT / "scripts" / "mini" / "results"


def _text(path: Path) -> str:
    """A page with its line breaks folded, so that a quoted phrase may wrap."""
    return " ".join(path.read_text().split())


def _stored(path: Path):
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------------------------ layout
def layout_modules(text: str) -> set[str]:
    """The module paths (relative to src/salmonn) of the layout block that starts with `src/salmonn/`: a name at
    indent 2 is top level, one indented under a `folder/` line belongs to that folder."""
    block = re.search(r"```\nsrc/salmonn/\n(.*?)```", text, re.S)
    assert block, "docs/layout.md has a code block that starts with src/salmonn/"
    names, folder, folder_indent = set(), "", -1
    for line in block.group(1).splitlines():
        stripped = line.lstrip()
        if not stripped:
            continue
        indent, entry = len(line) - len(stripped), stripped.split()[0]
        if indent <= folder_indent:
            folder, folder_indent = "", -1
        if entry.endswith("/"):
            folder, folder_indent = entry, indent
        elif entry.endswith(".py"):
            names.add(folder + entry if indent > folder_indent >= 0 else entry)
    return names


def test_layout_names_every_module_and_no_stale_one():
    on_disk = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")}
    listed = layout_modules((DOCS / "layout.md").read_text())
    assert sorted(on_disk - listed) == [], "modules missing from docs/layout.md"
    assert sorted(listed - on_disk) == [], "docs/layout.md names modules that do not exist"


def test_layout_parser_reads_folders_and_flags_missing_names():
    text = "```\nsrc/salmonn/\n  a.py   x\n  serve/  y\n    app.py  z\n  b.py  w\n```\n"
    assert layout_modules(text) == {"a.py", "serve/app.py", "b.py"}


# ------------------------------------------------------------------------------------------------ README
def test_readme_fits_on_a_few_screens_and_links_the_docs():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 130
    for page in ("inference", "serving", "evaluation", "training", "speed", "faithfulness", "layout"):
        assert f"(docs/{page}.md)" in readme, page
    assert "Serving at scale: vLLM" in readme and "docs/vllm.md" in readme


def test_relative_links_resolve():
    pages = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *DOCS.rglob("*.md")]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if not re.match(r"[a-z]+:", target) and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []


def test_readme_mini_numbers_are_the_model_cards_stored_outputs():
    card = _stored(MINI_RESULTS / "card_numbers.json")["tasks"]
    espeak, neural = (card[t]["runs"][0]["metrics"]["wer"] for t in ("asr", "asr@voice"))
    gender = sorted(card[t]["runs"][0]["metrics"]["accuracy"] for t in ("gender_recognition",
                                                                         "gender_recognition@voice"))
    asterisk = _stored(MINI_RESULTS / "long_form_all.json")
    rescored = _stored(MINI_RESULTS / "ctc_rescore.json")["sets"]
    readme = _text(ROOT / "README.md")
    assert f"accuracy {gender[0]:.2f}-{gender[1]:.2f}" in readme
    assert f"{neural:.0f}-{espeak:.0f} % WER on held-out synthetic speech" in readme
    assert f"{100 * asterisk['clip_level_wer']:.0f} % on real recorded prompts clip by clip" in readme
    assert f"{100 * asterisk['modes'][0]['wer']:.0f} % in long-form chunks" in readme
    low, high = sorted(rescored[k]["rescored"] for k in ("neural", "espeak"))
    assert f"{low:.0f}-{high:.0f} % and {rescored['asterisk']['rescored']:.1f} % with CTC rescoring" in readme


# ------------------------------------------------------------------------------------------------ docs/speed.md
def _speed_claims() -> list[str]:
    """Each figure of docs/speed.md's table, formatted from its stored output."""
    mini = _stored(BENCH / "mini.json")["clip"]
    step = _stored(BENCH / "decode_step.json")
    chunks = {(r["chunks"], r["max_seconds"], r["variant"]): r["x_real_time"]
              for r in _stored(BENCH / "long_form_chunks.json")}
    hour = _stored(BENCH / "mini_long_fp32.json")["long"]["chosen, 60 min"]["x_real_time"]
    asterisk = _stored(MINI_RESULTS / "long_form_all.json")["modes"][0]["x_real_time"]

    def ratio(part: str, slower: str, faster: str) -> float:
        return step[part][slower]["median_s"] / step[part][faster]["median_s"]

    before = "sdpa + repeat_kv, strided head input (before)"
    on = "packed GQA steps + contiguous head input + filled prompt keys (defaults)"
    fused = on.replace(" (defaults)", " + fused projections")
    batch8 = step["batch8"][on]["clips_per_s"] / step["clip"][on]["clips_per_s"]
    return [
        f"| {mini['defaults: LoRA merged + greedy loop']['median_s']:.2f} s |",
        f"| {mini['LoRA merged + greedy loop + compiled step']['median_s']:.2f} s, same ids as the defaults |",
        f"| {mini['bf16 weights + greedy loop + compiled step']['median_s']:.2f} s |",
        f"| {ratio('clip', before, on):.2f}x / {ratio('batch8', before, on):.2f}x the time without them |",
        f"| {ratio('clip', on, fused):.2f}x / {ratio('batch8', on, fused):.2f}x (so they stay off) |",
        f"| {batch8:.2f}x |",
        f"| {chunks['pause', 8.0, 'defaults']:.2f}x / {chunks['fixed', 30.0, 'defaults']:.2f}x real time |",
        f"| {chunks['pause', 8.0, 'bf16+compile']:.2f}x real time |",
        f"| {hour:.2f}x real time |",
        f"| {asterisk:.2f}x real time |",
        f"The long-form target is 20x real time over **1 hour** of speech: the one stored 1-hour run measured "
        f"{hour:.2f}x",
        f"{chunks['pause', 8.0, 'bf16+compile']:.2f}x is a 5-minute run",
        f"Batch 8 against one clip (target 6x): {batch8:.2f}x, missed",
    ]


def test_speed_page_figures_are_the_stored_outputs():
    page = _text(DOCS / "speed.md")
    assert [claim for claim in _speed_claims() if claim not in page] == []
    bf16, fp32 = (_stored(MINI_RESULTS / f"long_form_first40{kind}_v2c.json")["modes"][0]["wer"] for kind in ("_bf16", ""))
    assert f"{100 * bf16:.1f} % of the words wrong in bf16 compiled against {100 * fp32:.1f} % in fp32" in page


def test_a_changed_figure_is_caught():
    page = _text(DOCS / "speed.md").replace("| 1.71 s |", "| 1.4 s |")
    assert any(claim not in page for claim in _speed_claims())


# ------------------------------------------------------------------------------------------------ other pages
def test_inference_page_figures_are_the_stored_outputs():
    page = _text(DOCS / "inference.md")
    memory = (BENCH / "long_audio_memory.md").read_text()
    growth = {(int(m), int(b)): mib for m, b, mib in re.findall(r"\| (\d+) min \| (\d+) \| \d+ \| (\d+) MiB", memory)}
    assert len(growth) == 6
    for batch in (2, 8):
        assert f"{growth[1, batch]}, {growth[10, batch]} and {growth[30, batch]} MiB" in page
    chunks = {(r["chunks"], r["max_seconds"], r["variant"]): r["x_real_time"]
              for r in _stored(BENCH / "long_form_chunks.json")}
    assert (f"pause chunks of at most 8 s ran at {chunks['pause', 8.0, 'defaults']:.1f}x real time and fixed 30 s "
            f"segments at {chunks['fixed', 30.0, 'defaults']:.1f}x") in page
    assert f"in bf16 compiled, {chunks['pause', 8.0, 'bf16+compile']:.1f}x" in page
    v1 = _stored(MINI_RESULTS / "long_form_v1.json")
    wers = {(m["chunks"], m["max_seconds"]): 100 * m["wer"] for m in v1["modes"]}
    assert (f"{wers['fixed', 30.0]:.1f} % with fixed 30 s segments, {wers['pause', 30.0]:.1f} % with pause chunks "
            f"of at most 30 s, {wers['pause', 15.0]:.1f} % at most 15 s and {wers['pause', 8.0]:.1f} % at most 8 s, "
            f"against {100 * v1['clip_level_wer']:.1f} %") in page


def test_training_page_cache_speedup_is_the_stored_output():
    stored = (BENCH / "train_cache.md").read_text()
    every = re.search(r"encoders every step: .* median step (\d+\.\d+) s", stored).group(1)
    cached = re.search(r"frozen-encoder cache: .* median step (\d+\.\d+) s", stored).group(1)
    speedup = re.search(r"cache speed-up per step: (\d+\.\d)x", stored).group(1)
    assert (f"{float(every):.2f} s per step encoding every batch, {float(cached):.2f} s with the cache "
            f"({speedup}x)") in _text(DOCS / "training.md")


# ------------------------------------------------------------------------------------------------ packaging
def test_package_data_ships_what_exists():
    """pyproject.toml's package-data: every pattern matches a file, and every data file of the package is shipped."""
    import tomllib

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["salmonn"]
    assert [p for p in patterns if not any(f.is_file() for f in PACKAGE.glob(p))] == []
    data = {p for p in PACKAGE.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")}
    shipped = {f for p in patterns for f in PACKAGE.glob(p)}
    assert sorted(str(p.relative_to(PACKAGE)) for p in data - shipped) == []
