"""PySyncObjNode in this process, as a one-peer cluster on 127.0.0.1: the adapter's own
rules (apply never wedges, barrier, outcomes, snapshot format, restart from the data dir)
without the cost of extra processes."""

from __future__ import annotations

import asyncio
import os
import time

import msgpack
import pytest

from raftdir.core.result import Result
from raftdir.errors import ConfigError, NoLeader
from raftdir.replication.pysyncobj_node import DUMP_FILE, PySyncObjNode, read_snapshot_file
from raftdir.replication.tuning import RaftTuning
from replication_harness import TEST_TUNING, free_ports
from replication_toy import ToyKV, cmd

from raftdir.testing import wait_until as wait_for


def start_single(tmp_path, sm, tuning, secret=None):
    for _ in range(5):
        addr = f"127.0.0.1:{free_ports(1)[0]}"
        node = PySyncObjNode(addr, [], str(tmp_path / "data"), sm, secret=secret, tuning=tuning)
        try:
            node.start()
        except ConfigError:
            continue  # port taken meanwhile: try another
        return node
    raise AssertionError("could not bind a port in 5 tries")


@pytest.fixture
def single(tmp_path, tuning):
    nodes = []

    def make(sm=None, tuning=tuning, secret=None):
        node = start_single(tmp_path, sm or ToyKV(), tuning, secret)
        nodes.append(node)
        wait_for(node.is_leader, 5, "single peer to elect itself")
        return node

    yield make
    for n in nodes:
        n.stop()


def test_propose_refusal_raise_barrier_async_and_listeners(single):
    sm = ToyKV()
    node = single(sm)
    seen: list[tuple[int, Result | None]] = []
    lead: list[tuple[bool, int]] = []
    node.add_apply_listener(lambda rev, res: seen.append((rev, res)))
    node.add_leadership_listener(lambda is_leader, term: lead.append((is_leader, term)))
    assert lead == [(True, node.term())] and node.term() >= 1

    r = node.propose(cmd("set", k="a", v=1), timeout=5)
    assert r.ok and r.revision == 1 and sm.kv == {"a": 1}
    r = node.propose(cmd("refuse"), timeout=5)
    assert not r.ok and r.code == "stale"
    r = node.propose(cmd("boom"), timeout=5)
    assert not r.ok and r.code == "internal"
    # the node is not wedged: later entries still apply (pysyncobj.md finding 2)
    r = node.propose(cmd("set", k="b", v=2), timeout=5)
    assert r.ok and sm.kv == {"a": 1, "b": 2}
    st = node.status()
    assert st["last_applied"] == st["commit_index"] and st["internal_errors"] == 1

    applied_before = sm.applied
    node.barrier(5)
    r = asyncio.run(node.propose_async(cmd("set", k="c", v=3), 5))
    assert r.ok and r.revision == 3
    asyncio.run(node.barrier_async(5))
    assert sm.applied == applied_before + 1  # barriers never reach the state machine
    assert [rev for rev, _ in seen] == [1, 1, 1, 2, 3]
    assert [res.code for _, res in seen] == [None, "stale", "internal", None, None]


def test_status_shape(single):
    node = single()
    st = node.status()
    for key in ("self", "leader", "term", "commit_index", "last_applied", "log_len",
                "partners", "is_ready"):
        assert key in st
    assert st["self"] == st["leader"] == node.address and st["state"] == "leader"
    assert st["partners"] == {}


def test_raising_listener_does_not_double_apply(single):
    sm = ToyKV()
    node = single(sm)
    node.add_apply_listener(lambda rev, res: 1 / 0)
    for i in range(5):
        assert node.propose(cmd("set", k=f"k{i}", v=i), 5).ok
    assert sm.applied == 5 and sm.revision == 5


def test_snapshot_is_msgpack_and_restart_restores_it(tmp_path, single):
    tuning = RaftTuning(**{**TEST_TUNING, "log_compaction_min_entries": 20})
    sm = ToyKV()
    node = single(sm, tuning=tuning)
    for i in range(60):
        assert node.propose(cmd("set", k=f"k{i}", v=i), 5).ok
    dump = tmp_path / "data" / DUMP_FILE
    wait_for(dump.exists, 10, "a dump file")
    raw = msgpack.unpackb(dump.read_bytes(), raw=False)
    assert raw["format"] == 1 and raw["state"]["format"] == 1
    assert set(raw["raft"]) == {"last", "prev", "cluster"}
    assert raw["raft"]["cluster"] == [node.address]
    doc = read_snapshot_file(str(dump))
    assert doc["raft"]["last"][1] == doc["raft"]["prev"][1] + 1
    wait_for(lambda: node.status()["log_len"] < 60, 10, "log compaction")
    addr = node.address
    node.stop()

    sm2 = ToyKV()
    node2 = PySyncObjNode(addr, [], str(tmp_path / "data"), sm2, tuning=tuning)
    try:
        node2.start()
        wait_for(lambda: sm2.revision == 60, 10, "restored state")
        assert sm2.kv == sm.kv
        # the snapshot was the base; the journal tail was replayed on top of it
        assert sm2.applied < 60
        wait_for(node2.is_leader, 5, "re-election")
        assert node2.propose(cmd("set", k="after", v=1), 5).revision == 61
    finally:
        node2.stop()


def test_unusable_addresses_and_stopped_node(tmp_path, tuning):
    with pytest.raises(ConfigError, match="wildcard"):
        PySyncObjNode("0.0.0.0:4000", [], str(tmp_path), ToyKV(), secret="ab" * 32)
    with pytest.raises(ConfigError, match="cluster secret"):
        PySyncObjNode("10.0.0.1:4000", [], str(tmp_path), ToyKV())
    node = PySyncObjNode("127.0.0.1:4000", [], str(tmp_path), ToyKV(), tuning=tuning)
    with pytest.raises(NoLeader):
        node.propose(cmd("set", k="a", v=1), 1)
    assert node.status()["state"] == "stopped"


def test_bind_clash_is_a_config_error(tmp_path, single):
    first = single()
    fast = RaftTuning(**{**TEST_TUNING, "bind_retry_time": 0.05, "max_bind_retries": 2})
    other = PySyncObjNode(first.address, [], str(tmp_path / "other"), ToyKV(), tuning=fast)
    with pytest.raises(ConfigError, match="cannot bind") as info:
        other.start()
    assert info.value.field == "raft_addr"


def test_with_secret_the_single_peer_works(single):
    node = single(secret="ab" * 32)
    assert node.propose(cmd("set", k="s", v=1), 5).ok


def test_concurrent_proposals_from_threads_and_asyncio(single):
    import threading

    sm = ToyKV()
    node = single(sm)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(50):
                assert node.propose(cmd("set", k=f"t{t}-{i}", v=i), 5).ok
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()

    async def burst():
        results = await asyncio.gather(*(node.propose_async(cmd("set", k=f"a{i}", v=i), 5)
                                         for i in range(200)))
        assert all(r.ok for r in results)
        await asyncio.gather(*(node.barrier_async(5) for _ in range(20)))

    asyncio.run(burst())
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    assert not errors, errors
    assert sm.revision == len(sm.kv) == 8 * 50 + 200


def test_blocking_call_from_a_listener_is_refused_not_deadlocked(single):
    node = single(ToyKV())
    seen: list[BaseException] = []

    def listener(rev, res):
        try:
            node.propose(cmd("set", k="nested", v=1), 1)
        except RuntimeError as exc:
            seen.append(exc)

    node.add_apply_listener(listener)
    assert node.propose(cmd("set", k="a", v=1), 5).ok
    assert len(seen) == 1 and "tick thread" in str(seen[0])


def test_async_propose_timeout_is_outcome_unknown(single):
    from raftdir.errors import TimeoutOutcomeUnknown

    node = single(ToyKV())
    with pytest.raises(TimeoutOutcomeUnknown):
        asyncio.run(node.propose_async(cmd("sleep", secs=0.3), 0.05))
    with pytest.raises(TimeoutOutcomeUnknown):
        node.propose(cmd("sleep", secs=0.3), 0.05)
    node.barrier(5)  # the timed-out writes did commit; the node is fine
    assert node.state_machine.applied == 2


@pytest.mark.parametrize("content", [b"not msgpack \xff\xff", b"\x81\xa6format\x63"])
def test_unreadable_dump_refuses_to_start(tmp_path, tuning, content):
    data = tmp_path / "data"
    data.mkdir()
    (data / DUMP_FILE).write_bytes(content)
    node = PySyncObjNode(f"127.0.0.1:{free_ports(1)[0]}", [], str(data), ToyKV(), tuning=tuning)
    with pytest.raises(ConfigError, match="unreadable raft snapshot") as info:
        node.start()
    assert info.value.field == "data_dir"
    assert node.status()["state"] == "stopped"
