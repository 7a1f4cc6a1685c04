"""The nemesis stays outside raftdir: nothing of raftdir imports ``raftdir.nemesis``, and
``raftdir.testing``'s launcher and proxies import nothing of the nemesis either."""

from __future__ import annotations

import ast
from pathlib import Path

import raftdir

ROOT = Path(raftdir.__file__).parent


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            base = path.relative_to(ROOT.parent).with_suffix("").parts[:-1]
            if node.level:
                names.add(".".join(list(base[:len(base) - node.level + 1]) + [node.module]))
            else:
                names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_nothing_outside_the_nemesis_imports_it():
    for path in ROOT.rglob("*.py"):
        if path.relative_to(ROOT).parts[0] == "nemesis":
            continue
        bad = {n for n in imported(path) if n.startswith("raftdir.nemesis")}
        assert not bad, (path, bad)


def test_the_launcher_and_the_proxies_import_nothing_of_raftdir_but_the_cli():
    assert {n for n in imported(ROOT / "testing" / "proxy.py")
            if n.startswith("raftdir")} == set()
    assert {n for n in imported(ROOT / "testing" / "nemesis_peer.py")
            if n.startswith("raftdir")} == {"raftdir.cli"}
