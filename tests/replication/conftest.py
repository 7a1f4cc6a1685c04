"""Fixtures for the replication tests: the fast raft tuning and ``make_cluster``, which
starts three-peer clusters of separate processes (``peer_main.py``) and always kills them."""

from __future__ import annotations

from typing import Any

import pytest

from raftdir.replication import RaftTuning
from replication_harness import TEST_TUNING, BindFailed, Cluster, Peer, free_ports


@pytest.fixture
def tuning() -> RaftTuning:
    return RaftTuning(**TEST_TUNING)



@pytest.fixture
def make_cluster(tmp_path):
    """``make_cluster(n=3, sm="toy", tuning=None, secret=None) -> Cluster``: n peer
    processes on 127.0.0.1 with OS-chosen ports, started and connected; retried with new
    ports on a bind clash. Every process is SIGKILLed and reaped at the end."""
    clusters: list[Cluster] = []

    def make(n: int = 3, sm: str = "toy", tuning: dict[str, Any] | None = None,
             secret: str | None = None, peer_secrets: list[str | None] | None = None,
             ) -> Cluster:
        tun = {**TEST_TUNING, **(tuning or {})}
        for attempt in range(3):
            root = tmp_path / f"cluster{len(clusters)}-{attempt}"
            root.mkdir()
            addrs = [f"127.0.0.1:{p}" for p in free_ports(n)]
            secrets_ = peer_secrets or [secret] * n
            peers = [Peer(a, [b for b in addrs if b != a], root / f"peer{i}",
                          root / f"peer{i}.log", tun, secrets_[i], sm)
                     for i, a in enumerate(addrs)]
            cluster = Cluster(peers)
            clusters.append(cluster)
            for p in peers:
                p.spawn()
            try:
                for p in peers:
                    p.wait_started()
            except BindFailed:
                cluster.kill_all()
                continue
            return cluster
        raise AssertionError("could not bind a cluster in 3 attempts")

    yield make
    for c in clusters:
        c.kill_all()
