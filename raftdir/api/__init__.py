"""raftdir's HTTP layer: the ``ControlPlane`` seam (``contract``), the aiohttp server
(``server``) and the async client (``client``). See ``docs/api.md`` for the endpoints.

Names are loaded on first use, so importing ``raftdir.api.contract`` (as the directory
server does) does not import aiohttp.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ControlPlane", "make_app", "start_api", "ApiServer", "ssl_context_from_files",
    "RaftdirClient", "Unreachable",
]

_WHERE = {
    "ControlPlane": "contract",
    "make_app": "server", "start_api": "server", "ApiServer": "server",
    "ssl_context_from_files": "server",
    "RaftdirClient": "client", "Unreachable": "client",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'raftdir.api' has no attribute {name!r}")
    from importlib import import_module
    return getattr(import_module(f".{module}", __name__), name)
