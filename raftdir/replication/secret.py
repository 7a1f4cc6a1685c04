"""The cluster secret: one file ``cluster.secret`` (mode 0600) in every server's data dir.

Owns: creating, loading and checking the secret file; deriving purpose-bound sub-keys from
it with HMAC-SHA256 (the Raft password, join-token signing, the admin token); the rule
that a peer whose Raft address is not loopback refuses to start without a secret
(directory.md §11: PySyncObj unpickles whatever reaches its port unless a password is set);
and the files of a roll (docs/operations.md, "Rolling the cluster secret"):

- ``cluster.secret``: the server's own secret. It encrypts Raft traffic, signs new join
  tokens and derives the admin token this server uses itself.
- ``cluster.secret.next``: a new secret the server accepts too (Raft traffic, join tokens,
  the admin token it derives), installed on every server before any server uses it.
- ``cluster.secret.prev``: the old secret after a promotion (``promote_secret`` moves
  ``.next`` over ``cluster.secret`` and keeps the old one here), still accepted until every
  server was promoted; ``retire_secret`` removes it and the roll is complete.

``SecretSet`` is what a server holds from the three. A running server re-reads them when
they change (``raftdir.daemon``), so a roll needs no restart.

Threads: plain functions, any thread; they do file I/O only when called.

Must not import: ``raftdir.api``, ``raftdir.agent``, ``raftdir.cli``, PySyncObj.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from raftdir.auth import derive_key, is_loopback_host  # shared with tokens and the API
from raftdir.errors import ConfigError
from raftdir.files import fsync_dir

__all__ = [
    "SECRET_FILE",
    "NEXT_SECRET_FILE",
    "PREV_SECRET_FILE",
    "SecretSet",
    "secret_path",
    "create_secret",
    "load_secret",
    "load_secrets",
    "secret_files_stamp",
    "promote_secret",
    "retire_secret",
    "fingerprint",
    "derive_key",
    "raft_password",
    "is_loopback_address",
    "check_raft_security",
]

SECRET_FILE = "cluster.secret"
NEXT_SECRET_FILE = "cluster.secret.next"
PREV_SECRET_FILE = "cluster.secret.prev"
_MIN_LEN = 32  # hex characters: 128 bits


def fingerprint(secret: str) -> str:
    """A short public name of a secret (16 hex digits of a key derived for it): tells two
    secrets apart, reveals nothing of them."""
    return derive_key(secret, "fingerprint").hex()[:16]


@dataclass(frozen=True)
class SecretSet:
    """The secrets a server holds: ``primary`` (``cluster.secret``) and, during a roll,
    ``next`` (``cluster.secret.next``) or ``prev`` (``cluster.secret.prev``)."""

    primary: str
    next: str | None = None
    prev: str | None = None

    @property
    def accepted(self) -> tuple[str, ...]:
        """Every secret this server accepts, its own first."""
        out = [self.primary]
        for extra in (self.next, self.prev):
            if extra and extra not in out:
                out.append(extra)
        return tuple(out)

    @property
    def stable(self) -> str:
        """The secret every server of a roll in progress still holds, whichever step it
        is at: the old one (``prev`` once promoted, else ``primary``). It keys what must
        come out the same on any server (a retried registration's node secret)."""
        return self.prev or self.primary

    @property
    def phase(self) -> str:
        if self.next and self.prev:
            return "promoted, next installed"
        if self.next:
            return "next installed"
        if self.prev:
            return "promoted"
        return "steady"

    def describe(self) -> dict[str, object]:
        """Fingerprints only: what ``raftdir secret status`` shows."""
        return {"phase": self.phase, "primary": fingerprint(self.primary),
                "accepts": [fingerprint(s) for s in self.accepted]}


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
    _write_file(target, value, replace=force)
    fsync_dir(target.parent)
    return value


def _write_file(target: Path, value: str, *, replace: bool) -> None:
    """Write ``value`` to ``target`` with mode 0600 from the start (never readable by
    others, even briefly), fsync'd, then moved into place: renamed over an existing file
    when ``replace``, else linked, which fails if the file exists (never clobbered)."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(value + "\n")
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, target)
        else:
            os.link(tmp, target)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def _read(target: Path) -> str | None:
    """One secret file's value, or None when it does not exist. Refuses a file that group
    or others may read or write, and a malformed one."""
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


def load_secret(data_dir: str | os.PathLike[str]) -> str | None:
    """The secret in ``data_dir/cluster.secret``, or None when the file does not exist.
    Refuses a file that group or others may read or write, and a malformed one."""
    return _read(secret_path(data_dir))


def load_secrets(data_dir: str | os.PathLike[str]) -> SecretSet | None:
    """The secrets of ``data_dir`` (``cluster.secret`` and, during a roll, ``.next`` and
    ``.prev``), or None without a ``cluster.secret``. Each file is checked as
    ``load_secret`` checks it."""
    primary = load_secret(data_dir)
    if primary is None:
        return None
    d = Path(data_dir)
    return SecretSet(primary, _read(d / NEXT_SECRET_FILE), _read(d / PREV_SECRET_FILE))


def secret_files_stamp(data_dir: str | os.PathLike[str]) -> tuple:
    """What changes when one of the secret files is written, replaced or removed (cheap:
    three ``stat`` calls), for a server that watches them."""
    out = []
    for name in (SECRET_FILE, NEXT_SECRET_FILE, PREV_SECRET_FILE):
        try:
            st = (Path(data_dir) / name).stat()
        except OSError:
            out.append(None)
            continue
        out.append((st.st_ino, st.st_mtime_ns, st.st_size, st.st_mode))
    return tuple(out)


def promote_secret(data_dir: str | os.PathLike[str]) -> SecretSet:
    """Make ``cluster.secret.next`` this server's own secret, keeping the old one as
    ``cluster.secret.prev`` (still accepted). ``cluster.secret`` is never missing: the old
    value is written to ``.prev`` first, then ``.next`` is renamed over it. Refuses without
    a ``.next`` and while a ``.prev`` of another roll is still there (retire it first)."""
    d = Path(data_dir)
    current = load_secrets(d)
    if current is None:
        raise ConfigError(f"{secret_path(d)}: no cluster secret to roll",
                          file=str(secret_path(d)), field="cluster_secret")
    if current.next is None:
        raise ConfigError(f"{d / NEXT_SECRET_FILE}: no next secret: create it on one server "
                          "(raftdir secret create --next) and copy it to every server first",
                          file=str(d / NEXT_SECRET_FILE), field="cluster_secret")
    if current.prev is not None and current.prev != current.primary:
        raise ConfigError(f"{d / PREV_SECRET_FILE}: the last roll is not finished: retire "
                          "the old secret on every server first (raftdir secret retire)",
                          file=str(d / PREV_SECRET_FILE), field="cluster_secret")
    if current.prev is None:
        _write_file(d / PREV_SECRET_FILE, current.primary, replace=False)
    os.replace(d / NEXT_SECRET_FILE, secret_path(d))
    fsync_dir(d)
    return SecretSet(current.next, None, current.primary)


def retire_secret(data_dir: str | os.PathLike[str]) -> SecretSet:
    """Stop accepting the old secret (remove ``cluster.secret.prev``): the roll is complete
    on this server. Refuses when there is none."""
    d = Path(data_dir)
    current = load_secrets(d)
    if current is None or current.prev is None:
        raise ConfigError(f"{d / PREV_SECRET_FILE}: no old secret to retire (promote the "
                          "next one first: raftdir secret promote)",
                          file=str(d / PREV_SECRET_FILE), field="cluster_secret")
    os.unlink(d / PREV_SECRET_FILE)
    fsync_dir(d)
    return SecretSet(current.primary, current.next, None)


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
    """True when ``host:port`` names a loopback host (127.0.0.0/8, ::1, ``localhost``); a
    DNS name other than ``localhost`` cannot be known, and is assumed reachable."""
    return is_loopback_host(_host_of(addr))


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
