"""The core depends inward only (style rule 6): every module of ``raftdir/core`` imports
nothing from replication, api, agent, cli, leader, daemon (or any raftdir module but
errors, model and the core itself), and nothing that does I/O, threads or time."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import raftdir.core

CORE = Path(raftdir.core.__file__).parent
FILES = sorted(CORE.rglob("*.py"))
FORBIDDEN = ("replication", "api", "agent", "cli", "leader", "daemon", "cluster")
ALLOWED_RAFTDIR = ("raftdir.errors", "raftdir.codec", "raftdir.model", "raftdir.core")
FORBIDDEN_STDLIB = ("socket", "threading", "time", "random", "logging", "asyncio", "os",
                    "subprocess", "datetime", "pickle", "uuid", "secrets")
# hashlib is allowed: a deterministic digest of a command (the request-id fingerprint).


def imported_modules(path: Path) -> list[tuple[int, str]]:
    package = "raftdir.core" + "".join(
        "." + part for part in path.relative_to(CORE).parent.parts)
    return imports_of(path.read_text(), package)


def imports_of(source: str, package: str) -> list[tuple[int, str]]:
    """Every absolute module name a source imports (relative imports resolved), also
    imports inside functions."""
    tree = ast.parse(source)
    names: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.append((node.lineno, module))
            names.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
    return names


def test_core_has_modules() -> None:
    assert {p.name for p in FILES} >= {"__init__.py", "commands.py", "directory.py",
                                       "state.py", "result.py"}


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_core_imports_only_inward(path: Path) -> None:
    for lineno, name in imported_modules(path):
        top = name.split(".")[0]
        where = f"{path.name}:{lineno} imports {name}"
        if top == "raftdir":
            parts = name.split(".")
            assert len(parts) > 1, where
            assert parts[1] not in FORBIDDEN, where
            assert any(name == a or name.startswith(a + ".") for a in ALLOWED_RAFTDIR), where
        assert top not in FORBIDDEN_STDLIB, where


def test_the_checker_catches_a_forbidden_import() -> None:
    source = ("from raftdir.replication import base\nfrom ..api import x\n"
              "def f():\n    import raftdir.leader.timers\n")
    names = [n for _l, n in imports_of(source, "raftdir.core")]
    assert {"raftdir.replication", "raftdir.api", "raftdir.leader.timers"} <= set(names)
