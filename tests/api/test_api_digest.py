"""``GET /api/v1/cluster/digest``: the route (admin only; 409 on a control plane that keeps
no directory) and ``DirectoryServer.digest`` (equal hard states give equal digests, any
change gives another), which the nemesis compares across peers at one applied index."""

from __future__ import annotations

import asyncio
import hashlib

import aiohttp
import msgpack

from fakes import ADMIN, FakeControlPlane, call, serving
from raftdir.clock import ManualClock
from raftdir.core.commands import RegisterNode
from raftdir.server import DirectoryServer, ServerSettings

SECRET = "5e" * 32
DIGEST = {"node_id": 1, "last_applied": 7, "last_applied_after": 7, "stable": True,
          "revision": 3, "sha256": "ab" * 32}


class DigestingFake(FakeControlPlane):
    def digest(self) -> dict:
        return dict(DIGEST)


async def test_the_route_needs_the_admin_token_and_answers_the_digest():
    async with serving(DigestingFake()) as api, aiohttp.ClientSession() as s:
        url = f"{api.url}/api/v1/cluster/digest"
        status, body, _ = await call(s, "GET", url)
        assert (status, body["code"]) == (401, "unauthorized")
        status, body, _ = await call(s, "GET", url, headers={"Authorization": "Bearer nope"})
        assert status == 401
        status, body, _ = await call(s, "GET", url,
                                     headers={"Authorization": f"Bearer {ADMIN}"})
        assert (status, body) == (200, DIGEST)


async def test_a_control_plane_without_a_directory_answers_409():
    async with serving(FakeControlPlane()) as api, aiohttp.ClientSession() as s:
        status, body, _ = await call(s, "GET", f"{api.url}/api/v1/cluster/digest",
                                     headers={"Authorization": f"Bearer {ADMIN}"})
        assert (status, body["code"]) == (409, "conflict")


async def started() -> DirectoryServer:
    server = DirectoryServer(ServerSettings(node_id=1, cluster_id="digest-test"),
                             secret=SECRET, clock=ManualClock())
    await server.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    while not server.is_leader():
        assert loop.time() < deadline, "the local server never took office"
        await asyncio.sleep(0.001)
    return server


def worker(node_id: int) -> RegisterNode:
    return RegisterNode(desired_node_id=node_id, kind="worker", ttl_secs=4, grace_secs=6,
                        profile={"api_addr": "127.0.0.1:9000", "os": "linux",
                                 "arch": "x86_64"},
                        secret_hash="0", ts_ms=1_767_225_600_000)


async def test_equal_states_give_equal_digests_and_a_change_another():
    a, b = await started(), await started()
    try:
        da, db = a.digest(), b.digest()
        assert da["stable"] and da["last_applied"] == da["last_applied_after"]
        assert da["sha256"] == db["sha256"]
        assert da["sha256"] == hashlib.sha256(
            msgpack.packb(a.read(lambda d: d.to_snapshot()))).hexdigest()

        await a.propose(worker(1_000_000))
        changed = a.digest()
        assert changed["sha256"] != db["sha256"]
        assert changed["last_applied"] == da["last_applied"] + 1

        await b.propose(worker(1_000_000))
        assert b.digest()["sha256"] == changed["sha256"]
    finally:
        await a.stop()
        await b.stop()
