"""Authenticating a worker on a peer that may lag (``DirectoryServer._authenticate``): the
catch-up barrier before a refusal, shared by the polls that arrive together."""

from __future__ import annotations

import asyncio

import pytest

from raftdir import NoLeader, Unauthorized, WorkerPollRequest
from raftdir.auth import hash_node_secret
from raftdir.clock import ManualClock
from raftdir.core.commands import RegisterNode
from raftdir.server import DirectoryServer

from server_harness import PROFILE, SECRET, harness, make_settings, run, settle

KNOWN, PENDING, UNKNOWN = 1_000_000, 1_000_042, 1_000_999


def registration(node_id: int, secret: str) -> RegisterNode:
    return RegisterNode(desired_node_id=node_id, kind="worker", profile=PROFILE.to_dict(),
                        ttl_secs=10, grace_secs=10, secret_hash=hash_node_secret(secret),
                        ts_ms=1)


class SpyBarriers:
    """Stands in for the Raft node's ``barrier_async``: counts the barriers proposed,
    each held until ``release`` is set, then runs ``then(n)`` (n counts from 1)."""

    def __init__(self, then=lambda n: None) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.then = then

    async def __call__(self, timeout: float) -> None:
        self.calls += 1
        n = self.calls
        await self.release.wait()
        self.then(n)


def follower(spy: SpyBarriers) -> DirectoryServer:
    """A peer that follows (its Raft node is not started): its directory holds KNOWN."""
    server = DirectoryServer(make_settings(), secret=SECRET, clock=ManualClock())
    assert server.directory.apply(registration(KNOWN, "s3cret")).ok
    server.raft.barrier_async = spy
    return server


def poll(server: DirectoryServer, node_id: int, secret: str) -> asyncio.Future:
    return asyncio.ensure_future(server.poll(
        WorkerPollRequest(node_id=node_id, max_wait_secs=0), secret))


@run
async def test_a_flood_of_refused_polls_on_a_follower_commits_at_most_two_barriers():
    spy = SpyBarriers()
    f = follower(spy)
    first = [poll(f, KNOWN, "wrong") for _ in range(30)] + \
        [poll(f, UNKNOWN, "x") for _ in range(30)]
    await settle()
    assert spy.calls == 1
    # more arrive while that barrier runs: they share the one queued behind it
    second = [poll(f, KNOWN, "wrong") for _ in range(30)] + \
        [poll(f, UNKNOWN, "x") for _ in range(30)]
    await settle()
    assert spy.calls == 1
    spy.release.set()
    outcomes = await asyncio.gather(*first, *second, return_exceptions=True)
    assert spy.calls == 2
    assert [type(o) for o in outcomes] == [Unauthorized] * 120
    assert {o.status for o in outcomes} == {401}
    # nothing in flight any more: the next refusal commits a barrier of its own
    with pytest.raises(Unauthorized):
        await f.poll(WorkerPollRequest(node_id=KNOWN, max_wait_secs=0), "wrong")
    assert spy.calls == 3


@run
async def test_a_poll_never_relies_on_a_barrier_started_before_it_arrived():
    """The running barrier may be ordered before a registration the leader acknowledged
    since; a poll from that worker must wait for the next barrier, which applies it."""
    pending = registration(PENDING, "fresh")
    spy = SpyBarriers(then=lambda n: n == 2 and f.directory.apply(pending))
    f = follower(spy)
    early = poll(f, PENDING, "fresh")        # before the registration was acknowledged
    await settle()
    late = poll(f, PENDING, "fresh")         # after: the running barrier may not have it
    await settle()
    spy.release.set()
    with pytest.raises(Unauthorized):
        await early
    assert (await late).revision == 0
    assert spy.calls == 2


@run
async def test_every_waiter_gets_the_shared_barriers_error_and_one_cancelled_leaves_it():
    spy = SpyBarriers()
    f = follower(spy)

    async def failing(timeout: float) -> None:
        await spy(timeout)
        raise NoLeader("no leader")
    f.raft.barrier_async = failing
    polls = [poll(f, KNOWN, "wrong") for _ in range(5)]
    await settle()
    polls[0].cancel()
    await settle()
    spy.release.set()
    outcomes = await asyncio.gather(*polls, return_exceptions=True)
    assert isinstance(outcomes[0], asyncio.CancelledError)
    assert all(isinstance(o, NoLeader) for o in outcomes[1:])
    assert spy.calls == 1
    with pytest.raises(NoLeader):            # a failed barrier is not left in flight
        await f.poll(WorkerPollRequest(node_id=KNOWN, max_wait_secs=0), "wrong")
    assert spy.calls == 2


@run
async def test_a_raft_leader_not_ready_yet_catches_up_and_a_ready_leader_does_not():
    pending = registration(PENDING, "fresh")
    spy = SpyBarriers(then=lambda n: f.directory.apply(pending))
    spy.release.set()
    f = follower(spy)
    f.raft.is_leader = lambda: True          # just elected: its services are not ready
    assert (await f.poll(WorkerPollRequest(node_id=PENDING, max_wait_secs=0),
                         "fresh")).revision == 0
    assert spy.calls == 1
    h = await harness()
    try:
        ready = SpyBarriers()
        h.server.raft.barrier_async = ready
        (a,) = await h.register(1)
        with pytest.raises(Unauthorized):
            await h.server.poll(WorkerPollRequest(node_id=a.node_id, max_wait_secs=0),
                                "wrong")
        assert ready.calls == 0
    finally:
        await h.server.stop()


@run
async def test_stop_ends_a_catch_up_barrier_and_its_callers_get_no_leader():
    spy = SpyBarriers()                      # never released: the leader is gone
    f = follower(spy)
    polls = [poll(f, KNOWN, "wrong") for _ in range(3)]
    await settle()
    assert spy.calls == 1
    await asyncio.wait_for(f.stop(), 5)      # does not wait for the barrier's timeout
    outcomes = await asyncio.wait_for(asyncio.gather(*polls, return_exceptions=True), 5)
    assert all(isinstance(o, NoLeader) and "stopping" in str(o) for o in outcomes)
