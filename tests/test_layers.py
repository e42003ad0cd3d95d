"""The file tree keeps its layers: the core knows no aiohttp, no psycopg and no transport."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVER = Path(__file__).resolve().parent.parent / "server"
FORBIDDEN_IN_CORE = ("aiohttp", "psycopg", "psycopg_pool", "server.transports", "server.pg")


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            modules.add(node.module)
    return modules


def core_modules() -> list[Path]:
    return sorted((SERVER / "core").glob("*.py"))


@pytest.mark.parametrize("path", core_modules(), ids=lambda path: path.name)
def test_the_core_imports_no_driver_framework_or_transport(path: Path) -> None:
    leaks = {
        module
        for module in imported_modules(path)
        for forbidden in FORBIDDEN_IN_CORE
        if module == forbidden or module.startswith(forbidden + ".")
    }
    assert not leaks, f"{path.name} imports {sorted(leaks)}"
    # Within server, the core imports only the core (and nothing above it).
    outside = {
        module
        for module in imported_modules(path)
        if module.startswith("server.") and not module.startswith("server.core")
    }
    assert not outside, f"{path.name} imports {sorted(outside)}"


def test_the_check_sees_every_core_module() -> None:
    assert {path.name for path in core_modules()} >= {
        "channels.py",
        "cursor.py",
        "events.py",
        "hub.py",
    }
    assert "aiohttp" in imported_modules(SERVER / "transports" / "websocket.py")
