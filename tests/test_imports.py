"""The package's import structure: every module imports alone, the house has no circles, and the
trainer does not load the compressor.

The house reads downward (STYLE.md): primitives (layers, distributions), models, sampling and coding,
training and evaluation, the command line on top. An import that points up closes a circle, and
:func:`import_graph` finds it from the source, function-level imports included: a lazy import
hides a circle from Python, not from the design.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = "pixelcnn"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE

def module_files() -> dict[str, Path]:
    """Dotted name -> source file of every module of the package (a package is its __init__.py)."""
    modules = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = (PACKAGE, *path.relative_to(SRC).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def compiled_modules() -> set[str]:
    """Dotted names of the package's C extensions (a ``.c`` file that defines its module's ``PyInit_``): modules that
    import nothing of the package."""
    return {".".join((PACKAGE, *path.relative_to(SRC).with_suffix("").parts)) for path in sorted(SRC.rglob("*.c"))
            if f"PyInit_{path.stem}" in path.read_text()}


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The dotted names one import statement asks for (``from a import b`` asks for a.b and a)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:                                   # relative: resolve against the importing package
        anchor = module.split(".")
        anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
        base = ".".join([*anchor, base] if base else anchor)
    return [f"{base}.{alias.name}" for alias in node.names] + [base]


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports, anywhere in its body (function-level imports too).

    ``from pixelcnn.x import y`` is an edge to pixelcnn.x.y when that is a module, else to pixelcnn.x.
    Importing a submodule runs its parents' ``__init__`` as well; those implicit edges are left out, as
    every module would otherwise depend on the package's facade.
    """
    files = module_files()
    modules = set(files) | compiled_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules - set(files)}
    for module, path in files.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = _imported(node, module, path.name == "__init__.py")
                # "from a import b": b itself when it is a module, else a
                found = [n for n in names[:-1] if n in modules] if isinstance(node, ast.ImportFrom) else []
                edges.update(found or [n for n in names if n in modules])
        graph[module] = edges - {module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(tuple(sorted(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def a_circle(graph: dict[str, set[str]], component: tuple[str, ...]) -> list[str]:
    """One closed path through ``component``, for the failure message: a -> b -> ... -> a."""
    members, start = set(component), component[0]
    path, seen = [start], {start}
    while True:
        nxt = sorted(graph[path[-1]] & members)
        if start in nxt and len(path) > 1:
            return [*path, start]
        unseen = [m for m in nxt if m not in seen]
        step = unseen[0] if unseen else nxt[0]
        if step in seen:
            return [*path[path.index(step):], step]
        path.append(step)
        seen.add(step)


def test_the_package_has_no_import_circles():
    graph = import_graph()
    found = cycles(graph)
    circles = [" -> ".join(a_circle(graph, c)) for c in found]
    assert not circles, "import circles in the package:\n  " + "\n  ".join(circles)


def test_the_circle_finder_finds_a_circle_and_nothing_else():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert cycles(graph) == [("a", "b", "c")]
    assert a_circle(graph, ("a", "b", "c")) == ["a", "b", "c", "a"]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_function_level_and_relative_imports():
    graph = import_graph()
    assert "pixelcnn.models" in graph["pixelcnn"]                       # module level, absolute
    assert "pixelcnn.loading" in graph["pixelcnn"]                      # inside load()
    assert graph["pixelcnn.errors"] == set()
    assert "pixelcnn.coding._kernels" in graph["pixelcnn.coding.fused"]      # a compiled module, not its package


# Each module must import with no other module of the package imported before it (an import that works
# only after another module ran hides a circle or a missing import). One driver loads the third-party
# libraries once (not constriction), then forks a child per module, which starts with none of the package
# loaded and reports its error, if any, and which modules of the compressor the import loaded.
_IMPORT_EACH_ALONE = """
import importlib, json, os, sys
import numpy, PIL.Image, safetensors.torch, torch, tqdm   # shared by every child; the package is not
COMPRESSOR = lambda m: m.split(".")[0] == "constriction" or m.startswith("pixelcnn.coding")
assert not any(m.split(".")[0] == "pixelcnn" or COMPRESSOR(m) for m in sys.modules)
report = {}
for name in json.loads(sys.argv[1]):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(name)
            error = None
        except BaseException as e:
            error = f"{type(e).__name__}: {e}"
        os.write(write, json.dumps({"error": error, "compressor": sorted(filter(COMPRESSOR, sys.modules))}).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        message = f.read().decode()
    os.waitpid(pid, 0)
    report[name] = json.loads(message) if message else {"error": "the child died", "compressor": []}
print(json.dumps(report))
"""


# one worker imports every module alone, once, for both tests that read it
pytestmark = pytest.mark.xdist_group("imported_alone")


@pytest.fixture(scope="module")
def imported_alone() -> dict[str, dict]:
    """Module -> {"error": None or the exception, "compressor": the compressor's modules it loaded}."""
    modules = sorted(m for m in module_files() if not m.endswith(".__main__"))     # __main__ runs the CLI
    run = subprocess.run([sys.executable, "-c", _IMPORT_EACH_ALONE, json.dumps(modules)], capture_output=True,
                         text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


@pytest.mark.slow
def test_every_module_imports_alone(imported_alone):
    failures = {name: r["error"] for name, r in imported_alone.items() if r["error"]}
    assert not failures, "modules that fail to import alone:\n  " + "\n  ".join(f"{k}: {v}" for k, v in failures.items())
    assert "pixelcnn.training" in imported_alone and "pixelcnn.coding.codec" in imported_alone


@pytest.mark.slow
def test_importing_the_trainer_does_not_load_the_compressor(imported_alone):
    for trainer in ("pixelcnn.training", "pixelcnn.evaluation", "pixelcnn"):
        assert imported_alone[trainer]["compressor"] == [], f"import {trainer} loaded {imported_alone[trainer]['compressor']}"
    # the probe sees the compressor where it is loaded
    assert "constriction" in imported_alone["pixelcnn.coding"]["compressor"]
