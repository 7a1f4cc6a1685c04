"""Two real ``DirectoryServer``s behind the HTTP API, in this process: a leader and a
follower that forwards to it, for the tests that must see the real control plane's answers
through both (membership, drain, tokens, auth, polls).

The Raft layer is simulated, never the server: the leader runs on ``MemberNode`` (a
``LocalNode`` that keeps a Raft member list and refuses membership changes the way
``PySyncObjNode`` does) and copies every command it applies to the follower's
``FollowerNode``, so the follower's state is the leader's. The follower answers writes with
``NotLeader`` naming the leader (its API forwards them) and commits barriers like a
PySyncObj follower (at once: it is never behind here unless a test holds it back).
API ports are chosen by the OS; clocks are manual, so no lease expires on its own.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Any

from raftdir.api.server import ApiServer, start_api
from raftdir.auth import admin_token
from raftdir.clock import ManualClock
from raftdir.errors import Conflict, NotLeader
from raftdir.model import RaftPeer, WorkerProfile, WorkerRegisterRequest
from raftdir.replication.base import apply_safely, call_listeners, is_barrier
from raftdir.replication.local import LocalNode
from raftdir.server import DirectoryServer, ServerSettings
from raftdir.testing import free_ports

SECRET = "ab" * 32
ADMIN = admin_token(SECRET)
ADMIN_H = {"Authorization": f"Bearer {ADMIN}"}
RAFT = {1: "127.0.0.1:17101", 2: "127.0.0.1:17102"}   # never dialled
PROFILE = WorkerProfile(api_addr="127.0.0.1:9000", os="linux", arch="x86_64")


class MemberNode(LocalNode):
    """The leader's Raft: applies at once, keeps the member list, copies to followers."""

    def __init__(self, address: str, members: list[str]) -> None:
        super().__init__(None, address)  # type: ignore[arg-type] - set by attach()
        self.members = list(members)
        self.followers: list[FollowerNode] = []
        self.membership_log: list[tuple[str, str]] = []

    def attach(self, server: DirectoryServer) -> None:
        self._sm = server.guard

    def propose(self, data: bytes, timeout: float = 5.0):
        result = super().propose(data, timeout)
        for follower in self.followers:
            follower.replicate(data)
        return result

    def add_peer(self, addr: str, timeout: float = 10.0) -> None:
        if addr in self.members:
            raise Conflict(f"add_peer {addr}: already a member")
        self.members.append(addr)
        self.membership_log.append(("add", addr))

    def remove_peer(self, addr: str, timeout: float = 10.0) -> None:
        if addr == self._address:
            raise Conflict("remove_peer: a peer cannot remove itself")
        if addr not in self.members:
            raise Conflict(f"remove_peer {addr}: not a member")
        self.members.remove(addr)
        self.membership_log.append(("rem", addr))

    def status(self) -> dict[str, Any]:
        status = super().status()
        status["partners"] = {a: True for a in self.members if a != self._address}
        return status


class FollowerNode(LocalNode):
    """A follower's Raft: applies what the leader copies to it; writes raise NotLeader."""

    def __init__(self, address: str, leader: str) -> None:
        super().__init__(None, address)  # type: ignore[arg-type]
        self.leader_addr = leader
        self.hold = threading.Event()   # set: lag (keep what the leader sends for later)
        self.held: list[bytes] = []
        self.barriers = 0

    def attach(self, server: DirectoryServer) -> None:
        self._sm = server.guard

    def start(self) -> None:          # follows: never announces leadership
        self._running = True

    def stop(self) -> None:
        self._running = False

    def replicate(self, data: bytes) -> None:
        if self.hold.is_set():
            self.held.append(data)
            return
        with self._lock:
            if is_barrier(data):
                return
            result = apply_safely(self._sm, bytes(data))
            call_listeners(self._apply_listeners, self._sm.revision, result)

    def release(self) -> None:
        self.hold.clear()
        held, self.held = self.held, []
        for data in held:
            self.replicate(data)

    def propose(self, data: bytes, timeout: float = 5.0):
        raise NotLeader("not the leader", leader=self.leader_addr)

    def add_peer(self, addr: str, timeout: float = 10.0) -> None:
        raise NotLeader("not the leader", leader=self.leader_addr)

    remove_peer = add_peer

    async def barrier_async(self, timeout: float = 5.0) -> None:
        """Like a PySyncObj follower's: its no-op comes back applied after everything
        committed before it, so what the leader sent and this peer held is applied."""
        self.barriers += 1
        self.release()

    def is_leader(self) -> bool:
        return False

    def leader(self) -> str | None:
        return self.leader_addr

    def status(self) -> dict[str, Any]:
        status = super().status()
        status.update(leader=self.leader_addr, is_leader=False)
        return status


@dataclass
class Pair:
    leader: DirectoryServer
    follower: DirectoryServer
    leader_api: ApiServer
    follower_api: ApiServer
    peers: tuple[RaftPeer, ...]

    @property
    def leader_raft(self) -> MemberNode:
        return self.leader.raft  # type: ignore[return-value]

    @property
    def follower_raft(self) -> FollowerNode:
        return self.follower.raft  # type: ignore[return-value]

    def url(self, via: str) -> str:
        return (self.leader_api if via == "leader" else self.follower_api).url

    def node(self, node_id: int) -> dict[str, Any] | None:
        return self.leader.read(lambda d: d.node(node_id))

    async def register(self) -> tuple[int, str]:
        token = (await self.leader.create_token(600, 0))["token"]
        resp = await self.leader.register(WorkerRegisterRequest(token=token, profile=PROFILE),
                                          None)
        return resp.node_id, resp.internal_token


@contextlib.asynccontextmanager
async def real_pair(api: dict[str, Any] | None = None, **settings: Any):
    """A started leader (node 1) and follower (node 2), each serving the API (``api``:
    more arguments of ``start_api``)."""
    api_ports = free_ports(2)
    peers = tuple(RaftPeer(id=i, raft_addr=RAFT[i], api_addr=f"127.0.0.1:{api_ports[i - 1]}")
                  for i in (1, 2))
    base = dict(peers=peers, placement_kinds=frozenset({"worker"}), **settings)
    leader_raft = MemberNode(RAFT[1], [RAFT[1], RAFT[2]])
    leader = DirectoryServer(ServerSettings(node_id=1, **base), secret=SECRET,
                             clock=ManualClock(), raft=leader_raft)
    leader_raft.attach(leader)
    follower_raft = FollowerNode(RAFT[2], RAFT[1])
    follower = DirectoryServer(ServerSettings(node_id=2, **base), secret=SECRET,
                               clock=ManualClock(), raft=follower_raft)
    follower_raft.attach(follower)
    leader_raft.followers.append(follower_raft)
    apis: list[ApiServer] = []
    try:
        await follower.start()
        await leader.start()
        import asyncio
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while not leader.is_leader():
            assert loop.time() < deadline, "the leader never became ready"
            await asyncio.sleep(0.001)
        for server, port in ((leader, api_ports[0]), (follower, api_ports[1])):
            apis.append(await start_api(server, "127.0.0.1", port, **(api or {})))
        yield Pair(leader, follower, apis[0], apis[1], peers)
    finally:
        for api in apis:
            await api.close()
        await leader.stop()
        await follower.stop()
