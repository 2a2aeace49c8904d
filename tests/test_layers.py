"""The code's shape: the engine in `bot/` knows nothing of Discord, no module imports another that
imports it back, no import hides inside a function, and no source file outgrows one reader.

Read from the source with `ast`, as a reviewer would: top-level imports make the graph (those
under `if TYPE_CHECKING:` are for the type checker only and left out).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ("bot", "cogs")
MAX_LINES = 600
#: Where a function may import: the command line loads what each command needs (`serve` never
#: loads discord.py), the bot loads the HTTP API only when it is enabled, and the store and the
#: processes sharing it load the PostgreSQL driver only when the settings name a PostgreSQL
#: database.
LAZY_IMPORTS = {"bot.__main__", "bot.app", "bot.jobs.db", "bot.jobs.cluster"}
LAZY_PACKAGES = ("bot.cli.",)


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imported(node: ast.stmt, module: str, is_package: bool) -> Iterator[str]:
    """The module names one import statement names (a `from x import y` may name x.y)."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join([*package, base] if base else package)
        yield base
        yield from (f"{base}.{alias.name}" for alias in node.names)


def top_level_imports(tree: ast.Module) -> Iterator[ast.stmt]:
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.Try):
            yield from (n for n in node.body if isinstance(n, ast.Import | ast.ImportFrom))


def import_graph() -> dict[str, set[str]]:
    """Each module's own modules it imports at its top; importing a package's submodule through
    the package (`from bot.workflows import nodeinfo`) counts as importing the package too."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        edges = set()
        for node in top_level_imports(tree):
            for target in imported(node, name, path.name == "__init__.py"):
                if target in known and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = import_graph()
    assert "bot.engine" in graph and graph["bot.app"]  # the graph was read
    assert cycles(graph) == []


def test_nothing_in_the_engine_imports_discord() -> None:
    allowed = {"bot.app"}  # the discord.py bot itself; cogs/ are its commands
    offenders = []
    for name, path in modules().items():
        if not name.startswith("bot.") or name in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = imported(node, name, path.name == "__init__.py")
                if any(n == "discord" or n.startswith("discord.") for n in names):
                    offenders.append(f"{name}:{node.lineno}")
    assert offenders == []


def test_imports_inside_functions_only_where_the_command_line_loads_lazily() -> None:
    offenders = []
    for name, path in modules().items():
        if name in LAZY_IMPORTS or name.startswith(LAZY_PACKAGES):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function in ast.walk(tree):
            if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                for node in ast.walk(function):
                    if isinstance(node, ast.Import | ast.ImportFrom):
                        offenders.append(f"{name}:{node.lineno}")
    assert offenders == []


def test_no_source_file_is_over_600_lines() -> None:
    long = {}
    for folder in ("bot", "cogs", "scripts", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > MAX_LINES:
                long[str(path.relative_to(ROOT))] = lines
    assert long == {}
