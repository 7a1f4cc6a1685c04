"""Maximum-size entries between real PySyncObj peers (issue 15, finding 2): a registration
with the largest labels and a scale order with the largest spec and the most replicas,
their text 2-byte UTF-8 (the worst case for PySyncObj's pickling of entries), through a
follower and through the leader of a three-peer ``raftdir serve`` cluster. Every peer applies
them, and no peer's log shows an error (PySyncObj's chunked transmission, which these entries
used to take, made followers fail with "pickle data was truncated")."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import pytest

from raftdir import InternalScaleRequest, WorkerPollRequest, WorkerRegisterRequest
from raftdir.api.client import RaftdirClient
from raftdir.auth import admin_token
from raftdir.limits import MAX_LABELS_BYTES, MAX_SPEC_BYTES
from raftdir.model import MAX_LEGACY_REPLICAS, WorkerProfile
from cluster_harness import running_cluster
from raftdir.testing import LocalCluster, async_wait_until, map_of_size as sized_map

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

BAD_LOG_LINES = ("Traceback", "truncated", "diverged", "failed _onTick", "ERROR",
                 "CRITICAL")


def local_read(url: str, path: str):
    with urllib.request.urlopen(url + path, timeout=5) as resp:
        return json.loads(resp.read())


@pytest.fixture
def cluster(tmp_path):
    with running_cluster(tmp_path) as c:     # its own, with the default heartbeats
        yield c


def test_maximum_size_entries_replicate_with_no_error_in_any_log(cluster):
    asyncio.run(_scenario(cluster))
    for peer in cluster.peers.values():
        text = (peer.data_dir / "server.log").read_text(errors="replace")
        bad = [line for line in text.splitlines() if any(b in line for b in BAD_LOG_LINES)]
        assert not bad, (peer.node_id, bad[:5])


async def _scenario(cluster: LocalCluster) -> None:
    leader = cluster.leader_id()
    follower = next(n for n in cluster.peers if n != leader)
    via = {"follower": cluster.peers[follower].url, "leader": cluster.peers[leader].url}
    admin = RaftdirClient([via["follower"]], admin_token=admin_token(cluster.secret),
                          timeout=10.0)
    workers = []
    try:
        token = (await admin.create_token(600, 0))["token"]
        labels = sized_map(MAX_LABELS_BYTES)
        acks = {}
        for name, url in via.items():
            client = RaftdirClient([url], timeout=10.0)
            workers.append(client)
            profile = WorkerProfile(api_addr="127.0.0.1:9000", os="linux", arch="x86_64",
                                    labels=labels)
            started = time.monotonic()
            reg = await client.register(WorkerRegisterRequest(token=token, profile=profile))
            acks[name] = (reg.node_id, time.monotonic() - started)
        print("registration acks (node id, seconds):", acks)

        spec = sized_map(MAX_SPEC_BYTES)
        started = time.monotonic()
        split = await admin.scale(InternalScaleRequest.legacy("web", MAX_LEGACY_REPLICAS,
                                                              spec=spec))
        print(f"scale of {MAX_LEGACY_REPLICAS} replicas acked in "
              f"{time.monotonic() - started:.3f} s")
        assert sum(r.replicas for r in split.values()) == MAX_LEGACY_REPLICAS

        # every peer applies both registrations and the scale, from its own state
        ids = sorted(node_id for node_id, _ in acks.values())
        for peer in cluster.peers.values():
            def applied(url: str = peer.url) -> bool:
                nodes = {n["node_id"]: n for n in local_read(url, "/api/v1/cluster/workers")}
                return all(nodes.get(i, {}).get("profile", {}).get("labels") == labels
                           for i in ids)
            await async_wait_until(applied, 20, f"peer {peer.node_id} to apply the "
                                   "registrations", interval=0.1)
            worker = workers[0]
            pinned = RaftdirClient([peer.url], node_secret=worker.node_secret, timeout=10.0)
            try:
                async def full_set() -> bool:
                    resp = await pinned.poll(WorkerPollRequest(
                        node_id=acks["follower"][0], last_revision=0, max_wait_secs=0))
                    return bool(resp.events) and resp.events[0].spec == spec
                await async_wait_until(full_set, 20, f"peer {peer.node_id} to apply the "
                                       "scale", interval=0.1)
            finally:
                await pinned.close()
    finally:
        for client in workers:
            await client.close()
        await admin.close()
