"""A PySyncObj journal that reaches the disk before anyone relies on it (pysyncobj.md §5.3,
§5.4: the stock ``FileJournal`` is an mmap that is never msync'd or fsync'd, so a power
loss can lose acknowledged entries or a vote).

``SyncedFileJournal`` is the stock journal plus a dirty flag: every change (append,
truncation, compaction) marks it, and ``sync()`` writes the changes through (``msync`` of
the mapping, then ``fdatasync``, which also covers a resized file). Raft relies on the log
in two places, and one sync per tick serves every entry added in it (group commit):

- a follower's messages (append acks above all) are held while its journal has unsynced
  changes and leave right after the sync at the end of the tick, so an ack never leaves
  ahead of the entries it acknowledges;
- a leader sends its AppendEntries at once and syncs at the end of the tick, before the
  next tick counts its own log towards a commit majority (the leader's parallel write of
  the Raft thesis §10.2.1: no follower ack for an entry can arrive before the poll at the
  end of the tick that appended it). A one-peer cluster, whose leader commits alone,
  syncs before it applies.

The term and the vote (PySyncObj's ``.meta`` file) are written to a temporary file,
fsync'd, renamed and the directory fsync'd, before the vote is sent.

``install(path)`` makes PySyncObj build this journal for ``path`` only and makes
``TCPTransport.send`` honour the rules above for that journal's SyncObj; other journals in
the process (a benchmark's raw PySyncObj baseline) keep the stock behaviour. The hooks are
in place before the SyncObj exists. The owner calls ``end_of_tick()`` after every
``_onTick`` and ``sync()`` before applying.

Must not import: anything of raftdir but ``raftdir.files`` (a leaf under the adapter).
"""

from __future__ import annotations

import os
import struct
import threading
from typing import Any

import pysyncobj.syncobj as _syncobj
from pysyncobj.journal import (
    FIRST_RECORD_OFFSET, LAST_RECORD_OFFSET_OFFSET, FileJournal, MetaStorer, ResizableFile,
    createJournal as _stock_create,
)
from pysyncobj.pickle import dumps, to_bytes  # to write PySyncObj's own formats; we never load
from pysyncobj.transport import TCPTransport

from raftdir.files import write_atomic

__all__ = ["SyncedFileJournal", "install", "uninstall"]

_synced_paths: set[str] = set()
_lock = threading.Lock()


class _SyncedMetaStorer(MetaStorer):
    def storeMeta(self, meta: Any) -> None:  # noqa: N802 - PySyncObj's name
        write_atomic(self.getPath(), dumps(meta))


class SyncedFileJournal(FileJournal):
    def __init__(self, journal_file: str) -> None:
        super().__init__(journal_file)
        self.path = journal_file
        self._FileJournal__metaStorer = _SyncedMetaStorer(journal_file + ".meta")
        self.dirty = False
        self.syncs = 0
        self.held: list[tuple[TCPTransport, Any, Any]] = []   # (transport, node, message)

    def add(self, command: Any, idx: int, term: int) -> None:
        super().add(command, idx, term)
        self.dirty = True

    def clear(self) -> None:
        super().clear()
        self.dirty = True

    def deleteEntriesFrom(self, entryFrom: int) -> None:  # noqa: N802, N803
        super().deleteEntriesFrom(entryFrom)
        self.dirty = True

    def deleteEntriesTo(self, entryTo: int) -> None:  # noqa: N802, N803
        """The compaction trim, made atomic. PySyncObj's rewrites the journal in place
        (clear, then append the kept entries one by one), so a crash in that loop leaves a
        journal that starts right (at the snapshot) but lost its tail. Here the kept
        entries go to a new file in PySyncObj's format, which is fsync'd and renamed over
        the journal: a crash leaves the old journal or the new one, both whole."""
        self.replace_entries(self._FileJournal__journal[entryTo:])

    def replace_entries(self, kept: list[tuple[Any, int, int]]) -> None:
        """Make ``kept`` the whole journal, atomically (a new file, fsync'd, renamed)."""
        records = []
        for command, idx, term in kept:
            data = struct.pack("<QQ", idx, term) + to_bytes(command)
            size = struct.pack("<I", len(data))
            records.append(size + data + size)
        body = b"".join(records)
        end = FIRST_RECORD_OFFSET + len(body)
        header = self._FileJournal__getDefaultHeader()
        header = header[:LAST_RECORD_OFFSET_OFFSET] + struct.pack("<I", end)
        write_atomic(self.path, header + body)   # the old mapping stays valid meanwhile
        self._FileJournal__journalFile._destroy()
        self._FileJournal__journalFile = ResizableFile(self.path)
        self._FileJournal__journal = list(kept)
        self._FileJournal__currentOffset = end
        self.dirty = False   # everything it holds was just written through

    def sync(self) -> None:
        """Write every change since the last sync through to the disk (tick thread)."""
        if not self.dirty:
            return
        file = self._FileJournal__journalFile
        file.flush()  # msync of the mapping
        os.fdatasync(file._ResizableFile__f.fileno())
        # Only now: if the disk failed, the journal stays dirty and the held messages
        # stay held, so this peer acknowledges nothing it may not have (fail closed).
        self.dirty = False
        self.syncs += 1

    def end_of_tick(self) -> None:
        """Sync, then send the messages held for it, in order (tick thread)."""
        self.sync()
        held, self.held = self.held, []
        for transport, node, message in held:
            _stock_send(transport, node, message)


def _create_journal(journal_file: str | None = None) -> Any:
    if journal_file is not None and os.path.abspath(journal_file) in _synced_paths:
        return SyncedFileJournal(journal_file)
    return _stock_create(journal_file)


_stock_send = TCPTransport.send


def _send_after_sync(self: TCPTransport, node: Any, message: Any) -> bool:
    journal = getattr(self._syncObj, "_SyncObj__raftLog", None)
    if not isinstance(journal, SyncedFileJournal) or self._syncObj._isLeader():
        return _stock_send(self, node, message)
    if journal.dirty or journal.held:   # held ones first: keep the order
        journal.held.append((self, node, message))
        return True
    return _stock_send(self, node, message)


def install(journal_file: str) -> None:
    """Let the next SyncObj built with ``journal_file`` use a ``SyncedFileJournal``."""
    with _lock:
        _synced_paths.add(os.path.abspath(journal_file))
        _syncobj.createJournal = _create_journal
        TCPTransport.send = _send_after_sync


def uninstall(journal_file: str) -> None:
    with _lock:
        _synced_paths.discard(os.path.abspath(journal_file))
