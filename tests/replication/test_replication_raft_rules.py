"""raftdir's Raft rules on top of PySyncObj (raftdir/replication/raft_rules.py), one peer
driven message by message: Raft's truncation rule, PreVote, leader stickiness, the leader
lease and the answer to a stale leader. Each test fails on stock PySyncObj.

The peer under test never ticks on its own (``autoTick=False``) and never connects:
what it sends is captured at the transport, after raftdir's fields were added."""

from __future__ import annotations

import logging
import math
from types import SimpleNamespace

import pytest
from pysyncobj import SyncObjConf
from pysyncobj.journal import FileJournal
from pysyncobj.transport import TCPTransport

from raftdir.replication import raft_rules
from raftdir.replication.raft_rules import (
    _FOLLOWER, PRE_VOTE, PRE_VOTE_RESPONSE, STALE_TERM, RaftRules,
)
from replication_harness import free_ports

MIN_TIMEOUT = 0.2


class Peer:
    """A ``RaftRules`` peer and what it sent, as ``(to, message)``."""

    def __init__(self, tmp_path, monkeypatch, clock) -> None:
        self.sent: list[tuple[str, dict]] = []
        monkeypatch.setattr(TCPTransport, "send", lambda transport, node, message:
                            self.sent.append((str(node), message)) or True)
        me, b, c = (f"127.0.0.1:{p}" for p in free_ports(3))
        self.journal_path = str(tmp_path / "raft.journal")
        conf = SyncObjConf(autoTick=False, journalFile=self.journal_path,
                           fullDumpFile=str(tmp_path / "raft.dump"), raftMinTimeout=MIN_TIMEOUT,
                           raftMaxTimeout=0.6, appendEntriesPeriod=0.05,
                           appendEntriesUseBatch=False, dynamicMembershipChange=True)
        self.so = RaftRules(me, [b, c], conf)
        self.nodes = {str(n): n for n in self.so.otherNodes}
        self.b, self.c = self.nodes[b], self.nodes[c]
        self.clock = clock

    def receive(self, node, message: dict) -> None:
        self.so._SyncObj__onMessageReceived(node, dict(message))

    def of_type(self, kind: str) -> list[tuple[str, dict]]:
        return [(to, m) for to, m in self.sent if m.get("type") == kind]

    def log(self) -> list[tuple[int, int]]:
        return [(e[1], e[2]) for e in self.so._SyncObj__raftLog]

    @property
    def term(self) -> int:
        return self.so.raftCurrentTerm

    def close(self) -> None:
        self.so._SyncObj__raftLog._destroy()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def peer(tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(raft_rules, "_monotonic", clock)
    p = Peer(tmp_path, monkeypatch, clock)
    yield p
    p.close()


def append(term: int, prev: tuple[int, int], entries: list[tuple[int, int]],
           commit: int = 0) -> dict:
    return {"type": "append_entries", "term": term, "commit_index": commit,
            "prevLogIdx": prev[0], "prevLogTerm": prev[1],
            "entries": [(b"\x01cmd%d" % idx, idx, t) for idx, t in entries],
            "rd_ts": 999.0}


# -- truncation ---------------------------------------------------------------------------

def test_a_resent_prefix_keeps_the_entries_after_it_on_disk_and_in_memory(peer, caplog):
    # the log holds 1 (PySyncObj's first no-op) .. 10, all acknowledged
    peer.receive(peer.b, append(1, (1, 0), [(i, 1) for i in range(2, 11)], commit=10))
    assert peer.log() == [(1, 0)] + [(i, 1) for i in range(2, 11)]
    # the leader re-sends 6..8 from lower down (a reset next index): Raft keeps 9 and 10
    with caplog.at_level(logging.CRITICAL):
        peer.receive(peer.b, append(1, (5, 1), [(6, 1), (7, 1), (8, 1)], commit=10))
    assert peer.log() == [(1, 0)] + [(i, 1) for i in range(2, 11)]
    assert not [r for r in caplog.records if r.levelno >= logging.CRITICAL]
    assert peer.of_type("next_node_idx")[-1][1]["next_node_idx"] == 9   # what it vouches for
    # a kill -9 right now: the journal on disk holds every acknowledged entry
    on_disk = FileJournal(peer.journal_path)
    try:
        assert [(e[1], e[2]) for e in (on_disk[i] for i in range(len(on_disk)))] == \
            peer.log()
    finally:
        on_disk._destroy()


def test_the_log_is_cut_only_at_the_first_conflicting_term(peer):
    peer.receive(peer.b, append(1, (1, 0), [(i, 1) for i in range(2, 11)], commit=5))
    # a new leader of term 2 holds 1..7 of term 1 and its own 8: 8..10 go, 8 is replaced
    peer.receive(peer.c, append(2, (6, 1), [(7, 1), (8, 2)], commit=5))
    assert peer.log() == [(1, 0)] + [(i, 1) for i in range(2, 8)] + [(8, 2)]


def test_the_commit_index_never_covers_entries_the_leader_did_not_vouch_for(peer):
    peer.receive(peer.b, append(1, (1, 0), [(i, 1) for i in range(2, 11)], commit=3))
    assert peer.so.raftCommitIndex == 3
    # a new leader (term 2) that committed up to 9 sends from 5: 6..10 here are not known
    # to match its log yet, so only up to 5 may be committed
    peer.receive(peer.c, append(2, (5, 1), [], commit=9))
    assert peer.so.raftCommitIndex == 5
    peer.receive(peer.c, append(2, (5, 1), [(6, 1), (7, 1)], commit=9))
    assert peer.so.raftCommitIndex == 7


# -- stickiness and the stale-term answer -----------------------------------------------

def vote_request(term: int, last: tuple[int, int], **extra) -> dict:
    return {"type": "request_vote", "term": term, "last_log_index": last[0],
            "last_log_term": last[1], **extra}


def test_a_follower_that_heard_from_its_leader_ignores_a_vote_request(peer):
    peer.receive(peer.b, append(3, (1, 0), [(2, 3)]))
    assert peer.term == 3
    peer.clock.now += MIN_TIMEOUT / 2
    peer.receive(peer.c, vote_request(9, (2, 3)))
    assert peer.term == 3 and peer.of_type("response_vote") == []   # no term bump, no vote
    peer.receive(peer.c, vote_request(9, (2, 3), rd_transfer=True))  # a leader's transfer
    assert peer.term == 9 and len(peer.of_type("response_vote")) == 1


def test_without_a_leader_for_the_minimum_timeout_a_follower_votes(peer):
    peer.receive(peer.b, append(3, (1, 0), [(2, 3)]))
    peer.clock.now += MIN_TIMEOUT
    peer.receive(peer.c, vote_request(4, (2, 3)))
    assert peer.term == 4 and peer.of_type("response_vote") == [(str(peer.c), {
        "type": "response_vote", "term": 4})]


def test_a_stale_leader_is_told_the_higher_term_and_steps_down(peer):
    peer.receive(peer.b, append(5, (1, 0), []))
    peer.receive(peer.c, append(4, (1, 0), []))           # c still thinks it leads term 4
    assert peer.of_type(STALE_TERM) == [(str(peer.c), {"type": STALE_TERM, "term": 5})]
    assert peer.so._SyncObj__raftLeader == peer.b and peer.term == 5
    # the other side: a leader told of a higher term follows
    peer.so._SyncObj__onBecomeLeader()
    assert peer.so._isLeader()
    peer.receive(peer.c, {"type": STALE_TERM, "term": 8})
    assert not peer.so._isLeader() and peer.term == 8


# -- PreVote --------------------------------------------------------------------------------

def time_out(peer) -> None:
    """Let the election timer fire, connected to both partners."""
    peer.so._SyncObj__connectedNodes.update({peer.b, peer.c})
    peer.so._SyncObj__raftElectionDeadline = 0.0
    peer.so._rd_before_election()


def test_a_timed_out_follower_asks_for_pre_votes_and_keeps_its_term(peer):
    peer.receive(peer.b, append(3, (1, 0), [(2, 3)]))
    time_out(peer)
    assert peer.term == 3 and peer.of_type("request_vote") == []
    pre = peer.of_type(PRE_VOTE)
    assert sorted(to for to, _ in pre) == sorted([str(peer.b), str(peer.c)])
    assert pre[0][1] == {"type": PRE_VOTE, "term": 4, "last_log_index": 2, "last_log_term": 3}
    # a refusal changes nothing; one grant is a majority with our own
    peer.receive(peer.b, {"type": PRE_VOTE_RESPONSE, "term": 4, "granted": False,
                          "voter_term": 3})
    assert not peer.so._rd_pre_vote_won
    peer.receive(peer.c, {"type": PRE_VOTE_RESPONSE, "term": 4, "granted": True,
                          "voter_term": 3})
    assert peer.so._rd_pre_vote_won and peer.so._SyncObj__raftElectionDeadline == 0.0
    peer.so._rd_before_election()   # the next tick: PySyncObj's own election goes ahead
    assert len(peer.of_type(PRE_VOTE)) == 2


def test_hearing_from_a_leader_cancels_a_won_pre_vote(peer):
    time_out(peer)
    peer.receive(peer.c, {"type": PRE_VOTE_RESPONSE, "term": 1, "granted": True,
                          "voter_term": 0})
    assert peer.so._rd_pre_vote_won
    peer.receive(peer.b, append(1, (1, 0), []))
    assert not peer.so._rd_pre_vote_won
    time_out(peer)
    assert len(peer.of_type(PRE_VOTE)) == 4   # a new round, not a real election


def test_a_pre_vote_refused_with_a_higher_term_moves_our_term_up(peer):
    time_out(peer)
    peer.receive(peer.b, {"type": PRE_VOTE_RESPONSE, "term": 1, "granted": False,
                          "voter_term": 7})
    assert peer.term == 7 and peer.so._rd_pre_vote is None


def pre_vote(term: int, last: tuple[int, int]) -> dict:
    return {"type": PRE_VOTE, "term": term, "last_log_index": last[0],
            "last_log_term": last[1]}


def granted(peer) -> list[bool]:
    return [m["granted"] for _, m in peer.of_type(PRE_VOTE_RESPONSE)]


def test_a_pre_vote_is_granted_only_out_of_lease_to_a_higher_term_and_a_full_log(peer):
    peer.receive(peer.b, append(3, (1, 0), [(2, 3), (3, 3)]))
    peer.receive(peer.c, pre_vote(4, (3, 3)))                  # b led a moment ago
    peer.clock.now += MIN_TIMEOUT
    peer.receive(peer.c, pre_vote(4, (2, 3)))                  # its log is shorter
    peer.receive(peer.c, pre_vote(3, (3, 3)))                  # not above our term
    peer.receive(peer.c, pre_vote(4, (3, 3)))
    assert granted(peer) == [False, False, False, True]
    assert peer.term == 3 and peer.so.raftCurrentTerm == 3     # a pre-vote changes nothing


def test_granting_a_pre_vote_restarts_our_own_election_timer(peer):
    peer.receive(peer.b, append(3, (1, 0), [(2, 3)]))
    peer.clock.now += 1.0
    peer.so._SyncObj__raftElectionDeadline = peer.clock.now - 0.01   # ours is due too
    peer.receive(peer.c, pre_vote(4, (2, 3)))
    assert granted(peer) == [True]
    deadline = peer.so._SyncObj__raftElectionDeadline
    assert peer.clock.now + MIN_TIMEOUT <= deadline <= peer.clock.now + 0.6
    peer.receive(peer.c, pre_vote(4, (1, 0)))                  # refused: no new delay
    assert granted(peer) == [True, False]
    assert peer.so._SyncObj__raftElectionDeadline == deadline


def test_of_two_peers_pre_voting_together_the_lower_address_goes_on(peer):
    # the seeded nemesis run: the leader killed, both followers' timers fired together,
    # both won their pre-votes and split the real vote (term +2 for one election)
    me = str(peer.so.selfNode.id)
    # a peer ranked below us and one ranked above (addresses compare as text)
    below, above = SimpleNamespace(id="0.0.0.0:1"), SimpleNamespace(id="z:1")
    for other in (below, above):
        peer.sent.clear()
        peer.so._rd_pre_vote, peer.so._rd_pre_vote_won = None, False
        peer.receive(peer.b, append(3, (1, 0), [(2, 3)]))
        peer.clock.now += MIN_TIMEOUT                      # b's lease is over: b died
        time_out(peer)                                     # our round for term 4 runs
        assert peer.so._rd_pre_vote is not None
        peer.receive(other, pre_vote(4, (2, 3)))            # theirs too, at the same time
        assert granted(peer) == [True]
        peer.receive(peer.c, {"type": PRE_VOTE_RESPONSE, "term": 4, "granted": True,
                              "voter_term": 3})
        lower = other is below
        assert peer.so._rd_pre_vote_won is (not lower), (str(other.id), me)
        if lower:      # gave its round up, and waits a whole timeout before the next
            assert peer.so._SyncObj__raftElectionDeadline >= peer.clock.now + MIN_TIMEOUT


# -- the leader lease -----------------------------------------------------------------------

def lead(peer) -> float:
    """Make the peer the leader of term 1; returns the send time of its first append."""
    peer.so._SyncObj__connectedNodes.update({peer.b, peer.c})
    peer.so._SyncObj__setCurrentTerm(1, None)
    peer.so._SyncObj__onBecomeLeader()
    appends = peer.of_type("append_entries")
    assert appends and all(m["rd_ts"] == peer.clock.now for _, m in appends)
    return peer.clock.now


def echo(peer, node, ts: float) -> None:
    peer.receive(node, {"type": "next_node_idx", "next_node_idx": 2, "reset": False,
                        "success": True, "rd_echo": ts})


def test_the_lease_holds_from_a_majority_echo_for_the_minimum_timeout(peer):
    sent_at = lead(peer)
    peer.so._rd_account_lease()
    assert not peer.so.has_lease()                 # nobody answered yet
    peer.clock.now += 0.01
    echo(peer, peer.b, sent_at)
    peer.so._rd_account_lease()
    assert peer.so.has_lease()                     # b and this peer: a majority of 3
    assert peer.so._rd_in_lease(peer.clock.now)
    peer.clock.now = sent_at + MIN_TIMEOUT         # b may vote again from now on
    assert not peer.so.has_lease()


def test_an_echo_of_a_request_from_before_this_leadership_is_no_lease(peer):
    sent_at = lead(peer)
    echo(peer, peer.b, sent_at - 1.0)              # answers a request of an older term
    peer.so._rd_account_lease()
    assert not peer.so.has_lease()


def test_a_leadership_transfer_gives_the_lease_up(peer):
    sent_at = lead(peer)
    echo(peer, peer.b, sent_at)
    peer.so._rd_account_lease()
    assert peer.so.has_lease()
    peer.so._SyncObj__transport.send(peer.c, {"type": "timeout_now", "term": 1})
    echo(peer, peer.c, sent_at)
    peer.so._rd_account_lease()
    assert not peer.so.has_lease()


def test_the_lease_clock_runs_only_while_the_lease_holds(peer):
    sent_at = lead(peer)
    peer.so._rd_account_lease()
    start = peer.so.lease_clock()
    peer.clock.now += 1.0                          # no echo: no lease, the clock stands
    peer.so._rd_account_lease()
    assert peer.so.lease_clock() == start
    echo(peer, peer.b, peer.clock.now - 0.05)      # a fresh round trip
    peer.so._rd_account_lease()
    peer.clock.now += 0.1
    assert peer.so.lease_clock() == pytest.approx(start + 0.1)
    peer.clock.now += 1.0                          # the lease ran out 0.05 s later
    assert peer.so.lease_clock() == pytest.approx(start + 0.15)
    peer.so._rd_account_lease()
    assert peer.so.lease_clock() == pytest.approx(start + 0.15)
    assert peer.so.unleased_seconds() == pytest.approx(
        peer.clock.now - peer.so.lease_clock())
    del sent_at


def test_a_single_voter_always_holds_its_lease(tmp_path, monkeypatch):
    monkeypatch.setattr(TCPTransport, "send", lambda *a: True)
    addr = f"127.0.0.1:{free_ports(1)[0]}"
    so = RaftRules(addr, [], SyncObjConf(autoTick=False, raftMinTimeout=MIN_TIMEOUT,
                                          raftMaxTimeout=0.6, appendEntriesPeriod=0.05))
    so._SyncObj__setCurrentTerm(1, None)
    so._SyncObj__onBecomeLeader()
    so._rd_account_lease()
    assert so.has_lease() and so._rd_lease[2] == math.inf


# -- read-only replicas ---------------------------------------------------------------------

def connect_replica(peer):
    """A read-only node connects to the peer (PySyncObj names it by a counter)."""
    from pysyncobj.node import Node
    node = Node("0")
    peer.so._SyncObj__onReadonlyNodeConnected(node)
    return node


def replica_answer(ts: float, seen=(4, "127.0.0.1:7204", 9)) -> dict:
    return {"type": "next_node_idx", "next_node_idx": 10, "reset": False, "success": True,
            "rd_echo": ts, "rd_replica": list(seen)}


def test_a_replica_never_counts_toward_the_lease_and_is_named_by_its_answers(peer):
    sent_at = lead(peer)
    replica = connect_replica(peer)
    for _ in range(3):                             # however often it answers
        peer.receive(replica, replica_answer(sent_at))
    peer.so._rd_account_lease()
    assert not peer.so.has_lease()                 # only voters' echoes make a lease
    assert [(r.node_id, r.api_addr, r.applied) for r in peer.so.replicas(1.0)] == \
        [(4, "127.0.0.1:7204", 9)]
    peer.clock.now += 2.0                          # it stopped answering
    assert peer.so.replicas(1.0) == []
    peer.receive(replica, replica_answer(sent_at))
    peer.so._SyncObj__onReadonlyNodeDisconnected(replica)
    peer.so._rd_after_tick()                       # its connection closed: forgotten
    assert peer.so.replicas(10.0) == []


def test_a_malformed_replica_identity_is_ignored(peer):
    sent_at = lead(peer)
    replica = connect_replica(peer)
    for seen in ((4, 5, 9), ("4", "a:1", 9), (4, "x" * 301, 9), (4, "a:1")):
        peer.receive(replica, replica_answer(sent_at, seen))
    peer.receive(peer.b, replica_answer(sent_at))  # a voter is never a replica
    assert peer.so.replicas(10.0) == []


@pytest.fixture
def replica(tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(raft_rules, "_monotonic", clock)
    sent: list[tuple[str, dict]] = []
    monkeypatch.setattr(TCPTransport, "send", lambda transport, node, message:
                        sent.append((str(node), message)) or True)
    b, c = (f"127.0.0.1:{p}" for p in free_ports(2))
    conf = SyncObjConf(autoTick=False, journalFile=str(tmp_path / "raft.journal"),
                       fullDumpFile=str(tmp_path / "raft.dump"), raftMinTimeout=MIN_TIMEOUT,
                       raftMaxTimeout=0.6, appendEntriesPeriod=0.05,
                       appendEntriesUseBatch=False, dynamicMembershipChange=True)
    so = RaftRules(None, [b, c], conf, replica=(4, "127.0.0.1:7204"))
    so.clock, so.sent = clock, sent
    so.leader = {str(n): n for n in so.otherNodes}[b]
    yield so
    so._SyncObj__raftLog._destroy()


def test_a_replica_sends_its_identity_and_never_asks_for_votes(replica):
    replica._SyncObj__connectedNodes.update(replica.otherNodes)
    replica._SyncObj__onMessageReceived(replica.leader, append(1, (1, 0), [(2, 1)], 2))
    answers = [m for _, m in replica.sent if m["type"] == "next_node_idx"]
    assert answers[-1]["rd_replica"] == [4, "127.0.0.1:7204", 1] and "rd_echo" in answers[-1]
    replica.clock.now += 5.0                       # long past any election timeout
    replica._rd_before_election()
    replica._SyncObj__onMessageReceived(replica.leader, {
        "type": "request_vote", "term": 9, "last_log_index": 99, "last_log_term": 9})
    assert not [m for _, m in replica.sent if m["type"] in (PRE_VOTE, "request_vote",
                                                            "response_vote")]
    assert replica.raftCurrentTerm == 1


def test_a_replica_is_caught_up_as_of_the_last_append_whose_commit_it_applied(replica):
    assert replica.replica_lag() == (math.inf, None)   # never caught up yet
    replica._SyncObj__onMessageReceived(replica.leader, append(1, (1, 0), [(2, 1)], 2))
    replica._rd_after_tick()                           # entry 2 not applied yet
    assert replica.replica_lag() == (math.inf, 1)
    # a steady stream: each append commits one more entry than this replica applied
    for idx in range(3, 8):
        replica._SyncObj__raftLastApplied = idx - 1    # the previous commit is applied
        replica.clock.now += 0.05
        replica._SyncObj__onMessageReceived(replica.leader,
                                            append(1, (idx - 1, 1), [(idx, 1)], idx))
        replica._rd_after_tick()
        # it held every commit but the newest: caught up as of the previous append
        assert replica.replica_lag()[0] == pytest.approx(0.05)
        assert replica.replica_lag()[1] == 1
    replica.clock.now += 3.0                           # no leader since
    assert replica.replica_lag()[0] == pytest.approx(3.05)


# -- long applies ---------------------------------------------------------------------------

def test_a_peer_that_stalled_listens_again_before_it_may_elect(peer):
    peer.so._SyncObj__connectedNodes.update({peer.b, peer.c})
    peer.so._rd_after_stall()
    peer.so._SyncObj__raftElectionDeadline = peer.clock.now + 0.3
    peer.clock.now += 1.0                          # a tick that took a second
    peer.so._rd_after_stall()
    assert peer.so._SyncObj__raftElectionDeadline == pytest.approx(peer.clock.now
                                                                   + MIN_TIMEOUT)
    peer.so._rd_before_election()
    assert not peer.of_type(PRE_VOTE)              # not in this tick
    for _ in range(5):                             # still silent after listening: elect
        peer.clock.now += 0.05                     # (ticks of 50 ms)
        peer.so._rd_after_stall()
        peer.so._rd_before_election()
    assert peer.of_type(PRE_VOTE)


@pytest.mark.parametrize("how", ["lost its quorum", "met a higher term"])
def test_a_leader_that_steps_down_waits_an_election_timeout_before_it_elects(peer, how):
    # the seeded nemesis run: two of three peers paused for 7 s, then resumed; the old
    # leader stepped down at once and, its election deadline long past, elected at its
    # next tick against the third peer's election: three terms for one fault
    lead(peer)
    peer.so._SyncObj__raftElectionDeadline = peer.clock.now - 7.0   # set as a follower
    peer.clock.now += 7.0
    if how == "lost its quorum":      # what PySyncObj's leaderFallbackTimeout check does
        peer.so._SyncObj__setState(_FOLLOWER)
    else:                             # a vote request of a higher term, with a shorter log
        peer.receive(peer.c, vote_request(5, (0, 0)))
    assert peer.so._SyncObj__raftState == _FOLLOWER and peer.term >= 1
    assert peer.so._SyncObj__raftElectionDeadline >= peer.clock.now + MIN_TIMEOUT
    peer.so._rd_before_election()
    assert not peer.of_type(PRE_VOTE)
    peer.clock.now += 0.7                                  # past the longest timeout
    peer.so._rd_before_election()
    assert peer.of_type(PRE_VOTE)


def test_a_leader_announces_a_large_commit_before_applying_it(peer):
    lead(peer)
    so = peer.so
    idx = so._SyncObj__getCurrentLogIndex()
    for size in (100, raft_rules.LARGE_APPLY_BYTES):
        idx += 1
        so._SyncObj__raftLog.add(b"\x00" + b"x" * size, idx, 1)
        so._SyncObj__raftCommitIndex = idx
        so._SyncObj__raftLastApplied = idx - 1
        peer.sent.clear()
        monkey = []
        so._SyncObj__doApplyCommand = lambda command: monkey.append(
            len(peer.of_type("append_entries")))
        so._SyncObj__applyLogEntries()
        # appends went out before the apply only for the large entry
        assert monkey == [0 if size == 100 else 2], (size, monkey)
