"""Small file-system helpers shared by every writer of durable files (Raft dumps and
journal, the single-node journal, the cluster secret, a worker's identity)."""

from __future__ import annotations

import os

__all__ = ["fsync_dir", "fsync_file", "write_atomic"]


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename or a new file in directory ``path`` durable (a no-op where
    directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except (PermissionError, IsADirectoryError):
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Make a file someone else wrote (and did not sync) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike[str], data: bytes, *, sync: bool = True,
                 mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old file or the new one,
    never a mix: a temporary file in the same directory (created with ``mode``, never
    through a symlink), fsync'd, renamed over ``path``, then the directory fsync'd.
    ``sync=False`` skips both fsyncs (atomic against a process crash only)."""
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0),
                 mode)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)   # a leftover temporary file keeps its old mode otherwise
        with os.fdopen(fd, "wb") as f:   # owns fd from here
            f.write(data)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if sync:
        fsync_dir(directory)
