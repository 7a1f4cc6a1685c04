"""Lease deadlines on the leader: soft state, never replicated (directory.md §5).

Owns: when each node last reported, its deadline, its latest status report, which renewals
still need a checkpoint, and the rules that pick expired nodes (strict, rate-limited,
never more than a share of the fleet at once). Pure bookkeeping with the clock values
passed in; called from the leader's event loop only. Imports ``raftdir.model`` only.

``now`` is the leader's *lease clock* (``DirectoryServer.lease_now``): seconds during
which this peer held a leader lease. It stands still while the peer cannot act as leader
(a lost quorum, a pause, a term as follower), so a worker is never charged for time in
which no leader could take its report. Wall milliseconds (``now_wall_ms``) only feed the
checkpoints.

The failover rule (docs/design.md, "A worker's lease"): every acknowledgement that grants
a lease is given only while the acknowledging leader holds its Raft lease, and no peer can
be elected before the lease of the previous leader ended (raftdir.replication.raft_rules).
So every lease any earlier leader acknowledged was acknowledged before this leader took
office, and a worker acknowledged at ``a`` with TTL ``t`` reports again by ``a + t``.
A new leader therefore arms every ready worker at ``ready + ttl_max + grace``
(``arm_on_takeover``), where ``ttl_max`` bounds every TTL a worker may hold: a lease
acknowledged by any leader holds under every later one, and nobody is expired for the
election. A peer re-elected with no other leader in between keeps its own table
(``LeaderServices``): it knows every acknowledgement since, and its lease clock did not
run meanwhile, so its deadlines stand as they were, dead workers included.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..model import WorkerStatusReport

__all__ = ["LeaseEntry", "LeaseTable", "ExpiryPolicy"]


@dataclass
class LeaseEntry:
    ttl_secs: int
    grace_secs: int
    deadline: float                      # lease-clock seconds
    last_report: float | None = None     # lease-clock seconds; None: not since taking office
    renewed_ms: int = 0                  # wall ms of the last renewal seen here
    checkpointed_ms: int = 0             # wall ms last committed in a checkpoint
    report: WorkerStatusReport | None = None


@dataclass(frozen=True)
class ExpiryPolicy:
    """How fast the leader may mark nodes down."""

    max_per_second: float = 100.0        # etcd revokes at most 1,000 leases/s; k8s 0.1 node/s
    max_down_fraction: float = 0.5       # never more than this share of workers down at once,
    large_fleet: int = 50                # ... once the fleet has this many workers (k8s' 50)


@dataclass
class LeaseTable:
    """The leader's view of every worker lease, for the leadership ``term`` it serves (a
    peer re-elected with no other leader in between carries it into the next term)."""

    policy: ExpiryPolicy = field(default_factory=ExpiryPolicy)
    term: int = 0
    entries: dict[int, LeaseEntry] = field(default_factory=dict)
    _budget: float = 0.0
    _budget_at: float | None = None

    # -- arming ----------------------------------------------------------------------
    def arm_on_takeover(self, node_id: int, *, ttl_secs: int, grace_secs: int,
                        checkpointed_ms: int, now: float) -> None:
        """A ready node when this peer takes office with no table of its own: a full
        ``ttl_secs + grace`` from ``now`` (``ttl_secs``: the longest TTL it may hold)."""
        self.entries[node_id] = LeaseEntry(ttl_secs, grace_secs, now + ttl_secs + grace_secs,
                                           renewed_ms=checkpointed_ms,
                                           checkpointed_ms=checkpointed_ms)

    def arm_new(self, node_id: int, *, ttl_secs: int, grace_secs: int, now: float,
                now_wall_ms: int) -> None:
        """A node that just registered or came back: a full TTL from now."""
        self.entries[node_id] = LeaseEntry(ttl_secs, grace_secs,
                                           now + ttl_secs + grace_secs,
                                           last_report=now, renewed_ms=now_wall_ms)

    def forget(self, node_id: int) -> None:
        self.entries.pop(node_id, None)

    # -- heartbeats ------------------------------------------------------------------
    def renew(self, node_id: int, *, ttl_secs: int, now: float, now_wall_ms: int,
              report: WorkerStatusReport | None) -> LeaseEntry | None:
        """Record a report: the deadline moves to ``now + ttl + grace``. None when the node
        is not armed here (unknown, or down)."""
        entry = self.entries.get(node_id)
        if entry is None:
            return None
        entry.ttl_secs = ttl_secs
        entry.deadline = now + ttl_secs + entry.grace_secs
        entry.last_report = now
        entry.renewed_ms = max(entry.renewed_ms, now_wall_ms)
        if report is not None:
            entry.report = report
        return entry

    def time_left(self, node_id: int, now: float) -> float | None:
        entry = self.entries.get(node_id)
        return None if entry is None else entry.deadline - now

    # -- checkpoints -----------------------------------------------------------------
    def pending_checkpoint(self) -> list[tuple[int, int]]:
        """``(node_id, renewed_ms)`` for every renewal not yet committed, ascending."""
        return sorted((n, e.renewed_ms) for n, e in self.entries.items()
                      if e.renewed_ms > e.checkpointed_ms)

    def checkpointed(self, entries: list[tuple[int, int]]) -> None:
        for node_id, renewed_ms in entries:
            entry = self.entries.get(node_id)
            if entry is not None:
                entry.checkpointed_ms = max(entry.checkpointed_ms, renewed_ms)

    # -- expiry ----------------------------------------------------------------------
    def expired(self, now: float, *, workers_total: int, workers_down: int) -> list[int]:
        """Nodes whose deadline has strictly passed, at most what the policy allows now:
        a token bucket of ``max_per_second`` (burst of one second) and, in a fleet of at
        least ``large_fleet`` workers, never past ``max_down_fraction`` of them down (a
        partitioned control plane must not evict everyone). Lowest ids first."""
        due = sorted(n for n, e in self.entries.items() if now > e.deadline)
        if not due:
            return []
        if self._budget_at is None:
            self._budget = self.policy.max_per_second
        else:
            self._budget = min(self.policy.max_per_second, self._budget + (
                now - self._budget_at) * self.policy.max_per_second)
        self._budget_at = now
        room = len(due)
        if workers_total >= self.policy.large_fleet:
            room = int(self.policy.max_down_fraction * workers_total) - workers_down
        take = max(0, min(len(due), int(self._budget), room))
        self._budget -= take
        return due[:take]
