"""The fast lane (``pytest -m FAST_LANE``) needs no database driver.

Two checks. From the source: no module the fast lane imports from ``tests/``
(its folders' test modules and conftests, and every ``tests.*`` helper they
import, followed transitively) imports a PostgreSQL driver when it is
imported; a test that needs one imports it inside the test or fixture. And
for real, in a fresh interpreter where asyncpg cannot be imported: every
``gateway`` module imports (the store loads asyncpg only when a PostgreSQL
store is opened, ``gateway.store.engine.driver_errors``), and the pure
core's tests pass, with a module that starts real gateways on SQLite
(``tests/trust/test_operators.py``: writes journaled, held and approved; the
admin API while the store is gone).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import FAST_LANE, MARKERS, TESTS, rules_out

DRIVERS = {"asyncpg", "psycopg", "psycopg2"}
ROOT = TESTS.parent


def _module_level(tree: ast.Module) -> list[ast.stmt]:
    """The statements run at import: not in functions, not under ``if TYPE_CHECKING``."""
    out: list[ast.stmt] = []
    todo: list[ast.stmt] = list(tree.body)
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        for field in ("body", "orelse", "finalbody", "handlers"):
            todo.extend(getattr(node, field, []))
    return out


def _imported(node: ast.stmt) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        return [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return []


def _path(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _lane_roots() -> list[Path]:
    """The test modules and conftests of every folder the fast lane collects."""
    return sorted(path for path in TESTS.rglob("*.py")
                  if "node_modules" not in path.parts
                  and (path.name.startswith("test_") or path.name == "conftest.py")
                  and not rules_out(FAST_LANE, MARKERS.get(path.relative_to(TESTS).parts[0], "")))


def driver_imports(roots: list[Path]) -> dict[str, list[str]]:
    """For each module loaded from ``roots`` (``tests.*`` imports followed), the database
    drivers it imports at import time."""
    found: dict[str, list[str]] = {}
    todo, seen = list(roots), set(roots)
    while todo:
        path = todo.pop()
        for node in _module_level(ast.parse(path.read_text(), str(path))):
            for name in _imported(node):
                if name.split(".")[0] in DRIVERS:
                    found.setdefault(str(path.relative_to(ROOT)), []).append(name)
                helper = _path(name) if name.startswith("tests.") else None
                if helper is not None and helper not in seen:
                    seen.add(helper)
                    todo.append(helper)
    return found


def test_no_module_the_fast_lane_loads_imports_a_database_driver() -> None:
    roots = _lane_roots()
    assert TESTS / "core" / "test_purity.py" in roots and TESTS / "conftest.py" in roots
    assert not any("e2e" in path.parts or "sdk" in path.parts for path in roots)
    assert driver_imports(roots) == {}


def test_the_check_finds_a_driver_imported_by_a_helper(tmp_path: Path) -> None:
    """The check above can fail: a driver two imports away, at module level, is found;
    one inside a function or under ``TYPE_CHECKING`` is not."""
    test = tmp_path / "test_x.py"
    test.write_text("from tests.conftest import TESTS\n"
                    "if TYPE_CHECKING:\n    import psycopg\n"
                    "def f():\n    import asyncpg\n")
    assert driver_imports([test]) == {}
    test.write_text("from tests.e2e import procs\nfrom tests.e2e.test_startup_errors import x\n")
    assert driver_imports([test]) == {"tests/e2e/test_startup_errors.py": ["asyncpg"]}


BLOCKED = """
import importlib
import pkgutil
import sys
sys.modules["asyncpg"] = None  # what an environment without the driver looks like
try:
    import asyncpg  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("asyncpg is still importable")
import pytest
status = pytest.main(sys.argv[1:])
import gateway  # after the tests: pytest rewrites the asserts of what it imports first
for module in pkgutil.walk_packages(gateway.__path__, "gateway."):
    if ".migrations" not in module.name:  # Alembic's scripts, loaded by Alembic
        importlib.import_module(module.name)
raise SystemExit(status)
"""
WITHOUT_ASYNCPG = ["tests/core", "tests/trust/test_operators.py"]


def test_the_fast_lane_runs_without_asyncpg() -> None:
    result = subprocess.run(
        [sys.executable, "-c", BLOCKED, "-p", "no:cacheprovider", "-n", "0", "-rN",
         "-m", FAST_LANE, *WITHOUT_ASYNCPG],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "asyncpg" not in result.stdout


def test_the_postgresql_server_is_named_in_one_place() -> None:
    """The README lets ``GATEWAY_TEST_POSTGRES`` choose the server: a test that wrote
    the default address itself would ignore that (tests/conftest.py holds the default)."""
    default = "127.0.0.1:5432"
    holders = sorted(str(path.relative_to(ROOT)) for path in TESTS.rglob("*.py")
                     if "node_modules" not in path.parts and path.resolve() != Path(__file__).resolve()
                     and default in path.read_text())
    assert holders == ["tests/conftest.py"]
