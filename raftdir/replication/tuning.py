"""``RaftTuning``: the PySyncObj timing and compaction knobs raftdir lets a config override.

Owns: the defaults pinned from pysyncobj.md §5.1 and their validation. Validation names
the field, the value and the rule, and raises ``ConfigError`` (instead of PySyncObj's bare
``assert`` in ``SyncObjConf.validate``).

Threads: plain frozen data, any thread. Must not import PySyncObj, ``raftdir.api``,
``raftdir.agent``, ``raftdir.cli``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from raftdir.errors import ConfigError

__all__ = ["RaftTuning"]


@dataclass(frozen=True)
class RaftTuning:
    """Seconds unless the name says otherwise. Defaults: pysyncobj.md §5.1, except the
    election timeouts (0.2-0.6 s, heartbeats every 0.05 s instead of 0.3-0.9 s and
    0.075 s): with idle links spared the read timeout, they bring the median kill -9 ->
    writes-served failover from 1.08 s to 0.74 s (0.33 s once both sides of a link spare
    it; docs/benchmarks.md), and 30 s of a saturated 2-core machine (3,000-6,000 status
    acks/s) changed no term."""

    raft_min_timeout: float = 0.2
    raft_max_timeout: float = 0.6
    append_entries_period: float = 0.05
    auto_tick_period: float = 0.02
    connection_timeout: float = 10.0
    connection_retry_time: float = 1.0
    leader_fallback_timeout: float = 2.0
    log_compaction_min_entries: int = 5000
    log_compaction_min_time: float = 300.0
    commands_queue_size: int = 100_000
    bind_retry_time: float = 1.0
    max_bind_retries: int = 10
    #: fsync the Raft journal before any message leaves and before applying, and the
    #: term/vote file on every change (``durable_journal``). Off: PySyncObj's stock
    #: journal, which survives kill -9 but not a power loss.
    journal_sync: bool = True

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def with_election_timeout(cls, minimum: float) -> "RaftTuning":
        """The defaults with the election timeout between ``minimum`` and three times it
        (heartbeats stay every 0.05 s at most, so the leader's lease stays fresh)."""
        return cls(raft_min_timeout=minimum, raft_max_timeout=3 * minimum,
                   append_entries_period=min(cls.append_entries_period, minimum / 4),
                   auto_tick_period=min(cls.auto_tick_period, minimum / 4),
                   connection_timeout=max(cls.connection_timeout, 3 * minimum))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], prefix: str = "raft") -> "RaftTuning":
        """Build from a config mapping; unknown keys are refused, by name."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{prefix}: must be a mapping, got {type(data).__name__}",
                              field=prefix)
        known = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in known:
                raise ConfigError(f"{prefix}.{key}: unknown key (known: "
                                  f"{', '.join(sorted(known))})", field=f"{prefix}.{key}")
        return cls(**dict(data))

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type in ("bool", bool):
                if not isinstance(value, bool):
                    _fail(f.name, value, "must be true or false")
                continue
            want_int = f.type in ("int", int)
            ok_type = (isinstance(value, int) if want_int
                       else isinstance(value, (int, float)))
            if isinstance(value, bool) or not ok_type:
                _fail(f.name, value, "must be an integer" if want_int else "must be a number")
        for name in ("raft_min_timeout", "raft_max_timeout", "append_entries_period",
                     "auto_tick_period", "connection_timeout", "leader_fallback_timeout",
                     "log_compaction_min_time", "bind_retry_time"):
            if not getattr(self, name) > 0:
                _fail(name, getattr(self, name), "must be > 0")
        if self.connection_retry_time < 0:
            _fail("connection_retry_time", self.connection_retry_time, "must be >= 0")
        if self.raft_min_timeout <= 3 * self.append_entries_period:
            _fail("raft_min_timeout", self.raft_min_timeout,
                  f"must be > 3 * append_entries_period (= {3 * self.append_entries_period:g})")
        if self.raft_max_timeout <= self.raft_min_timeout:
            _fail("raft_max_timeout", self.raft_max_timeout,
                  f"must be > raft_min_timeout ({self.raft_min_timeout:g})")
        if self.connection_timeout < self.raft_max_timeout:
            _fail("connection_timeout", self.connection_timeout,
                  f"must be >= raft_max_timeout ({self.raft_max_timeout:g})")
        if self.leader_fallback_timeout <= self.append_entries_period:
            _fail("leader_fallback_timeout", self.leader_fallback_timeout,
                  f"must be > append_entries_period ({self.append_entries_period:g})")
        if self.auto_tick_period > self.append_entries_period:
            _fail("auto_tick_period", self.auto_tick_period,
                  f"must be <= append_entries_period ({self.append_entries_period:g}): "
                  "heartbeats are sent from the tick")
        if self.log_compaction_min_entries < 2:
            _fail("log_compaction_min_entries", self.log_compaction_min_entries, "must be >= 2")
        if self.commands_queue_size < 1:
            _fail("commands_queue_size", self.commands_queue_size, "must be >= 1")
        if self.max_bind_retries < 1:
            _fail("max_bind_retries", self.max_bind_retries,
                  "must be >= 1 (0 would make start() wait for the port forever)")


def _fail(name: str, value: Any, rule: str) -> None:
    raise ConfigError(f"raft.{name}: {value!r}: {rule}", field=f"raft.{name}")
