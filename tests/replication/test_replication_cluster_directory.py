"""Three-peer PySyncObj clusters (processes) replicating the real ``Directory``: the same
guarantees as with the toy state machine, with real commands and real snapshots."""

from __future__ import annotations

import time

import pytest

from replication_harness import wait_until, wipe
from directory_adapter import bootstrap, register

pytestmark = pytest.mark.slow


def propose(peer, data_hex, timeout=5.0):
    reply = peer.call("propose", timeout=timeout, data=data_hex)
    assert reply["result"]["ok"], reply
    return reply["result"]


def node_ids(state):
    col = state["node_fields"].index("node_id")
    return {row[col] for row in state["nodes"]}


def test_directory_write_on_leader_is_visible_on_every_peer(make_cluster):
    cluster = make_cluster(sm="directory")
    leader = cluster.leader()
    propose(leader, bootstrap())
    ids = [propose(leader, register(i))["value"]["node_id"] for i in range(20)]
    assert len(set(ids)) == 20
    snap = leader.call("barrier")["state"]
    assert node_ids(snap) == set(ids)
    assert snap["cluster_id"] == "test-cluster"
    for f in cluster.followers(leader):
        assert f.call("barrier")["state"] == snap


def test_directory_failover_keeps_acknowledged_registrations(make_cluster):
    cluster = make_cluster(sm="directory")
    leader = cluster.leader()
    propose(leader, bootstrap())
    acked = {i: propose(leader, register(i))["value"]["node_id"] for i in range(15)}
    survivors = cluster.followers(leader)
    leader.kill()
    t0 = time.monotonic()

    def accepted():
        for p in survivors:
            reply = p.call("propose", timeout=0.5, check=False, data=register(100))
            if reply["ok"] and reply["result"]["ok"]:
                return p
        time.sleep(0.03)
        return None

    new_leader = wait_until(accepted, 5.0, "a survivor to accept a registration")
    assert time.monotonic() - t0 < 5.0
    snap = new_leader.call("barrier")["state"]
    assert set(acked.values()) <= node_ids(snap)
    # a retry of an acknowledged request id on the new leader gets the first result
    for i in (0, 14):
        assert propose(new_leader, register(i))["value"]["node_id"] == acked[i]
    snap = new_leader.call("barrier")["state"]
    other = next(p for p in survivors if p is not new_leader)
    assert other.call("barrier")["state"] == snap


def test_directory_wiped_peer_catches_up_from_snapshot(make_cluster):
    cluster = make_cluster(sm="directory", tuning={"log_compaction_min_entries": 20})
    leader = cluster.leader()
    propose(leader, bootstrap())
    for i in range(60):
        propose(leader, register(i))
    wait_until(lambda: leader.status()["log_len"] < 40, 10, "leader log compaction")
    victim = cluster.followers(leader)[0]
    victim.kill()
    wipe(victim.data_dir)
    victim.spawn()
    victim.wait_started()
    snap = leader.call("barrier")["state"]
    wait_until(lambda: victim.call("state")["state"] == snap, 10, "wiped peer to catch up")
    assert victim.call("status")["notified"]["snapshots"] >= 1
