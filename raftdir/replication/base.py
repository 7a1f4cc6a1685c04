"""The replication contracts: what a state machine offers and what a Raft node offers.

Owns: the ``StateMachine`` and ``RaftNode`` protocols, the reserved barrier marker, and the
one helper that applies command bytes to a state machine without ever raising
(``apply_safely``), shared by ``LocalNode`` and the PySyncObj adapter.

Threads: ``apply_safely`` runs on whichever thread applies entries (PySyncObj's tick thread,
or the proposer's thread in ``LocalNode``). The protocols say per method who may call it.

Must not import: ``raftdir.api``, ``raftdir.agent``, ``raftdir.cli``, nor the concrete
directory; it may import ``raftdir.core.result`` and ``raftdir.errors``.

Outcomes of a proposal are kept apart as in hashicorp/raft:

- applied: ``propose`` returns ``Result`` with ``ok=True``;
- refused by the state: ``propose`` returns ``Result`` with ``ok=False`` and a ``code``
  (``internal`` when ``apply`` raised: a bug, logged loudly, the node goes on);
- not replicated: ``propose`` raises ``NotLeader`` (``leader`` = the leader's Raft address),
  ``NoLeader`` (no leader known, or the command queue is full: retry with backoff) or
  ``TimeoutOutcomeUnknown`` (the write may still commit: retry with the same request id).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Protocol, runtime_checkable

from raftdir.core.result import Result

__all__ = [
    "MAX_COMMAND_BYTES",
    "StateMachine",
    "RaftNode",
    "LeadershipListener",
    "ApplyListener",
    "BARRIER_PREFIX",
    "is_barrier",
    "apply_safely",
    "call_listeners",
]

logger = logging.getLogger(__name__)

#: The largest command (its encoded bytes) a ``RaftNode`` takes. ``PySyncObjNode`` sizes
#: PySyncObj's append-entries batches so that an entry this large still travels in one
#: message, never through PySyncObj's chunked transmission (docs/design.md says why).
#: 1.5 MiB: a scale of one replica on each of 50,000 workers is a placement command of
#: 1.1-1.3 MB (each node's share, and every index again in the groups); 1 MiB refused it.
MAX_COMMAND_BYTES = 3 << 19

#: Commands whose bytes start with this prefix are barriers (no-ops) handled by the node
#: itself and never passed to the state machine. 0xC1 is the one byte msgpack never uses,
#: so no msgpack-encoded command can start with it. The empty command is a no-op as well.
BARRIER_PREFIX = b"\xc1raftdir-barrier:"


def is_barrier(data: bytes) -> bool:
    return not data or data.startswith(BARRIER_PREFIX)


@runtime_checkable
class StateMachine(Protocol):
    """The replicated state (the directory). Every method is called from one thread at a
    time (the applying thread); readers on other threads must only use what the state
    machine documents as safe to read concurrently."""

    def apply_bytes(self, data: bytes) -> Result:
        """Decode and apply one command. A refusal is a ``Result`` with ``ok=False``;
        raising is a bug (the node catches it and reports ``internal``)."""
        ...

    def to_snapshot(self) -> dict[str, Any]:
        """The whole state as plain data (msgpack-able), with a ``format`` key."""
        ...

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Replace the state in place with what ``to_snapshot`` produced."""
        ...

    @property
    def revision(self) -> int: ...


#: ``cb(is_leader, term)``: called from the tick thread when this peer gains or loses
#: leadership. Must be quick and must not block (hand the work to another thread or loop).
LeadershipListener = Callable[[bool, int], None]

#: ``cb(revision, result)``: called on EVERY peer after each entry is applied (``result`` is
#: the ``Result`` of that entry) and after a snapshot replaced the state (``result`` is
#: None). Called from the applying thread; must be quick and must not block.
ApplyListener = Callable[[int, "Result | None"], None]


@runtime_checkable
class RaftNode(Protocol):
    """A peer of the replicated directory (``LocalNode`` or ``PySyncObjNode``).

    ``start``/``stop`` own threads and sockets; constructors do no I/O. ``propose`` and
    ``barrier`` block and may be called from any thread except the applying thread (a
    listener calling them would deadlock); their ``_async`` twins do not block the loop.
    """

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def propose(self, data: bytes, timeout: float) -> Result: ...

    async def propose_async(self, data: bytes, timeout: float) -> Result: ...

    def barrier(self, timeout: float) -> None:
        """Commit a no-op through the log and return once it is applied on THIS peer:
        a local read after it sees every write acknowledged before the call."""
        ...

    async def barrier_async(self, timeout: float) -> None: ...

    def is_leader(self) -> bool: ...

    def leader(self) -> str | None:
        """The Raft address of the leader this peer last heard of (may be stale)."""
        ...

    def term(self) -> int: ...

    def has_lease(self) -> bool:
        """This peer leads and no other peer can be elected before its lease ends (a
        majority confirmed it within the minimum election timeout). Answers that grant
        a worker a lease are given only while this holds."""
        ...

    def unleased_seconds(self) -> float:
        """Seconds, since start, during which this peer held no leader lease: the
        server's clock minus this is a clock that stands still while this peer cannot
        act as leader (lease deadlines are measured in it)."""
        ...

    def status(self) -> dict[str, Any]:
        """``self, leader, term, commit_index, last_applied, log_len, partners
        ({addr: connected}), is_ready`` and ``is_leader``."""
        ...

    def add_leadership_listener(self, cb: LeadershipListener) -> None: ...

    def add_apply_listener(self, cb: ApplyListener) -> None: ...


def apply_safely(sm: StateMachine, data: bytes) -> Result:
    """Apply ``data`` to ``sm``; never raises. An exception inside ``apply_bytes`` is a bug:
    it is logged with its traceback and turned into ``Result.refused("internal", ...)``, so
    the entry counts as applied and the node keeps applying later entries (pysyncobj.md
    finding 2). A non-``Result`` return value is treated the same way."""
    try:
        result = sm.apply_bytes(data)
    except Exception as exc:  # noqa: BLE001 - the whole point is to contain bugs
        logger.exception("BUG: state machine raised while applying a %d-byte command; "
                         "recorded as an internal refusal", len(data))
        return Result.refused("internal", f"apply raised {type(exc).__name__}: {exc}"[:500],
                              revision=_revision_or_zero(sm))
    if not isinstance(result, Result):
        logger.error("BUG: state machine returned %r instead of a Result", type(result))
        return Result.refused("internal", f"apply returned {type(result).__name__}",
                              revision=_revision_or_zero(sm))
    return result


def _revision_or_zero(sm: StateMachine) -> int:
    try:
        return int(sm.revision)
    except Exception:  # noqa: BLE001
        return 0


def call_listeners(listeners: list[Callable[..., None]], *args: Any) -> None:
    """Call each listener; an exception is logged and never propagates (pysyncobj.md
    finding 3: a raising callback in the tick thread makes the proposer apply twice)."""
    for cb in list(listeners):
        try:
            cb(*args)
        except Exception:  # noqa: BLE001
            logger.exception("listener %r raised; ignored", cb)
