"""A write-ahead journal and snapshot for ``LocalNode`` (single-node mode on disk).

Owns: ``local.journal`` and ``local.snapshot`` in the node's data directory. Every command
gets a sequence number; the journal starts with a header holding the sequence number it
follows (``base``) and then holds length-prefixed commands, each fsync'd before it is
applied. The snapshot (msgpack ``{"format": 1, "seq": n, "state": ...}``) holds the state
after command ``n``. Replaying the journal's commands above the snapshot's ``seq`` rebuilds
the state, because apply is deterministic; a crash at any point of a compaction (snapshot
renamed, journal not yet replaced) therefore replays nothing twice. A torn last record (a
crash in the middle of a write) is cut off; a failed write is cut back before the error is
raised, so the file never holds half a record followed by good ones.

Called with the node's lock held. Must not import the API, agent or CLI; never unpickles.
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path
from typing import Any

import msgpack

from raftdir.errors import ConfigError
from raftdir.files import write_atomic

__all__ = ["LocalJournal"]

log = logging.getLogger(__name__)
_LEN = struct.Struct(">I")
_HEADER = struct.Struct(">4sQ")
_MAGIC = b"RDJ1"
SNAPSHOT_FORMAT = 1


class LocalJournal:
    def __init__(self, data_dir: str | os.PathLike[str], *, compact_every: int = 10_000,
                 fsync: bool = True) -> None:
        self.dir = Path(data_dir)
        self.journal_path = self.dir / "local.journal"
        self.snapshot_path = self.dir / "local.snapshot"
        self.compact_every = compact_every
        self.fsync = fsync
        self.seq = 0                 # the sequence number of the last journaled command
        self.entries = 0             # commands in the journal file now
        self._file: Any = None

    # -- start-up --------------------------------------------------------------------
    def load(self) -> tuple[dict[str, Any] | None, list[bytes]]:
        """``(snapshot state or None, the commands to replay on top of it)``. Raises
        ``ConfigError`` for a snapshot or journal it cannot trust."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        state, snap_seq = None, 0
        if self.snapshot_path.exists():
            try:
                data = msgpack.unpackb(self.snapshot_path.read_bytes(), raw=False,
                                       strict_map_key=False)
                if data.get("format") != SNAPSHOT_FORMAT:
                    raise ValueError(f"unknown format {data.get('format')!r}")
                state, snap_seq = data["state"], int(data["seq"])
            except Exception as exc:  # noqa: BLE001 - refuse to start on a bad snapshot
                raise self._refuse(self.snapshot_path, f"unreadable snapshot ({exc})")
        self.seq = snap_seq
        return state, self._replay(snap_seq)

    def _refuse(self, path: Path, problem: str) -> ConfigError:
        return ConfigError(f"{path}: {problem}; refusing to start with a state that is "
                           "not the one acknowledged", file=str(path))

    def _replay(self, snap_seq: int) -> list[bytes]:
        if not self.journal_path.exists():
            self._new_journal(snap_seq)
            return []
        commands: list[bytes] = []
        with open(self.journal_path, "rb") as f:
            head = f.read(_HEADER.size)
            if len(head) < _HEADER.size or _HEADER.unpack(head)[0] != _MAGIC:
                raise self._refuse(self.journal_path, "not a raftdir journal")
            base = _HEADER.unpack(head)[1]
            if base > snap_seq:
                raise self._refuse(self.journal_path, f"it starts after command {base} but "
                                   f"the snapshot holds only {snap_seq}")
            good = f.tell()
            seq = base
            while True:
                size_bytes = f.read(_LEN.size)
                if len(size_bytes) < _LEN.size:
                    break
                (size,) = _LEN.unpack(size_bytes)
                body = f.read(size)
                if len(body) < size:
                    break
                good = f.tell()
                seq += 1
                self.entries += 1
                if seq > snap_seq:      # older ones are in the snapshot already
                    self.seq = seq
                    commands.append(body)
        end = self.journal_path.stat().st_size
        if good != end:
            log.warning("%s: cutting a torn last record (%d bytes)", self.journal_path,
                        end - good)
            os.truncate(self.journal_path, good)
        self._file = open(self.journal_path, "ab")
        return commands

    def _new_journal(self, base: int) -> None:
        """An empty journal following command ``base``, put in place atomically."""
        if self._file is not None:
            self._file.close()
        write_atomic(self.journal_path, _HEADER.pack(_MAGIC, base), sync=self.fsync)
        self._file = open(self.journal_path, "ab")
        self.entries = 0

    # -- running ---------------------------------------------------------------------
    def append(self, data: bytes) -> None:
        """Write one command durably, before it is applied. On an error the file is cut
        back to where it was and the error raised (the command is then not applied)."""
        f = self._file
        start = f.tell()
        try:
            f.write(_LEN.pack(len(data)) + data)
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())
        except BaseException:
            try:
                f.truncate(start)
                f.seek(start)
            except OSError:
                log.exception("%s: cannot cut back a failed write", self.journal_path)
            raise
        self.seq += 1
        self.entries += 1

    def due(self) -> bool:
        return self.entries >= self.compact_every

    def compact(self, state: dict[str, Any]) -> None:
        """Snapshot the state after command ``seq``, then start an empty journal. A crash
        between the two leaves a snapshot and a journal that overlap; replay skips the
        overlap by sequence number."""
        write_atomic(self.snapshot_path, msgpack.packb(
            {"format": SNAPSHOT_FORMAT, "seq": self.seq, "state": state}, use_bin_type=True),
            sync=self.fsync)
        self._new_journal(self.seq)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
