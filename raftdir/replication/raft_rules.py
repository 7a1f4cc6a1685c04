"""Where raftdir's Raft differs from PySyncObj 0.3.17's: PreVote, leader stickiness, the
leader lease and Raft's truncation rule. The one place these rules live.

Raft's paper (§5.3, §6 and the thesis §9.6, §4.2.3) and etcd-io/raft are the reference.
What PySyncObj does, and what ``RaftRules`` does instead:

- **PreVote** (thesis §9.6). PySyncObj's follower whose election timer fires bumps its
  term and asks for votes; every peer that hears a higher term adopts it, so a follower
  that was cut off, paused or restarted deposes a healthy leader when it comes back. Here
  a peer first asks ``rd_pre_vote`` for ``term + 1`` without changing anything; only when
  a majority (itself included) says it could win does it start the real election. A
  pre-vote is granted when the candidate's term would be higher, its log is at least as
  up to date, and the voter has not heard from a leader within ``raftMinTimeout``; a
  voter that grants one restarts its own election timer, so two peers that time out
  together do not both start elections and split the vote.
- **Leader stickiness** (thesis §4.2.3, etcd's ``inLease``). A peer that heard from a
  live leader within ``raftMinTimeout`` (or leads and holds its lease) ignores
  ``request_vote``: no term bump, no vote. A vote asked for by a leadership transfer
  (``timeout_now``) is exempt, as etcd exempts ``campaignTransfer``.
- **The leader lease.** Every ``append_entries`` the leader sends carries its send time
  (``rd_ts``), and a follower's answer echoes the time of the request it answers
  (``rd_echo``). Because of stickiness a follower that processed that request votes for
  nobody else until ``raftMinTimeout`` after it, so while a majority echoed a send time
  ``s`` the leader knows no other leader can be elected before ``s + raftMinTimeout``:
  that is its lease. Answers delayed by a pause carry their old send time, so a leader
  resumed from SIGSTOP holds no lease until a fresh round trip. ``has_lease()`` gates
  every acknowledgement that grants a worker a lease (raftdir.server), and
  ``lease_clock()`` counts only the seconds this peer held a lease, which the leader's
  lease deadlines are measured in (raftdir.leader.leases).
- **A higher term answers a stale leader.** With stickiness a peer that got a higher term
  (a failed real election) can no longer announce it with a vote request, and PySyncObj
  drops ``append_entries`` of a lower term silently, so that peer could never rejoin.
  It answers them with ``rd_stale_term``; the stale leader steps down (etcd answers
  ``MsgApp`` of a lower term with ``MsgAppResp`` for the same reason).
- **Truncation.** PySyncObj's follower deletes every entry after ``prevLogIdx`` whenever
  the leader sends from lower down, even entries that match, and logs CRITICAL when they
  were applied; with a journal, a crash between the delete and the re-append loses
  entries this peer acknowledged. Here (Raft §5.3, AppendEntries step 3-4) entries the
  follower holds with the same term are kept, the log is cut only at the first entry
  whose term conflicts, and the commit index moves only up to the last entry the leader
  vouched for (``min(leaderCommit, index of last new entry)``), never onto an unverified
  tail. Chunked entries (``transmission``) and snapshots keep PySyncObj's path; raftdir
  never sends chunked entries (``build_conf`` raises ``appendEntriesBatchSizeBytes``
  above any entry it makes).

- **Long applies.** PySyncObj's tick applies committed entries, then sends appends, and
  counts election timeouts in wall time: one entry that takes a second to apply (a scale
  over 50,000 workers) silenced the leader for that second and made the followers, which
  then stalled on the same entry, elect. Here a leader announces large committed entries
  before applying them, and a peer whose tick ran longer than ``raftMinTimeout`` listens
  for that long again before it may start an election.
- **Simultaneous pre-votes.** Two peers whose timers fire together (the leader killed,
  both followers out of its lease) both won their pre-votes and split the real vote: a
  second term for one election (the seeded nemesis run: `kill_leader`, term +2). A peer
  that grants a pre-vote while its own round for that term runs gives its round up when
  the other peer's address is lower; the lower one goes on, so one election follows.
- **Stepping down restarts the election timer** (etcd's ``becomeFollower`` resets it).
  PySyncObj's leader that loses its quorum (``leaderFallbackTimeout``) or meets a higher
  term becomes a follower without touching the election deadline it last set as a
  follower, long past, so it stood for election at its next tick: after a pause of two of
  three peers the old leader and the third peer elected at once, three terms for one
  fault (found by the seeded nemesis run). Here any change into the follower state gives
  a fresh randomized election timeout.
- **Read-only replicas** (``SyncObj(None, partners)``, PySyncObj's own read-only node).
  PySyncObj already keeps them out of votes, commits and ``leaderFallbackTimeout``; here
  they are kept out of the lease too (only voters' echoes count) and never pre-vote. Two
  additions: a replica's answers carry ``rd_replica`` = ``[node id, API address, last
  applied]``, because PySyncObj knows a read-only node only by a connection counter, so
  the leader can name its replicas (``replicas()``: the server list it gives workers, and
  ``raftdir peers``); and a replica tracks ``caught_up_at()``, when it last held
  everything a leader had committed (``replica_lag()``), which decides whether it may
  answer polls.

Threads: everything here runs on PySyncObj's tick thread, except ``has_lease``,
``lease_clock``, ``unleased_seconds``, ``replicas`` and ``replica_lag``, which any thread
may call (they read values the tick thread replaces whole).

Must not import: anything of raftdir (a leaf under the adapter); it reaches into
PySyncObj's private attributes, which ``setup.cfg`` pins (pysyncobj < 0.4).
"""

from __future__ import annotations

import collections
import logging
import math
import time
from typing import Any, NamedTuple

from pysyncobj.syncobj import SyncObj
from pysyncobj.transport import TCPTransport

__all__ = ["RaftRules", "PRE_VOTE", "PRE_VOTE_RESPONSE", "STALE_TERM", "REPLICA_KEY",
           "ReplicaSeen"]

logger = logging.getLogger(__name__)

PRE_VOTE = "rd_pre_vote"
PRE_VOTE_RESPONSE = "rd_pre_vote_response"
STALE_TERM = "rd_stale_term"
#: Committed entries at least this large (bytes) are announced before the leader applies
#: them (``_SyncObj__applyLogEntries``).
LARGE_APPLY_BYTES = 64 * 1024
REPLICA_KEY = "rd_replica"   # on a replica's next_node_idx: [node id, API address, applied]
_MAX_REPLICA_ADDR = 300

_FOLLOWER, _CANDIDATE, _LEADER = 0, 1, 2   # pysyncobj.syncobj._RAFT_STATE


def _monotonic() -> float:
    return time.monotonic()   # what pysyncobj.monotonic uses on Python 3


class _StampingTransport(TCPTransport):
    """PySyncObj's transport, letting ``RaftRules`` add its fields to what leaves. Calls
    ``TCPTransport.send`` as it is at the time (``durable_journal`` wraps it)."""

    def send(self, node: Any, message: Any) -> Any:
        self._syncObj._rd_stamp(message)
        return TCPTransport.send(self, node, message)


class ReplicaSeen(NamedTuple):
    """What a leader last heard from one replica (``at``: this module's monotonic clock)."""

    node_id: int
    api_addr: str
    applied: int
    at: float


class RaftRules(SyncObj):
    """A ``SyncObj`` with raftdir's vote, lease and truncation rules; subclass it as you
    would ``SyncObj``. ``replica``: ``(node id, API address)`` of a read-only node
    (``selfNode`` None), sent to the leader with its answers."""

    def __init__(self, selfNode: Any, otherNodes: Any, conf: Any,  # noqa: N803
                 replica: tuple[int, str] | None = None, **kwargs: Any) -> None:
        # Everything the tick thread reads exists before SyncObj.__init__ starts it.
        self._rd_identity = (list(replica) if replica is not None and selfNode is None
                             else None)
        self._rd_replicas: dict[Any, ReplicaSeen] = {}   # leader: replaced whole
        self._rd_caught_up_at = -math.inf   # replica: last held all a leader committed
        # replica: (leader commit index, when an append told it), oldest first
        self._rd_commits: collections.deque[tuple[int, float]] = collections.deque(
            maxlen=1024)
        self._rd_min_timeout = float(conf.raftMinTimeout)
        self._rd_tick_started = _monotonic()
        self._rd_leader_contact = -math.inf   # when a leader's append_entries last came
        self._rd_pre_vote: tuple[int, set[Any]] | None = None   # (term, who granted)
        self._rd_pre_vote_won = False
        self._rd_transfer_vote = False        # this tick's election is a transfer's
        self._rd_echo: float | None = None    # rd_ts of the request being answered
        self._rd_echoes: dict[Any, float] = {}   # leader: follower -> latest echoed rd_ts
        self._rd_leading_since = math.inf     # leader: when this leadership began
        self._rd_lease_void_term = -1         # leader: a transfer gave this term's lease up
        # (seconds leased up to tick_at, tick_at, lease end known at tick_at): one tuple,
        # replaced whole, so other threads read a consistent triple
        self._rd_lease = (0.0, _monotonic(), -math.inf)
        self._rd_transfer: tuple[Any, Any] | None = None   # (target or None, callback)
        super().__init__(selfNode, otherNodes, conf, transportClass=_StampingTransport,
                         **kwargs)

    def _rd_stamp(self, message: Any) -> None:
        if not isinstance(message, dict):
            return
        kind = message.get("type")
        if kind == "append_entries" and self._SyncObj__raftState == _LEADER:
            now = message["rd_ts"] = _monotonic()
            if self._rd_leading_since == math.inf:   # the first of this leadership
                self._rd_leading_since = now
        elif kind == "next_node_idx" and self._rd_echo is not None:
            message["rd_echo"] = self._rd_echo
            if self._rd_identity is not None:
                message[REPLICA_KEY] = self._rd_identity + [self._SyncObj__raftLastApplied]
        elif kind == "request_vote" and self._rd_transfer_vote:
            message["rd_transfer"] = True
        elif kind == "timeout_now":
            # Votes asked for by a transfer ignore stickiness, so this leader's lease no
            # longer holds: give it up for the rest of the term.
            self._rd_lease_void_term = self._SyncObj__raftCurrentTerm
            self._rd_echoes.clear()

    # -- the lease (any thread) ------------------------------------------------------
    def has_lease(self) -> bool:
        """This peer leads and a majority confirmed it within ``raftMinTimeout``."""
        return self._SyncObj__raftState == _LEADER and _monotonic() < self._rd_lease[2]

    def lease_clock(self) -> float:
        """Seconds during which this peer held a leader lease, since it started: a clock
        that stands still while this peer cannot act as leader."""
        leased, tick_at, until = self._rd_lease
        return leased + max(0.0, min(_monotonic(), until) - tick_at)

    def unleased_seconds(self) -> float:
        """Seconds since start without a lease (``monotonic() - lease_clock()``, up to a
        constant)."""
        now = _monotonic()
        leased, tick_at, until = self._rd_lease
        return now - (leased + max(0.0, min(now, until) - tick_at))

    # -- replicas (any thread) ---------------------------------------------------------
    def replicas(self, max_age: float) -> list[ReplicaSeen]:
        """The read-only nodes connected to this peer that answered it within
        ``max_age`` seconds (a leader hears from each at every append), by node id."""
        now = _monotonic()
        return sorted((r for r in self._rd_replicas.values() if now - r.at <= max_age),
                      key=lambda r: (r.node_id, r.api_addr))

    def replica_lag(self) -> tuple[float, int | None]:
        """A read-only node's lag: seconds since it last held everything a leader had
        committed (``inf`` before it ever did), and entries between the leader's commit
        index it last heard of and its last applied (None before it heard one)."""
        commit = self._SyncObj__leaderCommitIndex
        entries = None if commit is None else max(0, commit - self._SyncObj__raftLastApplied)
        return _monotonic() - self._rd_caught_up_at, entries

    def _rd_note_replica(self, node: Any, seen: Any) -> None:
        if self.selfNode is None or node in self._SyncObj__otherNodes \
                or not isinstance(seen, (list, tuple)) or len(seen) != 3:
            return
        node_id, api, applied = seen
        if not (isinstance(node_id, int) and isinstance(api, str)
                and isinstance(applied, int) and 0 < len(api) <= _MAX_REPLICA_ADDR):
            return
        table = dict(self._rd_replicas)
        table[node] = ReplicaSeen(node_id, api, applied, _monotonic())
        self._rd_replicas = table

    def _rd_after_tick(self) -> None:
        if self._rd_replicas:   # forget replicas whose connection closed
            connected = self._SyncObj__readonlyNodes
            if any(n not in connected for n in self._rd_replicas):
                self._rd_replicas = {n: r for n, r in self._rd_replicas.items()
                                     if n in connected}
        seen = self._rd_commits
        applied = self._SyncObj__raftLastApplied
        while seen and seen[0][0] <= applied:   # held all that was committed at that time
            self._rd_caught_up_at = max(self._rd_caught_up_at, seen.popleft()[1])

    def _rd_note_commit(self) -> None:
        """A replica: the leader's commit index as of this append, to learn when it holds
        all of it (one pair per commit index; a repeat only moves its time)."""
        commit = self._SyncObj__leaderCommitIndex
        if commit is None:
            return
        seen = self._rd_commits
        if seen and seen[-1][0] == commit:
            seen[-1] = (commit, self._rd_leader_contact)
        else:
            seen.append((commit, self._rd_leader_contact))

    def _rd_lease_until(self) -> float:
        if self._SyncObj__raftState != _LEADER \
                or self._rd_lease_void_term == self._SyncObj__raftCurrentTerm:
            return -math.inf
        voters = self._SyncObj__otherNodes
        needed = (len(voters) + 1) // 2   # followers that make a majority with this peer
        if needed == 0:
            return math.inf
        echoes = sorted((self._rd_echoes.get(n, -math.inf) for n in voters), reverse=True)
        return echoes[needed - 1] + self._rd_min_timeout

    def _rd_in_lease(self, now: float) -> bool:
        if self._SyncObj__raftState == _LEADER:
            return now < self._rd_lease_until()
        return now - self._rd_leader_contact < self._rd_min_timeout

    def request_transfer(self, callback: Any, target: Any = None) -> None:
        """Any thread: hand leadership to ``target`` (None: the most caught-up follower)
        at the next tick. PySyncObj's ``transferLeadership`` sends from the thread that
        calls it, and its transport belongs to the tick thread. ``callback(res, err)``."""
        self._rd_transfer = (target, callback)

    # -- the tick --------------------------------------------------------------------
    def _onTick(self, timeToWait: float = 0.0) -> None:  # noqa: N802, N803 - PySyncObj's
        term = self._SyncObj__raftCurrentTerm
        transfer, self._rd_transfer = self._rd_transfer, None
        if transfer is not None:
            self.transferLeadership(transfer[0], transfer[1])
        self._rd_after_stall()
        self._rd_before_election()
        super()._onTick(timeToWait)
        if self._SyncObj__raftCurrentTerm != term:   # an election started (or a new term)
            self._rd_pre_vote, self._rd_pre_vote_won = None, False
        self._rd_transfer_vote = False
        self._rd_account_lease()
        self._rd_after_tick()

    def _rd_after_stall(self) -> None:
        """A peer whose last tick ran longer than ``raftMinTimeout`` (a long apply, a
        pause) did not listen meanwhile: the silence was its own, and the leader's
        heartbeats may have been stalled by the same entry. It listens for another
        ``raftMinTimeout`` before an election of its own can start (PySyncObj counts
        election timeouts in wall time; etcd counts ticks, so a stalled peer counts
        none)."""
        now = _monotonic()
        started, self._rd_tick_started = self._rd_tick_started, now
        if now - started > self._rd_min_timeout and self.selfNode is not None \
                and self._SyncObj__raftState != _LEADER:
            self._SyncObj__raftElectionDeadline = max(self._SyncObj__raftElectionDeadline,
                                                      now + self._rd_min_timeout)

    def _SyncObj__setState(self, newState: int) -> None:  # noqa: N802, N803 - PySyncObj's
        """A peer that becomes a follower (a leader that lost its quorum or met a higher
        term, a candidate that lost) waits a whole randomized election timeout before it
        may stand for election, as etcd's ``becomeFollower`` does."""
        old = self._SyncObj__raftState
        super()._SyncObj__setState(newState)
        if newState == _FOLLOWER and old != _FOLLOWER and self.selfNode is not None:
            self._SyncObj__raftElectionDeadline = max(
                self._SyncObj__raftElectionDeadline,
                _monotonic() + self._SyncObj__generateRaftTimeout())

    def _SyncObj__applyLogEntries(self) -> Any:  # noqa: N802 - PySyncObj's
        """A leader about to apply large committed entries (a scale over tens of thousands
        of workers takes about a second to apply) first sends its appends, so the
        followers hear from it, and learn the commit index, before it stops ticking for
        that long; the followers then apply alongside it instead of electing."""
        if self._SyncObj__raftState == _LEADER:
            pending = self._SyncObj__raftCommitIndex - self._SyncObj__raftLastApplied
            if pending > 0 and sum(len(e[0]) for e in self._SyncObj__getEntries(
                    self._SyncObj__raftLastApplied + 1, pending)) >= LARGE_APPLY_BYTES:
                self._SyncObj__sendAppendEntries()
        return SyncObj._SyncObj__applyLogEntries(self)

    def _rd_before_election(self) -> None:
        """Turn the election PySyncObj is about to start into a pre-vote round, unless a
        pre-vote was won (then PySyncObj's election runs in this tick) or a leader asked
        for it (``timeout_now``)."""
        if self.selfNode is None or self._SyncObj__raftState == _LEADER:
            return
        now = _monotonic()
        if self._SyncObj__raftElectionDeadline >= now \
                or not self._SyncObj__connectedToAnyone():
            return
        if self._SyncObj__transferInProgress:
            self._rd_transfer_vote = True
            return
        if self._rd_pre_vote_won:
            return
        self._SyncObj__raftElectionDeadline = now + self._SyncObj__generateRaftTimeout()
        term = self._SyncObj__raftCurrentTerm + 1
        self._rd_pre_vote = (term, {self.selfNode})
        message = {"type": PRE_VOTE, "term": term,
                   "last_log_index": self._SyncObj__getCurrentLogIndex(),
                   "last_log_term": self._SyncObj__getCurrentLogTerm()}
        for node in list(self._SyncObj__otherNodes):
            self._SyncObj__transport.send(node, dict(message))
        self._rd_count_pre_votes()

    def _rd_count_pre_votes(self) -> None:
        term, granted = self._rd_pre_vote   # type: ignore[misc]
        if len(granted) > (len(self._SyncObj__otherNodes) + 1) / 2:
            self._rd_pre_vote_won = True
            self._SyncObj__raftElectionDeadline = 0.0   # PySyncObj's election, next check

    def _rd_account_lease(self) -> None:
        now = _monotonic()
        leased, tick_at, until = self._rd_lease
        leased += max(0.0, min(now, until) - tick_at)
        if self._SyncObj__raftState == _LEADER:
            until = self._rd_lease_until()
        else:
            until = -math.inf
            if self._rd_leading_since != math.inf:
                self._rd_leading_since = math.inf
                self._rd_echoes.clear()
        self._rd_lease = (leased, now, until)

    # -- messages --------------------------------------------------------------------
    def _SyncObj__onMessageReceived(self, node: Any, message: Any) -> None:  # noqa: N802
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "append_entries":
            self._rd_on_append_entries(node, message)
        elif kind == PRE_VOTE:
            self._rd_on_pre_vote(node, message)
        elif kind == PRE_VOTE_RESPONSE:
            self._rd_on_pre_vote_response(node, message)
        elif kind == STALE_TERM:
            self._rd_on_stale_term(node, message)
        elif kind == "request_vote" and self.selfNode is not None \
                and not message.get("rd_transfer") and self._rd_in_lease(_monotonic()):
            return   # stickiness: a live leader is in office
        else:
            if kind == "next_node_idx" and "rd_echo" in message:
                self._rd_note_echo(node, message["rd_echo"])
            if kind == "next_node_idx" and REPLICA_KEY in message:
                self._rd_note_replica(node, message[REPLICA_KEY])
            SyncObj._SyncObj__onMessageReceived(self, node, message)

    def _rd_note_echo(self, node: Any, echo: Any) -> None:
        if self._SyncObj__raftState != _LEADER or node not in self._SyncObj__otherNodes \
                or not isinstance(echo, float) or echo < self._rd_leading_since:
            return
        if echo > self._rd_echoes.get(node, -math.inf):
            self._rd_echoes[node] = echo

    def _rd_log_ok(self, message: dict) -> bool:
        mine = self._SyncObj__getCurrentLogTerm()
        theirs = message.get("last_log_term", -1)
        return theirs > mine or (theirs == mine and message.get(
            "last_log_index", -1) >= self._SyncObj__getCurrentLogIndex())

    def _rd_on_pre_vote(self, node: Any, message: dict) -> None:
        if self.selfNode is None:
            return   # a read-only node never votes
        term = self._SyncObj__raftCurrentTerm
        now = _monotonic()
        granted = (isinstance(message.get("term"), int) and message["term"] > term
                   and not self._rd_in_lease(now) and self._rd_log_ok(message))
        if granted:
            # Give the candidate we said could win the time to run its election before
            # ours starts: two peers that time out together would otherwise both win
            # pre-votes and split the real vote (a second term for one election).
            self._SyncObj__raftElectionDeadline = now + self._SyncObj__generateRaftTimeout()
            pending = self._rd_pre_vote
            if pending is not None and message["term"] >= pending[0] \
                    and str(node.id) < str(self.selfNode.id):
                # Our own round runs too (we timed out together): the lower address goes
                # on, the other gives its round up, so one real election follows, not two
                # that split the vote.
                self._rd_pre_vote, self._rd_pre_vote_won = None, False
        self._SyncObj__transport.send(node, {"type": PRE_VOTE_RESPONSE,
                                             "term": message.get("term"),
                                             "granted": granted, "voter_term": term})

    def _rd_on_pre_vote_response(self, node: Any, message: dict) -> None:
        state = self._SyncObj__raftState
        voter_term = message.get("voter_term")
        if isinstance(voter_term, int) and voter_term > self._SyncObj__raftCurrentTerm \
                and not message.get("granted"):
            # Our term is behind (etcd: a rejection with a higher term): adopt it, or a
            # peer with the longer log could never win a pre-vote from us.
            self._SyncObj__setCurrentTerm(voter_term, None)
            if state != _FOLLOWER:
                self._SyncObj__setState(_FOLLOWER)
            self._rd_pre_vote = None
            return
        pending = self._rd_pre_vote
        if pending is None or state == _LEADER or message.get("term") != pending[0] \
                or not message.get("granted") or node not in self._SyncObj__otherNodes:
            return
        pending[1].add(node)
        self._rd_count_pre_votes()

    def _rd_on_stale_term(self, node: Any, message: dict) -> None:
        term = message.get("term")
        if self.selfNode is None or not isinstance(term, int) \
                or term <= self._SyncObj__raftCurrentTerm:
            return
        logger.warning("raft: peer %s is at term %d, above ours (%d): stepping down",
                       node, term, self._SyncObj__raftCurrentTerm)
        self._SyncObj__setCurrentTerm(term, None)
        if self._SyncObj__raftState != _FOLLOWER:
            self._SyncObj__setState(_FOLLOWER)
        self._SyncObj__raftLeader = None

    def _rd_on_append_entries(self, node: Any, message: dict) -> None:
        term = message.get("term", -1)
        if term < self._SyncObj__raftCurrentTerm:
            if self.selfNode is not None:
                self._SyncObj__transport.send(node, {"type": STALE_TERM,
                                                     "term": self._SyncObj__raftCurrentTerm})
            return
        self._rd_leader_contact = _monotonic()
        self._rd_pre_vote, self._rd_pre_vote_won = None, False   # a leader is in office
        self._rd_echo = message.get("rd_ts")
        try:
            if "prevLogIdx" in message and message.get("transmission") is None:
                self._rd_append(node, message)
            else:   # an installed snapshot or a chunked entry: PySyncObj's own handling
                SyncObj._SyncObj__onMessageReceived(self, node, message)
        finally:
            self._rd_echo = None
        if self.selfNode is None:
            self._rd_note_commit()

    def _rd_append(self, node: Any, message: dict) -> None:
        """PySyncObj's regular ``append_entries`` branch with Raft's truncation and
        commit rules (AppendEntries receiver, steps 2-5)."""
        term = message["term"]
        if term > self._SyncObj__raftCurrentTerm:
            self._SyncObj__transferInProgress = False
        if not self._SyncObj__transferInProgress:
            self._SyncObj__raftElectionDeadline = \
                _monotonic() + self._SyncObj__generateRaftTimeout()
        if self._SyncObj__raftLeader != node:
            self._SyncObj__onLeaderChanged()
        self._SyncObj__raftLeader = node
        if term > self._SyncObj__raftCurrentTerm:
            self._SyncObj__setCurrentTerm(term, None)
        self._SyncObj__setState(_FOLLOWER)
        entries = message.get("entries") or []
        leader_commit = message["commit_index"]
        self._SyncObj__leaderCommitIndex = leader_commit
        prev_idx, prev_term = message["prevLogIdx"], message["prevLogTerm"]

        prev = self._SyncObj__getEntries(prev_idx, 1)
        if not prev:
            self._SyncObj__sendNextNodeIdx(node, success=False, reset=True)
            return
        if prev[0][2] != prev_term:
            self._SyncObj__sendNextNodeIdx(node, nextNodeIdx=prev_idx, success=False,
                                           reset=True)
            return
        new = entries
        if entries and entries[0][1] <= self._SyncObj__getCurrentLogIndex():
            held = self._SyncObj__getEntries(entries[0][1], len(entries))
            same = 0
            for mine, theirs in zip(held, entries):
                if mine[2] != theirs[2]:
                    break
                same += 1
            if same < len(held):
                self._rd_truncate_from(entries[same][1])
            new = entries[same:]
        log = self._SyncObj__raftLog
        for entry in new:
            log.add(*entry)
        if self._SyncObj__conf.dynamicMembershipChange:
            for entry in new:
                change = self._SyncObj__parseChangeClusterRequest(entry[0])
                if change is not None:
                    self._SyncObj__doChangeCluster(change)
        last_new = entries[-1][1] if entries else prev_idx
        self._SyncObj__sendNextNodeIdx(node, nextNodeIdx=last_new + 1, success=True)

        commit = self._SyncObj__raftCommitIndex
        commit = min(commit, self._SyncObj__getCurrentLogIndex())
        if leader_commit > commit:
            commit = max(commit, min(leader_commit, last_new))
        self._SyncObj__raftCommitIndex = commit
        log.setRaftCommitIndex(commit)

    def _rd_truncate_from(self, index: int) -> None:
        """Cut the log at ``index``: the first entry whose term conflicts with the
        leader's. A committed entry never conflicts, so cutting an applied one means the
        state machines diverged: said loudly, as PySyncObj does."""
        applied = self._SyncObj__raftLastApplied
        if index <= applied:
            logger.critical("raft: the leader's log conflicts with applied entry %d (last "
                            "applied %d): this peer's state machine has diverged",
                            index, applied)
        if self._SyncObj__conf.dynamicMembershipChange:
            for entry in reversed(self._SyncObj__getEntries(index)):
                change = self._SyncObj__parseChangeClusterRequest(entry[0])
                if change is not None:
                    self._SyncObj__doChangeCluster(change, reverse=True)
        self._SyncObj__deleteEntriesFrom(index)
