"""The architecture, checked: imports point one way (from the core outwards), the module graph has no
cycle, and no floor below the papers names a paper."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "maskdefense"

# Floors, lowest first. A module may import only from its own floor or lower ones (and, inside its own
# floor, without a cycle). Top-level plumbing modules are named by file.
FLOORS: list[set[str]] = [
    {"registry", "spec", "validation", "provenance", "results", "rundir", "seeding", "data", "__init__"},
    {"ops", "models"},
    {"checkpoint"},
    {"defenses", "training", "certify"},
    {"attacks"},
    {"eval"},
    {"papers"},
    {"experiments"},
    {"commands", "cli"},
]
FLOOR_OF = {name: i for i, names in enumerate(FLOORS) for name in names}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PKG.rglob("*.py")}


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom | ast.Import, known: set[str]) -> list[str]:
    """maskdefense modules imported by ``node`` (function-level imports included)."""
    out: list[str] = []
    if isinstance(node, ast.Import):
        for a in node.names:
            if a.name.startswith("maskdefense"):
                out.append(a.name)
        return [m for m in out if m in known]
    if node.level:
        base = mod.split(".") if is_pkg else mod.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if not target.startswith("maskdefense"):
        return []
    for a in node.names:
        sub = f"{target}.{a.name}"
        out.append(sub if sub in known else target)
    return [m for m in out if m in known]


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for t in _resolve(m, is_pkg, node, known):
                    if t != m:
                        graph[m].add(t)
    return graph


def _floor(mod: str) -> int:
    parts = mod.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    assert top in FLOOR_OF, f"module {mod} is in no floor of the layout: add it to FLOORS (and the README)"
    return FLOOR_OF[top]


def test_every_module_has_a_floor() -> None:
    for m in _modules():
        _floor(m)


def test_imports_point_from_the_core_outwards() -> None:
    bad = [f"{m} (floor {_floor(m)}) imports {t} (floor {_floor(t)})"
           for m, ts in _graph().items() for t in ts
           if _floor(t) > _floor(m) and t.split(".")[:2] != m.split(".")[:2]]
    assert not bad, "imports pointing upwards:\n" + "\n".join(sorted(bad))


def _is_package_reexport(a: str, b: str) -> bool:
    """``pkg/__init__`` importing its own submodules (and those importing siblings through it) is the
    package's public face, not a dependency cycle between modules."""
    return b.startswith(a + ".")


def test_module_graph_has_no_cycle() -> None:
    graph = {m: {t for t in ts if not _is_package_reexport(m, t)} for m, ts in _graph().items()}
    # Edges into a package's __init__ from its own submodules are resolved to the submodules it re-exports.
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _code_strings(tree: ast.AST) -> list[ast.Constant]:
    """String constants of the code, docstrings left out (a docstring may cite a paper as an example)."""
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


def test_no_paper_named_below_the_papers() -> None:
    """The harness, reports and registries read titles from suites; only papers/ and experiments/ (and
    the CLI that runs them) name a paper in what they print or compute."""
    import re

    pattern = re.compile(r"\bMAD\b|mad-table|\bTables? [0-9]|\bSFM\b|\bREMIX\b|\bUNMASK\b|MagNet")
    allowed = {"papers", "experiments", "commands", "cli", "defenses"}  # a defense names its own paper
    bad = []
    for m, path in _modules().items():
        parts = m.split(".")
        if len(parts) > 1 and parts[1] in allowed:
            continue
        for c in _code_strings(ast.parse(path.read_text())):
            if pattern.search(c.value):
                bad.append(f"{path.relative_to(PKG)}:{c.lineno}: {c.value[:100]!r}")
    assert not bad, "paper names below papers/:\n" + "\n".join(bad)


@pytest.mark.parametrize("code, forbidden", [
    ("import torch; from maskdefense.defenses.registry import create_defense; "
     "create_defense('mad:cell=2,rate=0.5', torch.nn.Linear(1, 1))", "foolbox"),
    ("import maskdefense.training.loop", "foolbox"),
    ("import maskdefense.ops", "foolbox"),
    ("from maskdefense.training.presets import create_preset; create_preset('mad-mnist-cpu')", "foolbox"),
    ("from maskdefense.attacks import get_suite; get_suite('mad-table5-mnist').rows", "foolbox"),
])
def test_light_imports(code: str, forbidden: str) -> None:
    """Creating a defense or training a model does not import the attack libraries."""
    out = subprocess.run([sys.executable, "-c", code + f"; import sys; print({forbidden!r} in sys.modules)"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
