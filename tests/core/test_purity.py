"""gateway/core stays pure: no module in it imports an I/O framework.

Every file is parsed with ``ast`` (nothing is imported), and imports of other
``gateway`` modules are followed, so core cannot reach I/O through a helper.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "gateway"
CORE = PACKAGE / "core"
FORBIDDEN = frozenset({
    "asyncio", "httpx", "fastapi", "starlette", "sqlmodel", "sqlalchemy", "asyncpg", "aiohttp",
    "uvicorn",
})
CORE_FILES = sorted(CORE.rglob("*.py"))


def imported_modules(source: str, module: str) -> set[str]:
    """Absolute names of every module ``source`` imports (``module`` resolves relative ones)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: -node.level]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            names.add(stem)
            names.update(f"{stem}.{alias.name}" for alias in node.names)
    return names


def forbidden_in(names: set[str]) -> set[str]:
    return {name for name in names if name.split(".")[0] in FORBIDDEN}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_of(module: str) -> Path | None:
    base = PACKAGE.parent.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def reachable_forbidden(path: Path) -> dict[str, set[str]]:
    """Forbidden imports of ``path`` and of every gateway module it imports, transitively."""
    seen: set[Path] = set()
    found: dict[str, set[str]] = {}
    todo = [path]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        module = module_name(current)
        names = imported_modules(current.read_text(), module if current.stem != "__init__"
                                 else module + ".__init__")
        bad = forbidden_in(names)
        if bad:
            found[module] = bad
        for name in names:
            if name.split(".")[0] == "gateway":
                target = source_of(name)
                if target is not None:
                    todo.append(target)
    return found


def test_core_has_the_modules_this_suite_expects() -> None:
    names = {module_name(p) for p in CORE_FILES}
    assert {f"gateway.core.{m}" for m in (
        "template", "policy", "policy.schema", "policy.mcp_schema", "policy.compiled",
        "policy.decide", "policy.loader", "body", "seal", "cel", "redact", "journal",
        "killswitch", "audit", "headers", "model")} <= names


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_core_module_imports_no_io_framework(path: Path) -> None:
    assert reachable_forbidden(path) == {}


@pytest.mark.parametrize(("source", "bad"), [
    ("import asyncio", {"asyncio"}),
    ("import httpx as h", {"httpx"}),
    ("from fastapi import FastAPI", {"fastapi", "fastapi.FastAPI"}),
    ("from starlette.requests import Request", {"starlette.requests",
                                                "starlette.requests.Request"}),
    ("import sqlalchemy.orm", {"sqlalchemy.orm"}),
    ("def f():\n    import sqlmodel\n", {"sqlmodel"}),  # imports inside functions count too
    ("try:\n    import uvicorn\nexcept ImportError:\n    pass\n", {"uvicorn"}),
    ("import json, aiohttp", {"aiohttp"}),
    ("import json\nfrom collections import abc", set()),
    ("from asyncpg_helpers import x", set()),  # only whole package names are forbidden
])
def test_the_checker_itself_finds_forbidden_imports(source: str, bad: set[str]) -> None:
    assert forbidden_in(imported_modules(source, "gateway.core.x")) == bad


@pytest.mark.parametrize(("source", "module", "expected"), [
    ("from . import policy", "gateway.core.journal", "gateway.core.policy"),
    ("from .model import Decision", "gateway.core.policy", "gateway.core.model"),
    ("from ..pipeline import Pipeline", "gateway.core.policy", "gateway.pipeline"),
])
def test_relative_imports_are_resolved(source: str, module: str, expected: str) -> None:
    assert expected in imported_modules(source, module)
