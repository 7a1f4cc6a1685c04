"""Leases on a real DirectoryServer (LocalNode, manual clock): expiry boundary, re-placement,
parked polls woken, a down node coming back, tokens, secrets."""

from __future__ import annotations

import asyncio

import pytest

from raftdir import (
    BadRequest, InternalScaleRequest, TokenExhausted, TokenInvalid, Unauthorized,
    WorkerPollRequest, WorkerRegisterRequest,
)
from raftdir.auth import issue_join_token

from server_harness import PROFILE, SECRET, harness, run, settle, until


@run
async def test_a_silent_worker_is_down_after_ttl_plus_grace_and_not_a_second_before():
    h = await harness()
    try:
        a, b = await h.register(2)
        assert (a.heartbeat_ttl_secs, a.heartbeat_grace_secs) == (10, 10)
        await h.server.scale(InternalScaleRequest.legacy("web", 4), "scale-1")
        # b keeps reporting every 5 s; a never reports after registering.
        for _ in range(3):
            await h.advance(5.0)
            await h.report(b)
        await h.advance(4.0)                    # t = 19 s: within ttl + grace
        assert h.state(a.node_id) == "ready"
        await h.advance(1.0)                    # t = 20 s exactly: not strictly past
        assert h.state(a.node_id) == "ready"
        await h.report(b)
        await h.advance(0.5)                    # t = 20.5 s: past, at the next sweep
        await until(lambda: h.state(a.node_id) == "down")
        assert h.state(b.node_id) == "ready"
        placement = h.server.read(lambda d: d.placement("web"))
        assert list(placement) == [b.node_id]
        assert placement[b.node_id] == {"default": [0, 1, 2, 3]}
    finally:
        await h.server.stop()


@run
async def test_replicas_move_and_the_survivors_parked_poll_wakes():
    h = await harness()
    try:
        a, b = await h.register(2)
        await h.server.scale(InternalScaleRequest.legacy("web", 2), None)
        first = await h.server.poll(WorkerPollRequest(node_id=b.node_id, max_wait_secs=0),
                                    b.internal_token)
        assert first.full and first.events[0].assignments[0].indices == (1,)
        parked = asyncio.ensure_future(h.server.poll(
            WorkerPollRequest(node_id=b.node_id, last_revision=first.revision,
                              max_wait_secs=60), b.internal_token))
        await settle()
        assert not parked.done()
        for _ in range(5):                      # b reports, a stays silent
            await h.advance(5.0)
            await h.report(b)
        reply = await asyncio.wait_for(parked, 5)
        assert not reply.full
        assert [(e.TAG, e.assignments[0].indices) for e in reply.events] == [("set", (0, 1))]
        assert reply.revision > first.revision
    finally:
        await h.server.stop()


@run
async def test_a_down_worker_that_reports_again_is_ready_and_resyncs_in_full():
    h = await harness()
    try:
        a, b = await h.register(2)
        await h.server.scale(InternalScaleRequest.legacy("web", 2), None)
        seen = await h.server.poll(WorkerPollRequest(node_id=a.node_id, max_wait_secs=0),
                                   a.internal_token)
        for _ in range(5):
            await h.advance(5.0)
            await h.report(b)
        await until(lambda: h.state(a.node_id) == "down")
        assert h.server.read(lambda d: d.holdings(a.node_id)) == []
        ack = await h.report(a)
        assert h.state(a.node_id) == "ready" and ack.next_ttl_secs == 10
        reply = await h.server.poll(WorkerPollRequest(node_id=a.node_id,
                                                      last_revision=seen.revision,
                                                      max_wait_secs=0), a.internal_token)
        assert reply.full and reply.events == ()   # run nothing: its share moved away
    finally:
        await h.server.stop()


@run
async def test_checkpoints_record_renewals_in_hard_state():
    h = await harness()
    try:
        (a,) = await h.register(1)
        await h.advance(3.0)
        await h.report(a)
        reported_ms = h.clock.wall_ms()
        assert h.server.read(lambda d: d.node(a.node_id))["renewed_ms"] < reported_ms
        for _ in range(4):                      # the 5 s checkpoint timer fires by t = 7
            await h.advance(1.0)
        assert h.server.read(lambda d: d.node(a.node_id))["renewed_ms"] == reported_ms
    finally:
        await h.server.stop()


@run
async def test_token_max_uses_and_rejections_name_the_reason():
    h = await harness()
    try:
        token = (await h.server.create_token(600, 2))["token"]
        for _ in range(2):
            await h.server.register(WorkerRegisterRequest(token=token, profile=PROFILE), None)
        with pytest.raises(TokenExhausted):
            await h.server.register(WorkerRegisterRequest(token=token, profile=PROFILE), None)
        cluster = h.server.read(lambda d: d.cluster_id)
        now = h.clock.wall_ms() // 1000
        foreign, _ = issue_join_token(SECRET, "another-cluster", valid_for_secs=60,
                                      max_uses=1, now_unix_secs=now)
        expired, _ = issue_join_token(SECRET, cluster, valid_for_secs=60, max_uses=1,
                                      now_unix_secs=now - 120)
        forged, _ = issue_join_token("00" * 32, cluster, valid_for_secs=60, max_uses=1,
                                     now_unix_secs=now)
        for bad, reason in ((foreign, "for cluster 'another-cluster'"),
                            (expired, "expired"), (forged, "signature"),
                            ("not-a-token", "malformed")):
            with pytest.raises(TokenInvalid, match=reason):
                await h.server.register(WorkerRegisterRequest(token=bad, profile=PROFILE),
                                        None)
    finally:
        await h.server.stop()


@run
async def test_a_retried_registration_gets_the_same_node_and_secret():
    h = await harness()
    try:
        token = (await h.server.create_token(600, 1))["token"]
        req = WorkerRegisterRequest(token=token, profile=PROFILE)
        first = await h.server.register(req, "reg-42")
        again = await h.server.register(req, "reg-42")
        assert again == first
        assert h.server.read(lambda d: d.node_count("worker")) == 1
    finally:
        await h.server.stop()


@run
async def test_secrets_are_checked_per_node():
    h = await harness()
    try:
        a, b = await h.register(2)
        poll = WorkerPollRequest(node_id=a.node_id, max_wait_secs=0)
        with pytest.raises(Unauthorized):      # another node's secret: refused
            await h.server.poll(poll, b.internal_token)
        with pytest.raises(Unauthorized):
            await h.server.poll(poll, "wrong")
        with pytest.raises(Unauthorized):
            await h.server.poll(poll, None)
        with pytest.raises(Unauthorized):      # no such node: the same answer
            await h.server.poll(WorkerPollRequest(node_id=4242, max_wait_secs=0), "x")
    finally:
        await h.server.stop()


@run
async def test_evicted_worker_is_told_to_register_again_and_its_share_moves():
    h = await harness()
    try:
        a, b = await h.register(2)
        await h.server.scale(InternalScaleRequest.legacy("web", 2), None)
        await h.server.deregister(a.node_id, None)
        assert h.server.read(lambda d: d.placement("web")) == {b.node_id: {"default": [0, 1]}}
        with pytest.raises(Unauthorized):      # its secret authenticates nothing now
            await h.report(a)
    finally:
        await h.server.stop()


@run
async def test_drain_moves_the_share_and_sends_a_drain_event():
    h = await harness()
    try:
        a, b = await h.register(2)
        await h.server.scale(InternalScaleRequest.legacy("web", 2), None)
        await h.server.drain(a.node_id, None)
        assert h.server.read(lambda d: d.placement("web")) == {b.node_id: {"default": [0, 1]}}
        reply = await h.server.poll(WorkerPollRequest(node_id=a.node_id, last_revision=1,
                                                      max_wait_secs=0), a.internal_token)
        assert [e.TAG for e in reply.events] == ["drain", "delete"]   # drain, then moved
    finally:
        await h.server.stop()


@run
async def test_an_undone_drain_makes_the_node_eligible_and_tells_its_worker():
    h = await harness()
    try:
        a, b = await h.register(2)
        await h.server.scale(InternalScaleRequest.legacy("web", 2), None)
        await h.server.drain(a.node_id, None)
        drained_at = h.server.read(lambda d: d.revision)
        answer = await h.server.undrain(a.node_id, "undo-1")
        assert (answer["state"], answer["events_for"]) == ("ready", [a.node_id])
        reply = await h.server.poll(WorkerPollRequest(node_id=a.node_id,
                                                      last_revision=drained_at,
                                                      max_wait_secs=0), a.internal_token)
        assert [e.TAG for e in reply.events] == ["undrain"]
        # eligible again: a new scale places replicas on it
        await h.server.scale(InternalScaleRequest.legacy("web", 4), None)
        assert a.node_id in h.server.read(lambda d: d.placement("web"))
        with pytest.raises(BadRequest):                  # a server node is not drained
            await h.server.undrain(1, None)
    finally:
        await h.server.stop()


async def fail_over(h, term: int, *, other_leader_between: bool = False) -> None:
    """Leadership lost and won again in ``term`` (a fresh LeaderServices on the same
    applied state). ``other_leader_between``: another peer led (and wrote its barrier) in
    the term between, so this peer's own lease table cannot be trusted and is dropped."""
    await h.server._change_leadership(False, term - 2 if other_leader_between else term - 1)
    if other_leader_between:
        from raftdir.core.commands import Barrier
        await h.server.propose(Barrier(term=term - 1))
    await h.server._change_leadership(True, term)
    await until(h.server.is_leader)


@run
async def test_a_dead_worker_is_down_ttl_plus_grace_after_its_last_report_through_re_elections():
    # This peer is re-elected again and again with no other leader in between (a
    # restarted follower called an election): it keeps its lease table, so re-elections
    # never postpone a dead worker, and never expire a live one.
    h = await harness()
    try:
        live, dead = await h.register(2)
        last_dead_renewal = h.clock.monotonic()
        term = 1
        down_at = None
        for step in range(40):                  # 40 x 2.5 s = 100 s, an election every 7.5 s
            await h.advance(2.5)
            if step % 2 == 0:
                await h.report(live)
            if step % 3 == 2:
                term += 1
                await fail_over(h, term)
            assert h.state(live.node_id) == "ready", f"live worker expired at step {step}"
            if down_at is None and h.state(dead.node_id) == "down":
                down_at = h.clock.monotonic()
        assert down_at is not None, "a dead worker outlived every leader"
        assert down_at - last_dead_renewal <= 10 + 10 + 2.5   # ttl + grace + this test's step
    finally:
        await h.server.stop()


@run
async def test_after_another_leader_every_worker_gets_ttl_plus_grace_from_the_takeover():
    h = await harness()
    try:
        (a,) = await h.register(1)
        await h.advance(9.0)
        await h.report(a)                        # acknowledged: ttl 10, so due by t = 19
        await h.advance(0.5)
        await fail_over(h, 3, other_leader_between=True)
        ready_at = h.clock.monotonic()          # t = 9.5: the new leader is ready
        await h.advance(19.5)                   # t = 29: ttl + grace from the takeover
        assert h.state(a.node_id) == "ready"
        await h.advance(0.5)
        await h.advance(0.5)
        assert h.state(a.node_id) == "down"     # and not much later: the bound holds
        assert h.clock.monotonic() - ready_at <= 10 + 10 + 1.0
    finally:
        await h.server.stop()


@run
async def test_a_lease_acknowledged_while_checkpoints_failed_survives_a_re_election():
    # The fault run's failure: both followers paused, so no checkpoint could commit, but
    # the leader kept acknowledging reports; re-elected in a later term, it re-armed the
    # worker from the last checkpoint and marked it down 6.4 s before its lease ran out.
    from raftdir.core.commands import RenewCheckpoint
    from raftdir.errors import TimeoutOutcomeUnknown
    h = await harness()
    try:
        (a,) = await h.register(1)
        real = h.server.propose

        async def no_quorum_for_checkpoints(cmd):
            if isinstance(cmd, RenewCheckpoint):
                raise TimeoutOutcomeUnknown("no quorum")
            return await real(cmd)
        h.server.propose = no_quorum_for_checkpoints
        for _ in range(6):                       # t = 30: reports acked, none checkpointed
            await h.advance(5.0)
            await h.report(a)
        acked_at = h.clock.monotonic()
        h.server.propose = real
        await fail_over(h, 4)                    # terms moved on; this peer leads again
        while h.clock.monotonic() < acked_at + 10 + 10:
            assert h.state(a.node_id) == "ready", "marked down inside its lease"
            await h.advance(0.5)
        await h.advance(1.0)
        assert h.state(a.node_id) == "down"      # silent since: down right after the lease
    finally:
        await h.server.stop()


@run
async def test_without_its_raft_lease_the_leader_acknowledges_no_report_or_registration():
    from raftdir.errors import NoLeader
    h = await harness()
    try:
        (a,) = await h.register(1)
        before = h.server.leader.leases.time_left(a.node_id, h.server.lease_now())
        h.server.raft.has_lease = lambda: False
        await h.advance(1.0)
        with pytest.raises(NoLeader, match="majority"):
            await h.report(a)
        with pytest.raises(NoLeader, match="majority"):
            await h.register(1)
        assert h.server.leader.leases.time_left(a.node_id, h.server.lease_now()) \
            == before - 1.0                      # the refused report renewed nothing
    finally:
        await h.server.stop()


@run
async def test_time_without_a_raft_lease_is_not_charged_to_a_worker():
    h = await harness()
    try:
        (a,) = await h.register(1)               # deadline: ttl 10 + grace 10
        unleased = [0.0]
        h.server.raft.unleased_seconds = lambda: unleased[0]
        for _ in range(30):                       # 30 s, of which 15 s without a lease
            unleased[0] += 0.5
            await h.advance(1.0)
        assert h.state(a.node_id) == "ready"
        for _ in range(6):                        # leased again: 20 s of lease at t = 35
            await h.advance(1.0)
        assert h.state(a.node_id) == "down"
    finally:
        await h.server.stop()


@run
async def test_token_max_uses_hold_across_a_leader_change():
    h = await harness()
    try:
        token = (await h.server.create_token(600, 2))["token"]
        await h.server.register(WorkerRegisterRequest(token=token, profile=PROFILE), None)
        await fail_over(h, 2)
        await h.server.register(WorkerRegisterRequest(token=token, profile=PROFILE), None)
        await fail_over(h, 3)
        with pytest.raises(TokenExhausted):
            await h.server.register(WorkerRegisterRequest(token=token, profile=PROFILE), None)
        assert h.server.read(lambda d: d.node_count("worker")) == 2
    finally:
        await h.server.stop()


@run
async def test_a_down_node_whose_lease_entry_survived_is_marked_ready_by_its_report():
    # a mark_down whose answer was lost leaves the lease entry behind; the next report
    # must still bring the node back (decided from the directory, not the entry)
    h = await harness()
    try:
        (a,) = await h.register(1)
        from raftdir.core.commands import MarkDown
        await h.server.propose(MarkDown(term=h.server.leader.term, node_ids=(a.node_id,)))
        assert h.state(a.node_id) == "down"
        assert a.node_id in h.server.leader.leases.entries
        await h.report(a)
        assert h.state(a.node_id) == "ready"
    finally:
        await h.server.stop()


@run
async def test_a_worker_with_its_identity_reregisters_even_after_its_token_expired():
    h = await harness()
    try:
        token = (await h.server.create_token(60, 1))["token"]
        first = await h.server.register(WorkerRegisterRequest(token=token, profile=PROFILE),
                                        None)
        h.clock.advance(3600)                   # the token has long expired
        again = await h.server.register(
            WorkerRegisterRequest(token=token, desired_node_id=first.node_id,
                                  profile=PROFILE), None, first.internal_token)
        assert (again.node_id, again.internal_token) == (first.node_id, first.internal_token)
        with pytest.raises(TokenInvalid, match="expired"):   # a stranger still cannot
            await h.server.register(WorkerRegisterRequest(token=token, profile=PROFILE),
                                    None)
    finally:
        await h.server.stop()


@run
async def test_a_poll_from_above_this_peers_revision_is_answered_at_once_full_and_behind():
    """It used to park until the peer reached the poll's revision (never, for a revision of
    another history) and then answer that revision back; now, once caught up, the peer
    answers its own revision with the complete set (issue 15, finding 5)."""
    h = await harness()
    try:
        (a,) = await h.register(1)
        await h.server.scale(InternalScaleRequest.legacy("web", 1), None)
        revision = h.server.read(lambda d: d.revision)
        reply = await asyncio.wait_for(h.server.poll(
            WorkerPollRequest(node_id=a.node_id, last_revision=500, max_wait_secs=60),
            a.internal_token), 2)
        assert (reply.revision, reply.full, reply.behind) == (revision, True, True)
        assert [e.service for e in reply.events] == ["web"]
    finally:
        await h.server.stop()


@run
async def test_a_lagging_follower_catches_up_before_refusing_a_poll():
    """A follower that has not applied a registration yet commits a barrier (and so
    applies it) before it answers unauthorized."""
    h = await harness()
    try:
        from raftdir.auth import hash_node_secret
        from raftdir.core.commands import RegisterNode
        # a second server that plays a follower: same state, minus the last registration
        follower = h.server.__class__(h.server.settings, secret=SECRET, clock=h.clock)
        pending = RegisterNode(desired_node_id=1_000_042, kind="worker",
                               profile=PROFILE.to_dict(), ttl_secs=10, grace_secs=10,
                               secret_hash=hash_node_secret("s3cret"), ts_ms=1)
        barriers = []

        async def barrier() -> None:       # catching up = applying what was committed
            barriers.append(1)
            follower.directory.apply(pending)
        follower.barrier = barrier
        follower.raft.is_leader = lambda: False
        reply = await follower.poll(WorkerPollRequest(node_id=1_000_042, max_wait_secs=0),
                                    "s3cret")
        assert barriers == [1] and reply.revision == 0
        with pytest.raises(Unauthorized):  # still unknown after the barrier: really gone
            await follower.poll(WorkerPollRequest(node_id=1_000_043, max_wait_secs=0), "x")
    finally:
        await h.server.stop()


@run
async def test_taking_office_is_retried_while_this_peer_leads():
    h = await harness()
    try:
        real = h.server.propose
        failures = []

        async def flaky(cmd):
            if type(cmd).__name__ == "Barrier" and len(failures) < 2:
                failures.append(cmd)
                from raftdir.errors import TimeoutOutcomeUnknown
                raise TimeoutOutcomeUnknown("lost")
            return await real(cmd)
        h.server.propose = flaky
        await h.server._change_leadership(False, 1)
        await h.server._change_leadership(True, 2)
        for _ in range(50):                # the retries back off on the (manual) clock
            if h.server.is_leader():
                break
            await h.advance(0.1)
        assert len(failures) == 2 and h.server.is_leader()
    finally:
        await h.server.stop()
