"""A poll from ahead of the server (issue 15, finding 5): ``last_revision`` above what the
server has applied. The server first catches up (a barrier, as before refusing a secret);
still ahead, the revision is not of this cluster's history (a rebuilt or restored cluster),
and the answer is at once the node's complete set at the server's revision, ``full`` and
``behind``, so the client resyncs instead of skipping the events below its bookmark.
Through the leader and through a follower; a lagging follower just catches up."""

from __future__ import annotations

import time

import aiohttp
import pytest

from fakes import call
from real_pair import real_pair
from raftdir.assignments import AssignmentSet
from raftdir.model import InternalScaleRequest, SetEvent, WorkerPollResponse

POLL = "/api/v1/workers/poll"


@pytest.mark.parametrize("via", ["leader", "follower"])
async def test_a_poll_from_ahead_gets_the_full_set_at_the_servers_revision(via):
    async with real_pair() as pair, aiohttp.ClientSession() as s:
        nid, secret = await pair.register()
        await pair.leader.scale(InternalScaleRequest.legacy("web", 2), None)
        revision = pair.leader.read(lambda d: d.revision)
        started = time.monotonic()
        st, out, _ = await call(s, "POST", pair.url(via) + POLL,
                                {"node_id": nid, "last_revision": revision + 100,
                                 "max_wait_secs": 5},
                                headers={"Authorization": f"Bearer {secret}"})
        assert st == 200, out
        assert time.monotonic() - started < 2.0          # answered, not parked
        assert out["revision"] == revision and out["full"] is True and out["behind"] is True
        assert [(e["kind"], e["service"]) for e in out["events"]] == [("set", "web")]
        if via == "follower":
            assert pair.follower_raft.barriers == 1      # it caught up before answering


async def test_a_lagging_follower_catches_up_instead_of_answering_behind():
    async with real_pair() as pair, aiohttp.ClientSession() as s:
        nid, secret = await pair.register()
        pair.follower_raft.hold.set()                     # the follower lags from here
        await pair.leader.scale(InternalScaleRequest.legacy("web", 2), None)
        await pair.leader.scale(InternalScaleRequest.legacy("api", 1), None)
        revision = pair.leader.read(lambda d: d.revision)
        assert pair.follower.read(lambda d: d.revision) < revision
        # the worker saw the first scale (through the leader) and polls the follower
        st, out, _ = await call(s, "POST", pair.url("follower") + POLL,
                                {"node_id": nid, "last_revision": revision - 1,
                                 "max_wait_secs": 5},
                                headers={"Authorization": f"Bearer {secret}"})
        assert st == 200, out
        assert out["revision"] == revision and "behind" not in out and "full" not in out
        assert [(e["kind"], e["service"]) for e in out["events"]] == [("set", "api")]


def test_the_client_resyncs_from_a_behind_answer():
    current = AssignmentSet()
    current.apply(WorkerPollResponse(revision=40, full=True, events=(
        SetEvent(service="old", assignments=(), revision=40),)))
    change = current.apply(WorkerPollResponse(revision=7, full=True, behind=True, events=(
        SetEvent(service="web", assignments=(), revision=5),)))
    assert current.revision == 7 and sorted(current.services) == ["web"]
    assert change.full and change.deleted == ("old",)
