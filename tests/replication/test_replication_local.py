"""LocalNode: the in-process RaftNode used by single-node mode and most tests."""

from __future__ import annotations

import asyncio
import threading

import pytest

from raftdir.errors import NoLeader
from raftdir.replication import BARRIER_PREFIX, LocalNode, RaftNode, StateMachine
from replication_toy import ToyKV, cmd


def test_toy_and_local_node_satisfy_the_protocols():
    assert isinstance(ToyKV(), StateMachine)
    assert isinstance(LocalNode(ToyKV()), RaftNode)


def test_propose_applies_at_once_and_reports_outcomes():
    sm = ToyKV()
    with LocalNode(sm) as node:
        assert node.is_leader() and node.leader() == "local" and node.term() == 1
        r = node.propose(cmd("set", k="a", v=1), timeout=1)
        assert r.ok and r.revision == 1 and sm.kv == {"a": 1}
        refused = node.propose(cmd("refuse"), timeout=1)
        assert not refused.ok and refused.code == "stale" and sm.revision == 1


def test_raising_command_becomes_internal_refusal_and_node_goes_on(caplog):
    sm = ToyKV()
    with LocalNode(sm) as node:
        r = node.propose(cmd("boom"), timeout=1)
        assert not r.ok and r.code == "internal" and "boom on purpose" in r.message
        assert "BUG" in caplog.text
        assert node.propose(cmd("set", k="b", v=2), timeout=1).ok
        assert sm.kv == {"b": 2}


def test_barrier_is_not_passed_to_the_state_machine():
    sm = ToyKV()
    with LocalNode(sm) as node:
        node.barrier(1)
        assert node.propose(BARRIER_PREFIX + b"xyz", 1).ok
        asyncio.run(node.barrier_async(1))
        assert sm.applied == 0


def test_not_started_means_no_leader():
    node = LocalNode(ToyKV())
    assert not node.is_leader() and node.leader() is None
    with pytest.raises(NoLeader):
        node.propose(cmd("set", k="a", v=1), 1)


def test_listeners_fire_and_a_raising_listener_is_contained():
    sm = ToyKV()
    node = LocalNode(sm)
    leadership: list[tuple[bool, int]] = []
    applied: list[tuple[int, object]] = []
    node.add_leadership_listener(lambda lead, term: leadership.append((lead, term)))
    node.add_apply_listener(lambda rev, res: applied.append((rev, res)))
    node.add_apply_listener(lambda rev, res: 1 / 0)
    node.start()
    assert node.propose(cmd("set", k="a", v=1), 1).ok
    late: list[tuple[bool, int]] = []
    node.add_leadership_listener(lambda lead, term: late.append((lead, term)))
    node.stop()
    assert leadership == [(True, 1), (False, 1)]
    assert late == [(True, 1), (False, 1)]
    assert [rev for rev, _ in applied] == [1] and applied[0][1].ok


def test_propose_async_and_status():
    sm = ToyKV()
    with LocalNode(sm) as node:
        r = asyncio.run(node.propose_async(cmd("set", k="x", v=[1, 2]), 1))
        assert r.ok
        st = node.status()
        assert st["self"] == st["leader"] == "local" and st["is_leader"] and st["is_ready"]
        assert st["term"] == 1 and st["last_applied"] == st["commit_index"] == 1
        assert st["partners"] == {}


def test_concurrent_proposals_are_serialised():
    sm = ToyKV()
    n_threads, per_thread = 8, 200
    with LocalNode(sm) as node:
        def work(t: int) -> None:
            for i in range(per_thread):
                assert node.propose(cmd("set", k=f"{t}-{i}", v=i), 1).ok

        threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
            assert not t.is_alive()
    assert sm.revision == len(sm.kv) == n_threads * per_thread
