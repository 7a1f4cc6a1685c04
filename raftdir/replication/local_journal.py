"""A write-ahead journal and snapshot for ``LocalNode`` (single-node mode on disk).

Owns: ``local.journal`` (every applied command, length-prefixed, fsync'd before it is
applied) and ``local.snapshot`` (msgpack ``{"format": 1, "applied": n, "state": ...}``,
written to a temporary file, fsync'd and renamed), in the node's data directory. Replaying
the journal on top of the snapshot rebuilds the state, because apply is deterministic; a
torn last record (a crash in the middle of a write) is cut off. Called with the node's lock
held. Must not import the API, agent or CLI; never unpickles anything.
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path
from typing import Any, Iterator

import msgpack

from raftdir.errors import ConfigError

__all__ = ["LocalJournal"]

log = logging.getLogger(__name__)
_LEN = struct.Struct(">I")
SNAPSHOT_FORMAT = 1


class LocalJournal:
    def __init__(self, data_dir: str | os.PathLike[str], *, compact_every: int = 10_000,
                 fsync: bool = True) -> None:
        self.dir = Path(data_dir)
        self.journal_path = self.dir / "local.journal"
        self.snapshot_path = self.dir / "local.snapshot"
        self.compact_every = compact_every
        self.fsync = fsync
        self.entries = 0             # records in the journal now
        self._file: Any = None

    # -- start-up --------------------------------------------------------------------
    def load(self) -> tuple[dict[str, Any] | None, int, Iterator[bytes]]:
        """``(snapshot state or None, applied count in it, the journal's commands)``."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        state, applied = None, 0
        if self.snapshot_path.exists():
            try:
                data = msgpack.unpackb(self.snapshot_path.read_bytes(), raw=False,
                                       strict_map_key=False)
                if data.get("format") != SNAPSHOT_FORMAT:
                    raise ValueError(f"unknown format {data.get('format')!r}")
                state, applied = data["state"], int(data["applied"])
            except Exception as exc:  # noqa: BLE001 - refuse to start on a bad snapshot
                raise ConfigError(f"{self.snapshot_path}: unreadable snapshot ({exc}); "
                                  "refusing to start with an empty state",
                                  file=str(self.snapshot_path)) from None
        return state, applied, self._records()

    def _records(self) -> Iterator[bytes]:
        if not self.journal_path.exists():
            self._open()
            return
        good = 0
        with open(self.journal_path, "rb") as f:
            while True:
                head = f.read(_LEN.size)
                if len(head) < _LEN.size:
                    break
                (size,) = _LEN.unpack(head)
                body = f.read(size)
                if len(body) < size:
                    break
                good = f.tell()
                self.entries += 1
                yield body
        if good != self.journal_path.stat().st_size:
            log.warning("%s: cutting a torn last record (%d bytes)", self.journal_path,
                        self.journal_path.stat().st_size - good)
            os.truncate(self.journal_path, good)
        self._open()

    def _open(self) -> None:
        self._file = open(self.journal_path, "ab")

    # -- running ---------------------------------------------------------------------
    def append(self, data: bytes) -> None:
        """Write one command durably, before it is applied."""
        if self._file is None:
            self._open()
        self._file.write(_LEN.pack(len(data)) + data)
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())
        self.entries += 1

    def due(self) -> bool:
        return self.entries >= self.compact_every

    def compact(self, state: dict[str, Any], applied: int) -> None:
        """Write the snapshot, then start an empty journal."""
        tmp = self.snapshot_path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(msgpack.packb({"format": SNAPSHOT_FORMAT, "applied": applied,
                                   "state": state}, use_bin_type=True))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.snapshot_path)
        self._file.close()
        self._file = open(self.journal_path, "wb")
        if self.fsync:
            os.fsync(self._file.fileno())
            dir_fd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        self.entries = 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
