"""raftdir.replication depends inward only: never on the API, the agent or the CLI, and
nothing but raftdir.core.result / raftdir.errors from the rest of raftdir."""

from __future__ import annotations

import ast
from pathlib import Path

import raftdir.replication

PACKAGE = Path(raftdir.replication.__file__).parent
ALLOWED = ("raftdir.replication", "raftdir.core.result", "raftdir.errors",
           "raftdir.auth",    # the one key derivation (a leaf module)
           "raftdir.files")   # fsync_dir (a leaf module)


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_replication_imports_only_allowed_raftdir_modules():
    files = sorted(PACKAGE.glob("*.py"))
    assert len(files) >= 6
    for path in files:
        for name in imported_modules(path):
            if name == "raftdir" or name.startswith("raftdir."):
                assert name.startswith(ALLOWED), f"{path.name} imports {name}"


def test_every_module_docstring_says_what_it_owns_and_must_not_import():
    for path in sorted(PACKAGE.glob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert doc, path.name
        if path.name != "__init__.py":
            assert "Must not import" in doc or "must not import" in doc, path.name
