"""A worker's identity on disk: node id, node secret, cluster id, known servers, and the
profile the directory last accepted from it.

Owns: the identity file (``identity.json`` in the identity directory, by default
``<data_dir>/worker/identity/``), written atomically (temporary file, fsync, rename, fsync
of the directory) with mode 0600 in a directory of mode 0700, and read back strictly: a
file that exists but cannot be used is a ``ConfigError`` naming it, never silently
replaced (replacing it would make the worker a new node). Blocking file I/O; the agent
calls it from ``start()`` and after a registration, never from a constructor. Imports
``raftdir.errors`` only.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from ..files import write_atomic

__all__ = ["Identity", "IDENTITY_FILE", "load_identity", "store_identity",
           "default_identity_dir"]

log = logging.getLogger(__name__)

#: The file inside the identity directory.
IDENTITY_FILE = "identity.json"
_VERSION = 1


def default_identity_dir(data_dir: str | os.PathLike[str]) -> Path:
    """``<data_dir>/worker/identity/`` (wire-types.md §2.4 ``identity_dir``)."""
    return Path(data_dir) / "worker" / "identity"


@dataclass(frozen=True)
class Identity:
    """What registration gave this worker. ``internal_token`` is the node secret: it is
    sent as ``Authorization: Bearer`` on every report and poll, and never logged."""

    node_id: int
    cluster_id: str
    internal_token: str
    servers: tuple[str, ...] = ()
    heartbeat_ttl_secs: int = 0
    heartbeat_grace_secs: int = 0
    registered_unix_ms: int = 0
    #: the profile (``WorkerProfile`` wire dict) the directory last accepted from this
    #: worker; None in a file written before raftdir kept it
    profile: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, Any]:
        out = {"version": _VERSION, "node_id": self.node_id, "cluster_id": self.cluster_id,
               "internal_token": self.internal_token, "servers": list(self.servers),
               "heartbeat_ttl_secs": self.heartbeat_ttl_secs,
               "heartbeat_grace_secs": self.heartbeat_grace_secs,
               "registered_unix_ms": self.registered_unix_ms}
        if self.profile is not None:
            out["profile"] = self.profile
        return out

    def __repr__(self) -> str:  # never print the secret
        return (f"Identity(node_id={self.node_id}, cluster_id={self.cluster_id!r}, "
                f"servers={list(self.servers)!r})")


def _bad(path: Path, problem: str) -> ConfigError:
    return ConfigError(f"{path}: {problem}; fix or remove the file (removing it makes this "
                       "worker register as a new node)", file=str(path))


def read_json_object(path: Path, version: int, bad: Callable[[Path, str], ConfigError]
                     ) -> dict[str, Any] | None:
    """A JSON object file of ``version`` (its ``"version"`` key), or None when the file
    does not exist; ``bad(path, problem)`` is raised for one that cannot be read or is not
    such an object. The agent's files (identity, status) are read with it."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise bad(path, f"cannot read: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad(path, f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise bad(path, "expected a JSON object")
    if data.get("version") != version:
        raise bad(path, f"version: expected {version}, got {data.get('version')!r}")
    return data


def load_identity(identity_dir: str | os.PathLike[str]) -> Identity | None:
    """The stored identity, or None when there is none. A file with group or other
    permissions is tightened to 0600 (with a warning). Raises ``ConfigError`` for a file
    that exists but is unreadable or malformed."""
    path = Path(identity_dir) / IDENTITY_FILE
    data = read_json_object(path, _VERSION, _bad)
    if data is None:
        return None
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning("%s: mode %o lets others read the node secret; setting 0600",
                        path, mode)
            os.chmod(path, 0o600)
    except OSError:
        pass

    def get(name: str, kind: type, default: Any = ...) -> Any:
        if name not in data:
            if default is ...:
                raise _bad(path, f"{name}: required field missing")
            return default
        value = data[name]
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise _bad(path, f"{name}: expected an integer, got {type(value).__name__}")
        if kind is str and (not isinstance(value, str) or not value):
            raise _bad(path, f"{name}: expected a non-empty string")
        if kind is list and (not isinstance(value, list)
                             or not all(isinstance(s, str) for s in value)):
            raise _bad(path, f"{name}: expected a list of strings")
        if kind is dict and not isinstance(value, dict):
            raise _bad(path, f"{name}: expected an object")
        return value

    known = {"version", "node_id", "cluster_id", "internal_token", "servers",
             "heartbeat_ttl_secs", "heartbeat_grace_secs", "registered_unix_ms", "profile"}
    return Identity(
        node_id=get("node_id", int), cluster_id=get("cluster_id", str),
        internal_token=get("internal_token", str),
        servers=tuple(get("servers", list, [])),
        heartbeat_ttl_secs=get("heartbeat_ttl_secs", int, 0),
        heartbeat_grace_secs=get("heartbeat_grace_secs", int, 0),
        registered_unix_ms=get("registered_unix_ms", int, 0),
        profile=get("profile", dict, None),
        extra={k: v for k, v in data.items() if k not in known})


def store_identity(identity_dir: str | os.PathLike[str], identity: Identity) -> Path:
    """Write the identity atomically: a temporary file created 0600 in the same directory,
    fsync, rename over ``identity.json``, fsync the directory. The directory is created
    (and kept) at 0700. Returns the file's path."""
    directory = Path(identity_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    path = directory / IDENTITY_FILE
    payload = (json.dumps(identity.to_json(), indent=2, sort_keys=False) + "\n").encode()
    write_atomic(path, payload, mode=0o600)
    return path
