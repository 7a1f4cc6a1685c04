"""Lease deadlines on the leader: soft state, never replicated (directory.md §5).

Owns: when each node last reported, its deadline on the leader's monotonic clock, its
latest status report, which renewals still need a checkpoint, and the rules that pick
expired nodes (strict, rate-limited, never more than a share of the fleet at once). Pure
bookkeeping with the clock values passed in; called from the leader's event loop only.
Imports ``raftdir.model`` only.

Deadlines after a leader change come from the checkpointed renewal times, so that a
failover never expires a live node and never keeps a dead one alive for ever. The leader
commits a checkpoint every interval (an empty one when nothing was renewed), so the
state's clock ``k`` when a new leader takes office (before its own barrier) is no older
than one interval before the old leader stopped. A live node renewed last at ``r`` before
then, with ``r < k + interval``, and reports again by ``r + ttl``; its checkpointed
renewal ``c`` is at most one TTL older than ``r`` would need, ``r < c + interval + ttl``.
The deadline is therefore the smaller of

    k + interval + ttl + grace + skew      (tight: bounded by the old leader's last word)
    c + interval + 2*ttl + grace + skew    (fixed for a node that stopped reporting)

Both are at least ``r + ttl + grace`` for a live node, so a failover never expires it; the
second never moves for a dead node however often leaders change (the failure of etcd
issue 9888), so it is marked down after a bounded time.

A node with no checkpoint at all gets ``failover_ttl + grace`` from the leader change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..model import WorkerStatusReport

__all__ = ["LeaseEntry", "LeaseTable", "ExpiryPolicy"]


@dataclass
class LeaseEntry:
    ttl_secs: int
    grace_secs: int
    deadline: float                      # leader-monotonic seconds
    last_report: float | None = None     # leader-monotonic seconds; None: not since election
    renewed_ms: int = 0                  # wall ms of the last renewal seen here
    checkpointed_ms: int = 0             # wall ms last committed in a checkpoint
    report: WorkerStatusReport | None = None


@dataclass(frozen=True)
class ExpiryPolicy:
    """How fast the leader may mark nodes down."""

    max_per_second: float = 100.0        # etcd revokes at most 1,000 leases/s; k8s 0.1 node/s
    max_down_fraction: float = 0.5       # never more than this share of workers down at once,
    large_fleet: int = 50                # ... once the fleet has this many workers (k8s' 50)
    skew_allowance_secs: float = 2.0     # wall-clock skew between leaders


@dataclass
class LeaseTable:
    """The leader's view of every worker lease. One per leadership term."""

    policy: ExpiryPolicy = field(default_factory=ExpiryPolicy)
    entries: dict[int, LeaseEntry] = field(default_factory=dict)
    _budget: float = 0.0
    _budget_at: float | None = None

    # -- arming ----------------------------------------------------------------------
    def arm_after_election(self, node_id: int, *, ttl_secs: int, grace_secs: int,
                           checkpointed_ms: int, state_clock_ms: int, now_mono: float,
                           now_wall_ms: int, checkpoint_interval_secs: float,
                           failover_ttl_secs: int) -> None:
        """The deadline of a ready node right after this peer became leader.
        ``state_clock_ms``: the directory's clock before this leader's first write."""
        if checkpointed_ms <= 0:
            deadline = now_mono + failover_ttl_secs + grace_secs
        else:
            slack = self.policy.skew_allowance_secs + grace_secs + checkpoint_interval_secs
            due_wall_ms = 1000 * slack + min(state_clock_ms + 1000 * ttl_secs,
                                             checkpointed_ms + 2000 * ttl_secs)
            deadline = now_mono + (due_wall_ms - now_wall_ms) / 1000.0
        self.entries[node_id] = LeaseEntry(ttl_secs, grace_secs, deadline,
                                           renewed_ms=checkpointed_ms,
                                           checkpointed_ms=checkpointed_ms)

    def arm_new(self, node_id: int, *, ttl_secs: int, grace_secs: int, now_mono: float,
                now_wall_ms: int) -> None:
        """A node that just registered or came back: a full TTL from now."""
        self.entries[node_id] = LeaseEntry(ttl_secs, grace_secs,
                                           now_mono + ttl_secs + grace_secs,
                                           last_report=now_mono, renewed_ms=now_wall_ms)

    def forget(self, node_id: int) -> None:
        self.entries.pop(node_id, None)

    # -- heartbeats ------------------------------------------------------------------
    def renew(self, node_id: int, *, ttl_secs: int, now_mono: float, now_wall_ms: int,
              report: WorkerStatusReport | None) -> LeaseEntry | None:
        """Record a report: the deadline moves to ``now + ttl + grace``. None when the node
        is not armed here (unknown, or down)."""
        entry = self.entries.get(node_id)
        if entry is None:
            return None
        entry.ttl_secs = ttl_secs
        entry.deadline = now_mono + ttl_secs + entry.grace_secs
        entry.last_report = now_mono
        entry.renewed_ms = max(entry.renewed_ms, now_wall_ms)
        if report is not None:
            entry.report = report
        return entry

    def time_left(self, node_id: int, now_mono: float) -> float | None:
        entry = self.entries.get(node_id)
        return None if entry is None else entry.deadline - now_mono

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
    def expired(self, now_mono: float, *, workers_total: int, workers_down: int) -> list[int]:
        """Nodes whose deadline has strictly passed, at most what the policy allows now:
        a token bucket of ``max_per_second`` (burst of one second) and, in a fleet of at
        least ``large_fleet`` workers, never past ``max_down_fraction`` of them down (a
        partitioned control plane must not evict everyone). Lowest ids first."""
        due = sorted(n for n, e in self.entries.items() if now_mono > e.deadline)
        if not due:
            return []
        if self._budget_at is None:
            self._budget = self.policy.max_per_second
        else:
            self._budget = min(self.policy.max_per_second, self._budget + (
                now_mono - self._budget_at) * self.policy.max_per_second)
        self._budget_at = now_mono
        room = len(due)
        if workers_total >= self.policy.large_fleet:
            room = int(self.policy.max_down_fraction * workers_total) - workers_down
        take = max(0, min(len(due), int(self._budget), room))
        self._budget -= take
        return due[:take]
