"""One agent per identity: the lock file in the identity directory.

Owns: ``agent.lock`` in the identity directory (by default ``<data_dir>/worker/identity/``).
A worker agent holds an exclusive ``flock`` on it for as long as it runs and writes its pid
into it; a second agent on the same identity finds the lock taken and refuses to start,
naming that pid (two agents under one node id would report and poll as one node and race
on its files). The kernel drops a ``flock`` when its holder dies, so a lock file left by a
``kill -9`` is stale by construction: the next agent takes it over and says which pid left
it. The file is never removed (removing a lock file races with the next one to open it);
a clean stop empties it. ``lock_holder`` tells a reader (``raftdir worker status``) whether
an agent holds it, without taking it.

Blocking file I/O, called by ``WorkerAgent.start()`` / ``stop()`` and the CLI. Needs
``fcntl`` (POSIX); where there is none (Windows) the pid is still written but a second
agent is not refused, and the agent warns that it is not. Imports ``raftdir.errors`` only.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from pathlib import Path

from ..errors import ConfigError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILE", "AgentLock", "lock_holder"]

log = logging.getLogger(__name__)

#: The file inside the identity directory.
LOCK_FILE = "agent.lock"

#: A ``flock`` that fails with one of these is held by someone else.
_HELD = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)


def _read_pid(fd: int) -> int | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 64).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _write_pid(fd: int, pid: int | None) -> None:
    os.ftruncate(fd, 0)
    if pid is not None:
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{pid}\n".encode("ascii"))


def _pid_alive(pid: int) -> bool:
    """POSIX only (on Windows ``os.kill`` would end the process)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # alive, another user's
        return True
    return True


def _open(path: Path, flags: int = os.O_RDWR | os.O_CREAT) -> int:
    return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0),
                   0o600)


def _flock(fd: int, exclusive: bool, attempts: int = 1, pause: float = 0.0) -> bool:
    """Take a non-blocking ``flock`` (up to ``attempts`` tries, ``pause`` s apart): True
    when taken, False when someone else holds a conflicting one."""
    assert fcntl is not None
    mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
    for attempt in range(attempts):
        try:
            fcntl.flock(fd, mode)
            return True
        except OSError as exc:
            if exc.errno not in _HELD:
                raise
            if attempt + 1 < attempts:
                time.sleep(pause)
    return False


class AgentLock:
    """The lock of one identity directory. ``acquire()`` raises ``ConfigError`` (field
    ``identity_dir``) when another agent holds it; ``release()`` is safe to call twice."""

    def __init__(self, identity_dir: str | os.PathLike[str]) -> None:
        self.directory = Path(identity_dir)
        self.path = self.directory / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, *, attempts: int = 3, pause: float = 0.05) -> None:
        """Take the lock or raise. A few quick attempts: ``lock_holder`` (a status reader)
        holds a shared lock for an instant, and must not make an agent fail to start."""
        if self._fd is not None:
            return
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = _open(self.path)
        try:
            if fcntl is None:  # pragma: no cover - Windows
                log.warning("%s: this platform has no flock: a second agent on this identity "
                            "would not be refused", self.path)
            elif not _flock(fd, True, attempts, pause):
                pid = _read_pid(fd)
                who = f"pid {pid}" if pid is not None else "another process"
                raise ConfigError(
                    f"{self.path}: another worker agent ({who}) is running with this identity; "
                    "stop it first, or give this worker its own --data-dir (or identity_dir)",
                    field="identity_dir", file=str(self.path))
            else:
                stale = _read_pid(fd)
                if stale is not None and stale != os.getpid():
                    log.info("%s: taking over the lock left by pid %d (%s)", self.path, stale,
                             "it no longer holds it" if _pid_alive(stale)
                             else "no longer running")
            _write_pid(fd, os.getpid())
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        """Empty the file (a clean stop leaves no pid behind) and drop the lock."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            _write_pid(fd, None)
        except OSError:
            pass
        finally:
            os.close(fd)   # closing the last descriptor drops the flock


def lock_holder(identity_dir: str | os.PathLike[str]) -> tuple[bool, int | None]:
    """``(held, pid)``: whether an agent holds the lock of ``identity_dir`` now, and the pid
    the file names (the holder's, or the last one that did not stop cleanly). Takes a
    shared lock for an instant to find out; never creates the file. Without ``flock``
    (Windows) a file that names a pid counts as held."""
    path = Path(identity_dir) / LOCK_FILE
    try:
        fd = _open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False, None
    try:
        pid = _read_pid(fd)
        if fcntl is None:  # pragma: no cover - Windows
            return pid is not None, pid
        if not _flock(fd, False):
            return True, pid
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False, pid
    finally:
        os.close(fd)
