"""The import structure of harness/ (DESIGN: imports follow the data): no import circle, no function-level import of
harness except the documented lazy ones, and the torch-free layers stay torch-free."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "harness"

# Function-level imports of harness that are on purpose: the CLI imports per command (``prunebench validate`` and
# ``plan`` never load torch or Ray), and the grid imports its Ray executor only when Ray is asked for.
LAZY = {"harness/cli.py", "harness/grid/execute.py"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _targets(node: ast.Import | ast.ImportFrom, here: str) -> list[str]:
    """The harness modules an import statement loads (``from a.b import c``: ``a.b.c`` when that is a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "harness"]
    base = node.module or ""
    if node.level:  # relative: from the importing package
        pkg = here.split(".")[: len(here.split(".")) - node.level + (1 if MODULES[here].name == "__init__.py" else 0)]
        base = ".".join(pkg + ([base] if base else []))
    if base.split(".")[0] != "harness":
        return []
    subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
    # the package itself only when a name is taken from its namespace (its parents are added by the caller)
    return subs + ([base] if len(subs) < len(node.names) else [])


def _imports(name: str) -> tuple[set[str], list[int]]:
    """(harness modules imported at module level, ``if TYPE_CHECKING`` included, lines of function-level ones)."""
    tree = ast.parse(MODULES[name].read_text())
    top: set[str] = set()
    nested: list[int] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):  # ``if TYPE_CHECKING`` ones too: a type-level circle
                # is a circle of the design all the same
                targets = _targets(child, name)
                if targets and in_function:
                    nested.append(child.lineno)
                elif targets:
                    top.update(t for t in targets if t in MODULES)
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    # importing a.b.c runs the packages a and a.b first
    for t in list(top):
        parts = t.split(".")
        top.update(".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in MODULES)
    top.discard(name)
    return top, nested


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in graph:
        if v not in index:
            strong(v)
    return out


def test_the_cycle_finder_finds_a_planted_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def _reexport(cycle: list[str]) -> bool:
    """A package whose ``__init__`` re-exports its own submodules: every module of the circle is the package or inside
    it (importing ``p.x`` runs ``p`` first, which imports ``p.x``); harmless while no submodule needs a name that
    only the package defines. A circle through another package is never this."""
    top = min(cycle, key=len)
    return MODULES[top].name == "__init__.py" and all(m == top or m.startswith(top + ".") for m in cycle)


def test_no_import_circle_in_harness():
    graph = {name: _imports(name)[0] for name in MODULES}
    assert sum(len(v) for v in graph.values()) > 100  # the graph was read (not vacuously empty)
    assert [c for c in _cycles(graph) if not _reexport(c)] == []
    # ... and no submodule takes a name from a package namespace that imports it back (keeps the harmless case so)
    explicit = {n: {t for t in _explicit(n) if n.startswith(t + ".") and n in _reach(graph, t)} for n in MODULES}
    assert {n: t for n, t in explicit.items() if t} == {}


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def _explicit(name: str) -> set[str]:
    """Modules named by ``name``'s own module-level import statements (without the implicit parent packages)."""
    tree = ast.parse(MODULES[name].read_text())
    out: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.update(_targets(node, name))
    return out


def test_every_module_imports_on_its_own():
    """Each module imported first, in a fresh set of harness modules: an order-dependent circle (a module needing a
    name of a module still being initialised) fails here whatever order the suite happens to import in."""
    code = (
        "import importlib, sys\n"
        "bad = []\n"
        "for name in sys.argv[1:]:\n"
        "    for m in [m for m in sys.modules if m == 'harness' or m.startswith('harness.')]:\n"
        "        del sys.modules[m]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as e:\n"
        "        bad.append(f'{name}: {type(e).__name__}: {e}')\n"
        "print('\\n'.join(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    names = [n for n in MODULES if n != "harness.__main__"]
    res = subprocess.run([sys.executable, "-c", code, *names], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr


def test_function_level_harness_imports_only_where_documented():
    nested = {str(MODULES[n].relative_to(ROOT)): lines for n in MODULES if (lines := _imports(n)[1])}
    assert set(nested) <= LAZY, {k: v for k, v in nested.items() if k not in LAZY}


def test_config_planning_and_reports_do_not_load_torch():
    """Validating and expanding every manifest, planning a grid and importing the report never load torch."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from harness.config.load import load\n"
        "from harness.grid.expand import expand\n"
        "import harness.plan, harness.report, harness.cli\n"
        "from harness.pruning.methods import procedure\n"
        "n = 0\n"
        "for p in sorted(Path('paper_configs').glob('*.yaml')):\n"
        "    for s in expand(load(p)):\n"
        "        procedure(s).planned_rows(s); n += 1\n"
        "assert n > 100, n\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'ray', 'mlflow'))\n"
        "print(bad[:5])\n"
        "sys.exit(1 if bad else 0)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
