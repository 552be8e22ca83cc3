"""The documentation says what the code and the stored outputs say: docs/layout.md names every module of
src/salmonn (and no stale one), links resolve, and the figures the README and docs/ quote are the stored outputs'."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.scripts import load_script

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
    pages = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", PACKAGE / "assets" / "mini" / "README.md",
             *DOCS.rglob("*.md")]
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
    chunked = _stored(MINI_RESULTS / "clip_long_form.json")["wer"]
    assert f"{100 * chunked:.0f} % clip by clip with `--long-form`" in readme
    assert f"{100 * asterisk['modes'][0]['wer']:.0f} % all joined in long-form chunks" in readme
    low, high = sorted(rescored[k]["rescored"] for k in ("neural", "espeak"))
    assert f"{low:.0f}-{high:.0f} % and {rescored['asterisk']['rescored']:.1f} % with CTC rescoring" in readme


# ------------------------------------------------------------------------------------------------ speed figures
def speed_figures() -> dict[str, float]:
    """The speed figures the docs quote, computed from the stored benchmark outputs."""
    mini = _stored(BENCH / "mini.json")["clip"]
    step = _stored(BENCH / "decode_step.json")
    chunks = {(r["chunks"], r["max_seconds"], r["variant"]): r["x_real_time"]
              for r in _stored(BENCH / "long_form_chunks.json")}
    results = _stored(BENCH / "results.json")
    variants, hw = results["inference"]["variants"], results["hardware"]
    before = "sdpa + repeat_kv, strided head input (before)"
    packed = "packed GQA steps"
    on = "packed GQA steps + contiguous head input + filled prompt keys (defaults)"
    fused = on.replace(" (defaults)", " + fused projections")

    def ratio(part: str, slower: str, faster: str) -> float:
        return step[part][slower]["median_s"] / step[part][faster]["median_s"]

    def floor(name: str) -> float:
        return variants[name]["ms_per_token"] / variants[name]["roofline_ms_per_token"]

    fp32_best = "faithful fp32 + merged + greedy loop + compiled"
    bf16_best = "fast bf16 + merged + greedy loop + compiled"
    return {
        "defaults_s": mini["defaults: LoRA merged + greedy loop"]["median_s"],
        "compiled_s": mini["LoRA merged + greedy loop + compiled step"]["median_s"],
        "bf16_s": mini["bf16 weights + greedy loop + compiled step"]["median_s"],
        "switches_clip": ratio("clip", before, on), "switches_batch8": ratio("batch8", before, on),
        "packed_clip": ratio("clip", before, packed), "packed_batch8": ratio("batch8", before, packed),
        "fused_clip": ratio("clip", on, fused), "fused_batch8": ratio("batch8", on, fused),
        "batch8": step["batch8"][on]["clips_per_s"] / step["clip"][on]["clips_per_s"],
        "batch8_fused": step["batch8"][fused]["clips_per_s"] / step["clip"][fused]["clips_per_s"],
        "pause8": chunks["pause", 8.0, "defaults"], "fixed30": chunks["fixed", 30.0, "defaults"],
        "pause8_bf16": chunks["pause", 8.0, "bf16+compile"],
        "hour": _stored(BENCH / "mini_long_fp32.json")["long"]["chosen, 60 min"]["x_real_time"],
        "asterisk": _stored(MINI_RESULTS / "long_form_all_before_issue33.json")["modes"][0]["x_real_time"],  # quiet
        "startup_s": _stored(BENCH / "startup.json")["cli"]["ours"]["median_wall_s"],
        "fp32_x": variants[fp32_best]["speedup_vs_baseline"], "bf16_x": variants[bf16_best]["speedup_vs_baseline"],
        "floor_fp32": floor(fp32_best), "floor_bf16": floor(bf16_best), "read_GBps": hw["read_GBps"],
    }


def _speed_claims() -> list[str]:
    """Each figure of docs/speed.md, formatted from its stored output."""
    f = speed_figures()
    return [
        f"| {f['defaults_s']:.2f} s |", f"| {f['compiled_s']:.2f} s, same ids as the defaults |",
        f"| {f['bf16_s']:.2f} s |",
        f"| {f['switches_clip']:.2f}x / {f['switches_batch8']:.2f}x the time without them |",
        f"| {f['fused_clip']:.2f}x / {f['fused_batch8']:.2f}x (so they were removed) |",
        f"| {f['batch8']:.2f}x |",
        f"| {f['pause8']:.2f}x / {f['fixed30']:.2f}x real time |",
        f"| {f['pause8_bf16']:.2f}x real time |",
        f"| {f['hour']:.2f}x real time |",
        f"| {f['asterisk']:.2f}x real time |",
        f"| {f['startup_s']:.2f} s, target met |",
        f"The long-form target is 20x real time over **1 hour** of speech: the one stored 1-hour run measured "
        f"{f['hour']:.2f}x",
        f"{f['pause8_bf16']:.2f}x is a 5-minute run",
        f"Batch 8 against one clip (target 6x): {f['batch8']:.2f}x, missed",
    ]


def _benchmarks_readme_claims() -> list[str]:
    """The figures of benchmarks/README.md's targets and switch tables, formatted from their stored outputs."""
    f = speed_figures()
    mini = _stored(BENCH / "mini.json")["clip"]
    token = {name: e["ms_per_token"] for name, e in mini.items()}
    call = {name: e["median_s"] for name, e in mini.items()}
    merged, greedy = "LoRA merged", "defaults: LoRA merged + greedy loop"
    return [
        f"| {f['fp32_x']:.2f}x (`results.json`) |", f"| {f['bf16_x']:.2f}x, fast mode (`results.json`) |",
        f"fp32 {f['floor_fp32']:.2f}x, bf16 {f['floor_bf16']:.2f}x at the run's best read probe, "
        f"{f['read_GBps']:.1f} GB/s",
        f"at most {f['read_GBps'] * 1.3 / f['floor_fp32']:.1f} GB/s (fp32) / "
        f"{f['read_GBps'] * 1.3 / f['floor_bf16']:.1f} GB/s (bf16)",
        f"mini bf16 compiled {f['batch8']:.2f}x with the default switches ({f['batch8_fused']:.2f}x with fused "
        f"projections, since removed)",
        f"| {f['compiled_s']:.2f} s fp32 / {f['bf16_s']:.2f} s bf16 with the compiled step, {f['defaults_s']:.2f} s "
        f"with the defaults",
        f"the one stored 1 h run: {f['hour']:.2f}x", f"5 min in bf16 compiled: {f['pause8_bf16']:.2f}x",
        f"fp32 defaults: {f['asterisk']:.2f}x",
        f"decode {token['old defaults: HF generate, LoRA apart (baseline)']:.1f} → {token[merged]:.1f} ms/token, "
        f"{call['old defaults: HF generate, LoRA apart (baseline)']:.3f} → {call[merged]:.3f} s per clip",
        f"decode {token[merged]:.1f} → {token[greedy]:.1f} ms/token eager, "
        f"{token['LoRA merged + compiled step (HF generate)']:.1f} → "
        f"{token['LoRA merged + greedy loop + compiled step']:.1f} compiled",
        f"mini decode {token[greedy]:.1f} → {token['LoRA merged + greedy loop + compiled step']:.1f} ms/token, "
        f"{call[greedy]:.3f} → {call['LoRA merged + greedy loop + compiled step']:.3f} s per clip",
        f"clip {f['packed_clip']:.2f}x, batch 8 {f['packed_batch8']:.2f}x",
        f"clip {f['fused_clip']:.2f}x, batch 8 {f['fused_batch8']:.2f}x",
    ]


def test_benchmarks_readme_figures_are_the_stored_outputs():
    page = _text(BENCH / "README.md")
    assert [claim for claim in _benchmarks_readme_claims() if claim not in page] == []


def test_speed_page_figures_are_the_stored_outputs():
    page = _text(DOCS / "speed.md")
    assert [claim for claim in _speed_claims() if claim not in page] == []
    bf16, fp32 = (_stored(MINI_RESULTS / "history" / f"long_form_first40{kind}_v2c.json")["modes"][0]["wer"]
                  for kind in ("_bf16", ""))
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
    v1 = _stored(MINI_RESULTS / "history" / "long_form_v1.json")
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


def test_results_md_is_rendered_from_the_stored_outputs():
    """benchmarks/RESULTS.md is what report.py renders from results.json and the other stored outputs, so no
    figure in it can drift from them (re-render with `python benchmarks/report.py`)."""
    report = load_script(BENCH / "report.py", "bench_report")
    stored = _stored(BENCH / "results.json")
    rendered = report.report(stored["machine"], stored["hardware"], stored["inference"], stored["profiles"],
                             stored["training"], stored["fast_mode_answers"])
    assert rendered == (BENCH / "RESULTS.md").read_text()


def test_sources_cite_nothing_outside_the_repository():
    """Docstrings and comments cite the paper, the reference implementation or files in this repository, never the
    sections of a spec file that a checkout does not have."""
    cites = [f"{p.relative_to(ROOT)}:{n}" for p in PACKAGE.rglob("*.py")
             for n, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"\bSPEC\b", line)]
    assert cites == []
    sources = [*PACKAGE.rglob("*.py"), *(ROOT / "configs").rglob("*.yaml")]
    missing = sorted({f"{p.relative_to(ROOT)}: {name}" for p in sources
                      for name in re.findall(r"\bdocs/[\w./-]*\w", p.read_text()) if not (ROOT / name).exists()})
    assert missing == [], "sources cite docs/ pages that do not exist"


def test_serving_page_load_figures_are_the_stored_output():
    """docs/serving.md's headline load figures are benchmarks/serve_load.json's (re-run serve_load.py: update both)."""
    run = _stored(BENCH / "serve_load.json")
    normal, rss, shutdown = run["normal"], run["rss"], run["shutdown"]
    page = _text(DOCS / "serving.md")
    for claim in (f"all {normal['requests']} normal requests were answered (200; {normal['503 retries']} 503s retried)",
                  f"latency p50 {normal['p50_s']:.1f} s and p95 {normal['p95_s']:.1f} s",
                  f"RSS was {rss['before']['rss_mib']} MiB before and {rss['after']['rss_mib']} MiB after, peak "
                  f"{rss['after']['peak_rss_mib']} MiB",
                  f"stopped the server in {shutdown['exit_seconds']} s ({shutdown['statuses']['200']} answered, "
                  f"{shutdown['statuses']['503']} told 503)"):
        assert claim in page, claim


# ------------------------------------------------------------------------------------------------ names
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
# Flags of other programs that the pages show: torchrun's, vLLM's (passed through --vllm-arg), Ray's.
OTHER_PROGRAMS_FLAGS = {
    "--nproc_per_node", "--nnodes", "--rdzv-backend", "--rdzv-endpoint",
    "--model", "--served-model-name", "--generation-config", "--chat-template-content-format", "--max-model-len",
    "--max-num-seqs", "--max-num-batched-tokens", "--limit-mm-per-prompt", "--enforce-eager",
    "--tensor-parallel-size", "--pipeline-parallel-size", "--data-parallel-size", "--distributed-executor-backend",
    "--head", "--address"}
SECTION_CLASSES = {"model": ("salmonn.config", "ModelConfig"), "generate": ("salmonn.config", "GenerateConfig"),
                   "run": ("salmonn.train.config", "RunConfig"), "datasets": ("salmonn.train.config", "DatasetsConfig"),
                   "activation": ("salmonn.train.config", "ActivationConfig")}
FILE_SUFFIXES = {"py", "bin", "safetensors", "json", "md", "yaml", "pth", "pt", "png"}


def salmonn_flags() -> set[str]:
    """Every --option of every `salmonn` command (the CLI's own parser)."""
    import argparse

    from salmonn.cli import build_parser

    def walk(parser) -> set[str]:
        found = set()
        for action in parser._actions:
            found |= {o for o in action.option_strings if o.startswith("--")}
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    found |= walk(sub)
        return found
    return walk(build_parser())


def script_flags() -> set[str]:
    """The --options of the repository's scripts: argparse in benchmarks/ and scripts/, setup.sh's case arms."""
    found = set()
    for path in [*BENCH.glob("*.py"), *(ROOT / "scripts").rglob("*.py")]:
        found |= set(re.findall(r"add_argument\(\s*\"(--[\w-]+)\"", path.read_text()))
    for path in (ROOT / "scripts").glob("*.sh"):
        found |= set(re.findall(r"^\s*(--[\w-]+)\)", path.read_text(), re.M))
    return found


def config_fields(section: str) -> set[str]:
    import dataclasses
    import importlib

    module, name = SECTION_CLASSES[section]
    return {f.name for f in dataclasses.fields(getattr(importlib.import_module(module), name))}


def named_flags(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][\w-]*", text))


def named_fields(text: str) -> set[str]:
    """`section.field` names (model.compile, run.ctc_weight, ...), not file names (model.py) or calls."""
    found = re.findall(rf"(?<![\w./])((?:{'|'.join(SECTION_CLASSES)})\.[a-z_][a-z0-9_]*)\b(?!\()", text)
    return {name for name in found if name.split(".")[1] not in FILE_SUFFIXES}


def test_every_flag_the_pages_name_exists():
    known = salmonn_flags() | script_flags() | OTHER_PROGRAMS_FLAGS
    missing = {f"{page.name}: {flag}" for page in PAGES for flag in named_flags(page.read_text()) - known}
    assert not missing, f"flags named in the docs that no command or script has: {sorted(missing)}"


def test_every_config_field_the_pages_name_exists():
    from salmonn.model import SALMONN

    missing = set()
    for page in PAGES:
        for name in named_fields(page.read_text()):
            section, field = name.split(".")
            if field not in config_fields(section) and not (section == "model" and hasattr(SALMONN, field)):
                missing.add(f"{page.name}: {name}")
    assert not missing, f"config fields named in the docs that the config dataclasses lack: {sorted(missing)}"


def test_the_name_checks_catch_a_stale_name():
    assert named_flags("salmonn infer --audio a.wav --no-such-flag") == {"--audio", "--no-such-flag"}
    assert "--no-such-flag" not in salmonn_flags() and "--audio" in salmonn_flags()
    assert named_fields("`model.packed_gqa=false`, model.py, model.generate(x), generate.top_p") == \
        {"model.packed_gqa", "generate.top_p"}
    assert "packed_gqa" in config_fields("model") and "PACKED_GQA_STEPS".lower() not in config_fields("model")


def test_decode_step_md_is_rendered_from_its_stored_output():
    """benchmarks/decode_step.md is what decode_step.py renders from decode_step.json (`--report`)."""
    module = load_script(BENCH / "decode_step.py", "bench_decode_step")
    stored = _stored(BENCH / "decode_step.json")
    assert module.report(stored.pop("info"), stored) == (BENCH / "decode_step.md").read_text()
