"""The HTTP layer depends inward only: the server and client use the wire types, the codec,
the errors and (the server) the ``ControlPlane`` protocol, ``raftdir.auth`` and the
task helpers of ``raftdir.tasks`` (a leaf); never
the core, replication, leader services or the server that implements the protocol. The
client does not import the server side."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import raftdir.api

API = Path(raftdir.api.__file__).parent
ALLOWED = {
    "server.py": {"raftdir.auth", "raftdir.codec", "raftdir.errors", "raftdir.limits",
                  "raftdir.model", "raftdir.tasks", "raftdir.api.contract",
                  "raftdir.api.zlayer", "raftdir.api.dashboard", "raftdir.api.metrics"},
    "metrics.py": set(),   # prometheus-client only
    # the dashboard reads through the ControlPlane and the other servers' routes
    "dashboard.py": {"raftdir.auth", "raftdir.codec", "raftdir.errors", "raftdir.api.contract",
                     "raftdir.api.client", "raftdir.api.peerview", "raftdir.api.server"},
    "peerview.py": {"raftdir.errors"},
    "zlayer.py": {"raftdir.codec", "raftdir.errors", "raftdir.model", "raftdir.api.server"},
    "client.py": {"raftdir.codec", "raftdir.errors", "raftdir.model"},
}


def raftdir_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = ["raftdir", "api"][: 3 - node.level]
                names.add(".".join(base + ([node.module] if node.module else [])))
            elif (node.module or "").startswith("raftdir"):
                names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("raftdir"))
    return names


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_api_modules_import_only_what_they_may(name):
    assert raftdir_imports(API / name) <= ALLOWED[name]


def test_the_package_exports_load_lazily():
    import raftdir.api as api
    assert api.RaftdirClient.__module__ == "raftdir.api.client"
    assert api.start_api.__module__ == "raftdir.api.server"
    assert api.ControlPlane.__module__ == "raftdir.api.contract"
    with pytest.raises(AttributeError):
        api.nothing_here  # noqa: B018
