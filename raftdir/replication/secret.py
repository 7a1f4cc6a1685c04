"""The cluster secret: one file ``cluster.secret`` (mode 0600) in every server's data dir.

Owns: creating, loading and checking the secret file; deriving purpose-bound sub-keys from
it with HMAC-SHA256 (the Raft password, join-token signing, the admin token); and the rule
that a peer whose Raft address is not loopback refuses to start without a secret
(directory.md §11: PySyncObj unpickles whatever reaches its port unless a password is set).

Threads: plain functions, any thread; they do file I/O only when called.

Must not import: ``raftdir.api``, ``raftdir.agent``, ``raftdir.cli``, PySyncObj.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
import stat
from pathlib import Path

from raftdir.auth import derive_key  # the one key derivation, shared with tokens
from raftdir.errors import ConfigError
from raftdir.files import fsync_dir

__all__ = [
    "SECRET_FILE",
    "secret_path",
    "create_secret",
    "load_secret",
    "derive_key",
    "raft_password",
    "is_loopback_address",
    "check_raft_security",
]

SECRET_FILE = "cluster.secret"
_MIN_LEN = 32  # hex characters: 128 bits


def secret_path(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / SECRET_FILE


def _target(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    return p / SECRET_FILE if p.is_dir() else p


def create_secret(path: str | os.PathLike[str], *, force: bool = False) -> str:
    """Write a new secret (32 random bytes, hex) and return it. ``path`` is the data dir
    or the file itself. Refuses to overwrite an existing file unless ``force``; the file is
    created with mode 0600 from the start (never world-readable, even briefly)."""
    target = _target(path)
    value = secrets.token_hex(32)
    if target.exists() and not force:
        raise ConfigError(f"{target}: a cluster secret already exists; refusing to "
                          "overwrite it (pass force=True to replace it)",
                          file=str(target), field="cluster_secret")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(value + "\n")
            f.flush()
            os.fsync(f.fileno())
        if force:
            os.replace(tmp, target)
        else:
            os.link(tmp, target)  # fails if the file appeared meanwhile: never clobber
        fsync_dir(target.parent)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    return value


def load_secret(data_dir: str | os.PathLike[str]) -> str | None:
    """The secret in ``data_dir/cluster.secret``, or None when the file does not exist.
    Refuses a file that group or others may read or write, and a malformed one."""
    target = secret_path(data_dir)
    try:
        st = target.stat()
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{target}: cluster secret is not a regular file",
                          file=str(target), field="cluster_secret")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise ConfigError(f"{target}: cluster secret has mode {mode:04o}; group and others "
                          f"must have no access (run: chmod 600 {target})",
                          file=str(target), field="cluster_secret")
    value = target.read_text(encoding="ascii", errors="replace").strip()
    if len(value) < _MIN_LEN or any(c not in "0123456789abcdefABCDEF" for c in value):
        raise ConfigError(f"{target}: cluster secret must be at least {_MIN_LEN} hex "
                          "characters on one line", file=str(target), field="cluster_secret")
    return value


def raft_password(secret: str) -> str:
    """The PySyncObj ``password`` (it keys Fernet through PBKDF2 on every peer)."""
    return derive_key(secret, "raft-password").hex()


def _host_of(addr: str) -> str:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"raft_addr: {addr!r} is not host:port", field="raft_addr")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host


def is_loopback_address(addr: str) -> bool:
    """True when ``host:port`` names a loopback host (127.0.0.0/8, ::1, ``localhost``)."""
    host = _host_of(addr)
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a DNS name other than localhost: cannot know, assume reachable


def check_raft_security(raft_addr: str, secret: str | None) -> None:
    """Refuse a Raft address reachable from other hosts without a cluster secret."""
    if secret:
        return
    if not is_loopback_address(raft_addr):
        raise ConfigError(
            f"raft_addr: {raft_addr} is not a loopback address and no cluster secret is "
            f"configured; PySyncObj would unpickle whatever reaches that port. Create "
            f"{SECRET_FILE} in the data dir (the same file on every server)",
            field="raft_addr")
