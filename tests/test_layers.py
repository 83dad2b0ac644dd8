"""The layout's rules, read from the source: every import (lazy ones inside functions too)
between the package's modules goes the allowed way, no two modules import each other
(directly or round a longer cycle), and the heavy third-party packages stay at their edges.

The rules (README, Architecture): ``core`` imports only ``core`` (and ``errors``);
``discovery`` -> core; ``lab`` -> core, helloworld; ``report`` -> core; ``targets`` ->
core, discovery, lab; ``options`` -> core, targets; ``plugin`` -> core, options, targets,
report; ``commands`` -> anything but the CLI; nothing imports ``commands`` or ``cli``.
Inside ``plugin``, only the locustfiles import the listeners.
"""

from __future__ import annotations

import ast
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "harness"

# layer -> the layers it may import (besides itself and the package root / errors)
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "discovery": {"core"},
    "helloworld": set(),
    "lab": {"core", "helloworld"},
    "report": {"core"},
    "targets": {"core", "discovery", "lab"},
    "options": {"core", "targets"},
    "plugin": {"core", "options", "targets", "report"},
    "commands": {"core", "discovery", "helloworld", "lab", "report", "targets", "options",
                 "plugin"},
    "cli": set(),  # it finds the commands by name (importlib), never by an import
}
BASE = {"harness", "harness.errors"}  # the version and the one exception family
# Third-party packages and the only layers that may import them.
THIRD_PARTY: dict[str, set[str]] = {
    "kubernetes": {"discovery"},
    "locust": {"plugin"},
    "flask": {"plugin"},
    "gevent": {"plugin", "lab", "helloworld"},
    "jinja2": {"report", "commands"},
    "plotly": {"report"},
    "markupsafe": {"report"},
    "rich": {"report", "commands"},  # the terminal's views: report/terminal.py, the demo
}
CORE_THIRD_PARTY = {"numpy", "scipy", "regex"}  # the core's only non-stdlib imports
LISTENERS = "harness.plugin.listeners"
MAY_IMPORT_LISTENERS = {"harness.plugin.locustfile", "harness.plugin.capacity_shape"}


def module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if module in BASE or parts[0] != "harness" or len(parts) < 2:
        return None
    return parts[1]


def imports_of(path: Path, modules: set[str], package_name: str) -> list[tuple[str, int]]:
    """(imported module, line) for every import in the file, at any depth; ``from pkg import
    name`` counts as the submodule ``pkg.name`` when there is one."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.append((sub if sub in modules else node.module, node.lineno))
    return found


def import_graph(package: Path) -> dict[str, list[tuple[str, int]]]:
    files = {module_name(p, package): p for p in package.rglob("*.py")}
    modules = set(files)
    return {name: imports_of(path, modules, package.name) for name, path in files.items()}


def violations(graph: dict[str, list[tuple[str, int]]]) -> list[str]:
    out = []
    for module, imports in sorted(graph.items()):
        layer = layer_of(module)
        for imported, line in imports:
            top = imported.split(".")[0]
            if top == "harness":
                target = layer_of(imported)
                if layer is None or target is None or target == layer:
                    if imported == LISTENERS and module not in MAY_IMPORT_LISTENERS | {
                            LISTENERS} and layer == "plugin":
                        out.append(f"{module}:{line} imports {imported} (only the locustfiles "
                                   "do; read the run context from plugin.context)")
                    continue
                if target not in ALLOWED.get(layer, set()):
                    out.append(f"{module}:{line} imports {imported} ({layer} -> {target} is "
                               "not an allowed direction)")
            elif top in THIRD_PARTY and layer not in THIRD_PARTY[top]:
                out.append(f"{module}:{line} imports {top} (only {sorted(THIRD_PARTY[top])})")
            elif layer == "core" and top not in sys.stdlib_module_names | CORE_THIRD_PARTY:
                out.append(f"{module}:{line} imports {top}: the core is stdlib + numpy/scipy")
    return out


def cycles(graph: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), over imports between the
    package's modules (package __init__ files left out: importing a submodule runs them, but
    ours hold nothing but a docstring or the version)."""
    edges = {m: sorted({i for i, _ in imps if i in graph and i != m and not _is_init(i)})
             for m, imps in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


def _is_init(module: str) -> bool:
    return (PACKAGE.parent / module.replace(".", "/") / "__init__.py").exists()


def test_every_import_goes_an_allowed_way():
    assert violations(import_graph(PACKAGE)) == []


def test_no_import_cycles():
    assert cycles(import_graph(PACKAGE)) == []


def test_package_inits_hold_no_imports_of_submodules():
    # What makes leaving them out of the cycle check sound.
    for init in PACKAGE.rglob("__init__.py"):
        name = module_name(init, PACKAGE)
        for imported, line in imports_of(init, set(), "harness"):
            assert imported in BASE or not imported.startswith("harness"), (
                f"{name}:{line} imports {imported}")


def test_every_module_has_a_layer_with_rules():
    layers = {layer_of(m) for m in import_graph(PACKAGE)} - {None}
    assert layers <= set(ALLOWED), layers - set(ALLOWED)


# -- the checks can fail: a copy of the package with one rule broken each ---------------------

def _broken_copy(tmp_path: Path, module: str, line: str) -> Path:
    import shutil

    copy = tmp_path / "harness"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    path = copy / (module.replace(".", "/").removeprefix("harness/") + ".py")
    path.write_text(path.read_text() + "\n\n" + textwrap.dedent(line) + "\n")
    return copy


def test_a_cycle_added_back_is_found(tmp_path):
    # recorder -> analysis, while analysis imports the recorder: a cycle inside the core.
    copy = _broken_copy(tmp_path, "harness.core.recorder",
                        "def _late():\n    from harness.core.analysis import summarize\n")
    found = cycles(import_graph(copy))
    assert any({"harness.core.analysis", "harness.core.recorder"} <= set(g) for g in found)


def test_a_wrong_direction_is_found(tmp_path):
    copy = _broken_copy(tmp_path, "harness.core.findings",
                        "from harness.report.csvs import to_csv  # noqa")
    assert any("core -> report" in v for v in violations(import_graph(copy)))


def test_users_reading_the_listeners_is_found(tmp_path):
    copy = _broken_copy(tmp_path, "harness.plugin.users", "import harness.plugin.listeners")
    assert any("only the locustfiles" in v for v in violations(import_graph(copy)))


def test_a_command_imported_from_elsewhere_is_found(tmp_path):
    copy = _broken_copy(tmp_path, "harness.report.build",
                        "def _x():\n    from harness.commands.run import locust_argv\n")
    assert any("report -> commands" in v for v in violations(import_graph(copy)))


@pytest.mark.parametrize("module, package", [("harness.core.text", "jinja2"),
                                             ("harness.report.build", "kubernetes")])
def test_a_heavy_import_at_the_wrong_edge_is_found(tmp_path, module, package):
    copy = _broken_copy(tmp_path, module, f"def _x():\n    import {package}\n")
    assert any(f"imports {package}" in v for v in violations(import_graph(copy)))
