"""A real three-peer cluster (``raftdir serve`` processes on 127.0.0.1) under a leader
kill -9 while 50 simulated workers report and poll (issue 4 §6)."""

from __future__ import annotations

import asyncio
import time

import pytest

from cluster_harness import running_cluster
from raftdir import InternalScaleRequest, WorkerPollRequest
from raftdir.api.client import RaftdirClient
from raftdir.auth import admin_token
from raftdir.testing import LocalCluster, SimFleet, async_wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

TTL, GRACE, CHECKPOINT, SKEW = 4, 6, 5.0, 2.0


@pytest.fixture
def cluster(tmp_path):
    with running_cluster(tmp_path, heartbeat_min_ttl=TTL, heartbeat_grace=GRACE) as c:
        yield c


def test_leader_kill_under_load_loses_nothing_and_marks_no_live_worker_down(cluster):
    asyncio.run(_scenario(cluster))


async def _scenario(cluster: LocalCluster) -> None:
    admin = RaftdirClient(cluster.endpoints, admin_token=admin_token(cluster.secret),
                          timeout=3.0, retries=20, backoff=(0.05, 0.5))
    fleet = None
    try:
        token = (await admin.create_token(600, 100))["token"]
        fleet = SimFleet(cluster.endpoints, token, 50, report_every=1.0)
        await fleet.start()
        registered = sorted(fleet.node_ids())
        assert len(registered) == 50

        split = await admin.scale(InternalScaleRequest.legacy("web", 100))
        assert sum(r.replicas for r in split.values()) == 100
        await async_wait_until(lambda: fleet.total_replicas() == 100, 20,
                               "every worker to hold its share of web")

        # one worker dies shortly before the leader does
        victim = fleet.workers[0]
        await victim.stop()
        victim_killed = time.monotonic()
        await asyncio.sleep(1.0)
        old = cluster.leader_id()
        assert old is not None
        cluster.kill(old)
        new = await async_wait_until(lambda: (lambda n: n if n not in (None, old) else None)(
            cluster.leader_id()), 20, "a new leader")

        # the second scale reaches every live worker: their polls resumed
        await admin.scale(InternalScaleRequest.legacy("api", 49))
        live = fleet.workers[1:]

        def api_held() -> int:
            return sum(len(g.indices) for w in live
                       for g in (w.assignments.services["api"].assignments
                                 if "api" in w.assignments.services else ()))
        await async_wait_until(lambda: api_held() == 49, 30,
                               "every live worker to receive its share of api")

        # the victim is marked down within interval + ttl + grace + skew of its death
        async def victim_down() -> bool:
            nodes = {n["node_id"]: n for n in await admin.workers()}
            return nodes[victim.node_id]["state"] == "down"
        await async_wait_until(victim_down, CHECKPOINT + TTL + GRACE + SKEW + 10,
                               "the dead worker to be marked down", interval=0.2)
        down_after = time.monotonic() - victim_killed
        assert down_after <= CHECKPOINT + TTL + GRACE + SKEW + 3, down_after

        # no live worker was ever marked down, and every acknowledged write is there
        nodes = {n["node_id"]: n for n in await admin.workers(consistent=True)}
        assert sorted(n for n in nodes if n >= 1_000_000) == registered
        assert [n for n, node in nodes.items() if node["state"] != "ready"
                and n >= 1_000_000] == [victim.node_id]
        for service, replicas in (("web", 100), ("api", 49)):
            state = await admin.service_state(service, consistent=True)
            assert sum(a["replicas"] for a in state["assigned"]) == replicas
        assert not [e for w in live for e in w.errors if "reregister" in e]

        # a follower answers polls from its own applied state
        follower = next(n for n in cluster.peers if n not in (old, new))
        w = live[0]
        pinned = RaftdirClient([cluster.peers[follower].url], node_secret=w.client.node_secret)
        try:
            resp = await pinned.poll(WorkerPollRequest(node_id=w.node_id, last_revision=0,
                                                       max_wait_secs=0))
            assert resp.full and {e.service for e in resp.events} == \
                set(w.assignments.services)
        finally:
            await pinned.close()
    finally:
        if fleet is not None:
            await fleet.stop()
        await admin.close()
