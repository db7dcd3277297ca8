"""The layers of the project, checked on the source (``ast``), not by importing anything.

    filters     sans-IO engines and parsers: imports nothing of agent, opscenter, lab, tests
    agent       the box: imports filters, nothing of opscenter, lab, tests
    opscenter   the center: imports filters, nothing of agent, lab, tests
    lab         development only: imports anything but tests
    agent/launcher.py   run by systemd before any release is trusted: imports nothing of the project

and, within the box, ``agent.link`` and ``agent.lifecycle`` do not import ``agent.dataplane`` (the
daemon starts them, not the reverse).

Every import counts for those rules: module-level, function-level (lazy) and ``if TYPE_CHECKING:``
ones. For the cycle rule the graph holds every import that runs: module-level and lazy ones (a lazy
import only hides a cycle from the interpreter, not from the reader: ``config`` calling back into
``updates`` which imports ``config`` is a cycle). Imports under ``if TYPE_CHECKING:`` never run and
only name types for annotations (a parser's part naming the parser that owns it), so they do not
make a cycle; they still count for the layer rules. Each strongly connected component of that graph
with more than one module (or a module importing itself) is reported as one cycle, with the import
lines that close it.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("agent", "filters", "opscenter", "lab")
PROJECT = (*PACKAGES, "tests")

# importer prefix -> project prefixes it may not import. The most specific importer prefix applies
# on top of the package rule (agent.link.* obeys the agent rule and the agent.link rule).
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "filters": ("agent", "opscenter", "lab", "tests"),
    "agent": ("opscenter", "lab", "tests"),
    "opscenter": ("agent", "lab", "tests"),
    "lab": ("tests",),
    "agent.launcher": PROJECT,
    "agent.link": ("agent.dataplane",),
    "agent.lifecycle": ("agent.dataplane",),
}

# The violations on this branch today, each one a colleague is removing. A new violation fails
# `test_no_layer_violations` / `test_no_import_cycles`; an entry that no longer happens fails
# `test_known_violations_still_exist`, so the set only shrinks: remove the entry with the fix.
#   ("layer", importer module, imported module)
#   ("cycle", *sorted modules of the strongly connected component)
KNOWN_VIOLATIONS: frozenset[tuple[str, ...]] = frozenset()


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    file: str  # path relative to the repository
    line: int
    target: str  # dotted module name (the most specific one that exists in the project)
    module_level: bool
    type_only: bool = False  # under `if TYPE_CHECKING:`: never runs

    def where(self) -> str:
        return f"{self.file}:{self.line}: {self.importer} imports {self.target}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            mods[module_name(path)] = path
    return mods


def _in_project(name: str) -> bool:
    return name.split(".")[0] in PROJECT


def _resolve(name: str, known: set[str]) -> str:
    """The longest prefix of ``name`` that is a project module (``name`` itself when none is)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in known:
            return candidate
    return name


def imports_of(module: str, text: str, file: str, known: set[str], *, is_package: bool = False) -> list[Import]:
    """Every import of the project in one module's source, in source order."""
    tree = ast.parse(text, file)
    package = module if is_package else module.rpartition(".")[0]
    found: list[Import] = []

    def add(node: ast.AST, target: str, module_level: bool, type_only: bool) -> None:
        imp = Import(module, file, node.lineno, _resolve(target, known), module_level, type_only)  # type: ignore[attr-defined]
        if _in_project(target) and imp not in found:  # `from m import a, b`: one import of m
            found.append(imp)

    def visit(node: ast.AST, module_level: bool, type_only: bool = False) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, module_level, True)
            for child in node.orelse:
                visit(child, module_level, type_only)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(node, alias.name, module_level, type_only)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:  # `from pkg import submodule` imports pkg.submodule
                full = f"{source}.{alias.name}"
                add(node, full if full in known else source, module_level, type_only)
        inside = module_level and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inside, type_only)

    visit(tree, True)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    """`if TYPE_CHECKING:` or `if typing.TYPE_CHECKING:`."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


@pytest.fixture(scope="module")
def all_imports() -> list[Import]:
    mods = project_modules()
    known = set(mods)
    return [imp for mod, path in mods.items()
            for imp in imports_of(mod, path.read_text(encoding="utf-8"), str(path.relative_to(REPO)), known,
                                  is_package=path.name == "__init__.py")]


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layer_violations(imports: list[Import]) -> dict[tuple[str, ...], list[Import]]:
    out: dict[tuple[str, ...], list[Import]] = defaultdict(list)
    for imp in imports:
        for prefix, forbidden in FORBIDDEN.items():
            if _under(imp.importer, prefix) and any(_under(imp.target, f) for f in forbidden):
                out[("layer", imp.importer, imp.target)].append(imp)
                break
    return dict(out)


def cycles(imports: list[Import]) -> dict[tuple[str, ...], list[Import]]:
    """Strongly connected components (Tarjan) of the graph of imports that run, with their edges."""
    graph: dict[str, set[str]] = defaultdict(set)
    edges: dict[tuple[str, str], list[Import]] = defaultdict(list)
    for imp in imports:
        if not imp.type_only:
            graph[imp.importer].add(imp.target)
            edges[(imp.importer, imp.target)].append(imp)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    comps: list[list[str]] = []

    def strong(v: str) -> None:  # recursion depth is bounded by the module count (~150)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            comps.append(comp)

    for v in sorted(graph):
        if v not in index:
            strong(v)
    out = {}
    for comp in comps:
        members = set(comp)
        if len(comp) > 1 or comp[0] in graph.get(comp[0], ()):
            out[("cycle", *sorted(comp))] = sorted(
                (imp for (a, b), imps in edges.items() if a in members and b in members for imp in imps),
                key=lambda i: (i.file, i.line))
    return out


def _report(title: str, found: dict[tuple[str, ...], list[Import]]) -> str:
    lines = [title]
    for key in sorted(found):
        lines.append(f"  {key}")
        lines += [f"    {imp.where()}{'' if imp.module_level else ' (inside a function)'}" for imp in found[key]]
    return "\n".join(lines)


def test_the_scan_sees_the_project(all_imports: list[Import]) -> None:
    mods = project_modules()
    assert {"agent.cli", "agent.launcher", "filters.registry", "opscenter.app", "lab.verify"} <= set(mods)
    assert {imp.importer for imp in all_imports} >= {"agent.cli", "agent.dataplane.daemon", "lab.verify"}
    lazy = [imp for imp in all_imports if not imp.module_level]
    assert lazy, "function-level imports exist in the project and must be seen"


def test_no_layer_violations(all_imports: list[Import]) -> None:
    new = {k: v for k, v in layer_violations(all_imports).items() if k not in KNOWN_VIOLATIONS}
    assert not new, _report("a lower layer imports a higher one (see the layers in tests/test_layers.py):", new)


def test_no_import_cycles(all_imports: list[Import]) -> None:
    new = {k: v for k, v in cycles(all_imports).items() if k not in KNOWN_VIOLATIONS}
    assert not new, _report("import cycles between modules (module-level imports):", new)


def test_known_violations_still_exist(all_imports: list[Import]) -> None:
    current = set(layer_violations(all_imports)) | set(cycles(all_imports))
    gone = sorted(KNOWN_VIOLATIONS - current)
    assert not gone, f"fixed, so remove from KNOWN_VIOLATIONS in tests/test_layers.py: {gone}"


def test_link_and_lifecycle_do_not_import_the_dataplane(all_imports: list[Import]) -> None:
    bad = [imp.where() for imp in all_imports
           if (_under(imp.importer, "agent.link") or _under(imp.importer, "agent.lifecycle"))
           and _under(imp.target, "agent.dataplane")]
    assert not bad, "\n".join(bad)


def test_the_launcher_imports_nothing_of_the_project(all_imports: list[Import]) -> None:
    bad = [imp.where() for imp in all_imports if imp.importer == "agent.launcher"]
    assert not bad, "\n".join(bad)


# -- the checker itself, on made-up modules -------------------------------------------------------


def _imp(importer: str, target: str, module_level: bool = True, line: int = 1) -> Import:
    return Import(importer, importer.replace(".", "/") + ".py", line, target, module_level)


def test_checker_flags_layers_and_cycles() -> None:
    imports = [
        _imp("filters.a", "agent.b", module_level=False),  # lazy: still a layer violation
        _imp("agent.link.x", "agent.dataplane.y"),
        _imp("agent.launcher", "agent.fsutil"),
        _imp("opscenter.a", "filters.b"),  # allowed
        _imp("lab.a", "opscenter.b"),  # allowed
        _imp("agent.p", "agent.q"), _imp("agent.q", "agent.r"), _imp("agent.r", "agent.p"),
        _imp("agent.s", "agent.t"), _imp("agent.t", "agent.s", module_level=False),  # lazy: still a cycle
        _imp("agent.v", "agent.w"), Import("agent.w", "agent/w.py", 1, "agent.v", True, True),  # types only: none
        _imp("agent.u", "agent.u"),
    ]
    assert set(layer_violations(imports)) == {
        ("layer", "filters.a", "agent.b"), ("layer", "agent.link.x", "agent.dataplane.y"),
        ("layer", "agent.launcher", "agent.fsutil")}
    found = cycles(imports)
    assert set(found) == {("cycle", "agent.p", "agent.q", "agent.r"), ("cycle", "agent.s", "agent.t"), ("cycle", "agent.u")}
    assert [i.line for i in found[("cycle", "agent.p", "agent.q", "agent.r")]] == [1, 1, 1]
    assert "agent/p.py:1: agent.p imports agent.q" in _report("t", found)


def test_checker_resolves_relative_and_submodule_imports() -> None:
    text = ("from . import spool\nfrom .spool import Spool\nimport agent.link.center as c\n"
            "from agent.link import ntp, nothing\nimport json, yaml\n"
            "if TYPE_CHECKING:\n    from agent.config import AgentConfig\n"
            "def f():\n    from ..dataplane import daemon\n")
    known = {"agent.link", "agent.link.spool", "agent.link.center", "agent.link.ntp", "agent.config",
             "agent.dataplane", "agent.dataplane.daemon"}
    got = [(i.line, i.target, i.module_level, i.type_only)
           for i in imports_of("agent.link.pkg", text, "agent/link/pkg.py", known)]
    assert got == [(1, "agent.link.spool", True, False), (2, "agent.link.spool", True, False),
                   (3, "agent.link.center", True, False), (4, "agent.link.ntp", True, False),
                   (4, "agent.link", True, False), (7, "agent.config", True, True),
                   (9, "agent.dataplane.daemon", False, False)]
    init = imports_of("agent.link", "from .spool import Spool\n", "agent/link/__init__.py", known, is_package=True)
    assert [i.target for i in init] == ["agent.link.spool"]
