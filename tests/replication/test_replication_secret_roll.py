"""Rolling the cluster secret under running Raft (issue 12): three ``PySyncObjNode`` peers in
this process swap the keys of their Raft traffic while they run (``use_secrets``), step by
step as docs/operations.md says (accept the next secret everywhere, send under it one
peer at a time, drop the old one), and keep committing with the same leader throughout.
A peer that jumps ahead (takes the new secret alone while the others know only the old one)
is cut off until the secrets are as the steps would have them: the steps are needed, not
decoration."""

from __future__ import annotations

import time

import pytest

from raftdir.errors import ConfigError
from raftdir.replication.pysyncobj_node import PySyncObjNode
from raftdir.replication.secret import fingerprint
from raftdir.replication.tuning import RaftTuning
from raftdir.testing import wait_until
from replication_harness import TEST_TUNING, free_ports
from replication_toy import ToyKV, cmd

OLD, NEW = "0a" * 32, "0b" * 32


@pytest.fixture
def trio(tmp_path):
    nodes: list[PySyncObjNode] = []
    for _attempt in range(3):
        addrs = [f"127.0.0.1:{p}" for p in free_ports(3)]
        nodes = [PySyncObjNode(a, addrs, str(tmp_path / f"p{i}-{_attempt}"), ToyKV(),
                               secret=OLD, tuning=RaftTuning(**TEST_TUNING))
                 for i, a in enumerate(addrs)]
        try:
            for n in nodes:
                n.start()
            break
        except ConfigError:       # a port taken meanwhile: others, once more
            for n in nodes:
                n.stop()
    try:
        wait_until(lambda: sum(n.is_leader() for n in nodes) == 1, 10, "a leader")
        yield nodes
    finally:
        for n in nodes:
            n.stop()


def leader_of(nodes: list[PySyncObjNode]) -> tuple[PySyncObjNode, int]:
    lead = [n for n in nodes if n.is_leader()]
    assert len(lead) == 1
    return lead[0], lead[0].term()


def commit_everywhere(nodes: list[PySyncObjNode], key: str, value: int,
                      timeout: float = 5.0) -> None:
    leader, _ = leader_of(nodes)
    assert leader.propose(cmd("set", k=key, v=value), timeout=5).ok
    wait_until(lambda: all(n.state_machine.kv.get(key) == value for n in nodes), timeout,
               f"{key}={value} applied by every peer")


def test_a_roll_in_three_steps_keeps_the_leader_and_every_link(trio):
    nodes = trio
    leader, term = leader_of(nodes)
    assert all(n.status()["raft_keys"] == [fingerprint(OLD)] for n in nodes)
    commit_everywhere(nodes, "before", 1)
    steps = ([("accept next", n, (OLD, NEW)) for n in nodes]
             + [("promote", n, (NEW, OLD)) for n in nodes]
             + [("retire", n, (NEW,)) for n in nodes])
    for i, (what, node, secrets) in enumerate(steps):
        node.use_secrets(secrets)
        # taken up by the tick thread, on the connections open already
        wait_until(lambda: node.status()["raft_keys"] == [fingerprint(s) for s in secrets],
                   5, f"{what} taken up")
        commit_everywhere(nodes, f"step{i}", i)
        assert leader_of(nodes) == (leader, term), f"the leader changed at {what}"
    # every Raft link is up
    assert all(n.status()["partners"] and all(n.status()["partners"].values())
               for n in nodes)


def test_a_peer_that_jumps_ahead_is_cut_off_until_the_others_accept_its_secret(trio):
    nodes = trio
    leader, _ = leader_of(nodes)
    follower = next(n for n in nodes if n is not leader)
    others = [n for n in nodes if n is not follower]
    follower.use_secrets((NEW,))            # sends and reads under NEW only: no step 1
    # the others still commit (two of three), but the follower gets nothing
    started = time.monotonic()
    leader.propose(cmd("set", k="cut", v=1), timeout=5)
    wait_until(lambda: all(n.state_machine.kv.get("cut") == 1 for n in others), 5,
               "the two others to apply")
    while time.monotonic() - started < 2.0:   # several election timeouts of the fast tuning
        assert follower.state_machine.kv.get("cut") is None, "a cut-off peer applied it"
        time.sleep(0.05)
    # the state of step 2 (the others accept NEW besides OLD, the follower sends under NEW
    # and still reads OLD): every link works again and the follower catches up
    for n in others:
        n.use_secrets((OLD, NEW))
    follower.use_secrets((NEW, OLD))
    wait_until(lambda: all(n.state_machine.kv.get("cut") == 1 for n in nodes), 10,
               "the follower to catch up once its secret is accepted")
    commit_everywhere(nodes, "after", 2, timeout=10)


def test_a_peer_restarted_in_the_middle_of_a_roll_starts_with_both_secrets(trio, tmp_path):
    nodes = trio
    for n in nodes:
        n.use_secrets((OLD, NEW))
    wait_until(lambda: all(len(n.status()["raft_keys"]) == 2 for n in nodes), 5, "step 1")
    leader, _ = leader_of(nodes)
    gone = next(n for n in nodes if n is not leader)
    addr, data_dir, partners = gone.address, gone._data_dir, [n.address for n in nodes]
    gone.stop()
    # promoted while it was down: it starts with the new secret, still reading the old
    back = PySyncObjNode(addr, partners, data_dir, ToyKV(), secret=NEW, accept=(OLD,),
                         tuning=RaftTuning(**TEST_TUNING))
    back.start()
    nodes[nodes.index(gone)] = back
    assert wait_until(lambda: back.status()["raft_keys"] == [fingerprint(NEW),
                                                             fingerprint(OLD)], 5, "keys")
    commit_everywhere(nodes, "after restart", 1, timeout=10)
