"""``LocalNode``: a one-peer "cluster" that applies commands in process at once.

Owns: single-node mode and the node most tests use. It is always the leader (term 1) once
started; ``propose`` applies under a lock on the caller's thread and fires the apply
listeners there. With a ``data_dir`` every command is journaled (fsync'd) before it is
applied and the state is rebuilt from the snapshot and the journal at ``start()``
(``local_journal.py``); without one nothing is persisted.

Threads: any thread may call ``propose``/``barrier``/``status``; applies are serialised by
one lock. Listeners run on the proposing thread, inside the lock (keep them quick).

Must not import: ``raftdir.api``, ``raftdir.agent``, ``raftdir.cli``, PySyncObj.
"""

from __future__ import annotations

import threading
from typing import Any

from raftdir.core.result import Result
from raftdir.errors import NoLeader
from raftdir.replication.local_journal import LocalJournal
from raftdir.replication.base import (
    ApplyListener,
    LeadershipListener,
    StateMachine,
    apply_safely,
    call_listeners,
    is_barrier,
)

__all__ = ["LocalNode"]


class LocalNode:
    """Implements ``RaftNode`` for one process. ``address`` is what ``leader()`` and
    ``status()`` report (default ``"local"``)."""

    TERM = 1

    def __init__(self, state_machine: StateMachine, address: str = "local", *,
                 data_dir: str | None = None, compact_every: int = 10_000) -> None:
        self._sm = state_machine
        self._journal = (LocalJournal(data_dir, compact_every=compact_every)
                         if data_dir is not None else None)
        self._recovered = False
        self._address = address
        self._lock = threading.RLock()
        self._running = False
        self._applied = 0
        self._leadership_listeners: list[LeadershipListener] = []
        self._apply_listeners: list[ApplyListener] = []

    @property
    def state_machine(self) -> StateMachine:
        return self._sm

    # lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._running:
                return
            if self._journal is not None and not self._recovered:
                self._recover(self._journal)
                self._recovered = True
            self._running = True
            call_listeners(self._leadership_listeners, True, self.TERM)

    def _recover(self, journal: LocalJournal) -> None:
        state, commands = journal.load()
        if state is not None:
            self._sm.restore(state)
        for data in commands:
            apply_safely(self._sm, data)
            self._applied += 1
        call_listeners(self._apply_listeners, self._sm.revision, None)

    def stop(self) -> None:
        with self._lock:
            if not self._running:
                return
            self._running = False
            call_listeners(self._leadership_listeners, False, self.TERM)

    def __enter__(self) -> "LocalNode":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # writes ----------------------------------------------------------------------------
    def propose(self, data: bytes, timeout: float = 5.0) -> Result:
        with self._lock:
            if not self._running:
                raise NoLeader("local node is not running")
            self._applied += 1
            if is_barrier(data):
                return Result.applied(None, revision=self._sm.revision)
            if self._journal is not None:
                self._journal.append(bytes(data))     # write ahead: durable, then applied
            result = apply_safely(self._sm, bytes(data))
            if self._journal is not None and self._journal.due():
                self._journal.compact(self._sm.to_snapshot())
            call_listeners(self._apply_listeners, self._sm.revision, result)
            return result

    async def propose_async(self, data: bytes, timeout: float = 5.0) -> Result:
        return self.propose(data, timeout)

    def barrier(self, timeout: float = 5.0) -> None:
        self.propose(b"", timeout)

    async def barrier_async(self, timeout: float = 5.0) -> None:
        self.barrier(timeout)

    # who leads -------------------------------------------------------------------------
    def is_leader(self) -> bool:
        return self._running

    def leader(self) -> str | None:
        return self._address if self._running else None

    def term(self) -> int:
        return self.TERM

    def has_lease(self) -> bool:
        return self._running   # the only peer: nobody else can be elected

    def unleased_seconds(self) -> float:
        return 0.0

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "self": self._address,
                "leader": self.leader(),
                "is_leader": self._running,
                "term": self.TERM,
                "commit_index": self._applied,
                "last_applied": self._applied,
                "log_len": 0,
                "partners": {},
                "is_ready": self._running,
                "revision": self._sm.revision,
            }

    # listeners -------------------------------------------------------------------------
    def add_leadership_listener(self, cb: LeadershipListener) -> None:
        """Register ``cb(is_leader, term)``; if already leading, it is called at once."""
        with self._lock:
            self._leadership_listeners.append(cb)
            if self._running:
                call_listeners([cb], True, self.TERM)

    def add_apply_listener(self, cb: ApplyListener) -> None:
        with self._lock:
            self._apply_listeners.append(cb)
