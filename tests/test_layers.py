"""The layers of docs/ARCHITECTURE.md, checked on the source: no import goes upward, no two
modules import each other (directly or round a longer loop), and the doc lists every module.

Every ``import`` / ``from ... import`` of a ``midrun`` module counts, at module level and
inside functions alike (a lazy import is still a dependency). Imports under ``if
TYPE_CHECKING:`` count for the layers (a type-only reference upward is still a layer
leak) but not for cycles (they never run, so they cannot form an import loop). The layer
table is read from docs/ARCHITECTURE.md, so the doc and this test cannot disagree.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "ARCHITECTURE.md"

#: The documented exceptions to "imports go downward": (importer, imported). Each may only
#: be imported inside a function or under TYPE_CHECKING (never when the importer loads),
#: and is left out of the cycle check too. docs/ARCHITECTURE.md says why.
ALLOWED_UPWARD = frozenset({("midrun.graph.stategraph", "midrun.engine.stategraph")})

#: Folders whose modules need no line of their own in the doc (Alembic revisions).
UNLISTED_FOLDERS = ("store/migrations/versions",)


@dataclass(frozen=True, slots=True)
class Import:
    source: str
    target: str
    line: int
    lazy: bool = False  # inside a function
    type_only: bool = False  # under ``if TYPE_CHECKING:``

    def __str__(self) -> str:
        how = " (in a function)" if self.lazy else ""
        how += " (TYPE_CHECKING)" if self.type_only else ""
        return f"{self.source}:{self.line} imports {self.target}{how}"


# -- reading the source ---------------------------------------------------------------


def module_files(package: Path) -> dict[str, Path]:
    """Module name -> file for every ``.py`` under ``package`` (named from its parent)."""
    modules: dict[str, Path] = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(name: str, modules: Iterable[str]) -> str | None:
    """The longest prefix of the dotted ``name`` that is one of ``modules``."""
    known = set(modules)
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return None


def scan_source(
    source: str, module: str, modules: Iterable[str], *, is_package: bool = False
) -> list[Import]:
    """The imports of known ``modules`` that ``source`` (the text of ``module``) makes."""
    known = set(modules)
    found: list[Import] = []
    package = module if is_package else module.rpartition(".")[0]

    def add(target: str | None, node: ast.stmt, lazy: bool, type_only: bool) -> None:
        if target is not None and target != module:
            found.append(Import(module, target, node.lineno, lazy, type_only))

    def visit(node: ast.AST, lazy: bool, type_only: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(_resolve(alias.name, known), node, lazy, type_only)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            for alias in node.names:
                # ``from a import b`` names module a.b when there is one, else a's name b.
                add(_resolve(f"{origin}.{alias.name}", known), node, lazy, type_only)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, lazy, True)
            for child in node.orelse:
                visit(child, lazy, type_only)
        else:
            inner = lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            for child in ast.iter_child_nodes(node):
                visit(child, inner, type_only)

    visit(ast.parse(source), False, False)
    return found


def scan_package(package: Path) -> tuple[dict[str, Path], list[Import]]:
    modules = module_files(package)
    imports: list[Import] = []
    for name, path in modules.items():
        imports += scan_source(
            path.read_text(encoding="utf-8"), name, modules, is_package=path.name == "__init__.py"
        )
    return modules, imports


# -- reading the doc ------------------------------------------------------------------


def layer_table(text: str) -> dict[str, int]:
    """Package -> rank from the doc's table under "Layer table" (``| 0 | core |`` rows)."""
    section = text.split("### Layer table", 1)
    if len(section) < 2:
        raise AssertionError(f"{DOC} has no '### Layer table' section")
    layers: dict[str, int] = {}
    for line in section[1].splitlines()[1:]:
        if line.startswith("#"):
            break
        row = re.fullmatch(r"\|\s*(\d+)\s*\|([^|]*)\|.*", line.strip())
        if row:
            for name in row.group(2).split(","):
                if name.strip():
                    layers[name.strip().strip("`").rstrip("/")] = int(row.group(1))
    return layers


def listed_modules(text: str) -> set[str]:
    """``pkg/name`` for every module the doc names: in an indented package block (a line
    ``    pkg/   ...`` and the deeper-indented lines after it) or as ``pkg/name.py``."""
    listed = {
        m.group(1).removeprefix("midrun/")
        for m in re.finditer(r"\b([a-z_]+/[\w/]+)\.py\b", text)
    }
    package = None
    for line in text.splitlines():
        head = re.match(r"^ {4}([a-z_]+)/(\s|$)", line)
        if head:
            package = head.group(1)
        elif package is None or not re.match(r"^ {5,}\S", line):
            package = None
            continue
        # A subfolder's modules go by their own name ("migrations/  ... env.py").
        for name in re.findall(r"\b([\w/]+)\.py\b", line):
            listed.add(f"{package}/{name}")
        for folder in re.findall(r"\b([a-z_]+)/\s", line[4:]):
            if folder != package:
                listed.add(f"{package}/{folder}")
    return listed


# -- the checks (pure, so they can be tested on made-up graphs) -----------------------


def layer_of(module: str, layers: Mapping[str, int]) -> int | None:
    parts = module.split(".")
    return layers.get(parts[1]) if len(parts) > 1 else None


def layer_violations(
    imports: Iterable[Import],
    layers: Mapping[str, int],
    allowed: frozenset[tuple[str, str]] = ALLOWED_UPWARD,
) -> list[str]:
    problems = []
    for imp in imports:
        source, target = layer_of(imp.source, layers), layer_of(imp.target, layers)
        if source is None or target is None or target <= source:
            continue
        if (imp.source, imp.target) in allowed and (imp.lazy or imp.type_only):
            continue
        problems.append(f"{imp} (layer {source} -> layer {target})")
    return problems


def import_cycles(
    imports: Iterable[Import], allowed: frozenset[tuple[str, str]] = ALLOWED_UPWARD
) -> list[str]:
    """Each import cycle (a strongly connected component of the runtime import graph) as
    one loop ``a (line n) -> b (line m) -> a``, plus the component's other members."""
    edges: dict[str, dict[str, Import]] = {}
    for imp in imports:
        if imp.type_only or (imp.source, imp.target) in allowed:
            continue
        edges.setdefault(imp.source, {}).setdefault(imp.target, imp)
        edges.setdefault(imp.target, {})
    cycles = []
    for component in _components(edges):
        if len(component) > 1:
            loop = _cycle_path(sorted(component), edges)
            others = sorted(component - {m.split(" ")[0] for m in loop})
            also = f" [also in this cycle: {', '.join(others)}]" if others else ""
            cycles.append(" -> ".join(loop) + also)
    return sorted(cycles)


def _components(edges: Mapping[str, Mapping[str, Import]]) -> list[set[str]]:
    """Tarjan's strongly connected components, iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[set[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                found.append(component)
    return found


def _cycle_path(component: list[str], edges: Mapping[str, Mapping[str, Import]]) -> list[str]:
    """A shortest loop from the component's first module back to itself."""
    start, members = component[0], set(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(edges[node]):
                if child not in members:
                    continue
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    path.reverse()
                    steps = zip(path, [*path[1:], start], strict=True)
                    return [f"{a} (line {edges[a][b].line})" for a, b in steps] + [start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no loop in component {component}")


# -- the tree's own checks ------------------------------------------------------------


@pytest.fixture(scope="module")
def tree() -> tuple[dict[str, Path], list[Import]]:
    return scan_package(ROOT / "midrun")


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def test_every_package_has_a_layer(tree, doc) -> None:
    layers = layer_table(doc)
    packages = {name.split(".")[1] for name in tree[0] if name.count(".") >= 1}
    assert packages - layers.keys() == set(), "packages missing from the doc's layer table"
    assert layers.keys() - packages == set(), "the doc's layer table names no such package"


def test_no_import_goes_up_a_layer(tree, doc) -> None:
    problems = layer_violations(tree[1], layer_table(doc))
    assert not problems, "Upward imports (see docs/ARCHITECTURE.md, layers):\n" + "\n".join(
        problems
    )


def test_the_documented_exceptions_are_lazy_and_still_needed(tree) -> None:
    for source, target in ALLOWED_UPWARD:
        uses = [i for i in tree[1] if (i.source, i.target) == (source, target)]
        assert uses, f"{source} no longer imports {target}: drop the exception (test, doc)"
        eager = [str(i) for i in uses if not (i.lazy or i.type_only)]
        assert not eager, f"the documented exception is imported at module level: {eager}"


def test_no_import_cycles(tree) -> None:
    cycles = import_cycles(tree[1])
    assert not cycles, "Import cycles (modules that import each other; one loop each):\n" + (
        "\n".join("  " + c for c in cycles)
    )


def test_the_doc_lists_every_module(tree, doc) -> None:
    listed = listed_modules(doc)
    missing = []
    for path in tree[0].values():
        relative = path.relative_to(ROOT / "midrun").with_suffix("").as_posix()
        if path.name == "__init__.py" or "/" not in relative:
            continue
        if any(relative.startswith(folder + "/") for folder in UNLISTED_FOLDERS):
            continue
        package, rest = relative.split("/", 1)
        if relative not in listed and f"{package}/{rest.rsplit('/', 1)[-1]}" not in listed:
            missing.append(f"midrun/{relative}.py")
    assert not missing, "Modules docs/ARCHITECTURE.md does not list:\n" + "\n".join(missing)


# -- the checker itself can fail ------------------------------------------------------

LAYERS = {"core": 0, "graph": 1, "engine": 2, "jobs": 4}
KNOWN = ["pkg", "pkg.core", "pkg.core.ids", "pkg.graph", "pkg.graph.a", "pkg.engine.x",
         "pkg.engine.y", "pkg.engine.z", "pkg.jobs.j"]  # fmt: skip


def test_the_scanner_sees_every_kind_of_import() -> None:
    source = (
        "from __future__ import annotations\n"
        "import pkg.core.ids\n"
        "from pkg.engine import x\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from pkg.jobs.j import Job\n"
        "def f():\n"
        "    from ..engine.y import Y\n"
        "    return lambda: __import__('os')\n"
        "class C:\n"
        "    def m(self):\n"
        "        import pkg.engine.z as z\n"
        "from . import a\n"
        "import os, json\n"
    )
    found = {(i.target, i.lazy, i.type_only) for i in scan_source(source, "pkg.graph.b", KNOWN)}
    assert found == {
        ("pkg.core.ids", False, False),
        ("pkg.engine.x", False, False),
        ("pkg.jobs.j", False, True),
        ("pkg.engine.y", True, False),
        ("pkg.engine.z", True, False),
        ("pkg.graph.a", False, False),
    }
    # In a package's __init__, "." is the package itself.
    [imp] = scan_source("from .a import thing\n", "pkg.graph", KNOWN, is_package=True)
    assert imp.target == "pkg.graph.a"


def test_the_layer_check_catches_an_upward_import() -> None:
    imports = [
        Import("pkg.engine.x", "pkg.graph.a", 1),  # down: fine
        Import("pkg.engine.x", "pkg.engine.y", 2),  # same layer: fine
        Import("pkg.graph.a", "pkg.engine.x", 3, lazy=True),
        Import("pkg.core.ids", "pkg.jobs.j", 4, type_only=True),
    ]
    assert layer_violations(imports, LAYERS, frozenset()) == [
        "pkg.graph.a:3 imports pkg.engine.x (in a function) (layer 1 -> layer 2)",
        "pkg.core.ids:4 imports pkg.jobs.j (TYPE_CHECKING) (layer 0 -> layer 4)",
    ]
    # An allowed exception passes only as a lazy (or type-only) import.
    allowed = frozenset({("pkg.graph.a", "pkg.engine.x")})
    assert len(layer_violations(imports, LAYERS, allowed)) == 1
    eager = [Import("pkg.graph.a", "pkg.engine.x", 3)]
    assert len(layer_violations(eager, LAYERS, allowed)) == 1


def test_the_cycle_check_finds_loops_and_names_them() -> None:
    imports = [
        Import("pkg.engine.x", "pkg.engine.y", 1),
        Import("pkg.engine.y", "pkg.engine.z", 2, lazy=True),  # lazy imports count
        Import("pkg.engine.z", "pkg.engine.x", 3),
        Import("pkg.engine.z", "pkg.core.ids", 4),
        Import("pkg.graph.a", "pkg.core.ids", 5),
        Import("pkg.core.ids", "pkg.graph.a", 6, type_only=True),  # never runs: no loop
    ]
    assert import_cycles(imports, frozenset()) == [
        "pkg.engine.x (line 1) -> pkg.engine.y (line 2) -> pkg.engine.z (line 3) -> pkg.engine.x"
    ]
    assert import_cycles(imports[3:], frozenset()) == []
    # A component bigger than its shortest loop names the rest.
    imports.append(Import("pkg.engine.x", "pkg.engine.w", 7))
    imports.append(Import("pkg.engine.w", "pkg.engine.x", 8))
    assert import_cycles(imports, frozenset()) == [
        "pkg.engine.w (line 8) -> pkg.engine.x (line 7) -> pkg.engine.w"
        " [also in this cycle: pkg.engine.y, pkg.engine.z]"
    ]


def test_the_whole_check_catches_a_planted_upward_import_and_cycle(tmp_path) -> None:
    """A copy of a tiny tree with a bad import in it, scanned like the real one."""
    package = tmp_path / "pkg"
    for folder, files in {
        "core": {"ids.py": "import pkg.graph.a\n"},
        "graph": {"a.py": "def f():\n    from pkg.core import ids\n"},
    }.items():
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
        for name, text in files.items():
            (package / folder / name).write_text(text)
    (package / "__init__.py").write_text("")
    modules, imports = scan_package(package)
    assert "pkg.core.ids" in modules
    assert layer_violations(imports, LAYERS, frozenset()) == [
        "pkg.core.ids:1 imports pkg.graph.a (layer 0 -> layer 1)"
    ]
    assert import_cycles(imports, frozenset()) == [
        "pkg.core.ids (line 1) -> pkg.graph.a (line 2) -> pkg.core.ids"
    ]


def test_the_doc_readers() -> None:
    text = (
        "### Layer table\n\n| rank | packages |\n| --- | --- |\n| 0 | core |\n"
        "| 2 | engine, `debug` |\n\n## Next\n| 9 | nope |\n"
        "    engine/         control.py     ControlPoint\n"
        "                    plan.py        Plan\n"
        "    store/          migrations/    Alembic (env.py takes it)\n"
        "Prose names graph/ui_layout.py.\n"
        "    not listed: other.py\n"
    )
    assert layer_table(text) == {"core": 0, "engine": 2, "debug": 2}
    assert listed_modules(text) == {
        "engine/control", "engine/plan", "store/migrations", "store/env", "graph/ui_layout"
    }  # fmt: skip
