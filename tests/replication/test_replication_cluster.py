"""Real three-peer PySyncObj clusters: separate processes on 127.0.0.1, OS-chosen ports.

Each test starts its own cluster (``make_cluster``), waits on conditions with deadlines,
and the fixture SIGKILLs and reaps every process it started.
"""

from __future__ import annotations

import time

import pytest

from replication_harness import PeerError, wait_until, wipe

pytestmark = pytest.mark.slow

SECRET = "5e" * 32


def write(peer, k, v, timeout=5.0):
    reply = peer.call("set", timeout=timeout, k=k, v=v)
    assert reply["result"]["ok"], reply
    return reply["result"]


def states_equal(peers, expected):
    return all(p.call("state")["state"]["kv"] == expected for p in peers)


def test_write_on_leader_is_visible_on_every_peer(make_cluster):
    cluster = make_cluster()
    leader = cluster.leader()
    expected = {}
    for i in range(30):
        r = write(leader, f"k{i}", i)
        assert r["revision"] == i + 1
        expected[f"k{i}"] = i
    for f in cluster.followers(leader):
        # a barrier on a follower: the read right after it sees every acknowledged write
        assert f.call("barrier")["state"]["kv"] == expected
        # and the apply listener fired there too, waking the revision notifier
        assert f.call("wait_above", revision=29, timeout=5)["revision"] == 30
        st = f.status()
        assert st["leader"] == leader.addr and not st["is_leader"] and st["is_ready"]
        assert st["partners"] == {p.addr: True for p in cluster.peers if p is not f}
        assert st["last_applied"] == st["commit_index"]


def test_write_sent_to_a_follower_gets_not_leader_with_the_leader_address(make_cluster):
    cluster = make_cluster()
    leader = cluster.leader()
    for f in cluster.followers(leader):
        with pytest.raises(PeerError) as info:
            write(f, "x", 1)
        assert info.value.code == "not_leader" and info.value.leader == leader.addr
    # nothing was forwarded behind our back
    assert leader.call("barrier")["state"]["kv"] == {}


def test_kill_leader_new_leader_accepts_writes_within_5s_and_keeps_acked_writes(make_cluster):
    cluster = make_cluster()
    leader = cluster.leader()
    acked = {}
    for i in range(25):
        write(leader, f"k{i}", i)
        acked[f"k{i}"] = i
    survivors = cluster.followers(leader)
    leader.kill()
    t0 = time.monotonic()

    def accepted():
        for p in survivors:
            reply = p.call("set", timeout=0.5, check=False, k="after", v=1)
            if reply["ok"] and reply["result"]["ok"]:
                return p
            assert reply.get("error") in ("not_leader", "no_leader",
                                          "timeout_outcome_unknown"), reply
        time.sleep(0.03)  # back off as a client should (pysyncobj.md §4.4 row E)
        return None

    new_leader = wait_until(accepted, 5.0, "a survivor to accept a write")
    elapsed = time.monotonic() - t0
    assert elapsed < 5.0
    state = new_leader.call("barrier")["state"]["kv"]
    assert {k: state.get(k) for k in acked} == acked and state["after"] == 1
    other = next(p for p in survivors if p is not new_leader)
    assert other.call("barrier")["state"]["kv"] == state
    # the leadership listener told the new leader, with the term it leads in
    reply = new_leader.call("status")
    assert reply["leadership"][-1] == [True, reply["status"]["term"]]


def test_peer_restarted_from_its_data_dir_recovers_and_catches_up(make_cluster):
    cluster = make_cluster()
    leader = cluster.leader()
    for i in range(10):
        write(leader, f"a{i}", i)
    victim = cluster.followers(leader)[0]
    wait_until(lambda: victim.call("state")["revision"] == 10, 5, "victim to apply 10")
    victim.kill()
    for i in range(10):
        write(leader, f"b{i}", i)
    victim.spawn()
    victim.wait_started()
    expected = leader.call("state")["state"]["kv"]
    wait_until(lambda: victim.call("state")["state"]["kv"] == expected, 10, "catch-up")
    st = victim.status()
    assert st["leader"] == leader.addr and st["term"] == leader.status()["term"]
    # it replayed its own journal: the leader only had to send the 10 missed entries
    assert victim.call("state")["applied"] == 20
    write(leader, "c", 1)
    assert victim.call("barrier")["state"]["kv"]["c"] == 1


def test_wiped_peer_catches_up_from_the_leader_snapshot(make_cluster):
    cluster = make_cluster(tuning={"log_compaction_min_entries": 20})
    leader = cluster.leader()
    expected = {}
    for i in range(80):
        write(leader, f"k{i}", i)
        expected[f"k{i}"] = i
    wait_until(lambda: leader.status()["log_len"] < 40, 10, "leader log compaction")
    victim = cluster.followers(leader)[0]
    victim.kill()
    wipe(victim.data_dir)
    victim.spawn()
    victim.wait_started()
    wait_until(lambda: victim.call("state")["state"]["kv"] == expected, 10,
               "wiped peer to catch up")
    reply = victim.call("status")
    # the state arrived as a snapshot, not as 80 replayed entries
    assert reply["notified"]["snapshots"] >= 1
    assert victim.call("state")["applied"] < 80
    assert (victim.data_dir / "raft.dump").exists()
    write(leader, "after", 1)
    assert victim.call("barrier")["state"]["kv"]["after"] == 1


def test_a_command_that_raises_leaves_every_peer_applying(make_cluster):
    cluster = make_cluster()
    leader = cluster.leader()
    write(leader, "before", 1)
    r = leader.call("boom")["result"]
    assert not r["ok"] and r["code"] == "internal"
    for i in range(5):
        write(leader, f"after{i}", i)
    expected = leader.call("state")["state"]["kv"]
    assert len(expected) == 6
    for p in cluster.peers:
        wait_until(lambda: p.call("state")["state"]["kv"] == expected, 5, "apply after boom")
        st = p.status()
        wait_until(lambda: (s := p.status())["last_applied"] == s["commit_index"], 5,
                   "no wedged entry")
        assert st["internal_errors"] == 1


def test_cluster_with_a_secret_replicates(make_cluster):
    cluster = make_cluster(secret=SECRET)
    leader = cluster.leader()
    write(leader, "s", 1)
    for f in cluster.followers(leader):
        assert f.call("barrier")["state"]["kv"] == {"s": 1}


def test_a_peer_with_another_secret_cannot_take_part(make_cluster):
    cluster = make_cluster(peer_secrets=[SECRET, SECRET, "77" * 32])
    good, outsider = cluster.peers[:2], cluster.peers[2]
    leader = cluster.leader(among=good)
    write(leader, "s", 1)
    follower = next(p for p in good if p is not leader)
    assert follower.call("barrier")["state"]["kv"] == {"s": 1}
    assert leader.status()["partners"] == {follower.addr: True, outsider.addr: False}
    st = outsider.status()
    assert st["leader"] is None and outsider.call("state")["state"]["kv"] == {}
    # and it is said, on both sides, once per host (PySyncObj alone drops it silently)
    said = "failed the cluster secret check"
    wait_until(lambda: said in outsider.log_tail(20000) and said in leader.log_tail(20000),
               10, "the failed secret check to be logged on both sides")
    assert outsider.log_tail(20000).count(said) == 1


def test_membership_add_and_remove_one_at_a_time(make_cluster):
    cluster = make_cluster(n=3)
    leader = cluster.leader()
    gone = cluster.followers(leader)[0]
    gone.kill()
    leader.call("remove_peer", addr=gone.addr, timeout=5)
    wait_until(lambda: gone.addr not in leader.status()["partners"], 5, "peer removed")
    write(leader, "two", 2)
    # what went wrong is said: not a member (removed already), already a member
    with pytest.raises(PeerError, match="not a member") as info:
        leader.call("remove_peer", addr=gone.addr)
    assert info.value.code == "conflict"
    other = cluster.followers(leader)[1]
    with pytest.raises(PeerError, match="already a member") as info:
        leader.call("add_peer", addr=other.addr)
    assert info.value.code == "conflict"


def test_the_leader_asked_to_remove_itself_hands_over_and_the_new_leader_removes_it(
        make_cluster):
    cluster = make_cluster(n=3)
    old = cluster.leader()
    write(old, "before", 1)
    with pytest.raises(PeerError) as info:
        old.call("remove_peer", addr=old.addr, timeout=10)
    assert info.value.code == "not_leader" and info.value.leader != old.addr
    new = next(p for p in cluster.peers if p.addr == info.value.leader)
    new.call("remove_peer", addr=old.addr, timeout=10)
    wait_until(lambda: old.addr not in new.status()["partners"], 5, "the old leader removed")
    old.kill()
    write(new, "after", 2)   # the two left are the whole cluster: a quorum of 2
