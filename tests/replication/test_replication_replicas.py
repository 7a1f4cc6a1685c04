"""Read-only replicas (``PySyncObjNode(None, voters)``) beside three voters, all in this
process on 127.0.0.1: a replica applies the log, forwards barriers, is refused writes,
never counts toward a commit or the leader lease, catches up from the leader's snapshot,
restarts from its own, and coming or going changes no term."""

from __future__ import annotations

import os

import pytest

from raftdir.errors import ConfigError, NotLeader, TimeoutOutcomeUnknown
from raftdir.replication.pysyncobj_node import DUMP_FILE, PySyncObjNode, read_snapshot_file
from raftdir.replication.tuning import RaftTuning
from raftdir.testing import wait_until
from replication_harness import TEST_TUNING, free_ports
from replication_toy import ToyKV, cmd

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

TUNING = RaftTuning(**{**TEST_TUNING, "log_compaction_min_entries": 30,
                       "log_compaction_min_time": 600.0})


class Cluster:
    def __init__(self, root) -> None:
        self.root = root
        self.addrs = [f"127.0.0.1:{p}" for p in free_ports(3)]
        self.voters = [PySyncObjNode(a, self.addrs, str(root / f"v{i}"), ToyKV(),
                                     tuning=TUNING) for i, a in enumerate(self.addrs)]
        self.replicas: list[PySyncObjNode] = []
        for v in self.voters:
            v.start()

    def replica(self, name: str = "r", node_id: int = 4) -> PySyncObjNode:
        r = PySyncObjNode(None, self.addrs, str(self.root / name), ToyKV(), tuning=TUNING,
                          replica=(node_id, f"127.0.0.1:{7200 + node_id}"))
        r.start()
        self.replicas.append(r)
        return r

    def leader(self) -> PySyncObjNode:
        return wait_until(lambda: next((v for v in self.voters if v.is_leader()), None),
                          10, "a leader")

    def terms(self) -> list[int]:
        return [v.term() for v in self.voters]

    def stop(self) -> None:
        for n in self.replicas + self.voters:
            n.stop()


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    c.stop()


def caught_up(replica: PySyncObjNode, leader: PySyncObjNode) -> bool:
    return replica.status()["last_applied"] >= leader.status()["commit_index"] and \
        replica.state_machine.kv == leader.state_machine.kv


def test_a_replica_follows_forwards_barriers_and_is_refused_writes(cluster):
    leader = cluster.leader()
    r = cluster.replica()
    for i in range(10):
        leader.propose(cmd("set", k=f"k{i}", v=i))
    wait_until(lambda: caught_up(r, leader), 10, "the replica to apply the log")
    assert r.status()["state"] == "replica" and r.address is None and not r.is_leader()
    assert r.leader() == leader.address
    wait_until(lambda: [x["node_id"] for x in leader.replicas()] == [4], 5,
               "the leader to name its replica")
    assert leader.replicas()[0]["api_addr"] == "127.0.0.1:7204"
    r.barrier(5.0)                         # through the leader, applied here
    with pytest.raises(NotLeader) as info:
        r.propose(cmd("set", k="x", v=1))
    assert info.value.leader == leader.address
    seconds, entries = r.replica_lag()
    assert seconds < 1.0 and entries == 0


def test_a_replica_never_makes_a_majority(cluster):
    leader = cluster.leader()
    r = cluster.replica()
    leader.propose(cmd("set", k="a", v=1))
    wait_until(lambda: caught_up(r, leader), 10, "the replica to apply the log")
    assert leader.has_lease()
    for v in cluster.voters:
        if v is not leader:
            v.stop()
    # the replica still answers every append, yet the leader loses its lease and commits
    # nothing more (with two voters gone it is one of three)
    wait_until(lambda: not leader.has_lease(), 5, "the lease to lapse")
    assert [x["node_id"] for x in leader.replicas()] == [4]
    with pytest.raises((TimeoutOutcomeUnknown, NotLeader, Exception)):
        leader.propose(cmd("set", k="b", v=2), timeout=1.5)
    assert "b" not in r.state_machine.kv and "b" not in leader.state_machine.kv


def test_replicas_coming_and_going_change_no_term(cluster):
    leader = cluster.leader()
    terms = cluster.terms()
    r1, r2 = cluster.replica("r1", 4), cluster.replica("r2", 5)
    for i in range(5):
        leader.propose(cmd("set", k=f"k{i}", v=i))
    wait_until(lambda: caught_up(r1, leader) and caught_up(r2, leader), 10, "both replicas")
    wait_until(lambda: len(leader.replicas()) == 2, 5, "the leader to name both")
    r1.stop()
    wait_until(lambda: [x["node_id"] for x in leader.replicas()] == [5], 5,
               "the leader to forget the stopped replica")
    for i in range(5):
        leader.propose(cmd("set", k=f"m{i}", v=i))
    assert cluster.terms() == terms and leader.is_leader()


def test_a_new_replica_takes_the_leaders_snapshot_and_restarts_from_its_own(cluster,
                                                                            tmp_path):
    leader = cluster.leader()
    for i in range(80):                    # the voters compact their logs (30 entries)
        leader.propose(cmd("set", k=f"k{i}", v=i))
    wait_until(lambda: leader.status()["log_len"] < 80, 20, "the leader to compact")
    r = cluster.replica()
    wait_until(lambda: caught_up(r, leader), 20, "the replica to install the snapshot")
    for i in range(80):                    # now the replica compacts its own log
        leader.propose(cmd("set", k=f"n{i}", v=i))
    wait_until(lambda: caught_up(r, leader) and os.path.exists(tmp_path / "r" / DUMP_FILE)
               and r.status()["log_len"] < 80, 20, "the replica's own snapshot")
    dump = read_snapshot_file(str(tmp_path / "r" / DUMP_FILE))
    assert sorted(dump["raft"]["cluster"]) == sorted(cluster.addrs)   # voters, no "None"
    r.stop()
    cluster.replicas.remove(r)
    leader.propose(cmd("set", k="after", v=1))
    again = cluster.replica()              # the same data dir
    assert again.state_machine.kv.get("k79") == 79    # its own dump, restored at start
    wait_until(lambda: caught_up(again, leader), 20, "the restarted replica to catch up")
    assert again.state_machine.kv["after"] == 1


def test_a_replica_without_a_secret_dials_only_loopback(tmp_path):
    with pytest.raises(ConfigError) as info:
        PySyncObjNode(None, ["10.0.0.1:9000"], str(tmp_path), ToyKV())
    assert info.value.field == "peers" and "cluster.secret" in info.value.message
    with pytest.raises(ConfigError):
        PySyncObjNode(None, [], str(tmp_path), ToyKV())
