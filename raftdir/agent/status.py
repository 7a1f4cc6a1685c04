"""A worker's own view, on disk: the status file the agent keeps for ``raftdir worker status``.

Owns: ``status.json`` in the identity directory, next to ``identity.json`` and
``agent.lock``. The agent rewrites it (``write_atomic``, temporary file and rename, no
fsync: it is a view, not state) only when its content changes: the connection state,
the revision, the assignment set, the server it talks to, an acknowledged report. Times
are wall-clock Unix milliseconds, so a reader in another process can say how old they
are. It never holds the node secret.

A file rather than a local socket: it needs no listener in the agent, it is readable when
the agent is gone (the last view, and ``agent.lock`` says whether an agent still runs),
and a reader can never slow the agent down.

Blocking file I/O, called from the agent's event loop (a few hundred bytes, no fsync) and
from the CLI. Imports ``raftdir.errors``, ``raftdir.files`` and the identity file's reader.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..files import write_atomic
from .identity import read_json_object

__all__ = ["STATUS_FILE", "STATUS_VERSION", "write_status", "read_status"]

#: The file inside the identity directory.
STATUS_FILE = "status.json"
STATUS_VERSION = 1


def write_status(identity_dir: str | os.PathLike[str], doc: dict[str, Any]) -> Path:
    """Replace the status file with ``doc`` (plain JSON data) atomically; returns its
    path. The directory must exist (the agent's lock made it)."""
    path = Path(identity_dir) / STATUS_FILE
    payload = json.dumps({"version": STATUS_VERSION, **doc}, indent=2, sort_keys=True)
    write_atomic(path, (payload + "\n").encode("utf-8"), sync=False, mode=0o600)
    return path


def read_status(identity_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The last status the agent wrote, or None when there is none. ``ConfigError``
    naming the file when it cannot be read or is not a status of a known version."""
    path = Path(identity_dir) / STATUS_FILE
    return read_json_object(path, STATUS_VERSION, _bad)


def _bad(path: Path, problem: str) -> ConfigError:
    return ConfigError(f"{path}: {problem}", file=str(path))
