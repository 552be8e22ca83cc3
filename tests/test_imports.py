"""The package's import graph, read from the source with `ast`: imports inside functions count (they run all the
same, only later), imports under `if TYPE_CHECKING:` do not (they never run).

The rules: no circle anywhere in src/salmonn; the core (what `salmonn infer` and the Python API run) never
reaches training, evaluation, benchmarking, serving or the command line, directly or through another module; and
every import points down the layers

    core (the modules at the package's top)  <  data/  <  train/ | evaluation/ | serve/ | vllm/  <  the command line

where the four areas of the third layer are islands (none imports another; what two of them share lives in the
core or in data/) and the command line is cli.py, commands.py, flags.py, bench.py and each area's commands.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "salmonn"
CORE = ("audio", "features", "frames", "encoders", "connector", "qformer", "model", "prompting", "decoding",
        "llm_runtime", "greedy", "rescoring", "ctc", "inference", "config", "builder", "whisper", "beats", "backbones",
        "ct2_whisper", "checkpoint", "hardware", "jsonl")
UPPER = ("salmonn.train", "salmonn.evaluation", "salmonn.bench", "salmonn.serve", "salmonn.cli", "salmonn.commands",
         "salmonn.flags", "salmonn.vllm")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _known(name: str) -> str | None:
    """The module of ours that `name` (a module, or a name inside one) is, or None for other packages."""
    while name not in MODULES:
        if "." not in name:
            return None
        name = name.rpartition(".")[0]
    return name


def imports_of(name: str) -> dict[str, int]:
    """Our modules `name` imports (anywhere but under TYPE_CHECKING) -> the line of the first such import."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, int] = {}

    def add(target: str | None, line: int) -> None:
        if target and target != name:
            found.setdefault(target, line)

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for other in child.orelse:
                    visit_node(other)
                continue
            visit_node(child)

    def visit_node(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(_known(alias.name), node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:  # `from . import x` imports the module x
                add(_known(f"{source}.{alias.name}") or _known(source), node.lineno)
        visit(node)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def circles() -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    return found


def reach(start: str) -> dict[str, list[str]]:
    """Every module `start` imports, directly or not -> one chain of imports that gets there."""
    chains = {start: [start]}
    todo = [start]
    while todo:
        v = todo.pop()
        for w in GRAPH[v]:
            if w not in chains:
                chains[w] = chains[v] + [w]
                todo.append(w)
    return chains


def test_the_graph_sees_function_level_imports():
    assert "salmonn.model" in MODULES and GRAPH["salmonn.model"]
    assert "salmonn.serve.commands" in GRAPH["salmonn.cli"]  # a top-level import
    with_inner = [n for n, p in MODULES.items()
                  if any(isinstance(f, ast.FunctionDef) and any(isinstance(s, ast.ImportFrom) and s.level
                                                                 for s in ast.walk(f))
                         for f in ast.walk(ast.parse(p.read_text(encoding="utf-8"))))]
    assert with_inner, "no module imports one of ours inside a function: the walk above is not exercised"


def test_no_import_circle():
    problems = []
    for component in circles():
        edges = [f"{a} -> {b} (line {line})" for a in component for b, line in GRAPH[a].items() if b in component]
        problems.append(" ; ".join(edges))
    assert not problems, "import circles:\n" + "\n".join(problems)


def test_core_never_reaches_training_evaluation_serving_or_the_cli():
    problems = []
    for name in CORE:
        module = f"salmonn.{name}"
        if module not in MODULES:
            continue
        for target, chain in reach(module).items():
            if target.startswith(UPPER):
                problems.append(" -> ".join(chain))
    assert not problems, "the core imports upward:\n" + "\n".join(problems)


AREAS = ("train", "evaluation", "serve", "vllm")
COMMAND_LINE = ("salmonn.cli", "salmonn.commands", "salmonn.flags", "salmonn.bench")
# Imports that break the layering and are known: each names its way out. The test fails once one is gone, so that
# the entry goes with it.
KNOWN: dict[tuple[str, str], str] = {}


def layer(module: str) -> tuple[int, str]:
    """(height, area) of one of our modules: 0 core, 1 data, 2 one of the AREAS, 3 the command line."""
    parts = module.split(".")
    if module in COMMAND_LINE or (len(parts) == 3 and parts[2] == "commands"):
        return 3, "command line"
    if len(parts) > 1 and parts[1] == "data":
        return 1, "data"
    if len(parts) > 1 and parts[1] in AREAS:
        return 2, parts[1]
    return 0, "core"


def allowed(source: str, target: str) -> bool:
    (high, area), (low, other) = layer(source), layer(target)
    return low < high or area == other


def test_layer_examples():
    assert layer("salmonn.inference") == (0, "core") and layer("salmonn") == (0, "core")
    assert layer("salmonn.data.following") == (1, "data") and layer("salmonn.serve.engine") == (2, "serve")
    assert layer("salmonn.serve.commands") == (3, "command line") and layer("salmonn.flags") == (3, "command line")
    assert allowed("salmonn.train.activation", "salmonn.data.following")
    assert not allowed("salmonn.train.activation", "salmonn.evaluation.following")  # islands
    assert not allowed("salmonn.inference", "salmonn.data.synth")  # upward
    assert allowed("salmonn.serve.commands", "salmonn.vllm.serving")  # the command line picks the engine


def test_imports_point_down_the_layers():
    problems = [f"{source} -> {target} (line {line}): {layer(source)[1]} imports {layer(target)[1]}"
                for source, targets in GRAPH.items() for target, line in targets.items()
                if not allowed(source, target) and (source, target) not in KNOWN]
    assert not problems, "imports against the layering (move what both sides need down):\n" + "\n".join(problems)
    gone = [f"{a} -> {b}" for a, b in KNOWN if b not in GRAPH.get(a, {})]
    assert not gone, f"known exceptions that no longer exist, remove them from KNOWN: {gone}"


def test_core_names_exist():
    missing = [name for name in ("audio", "features", "frames", "qformer", "model", "prompting", "decoding",
                                 "rescoring", "inference", "config", "builder") if f"salmonn.{name}" not in MODULES]
    assert not missing
