"""The shape of the code, checked: no import cycle among runner's modules, one module a
foreign system (docker, sqlalchemy), and a CLI that starts without the heavy libraries.

The import graph is read with `ast` from the source, every import counted: those at the
top, inside functions (imported late) and under `if TYPE_CHECKING:`. A cycle hidden by a
late import is still a cycle of responsibilities.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "runner"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for path in PACKAGE.rglob("*.py")
        if "migrations" not in path.relative_to(PACKAGE).parts
    }


def _imports(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """The runner modules `name` imports, anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in known:
                    yield submodule
                elif base in known:
                    yield base


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {
        name: {target for target in _imports(name, path, known) if target != name}
        for name, path in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (found := visit(target)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_late_and_type_checking_imports() -> None:
    graph = import_graph()
    assert "runner.api" in graph["runner.cli"]
    assert graph["runner.scheduler"] >= {"runner.dag", "runner.backends.base"}


def test_runner_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def _third_party_importers(library: str) -> set[str]:
    found = set()
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            if any(n == library or n.startswith(library + ".") for n in names):
                found.add(name)
    return found


def test_only_the_docker_backends_import_docker() -> None:
    """The Docker backend (and its engine connection) and the Swarm backend, which speaks
    the same API to a manager."""
    importers = _third_party_importers("docker")
    assert importers, "the scan must see the Docker backend"
    allowed = ("runner.backends.docker", "runner.backends.swarm")
    assert all(name.startswith(allowed) for name in importers), importers


def test_only_the_store_imports_sqlalchemy() -> None:
    importers = _third_party_importers("sqlalchemy")
    assert importers
    assert all(name.startswith("runner.store") for name in importers), importers


_ENGINE_AND_DATABASE = ("docker", "requests", "sqlalchemy", "alembic", "psycopg")


@pytest.mark.parametrize(
    ("module", "heavy"),
    [
        ("runner.cli", (*_ENGINE_AND_DATABASE, "jinja2", "pydantic", "yaml")),
        ("runner", (*_ENGINE_AND_DATABASE, "jinja2", "pydantic", "yaml")),
        ("runner.api", (*_ENGINE_AND_DATABASE, "structlog", "rich")),
        ("runner.scheduler", _ENGINE_AND_DATABASE),
        ("runner.loader", _ENGINE_AND_DATABASE),
    ],
)
def test_importing_does_not_load_heavy_libraries(module: str, heavy: tuple[str, ...]) -> None:
    """`runner --help` must start fast: the database, engine and template libraries are
    imported by the commands that use them, not by importing the CLI; and the engine
    and the database are opened, so imported, only by who opens them."""
    code = f"import sys, {module}\nprint(','.join(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "", f"importing {module} loaded {out.stdout.strip()}"


def test_validating_a_flow_loads_no_engine_database_or_logging_library() -> None:
    """`runner validate` runs in CI hooks and editors on every save: it reads YAML and
    checks models and templates, and must not pay for the engine, the database or
    structlog (with rich and pygments behind it, a fifth of a second)."""
    heavy = (*_ENGINE_AND_DATABASE, "structlog", "rich", "runner.scheduler", "runner.store")
    code = (
        "import sys\n"
        "from runner.cli import main\n"
        "sys.argv = ['runner', 'validate', 'flows/hello.yml']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        f"print(','.join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert "flows/hello.yml: ok" in out.stdout
    assert out.stderr.strip() == "", f"`runner validate` loaded {out.stderr.strip()}"


def _runtime_imports(path: Path) -> set[str]:
    """The modules a file imports when it runs (imports under `if TYPE_CHECKING:` are for
    the type checker only)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
            found.add(node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def test_the_cli_goes_through_the_library_api_only() -> None:
    """The CLI parses, calls runner.api and prints: it opens no store and no backend, and
    plans nothing itself. Besides api it may use what it prints and how."""
    allowed = {
        "runner",
        "runner.api",
        "runner.errors",  # what it catches
        "runner.execution",  # the states it prints and turns into exit codes
        "runner.settings",  # the variables its options read
        "runner.logs",  # how events are rendered
        "runner.server.serve",  # `runner serve` starts the server (itself built on api)
    }
    modules = _modules()
    used = {
        name
        for name in _runtime_imports(PACKAGE / "cli.py")
        if name.split(".")[0] == "runner" and name in modules
    }
    assert used <= allowed, f"runner.cli imports {sorted(used - allowed)}"
