"""Fixtures for the replication tests: free loopback ports, fast raft tuning, and
three-peer clusters of separate processes (``peer_main.py``) that are always killed."""

from __future__ import annotations

import socket

import pytest

from raftdir.replication import RaftTuning

#: Quick elections for tests; still the pinned shape (no batching, journal + dump).
TEST_TUNING = dict(
    raft_min_timeout=0.3, raft_max_timeout=0.9, append_entries_period=0.075,
    auto_tick_period=0.02, connection_timeout=10.0, connection_retry_time=0.3,
    leader_fallback_timeout=2.0, bind_retry_time=0.2, max_bind_retries=3,
)


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports the OS considered free on 127.0.0.1 a moment ago (bound with
    port 0, read, closed). A clash later is possible; callers retry on bind failure."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture
def tuning() -> RaftTuning:
    return RaftTuning(**TEST_TUNING)
